//! What `tally serve` says on start, and dev mode (`tally serve --dev`): a
//! throwaway data directory that is gone when the server stops, an admin
//! whose password is printed once, and incidents that are drills with no
//! legal clocks.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::*;

/// The value after `label` on the first line of `log` that has it.
fn value_after(log: &str, label: &str) -> String {
    log.lines()
        .find_map(|l| l.split_once(label).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{log}"))
}

/// The data directory the next steps name.
fn data_dir_of(log: &str) -> PathBuf {
    let data = PathBuf::from(value_after(log, "data directory:"));
    assert!(data.is_absolute(), "{}", data.display());
    data
}

fn admin_incidents(server: &Server, token: &str) -> Vec<Value> {
    let r = client()
        .get(server.url("/v1/admin/incidents"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    body["incidents"].as_array().unwrap().clone()
}

#[test]
fn dev_mode_is_a_throwaway_server_whose_incidents_are_drills() {
    let server = Server::serve(
        &[
            "--dev".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[],
    );
    let log = server.log_text();
    // The banner: dev mode, nothing kept, drills, not for production.
    for says in [
        "tally DEV MODE",
        "NOT for production",
        "nothing is kept",
        "every incident is a drill",
        "no legal reporting clock runs",
        "printed once, because this is dev mode",
        "admin user:     admin",
    ] {
        assert!(log.contains(says), "no {says:?} in:\n{log}");
    }
    // The next steps.
    assert!(
        log.contains(&format!("dashboard:        {}/ui", server.base)),
        "{log}"
    );
    assert!(
        log.contains("tally users add NAME --password-stdin --data /"),
        "{log}"
    );
    assert!(
        log.contains("tally users role NAME admin --data /"),
        "{log}"
    );
    let data = data_dir_of(&log);
    assert!(data.join("master.key").is_file());
    assert_eq!(
        value_after(&log, "master key:"),
        format!(
            "{} (mode 0600; keep it secret, back it up)",
            data.join("master.key").display()
        )
    );
    let throwaway = data.parent().unwrap().to_path_buf();
    assert!(
        throwaway
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("tally-dev-"),
        "{}",
        throwaway.display()
    );
    // The password, printed once, opens the admin account.
    let password = value_after(&log, "admin password:");
    assert!(password.len() >= 32, "a weak password: {password:?}");
    assert_eq!(log.matches(&password).count(), 1, "{log}");
    let admin = login(&server, "admin", &password);
    assert!(admin_incidents(&server, &admin).is_empty());

    // An insider with a copy of a signing key presents a forged token.
    let tmp = TempDir::new("dev");
    let insider = import_insider_key(tmp.path(), data.to_str().unwrap(), "k1");
    let mut claims = payload(&admin);
    claims["sub"] = json!("cust-1");
    claims["jti"] = json!("forged-1");
    let forged = jws(
        &insider,
        &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}).to_string(),
        &claims.to_string(),
    );
    // The server picks up the imported key within a second; until then the
    // key is unknown to it.
    eventually("the forged token is refused as not issued", || {
        checked(&server, &forged).1 == "not_issued"
    });
    // It opens an incident: a drill, with no legal clock.
    let mut incident = Value::Null;
    eventually("an incident opens", || {
        match admin_incidents(&server, &admin).first() {
            Some(i) => {
                incident = i.clone();
                true
            }
            None => false,
        }
    });
    let title = incident["title"].as_str().unwrap();
    assert!(title.starts_with("DRILL: "), "{incident}");
    assert_eq!(incident["clocks"], json!([]), "{incident}");
    assert_eq!(incident["next_deadline"], Value::Null, "{incident}");
    let id = incident["id"].as_i64().unwrap();
    let shown: Value = client()
        .get(server.url(&format!("/v1/admin/incidents/{id}")))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(shown["clocks"], json!([]), "{shown}");
    assert!(
        shown["detections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["detection"]["rule"] == "forged_token"),
        "{shown}"
    );

    // SIGTERM: the server stops cleanly and the throwaway directory goes.
    let log = server.log.clone();
    assert!(server.stop().success());
    assert!(!data.exists(), "{} is still there", data.display());
    assert!(
        !throwaway.exists(),
        "{} is still there",
        throwaway.display()
    );
    eventually("the removal is reported", || {
        log.lock()
            .unwrap()
            .contains(&format!("tally dev mode: removed {}", throwaway.display()))
    });
}

#[test]
fn dev_mode_refuses_a_data_directory_or_shared_storage() {
    let tmp = TempDir::new("dev-refuses");
    let d = tmp.path().join("data");
    for extra in [
        &["--data", d.to_str().unwrap()][..],
        &["--storage", "postgres://tally@127.0.0.1:1/tally"][..],
    ] {
        let mut args = vec!["serve", "--dev", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let out = tally(&args, None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--dev") && err.contains(extra[0]),
            "{args:?}: {err}"
        );
    }
    assert!(!d.exists(), "a refused --dev created {}", d.display());
}

#[test]
fn serve_prints_the_next_steps_with_the_data_directory() {
    let tmp = TempDir::new("next-steps");
    let data = tmp.path().join("data");
    let server = Server::start(&data, None);
    let log = server.log_text();
    assert!(log.contains("tally next steps:"), "{log}");
    let printed = data_dir_of(&log);
    assert_eq!(printed, std::fs::canonicalize(&data).unwrap());
    let d = printed.display();
    for says in [
        format!("dashboard:        {}/ui", server.base),
        format!("add a user:       tally users add NAME --password-stdin --data {d}"),
        format!("make it an admin: tally users role NAME admin --data {d}"),
        format!("master key:       {d}/master.key (mode 0600"),
    ] {
        assert!(log.contains(&says), "no {says:?} in:\n{log}");
    }
    // No secret, and no dev mode.
    assert!(!log.contains("password:"), "{log}");
    assert!(!log.contains("DEV MODE"), "{log}");
    let master = std::fs::read_to_string(printed.join("master.key")).unwrap();
    assert!(!log.contains(master.trim()), "{log}");
    // The commands printed work as printed.
    let out = tally_ok(
        &[
            "users",
            "add",
            "alice",
            "--password-stdin",
            "--data",
            &d.to_string(),
        ],
        Some("alice-passphrase\n"),
    );
    assert!(out.contains("alice"));
    tally_ok(
        &["users", "role", "alice", "admin", "--data", &d.to_string()],
        None,
    );
    let token = login(&server, "alice", "alice-passphrase");
    assert!(admin_incidents(&server, &token).is_empty());
    assert!(server.stop().success());
    assert!(
        Path::new(&printed).exists(),
        "a plain server keeps its data"
    );
}
