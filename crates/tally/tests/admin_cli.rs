//! The administration commands that manage people and clients, the lists
//! as JSON, the global `--data`, and the shell completions: `users
//! add|reset|list|remove` (with the password policy), `clients
//! add|list|remove`, `access holds`, `keys log`, `completions`, each against
//! a real data directory (and, for a removed user or a login, a running
//! server).

mod support;

use support::*;

#[test]
fn users_and_clients_are_listed_and_removed() {
    let tmp = TempDir::new("admin-cli");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    add_user(d, "alice", "alice-password-1");
    add_user(d, "bob", "bob-password-12");
    tally_ok(&["users", "role", "alice", "admin", "--data", d], None);

    let keys: serde_json::Value = serde_json::from_str(&tally_ok(
        &["keys", "list", "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["alg"], "EdDSA");
    let blocks: serde_json::Value = serde_json::from_str(&tally_ok(
        &["block", "list", "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    assert_eq!(blocks, serde_json::json!([]));

    let listed: serde_json::Value = serde_json::from_str(&tally_ok(
        &["users", "list", "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"name": "alice", "role": "admin"}, {"name": "bob", "role": "user"}])
    );

    // A removed user can no longer log in; a user that is not there is an error.
    let server = Server::start(&data, None);
    let _ = login(&server, "bob", "bob-password-12");
    let out = tally_ok(&["users", "remove", "bob", "--data", d], None);
    assert!(out.contains("user bob removed"), "{out}");
    let refused = client()
        .post(server.url("/v1/login"))
        .json(&serde_json::json!({"username": "bob", "password": "bob-password-12"}))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let again = tally(&["users", "remove", "bob", "--data", d], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("there is no user bob"));
    assert_eq!(tally_ok(&["users", "list", "--data", d], None), "alice\n");

    tally_ok(
        &["clients", "add", "billing", "--secret-stdin", "--data", d],
        Some("billing-secret-123\n"),
    );
    tally_ok(
        &["clients", "add", "api", "--secret-stdin", "--data", d],
        Some("api-secret-123456\n"),
    );
    let clients: serde_json::Value = serde_json::from_str(&tally_ok(
        &["clients", "list", "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    let ids: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["api", "billing"]);
    let table = tally_ok(&["clients", "list", "--data", d], None);
    assert!(table.starts_with("CLIENT"), "{table}");
    assert!(!table.contains("secret"), "{table}");
    tally_ok(&["clients", "remove", "api", "--data", d], None);
    let gone = tally(&["clients", "remove", "api", "--data", d], None);
    assert!(!gone.status.success());
    let table = tally_ok(&["clients", "list", "--data", d], None);
    assert!(
        !table.contains("api") && table.contains("billing"),
        "{table}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = tally_ok(&["completions", shell], None);
        for word in ["serve", "users", "incident", "ledger"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    assert!(!tally(&["completions", "tcsh"], None).status.success());
}

#[test]
fn access_tail_follows_new_events() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = TempDir::new("tail-follow");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let server = Server::start(&data, None);
    let mut tail = Command::new(bin())
        .args(["access", "tail", "--follow", "--limit", "0", "--data", d])
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Requests made after the follower started reach it as they are logged.
    let mut seen = None;
    for _ in 0..40 {
        let _ = checked(&server, "not-a-token");
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            seen = Some(line);
            break;
        }
    }
    terminate(&tail);
    let _ = tail.wait();
    let line = seen.expect("access tail --follow printed no new event");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["verdict"], "malformed", "{line}");
}

/// `tally users add|reset` with `password` on standard input: its exit
/// code and standard error.
fn set_password(cmd: &str, user: &str, password: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["users", cmd, user, "--password-stdin"];
    args.extend_from_slice(extra);
    let out = tally(&args, Some(&format!("{password}\n")));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A password shorter than the minimum (12 characters by default, counted
/// as characters, not bytes) or longer than 1024 bytes is refused wherever
/// one is set, with a stable code and a message that does not quote it;
/// exactly the minimum is accepted. Login applies no minimum: a short
/// attempt is one more wrong password.
#[test]
fn new_passwords_meet_the_policy() {
    let tmp = TempDir::new("password-policy");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let at = ["--data", d];

    for (short, what) in [
        ("hunter2", "7 ASCII characters"),
        ("abcdefghijk", "11 ASCII characters"),
        ("ééééééééééé", "11 characters in 22 bytes"),
    ] {
        let (code, err) = set_password("add", "carl", short, &at);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(
            err.contains("cannot add user carl")
                && err.contains("at least 12 characters")
                && err.contains("(password_too_short)"),
            "{what}: {err}"
        );
        assert!(
            !err.contains(short),
            "{what}: the error quotes the password: {err}"
        );
    }
    let too_long = "x".repeat(1025);
    let (code, err) = set_password("add", "carl", &too_long, &at);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("at most 1024 bytes") && err.contains("(password_too_long)"),
        "{err}"
    );
    assert!(!err.contains("xxxxxxxx"), "{err}");
    assert_eq!(tally_ok(&["users", "list", "--data", d], None), "");

    // Exactly the minimum, counted in characters; exactly the maximum.
    add_user(d, "carl", "abcdefghijkl");
    add_user(d, "dora", "éééééééééééé");
    add_user(d, "emil", &"x".repeat(1024));
    // No composition rule: digits alone, letters alone, spaces.
    add_user(d, "finn", "123456789012");
    add_user(d, "gert", "correct horse battery");

    // A reset is held to the same rule and changes nothing when refused.
    let (code, err) = set_password("reset", "carl", "hunter2", &at);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot reset user carl") && err.contains("(password_too_short)"),
        "{err}"
    );
    let server = Server::start(&data, None);
    login(&server, "carl", "abcdefghijkl");
    login(&server, "dora", "éééééééééééé");
    login(&server, "emil", &"x".repeat(1024));

    // Login says nothing about the policy: a short attempt, a long wrong
    // one, one over the maximum and an unknown user get the same answer.
    let attempt = |user: &str, password: &str| {
        let r = client()
            .post(server.url("/v1/login"))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let wrong = attempt("carl", "a wrong but long password");
    assert_eq!(wrong.0, 401, "{}", wrong.1);
    assert!(wrong.1.contains("invalid_credentials"), "{}", wrong.1);
    for (user, password) in [
        ("carl", "hunter2"),
        ("carl", too_long.as_str()),
        ("nobody", "hunter2"),
    ] {
        assert_eq!(attempt(user, password), wrong, "{user} {}", password.len());
    }

    tally_ok(
        &["users", "reset", "carl", "--password-stdin", "--data", d],
        Some("a new passphrase\n"),
    );
    login(&server, "carl", "a new passphrase");
}

/// `[passwords] min_length` moves the minimum, never below 8: a
/// configuration asking for less is refused when it loads, by every
/// command, `serve` included.
#[test]
fn the_minimum_is_configured_and_never_below_8() {
    let tmp = TempDir::new("password-config");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let config = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };

    let eight = config("eight.toml", "[passwords]\nmin_length = 8\n");
    let (code, err) = set_password("add", "ann", "1234567", &["--data", d, "--config", &eight]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least 8 characters"), "{err}");
    set_password("add", "ann", "12345678", &["--data", d, "--config", &eight]);
    assert_eq!(tally_ok(&["users", "list", "--data", d], None), "ann\n");

    let twenty = config("twenty.toml", "[passwords]\nmin_length = 20\n");
    let (code, err) = set_password(
        "add",
        "bea",
        "abcdefghijklmnop",
        &["--config", &twenty, "--data", d],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("at least 20 characters") && err.contains("password_too_short"),
        "{err}"
    );

    let seven = config("seven.toml", "[passwords]\nmin_length = 7\n");
    for args in [
        &[
            "users",
            "add",
            "bea",
            "--password-stdin",
            "--data",
            d,
            "--config",
            &seven,
        ][..],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            d,
            "--config",
            &seven,
        ][..],
        &["--config", &seven, "--data", d, "users", "list"][..],
    ] {
        let out = tally(args, Some("a long enough password\n"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot load the configuration")
                && err.contains("[passwords] min_length = 7 is below 8")
                && err.contains("set it to 8 or more"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(tally_ok(&["users", "list", "--data", d], None), "ann\n");
}

/// `access holds` and `keys log` print JSON with `--format json`, as the
/// other lists do: an array of objects named by the table's columns.
#[test]
fn holds_and_the_key_log_are_listed_as_json() {
    let tmp = TempDir::new("lists-json");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = tally_ok(args, None);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };

    assert_eq!(
        json(&["access", "holds", "--format", "json", "--data", d]),
        serde_json::json!([])
    );
    tally_ok(
        &[
            "access",
            "hold",
            "--from",
            "2026-04-01T00:00:00Z",
            "--until",
            "2026-11-30T00:00:00Z",
            "--reason",
            "order 17/2026",
            "--actor",
            "olivia",
            "--data",
            d,
        ],
        None,
    );
    let holds = json(&["access", "holds", "--format", "json", "--data", d]);
    let holds = holds.as_array().unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    let h = &holds[0];
    assert_eq!(h["id"], "1");
    assert_eq!(h["reason"], "order 17/2026");
    assert_eq!(h["by"], "olivia");
    assert!(h["from"].as_str().unwrap().starts_with("2026-04-01"), "{h}");
    assert!(
        h["until"].as_str().unwrap().starts_with("2026-11-30"),
        "{h}"
    );
    let table = tally_ok(&["access", "holds", "--data", d], None);
    assert!(
        table.starts_with("ID") && table.contains("order 17/2026"),
        "{table}"
    );

    tally_ok(&["keys", "rotate", "--actor", "olivia", "--data", d], None);
    let keys = json(&["keys", "list", "--format", "json", "--data", d]);
    let active = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .unwrap()["kid"]
        .clone();
    let log = json(&["keys", "log", "--format", "json", "--data", d]);
    let log = log.as_array().unwrap();
    assert!(log.len() >= 2, "{log:?}");
    for e in log {
        for field in ["time", "event", "kid", "actor", "detail"] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
    }
    assert!(
        log.iter()
            .any(|e| e["kid"] == active && e["actor"] == "olivia"),
        "the rotation by olivia to {active} is not in {log:?}"
    );
    let one = json(&[
        "keys", "log", "--limit", "1", "--format", "json", "--data", d,
    ]);
    assert_eq!(one.as_array().unwrap().len(), 1);
    let table = tally_ok(&["keys", "log", "--data", d], None);
    assert!(table.starts_with("TIME"), "{table}");
    for args in [
        &["keys", "log", "--format", "yaml", "--data", d][..],
        &["access", "holds", "--format", "yaml", "--data", d][..],
    ] {
        assert_eq!(tally(args, None).status.code(), Some(2), "{args:?}");
    }
}

/// `--data` goes before or after the command, at any depth, or comes from
/// `TALLY_DATA`; `tally demo`, which makes its own, refuses one.
#[test]
fn data_goes_before_or_after_the_command() {
    let tmp = TempDir::new("global-data");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    add_user(d, "alice", "alice-password-1");
    for args in [
        &["--data", d, "users", "list"][..],
        &["users", "list", "--data", d][..],
        &["users", "--data", d, "list"][..],
    ] {
        assert_eq!(tally_ok(args, None), "alice\n", "{args:?}");
    }
    // Two levels down.
    let before = tally_ok(&["--data", d, "keys", "log"], None);
    let after = tally_ok(&["keys", "log", "--data", d], None);
    assert_eq!(before, after);
    assert!(before.contains("activated"), "{before}");
    tally_ok(
        &["--data", d, "users", "add", "bob", "--password-stdin"],
        Some("bob-password-12\n"),
    );
    let from_env = std::process::Command::new(bin())
        .args(["users", "list"])
        .env("TALLY_DATA", d)
        .env("TALLY_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&from_env.stdout), "alice\nbob\n");

    // The directory named is the one used, wherever it is written.
    let missing = tmp.path().join("nowhere");
    let out = tally(
        &["--data", missing.to_str().unwrap(), "users", "list"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing.exists());

    for args in [
        &["--data", d, "demo", "--customers", "10"][..],
        &["demo", "--customers", "10", "--data", d][..],
    ] {
        let out = tally(args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("takes no --data") && err.contains("--keep"),
            "{args:?}: {err}"
        );
    }
    // TALLY_DATA set for other commands does not stop the demo (which the
    // bad --customers then stops before it starts).
    let out = std::process::Command::new(bin())
        .args(["demo", "--customers", "0"])
        .env("TALLY_DATA", d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--customers must be between"), "{err}");

    let help = tally_ok(&["users", "list", "--help"], None);
    assert!(
        help.contains("--data <DATA>") && help.contains("TALLY_DATA"),
        "{help}"
    );
}
