//! README's "Using it" section, run as written: every inline command there
//! that starts with `tally`, `echo … | tally`, `curl` or `openssl` and names
//! no placeholder (`NAME`, `ID`, `$TOKEN`, `...`) runs against a real server
//! started the way the section says (`tally serve` in a fresh folder, data in
//! `./tally-data`), in the order the section gives them, and must succeed.
//! Only the address differs: the server listens on a free port instead of
//! 8080; and `curl` runs with `--fail`, so an error status fails the test.

mod support;

use std::process::Command;

use support::*;

fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(heading).expect("README has the section");
    let rest = &readme[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The inline code spans of `text` (single backticks).
fn spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn runnable(s: &str) -> bool {
    let starts = s.starts_with("tally ")
        || s.starts_with("curl ")
        || s.starts_with("openssl ")
        || s.contains("| tally ");
    // The server the section starts is already running.
    let server = s.starts_with("tally serve");
    let placeholder = [
        "NAME", "PERSON", "JTI", "KID", "CIDR", "DIR", "$TOKEN", "...", "[", "<", " ID",
    ]
    .iter()
    .any(|p| s.contains(p));
    starts && !placeholder && !server
}

#[test]
fn the_using_it_commands_work_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let commands: Vec<String> = spans(section(&readme, "## Using it"))
        .into_iter()
        .filter(|s| runnable(s))
        .collect();
    assert!(
        commands.len() >= 10,
        "too few runnable commands found: {commands:?}"
    );

    eprintln!(
        "README commands run as written:\n  {}",
        commands.join("\n  ")
    );
    let tmp = TempDir::new("readme");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin_dir = std::path::Path::new(&bin()).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut server = Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(tmp.path())
        .env("TALLY_LOG", "warn")
        .env_remove("TALLY_DATA")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);

    let mut failed = Vec::new();
    for c in &commands {
        // curl exits 0 on an error status unless told otherwise: a login
        // refused with 401 must fail the walkthrough too.
        let shell = c
            .replace("localhost:8080", &format!("127.0.0.1:{port}"))
            .replacen("curl ", "curl --fail --show-error ", 1);
        let out = Command::new("sh")
            .args(["-c", &format!("set -e; {shell}")])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env("TALLY_LOG", "warn")
            .env_remove("TALLY_DATA")
            .env_remove("TALLY_CONFIG")
            .output()
            .unwrap();
        if !out.status.success() {
            failed.push(format!(
                "{c}\n  {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    terminate(&server);
    let _ = server.wait();
    assert!(
        failed.is_empty(),
        "README commands that fail as written:\n{}",
        failed.join("\n")
    );
}

fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("tally serve did not listen on {port}");
}
