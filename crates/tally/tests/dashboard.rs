//! The dashboard in a real browser (Debian's chromium, driven by
//! playwright-core from npm): sign-in, then a forged-token attack while the
//! page is open; the incident and its reporting countdowns must appear live.
//! Screenshots go to `target/tmp/dashboard.png` and `dashboard-phone.png`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

fn ui_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui"))
}

fn browser_available() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    Path::new(&chromium).exists()
        && ui_dir().join("node_modules/playwright-core").exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The form token a dashboard page carries.
fn form_token(html: &str) -> String {
    let key = "name=\"form_token\" value=\"";
    let at = html.find(key).expect("no form token on the page") + key.len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Runs a browser script of `tests/ui` to its end; its standard output.
fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new("node")
        .arg(ui_dir().join(script))
        .args(args)
        .current_dir(ui_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_dashboard_shows_an_attack_live() {
    if !browser_available() {
        skip("no chromium/node/playwright-core");
        return;
    }
    let tmp = TempDir::new("dashboard");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let insider = import_insider_key(tmp.path(), d, "k1");
    add_user(d, "root", "root-passphrase");
    tally_ok(&["users", "role", "root", "admin", "--data", d], None);
    add_user(d, "alice", "alice-passphrase");
    let server = Server::start(&data, None);

    // A user who is not an administrator gets no dashboard.
    let _ = client(); // installs the TLS provider reqwest needs
    let c = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .post(server.url("/ui/login"))
        .form(&[("username", "alice"), ("password", "alice-passphrase")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().unwrap().contains("not an administrator"));
    assert_eq!(c.get(server.url("/ui")).send().unwrap().status(), 303);
    assert_eq!(
        c.get(server.url("/ui/events")).send().unwrap().status(),
        303
    );
    // A sign-in posted from another site is refused (login CSRF).
    let r = c
        .post(server.url("/ui/login"))
        .header("Origin", "http://evil.example")
        .form(&[("username", "root"), ("password", "root-passphrase")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // Signing out revokes the dashboard's token, not only its cookie.
    let r = c
        .post(server.url("/ui/login"))
        .form(&[("username", "root"), ("password", "root-passphrase")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tally_ui=")
        .to_string();
    let verdict = |t: &str| checked(&server, t).1;
    assert_eq!(verdict(&token), "ok");
    // The live stream is one admin request in the access log, however long
    // it stays open: its checks every few seconds are not new requests.
    let admin_events = || {
        tally_ok(&["access", "tail", "--limit", "1000", "--data", d], None)
            .lines()
            .filter(|l| l.contains("\"route\":\"admin\"") && l.contains("/ui/events"))
            .count()
    };
    {
        use std::io::Read;
        let mut stream = c
            .get(server.url("/ui/events"))
            .header("Cookie", format!("tally_ui={token}"))
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .unwrap();
        assert_eq!(stream.status(), 200);
        // Read past two checks (every 5 s), a second's snapshot at a time.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(11);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < until {
            assert!(stream.read(&mut buf).unwrap() > 0, "the stream ended");
        }
    }
    eventually("the stream's request booked", || admin_events() == 1);
    // Signing out takes the session's form token, as the page's form sends it.
    let signed_out = |form: &[(&str, &str)]| {
        c.post(server.url("/ui/logout"))
            .header("Cookie", format!("tally_ui={token}"))
            .form(form)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(signed_out(&[]), 403);
    assert_eq!(verdict(&token), "ok");
    let page = c
        .get(server.url("/ui"))
        .header("Cookie", format!("tally_ui={token}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(signed_out(&[("form_token", &form_token(&page))]), 303);
    assert_eq!(verdict(&token), "revoked");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut node = Command::new("node")
        .arg(ui_dir().join("dashboard.mjs"))
        .args([
            server.base.as_str(),
            "root",
            "root-passphrase",
            shots.to_str().unwrap(),
        ])
        .current_dir(ui_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.trim() != "READY" {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err);
        panic!("browser not ready: {line}\n{err}");
    }

    // The insider's forged tokens, while the dashboard is open.
    let alice = login(&server, "alice", "alice-passphrase");
    present_forged_tokens(&server, &insider, &alice);
    let mut stdin = node.stdin.take().unwrap();
    let _ = writeln!(stdin, "ATTACKED");
    drop(stdin);
    let status = node.wait().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err);
    assert!(status.success(), "browser run failed:\n{rest}\n{err}");
    assert!(rest.contains("OK countdown"), "{rest}");
    let png = shots.join("dashboard.png");
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    eprintln!("screenshots: {} and dashboard-phone.png", png.display());
}

/// The page of one incident in a real browser: linked from the dashboard,
/// accessible (axe-core) and within a 1280-pixel window for an
/// administrator and for an auditor; the administrator acknowledges and adds
/// a note, which appear on the timeline in words; the auditor sees no action,
/// and the server refuses the auditor's forged post and a post without the
/// session's form token (403).
#[test]
fn the_incident_page_lets_administrators_act_and_auditors_read() {
    if !browser_available() {
        skip("no chromium/node/playwright-core");
        return;
    }
    let tmp = TempDir::new("incident-page");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let insider = import_insider_key(tmp.path(), d, "k1");
    add_user(d, "root", "root-passphrase");
    tally_ok(&["users", "role", "root", "admin", "--data", d], None);
    add_user(d, "audrey", "audrey-passphrase");
    tally_ok(&["users", "role", "audrey", "auditor", "--data", d], None);
    add_user(d, "alice", "alice-passphrase");
    let server = Server::start(&data, None);

    // The insider's forged tokens open an incident.
    let alice = login(&server, "alice", "alice-passphrase");
    present_forged_tokens(&server, &insider, &alice);
    let list = || -> Vec<serde_json::Value> {
        serde_json::from_str(&tally_ok(
            &["incident", "list", "--format", "json", "--data", d],
            None,
        ))
        .unwrap()
    };
    eventually("an incident is open", || !list().is_empty());
    let id = list()[0]["id"].as_i64().unwrap().to_string();

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = run_script(
        "incident.mjs",
        &[
            server.base.as_str(),
            &id,
            "root",
            "root-passphrase",
            "audrey",
            "audrey-passphrase",
            shots.to_str().unwrap(),
        ],
    );
    for line in [
        "OK axe the incident page (administrator)",
        "OK fits the incident page (administrator) at 1280 px",
        "OK acknowledged",
        "OK note",
        "OK no token 403",
        "OK auditor sees no action",
        "OK axe the incident page (auditor)",
        "OK fits the incident page (auditor) at 1280 px",
        "OK auditor refused 403",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    // What the browser did is on the incident's audited timeline, by whom;
    // nothing the auditor tried is.
    let shown: serde_json::Value = serde_json::from_str(&tally_ok(
        &["incident", "show", &id, "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    let timeline = shown["timeline"].as_array().unwrap();
    let by = |kind: &str| -> Vec<&str> {
        timeline
            .iter()
            .filter(|t| t["kind"] == kind)
            .map(|t| t["actor"].as_str().unwrap())
            .collect()
    };
    assert_eq!(by("ack"), ["root (dashboard)"]);
    assert_eq!(by("note"), ["root (dashboard)"]);
    assert_eq!(shown["state"], "open", "nobody contained it");
    assert!(tally_ok(&["incident", "verify", "--data", d], None).contains("chain intact"));
    eprintln!(
        "screenshots: {} and incident-auditor.png",
        shots.join("incident.png").display()
    );
}

/// Three of the insider's tokens (for `member-0` to `member-2`), each
/// refused `not_issued` at the gate.
fn present_forged_tokens(server: &Server, insider: &RawKey, alice: &str) {
    for i in 0..3 {
        let forged = forge(
            insider,
            "k1",
            alice,
            &format!("forged-{i}"),
            &format!("member-{i}"),
        );
        let r = client()
            .get(server.url("/v1/check"))
            .bearer_auth(&forged)
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-tally-verdict"], "not_issued");
    }
}
