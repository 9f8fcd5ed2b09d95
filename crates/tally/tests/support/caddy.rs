//! Real Caddy for the tests: the operators' example (`docs/Caddyfile`, with
//! its three addresses replaced), run in the foreground under a test
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The operators' example.
pub const DOC: &str = include_str!("../../../../docs/Caddyfile");

/// A Caddy binary, if there is one.
pub fn caddy_binary() -> Option<PathBuf> {
    ["caddy", "/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find_map(|c| {
            let out = Command::new(c).arg("version").output().ok()?;
            out.status.success().then(|| PathBuf::from(c))
        })
}

/// docs/Caddyfile listening on `port`, in front of `tally` and `upstream`
/// (`host:port`). Each replaced line must be there exactly once.
pub fn render_doc(port: u16, tally: &str, upstream: &str) -> String {
    let mut conf = DOC.to_string();
    for (from, to) in [
        (":80 {", format!("http://127.0.0.1:{port} {{")),
        (
            "forward_auth 127.0.0.1:8080 {",
            format!("forward_auth {tally} {{"),
        ),
        (
            "reverse_proxy 127.0.0.1:9000",
            format!("reverse_proxy {upstream}"),
        ),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "docs/Caddyfile should contain `{from}` exactly once"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

/// A running Caddy, killed on drop.
pub struct Caddy {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
}

impl Caddy {
    /// Runs docs/Caddyfile in front of `tally` and `upstream`.
    pub fn from_doc(bin: &Path, dir: &Path, tally: &str, upstream: &str) -> Caddy {
        std::fs::create_dir_all(dir).unwrap();
        let port = super::nginx::free_port();
        let conf = dir.join("Caddyfile");
        std::fs::write(&conf, render_doc(port, tally, upstream)).unwrap();
        let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut caddy = Caddy {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
        };
        super::wait_listening(
            "caddy",
            caddy.child.as_mut().unwrap(),
            port,
            Duration::from_secs(20),
            || caddy_logs(dir),
        );
        caddy
    }

    /// Caddy's log.
    pub fn logs(&self) -> String {
        caddy_logs(&self.dir)
    }
}

fn caddy_logs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
