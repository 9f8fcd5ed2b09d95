//! Real nginx for the tests: the operators' example (`docs/nginx.conf`, with
//! its ports and file paths replaced) or any configuration text, run in the
//! foreground as one process under a test directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The operators' example, run as is (modulo ports and paths).
pub const DOC: &str = include_str!("../../../../docs/nginx.conf");

/// An nginx binary built with `auth_request`, if there is one.
pub fn nginx_binary() -> Option<PathBuf> {
    ["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find_map(|c| {
            let out = Command::new(c).arg("-V").output().ok()?;
            let text = String::from_utf8_lossy(&out.stderr);
            (out.status.success() && text.contains("with-http_auth_request_module"))
                .then(|| PathBuf::from(c))
        })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directives that keep nginx in the foreground, as one process, with
/// every file under `dir` (put at the top of a configuration).
pub fn preamble(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n"
    )
}

/// The temporary-file paths of an `http` block, under `dir`.
pub fn temp_paths(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n    \
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
         scgi_temp_path {d}/scgi;"
    )
}

/// docs/nginx.conf with its addresses and file paths replaced. Each replaced
/// line must be there exactly once, so that the documented file and the
/// tested one cannot drift apart.
pub fn render_doc(dir: &Path, listen: u16, tally: &str, upstream: &str) -> String {
    let d = dir.display();
    let mut conf = DOC.to_string();
    let replacements = [
        (
            "worker_processes auto;",
            "daemon off;\nmaster_process off;\nworker_processes 1;".to_string(),
        ),
        ("pid /run/nginx.pid;", format!("pid {d}/nginx.pid;")),
        (
            "error_log /var/log/nginx/error.log;",
            format!("error_log {d}/error.log info;"),
        ),
        (
            "access_log /var/log/nginx/access.log;",
            format!("access_log {d}/access.log;\n    {}", temp_paths(dir)),
        ),
        ("server 127.0.0.1:8080;", format!("server {tally};")),
        ("server 127.0.0.1:9000;", format!("server {upstream};")),
        ("listen 80;", format!("listen 127.0.0.1:{listen};")),
    ];
    for (from, to) in replacements {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "docs/nginx.conf should contain `{from}` exactly once"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

/// A running nginx child process, killed on drop.
pub struct Nginx {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
}

impl Nginx {
    /// Runs docs/nginx.conf in front of `tally` and `upstream` (`host:port`).
    pub fn from_doc(bin: &Path, dir: &Path, tally: &str, upstream: &str) -> Nginx {
        Nginx::start(bin, dir, |port| render_doc(dir, port, tally, upstream))
    }

    /// Runs the configuration `conf(port)` (which must listen on
    /// 127.0.0.1:`port` and keep its files under `dir`).
    pub fn start(bin: &Path, dir: &Path, conf: impl FnOnce(u16) -> String) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf(port)).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut nginx = Nginx {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
        };
        super::wait_listening(
            "nginx",
            nginx.child.as_mut().unwrap(),
            port,
            Duration::from_secs(10),
            || nginx_logs(dir),
        );
        nginx
    }

    /// nginx's own output and error log.
    pub fn logs(&self) -> String {
        nginx_logs(&self.dir)
    }
}

fn nginx_logs(dir: &Path) -> String {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    format!("{}{}", read("stderr.log"), read("error.log"))
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
