//! Authentication: TOTP enrolment and login (RFC 6238, replay refused), and
//! login throttling with backoff per user.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn try_login(
    server: &Server,
    user: &str,
    password: &str,
    totp: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut body = json!({"username": user, "password": password});
    if let Some(code) = totp {
        body["totp"] = json!(code);
    }
    let resp = client()
        .post(server.url("/v1/login"))
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.json().unwrap(), retry)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn totp_login_and_replay() {
    let tmp = TempDir::new("totp");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    tally_ok(
        &["users", "add", "alice", "--password-stdin", "--data", d],
        Some("alice-passphrase\n"),
    );
    let out = tally_ok(
        &["users", "totp", "alice", "--label", "Shop", "--data", d],
        None,
    );
    let uri = out.lines().next().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Shop:alice?secret="),
        "{out}"
    );
    assert!(out.contains('█'), "no QR code printed");
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let secret = tally_core::totp::TotpSecret::from_base32(b32).unwrap();
    let totp = tally_core::totp::Totp::default();
    assert_eq!(
        tally(&["users", "totp", "nobody", "--data", d], None)
            .status
            .code(),
        Some(2)
    );

    let server = Server::start(&data, None);
    let (s, b, _) = try_login(&server, "alice", "alice-passphrase", None);
    assert_eq!((s, code(&b)), (401, "totp_required"));
    let wrong = format!(
        "{:06}",
        (totp.code_at(&secret, now()).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let (s, b, _) = try_login(&server, "alice", "alice-passphrase", Some(&wrong));
    assert_eq!((s, code(&b)), (401, "invalid_totp"));
    // A right code with a wrong password reads like any wrong password.
    let (s, b, _) = try_login(
        &server,
        "alice",
        "nope",
        Some(&totp.code_at(&secret, now())),
    );
    assert_eq!((s, code(&b)), (401, "invalid_credentials"));

    let good = totp.code_at(&secret, now());
    let (s, b, _) = try_login(&server, "alice", "alice-passphrase", Some(&good));
    assert_eq!(s, 200, "{b}");
    let token = b["access_token"].as_str().unwrap().to_string();
    // The same code again is refused (one use per time step).
    let (s, b, _) = try_login(&server, "alice", "alice-passphrase", Some(&good));
    assert_eq!((s, code(&b)), (401, "invalid_totp"));
    for garbage in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
        let (s, b, _) = try_login(&server, "alice", "alice-passphrase", Some(garbage));
        assert_eq!((s, code(&b)), (401, "invalid_totp"), "{garbage:?}");
    }
    server.stop();
    // The ledger records how the user authenticated.
    let jti = payload(&token)["jti"].as_str().unwrap().to_string();
    let conn = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let record: Vec<u8> = conn
        .query_row(
            "SELECT record FROM ledger WHERE token_id = ?1",
            [&jti],
            |r| r.get(0),
        )
        .unwrap();
    let record = tally_core::record::IssuanceRecord::decode(&record).unwrap();
    assert_eq!(record.auth_context, "pwd+otp");
}

#[test]
fn repeated_failures_are_throttled_per_user() {
    let tmp = TempDir::new("throttle");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    tally_ok(
        &["users", "add", "bob", "--password-stdin", "--data", d],
        Some("bob-passphrase\n"),
    );
    tally_ok(
        &["users", "add", "carol", "--password-stdin", "--data", d],
        Some("carol-passphrase\n"),
    );
    let server = Server::start(&data, None);
    for _ in 0..6 {
        let (s, b, _) = try_login(&server, "bob", "guess", None);
        assert_eq!((s, code(&b)), (401, "invalid_credentials"));
    }
    // Locked: even the right password waits, and the answer says how long.
    let (s, b, retry) = try_login(&server, "bob", "bob-passphrase", None);
    assert_eq!((s, code(&b)), (429, "too_many_attempts"));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another user from the same address is not locked out.
    assert_eq!(try_login(&server, "carol", "carol-passphrase", None).0, 200);
    std::thread::sleep(Duration::from_secs(retry) + Duration::from_millis(200));
    assert_eq!(try_login(&server, "bob", "bob-passphrase", None).0, 200);
    // An unknown user is throttled exactly like a known one.
    for _ in 0..6 {
        assert_eq!(try_login(&server, "nobody", "guess", None).0, 401);
    }
    assert_eq!(try_login(&server, "nobody", "guess", None).0, 429);
    server.stop();
}

/// Someone with write access to `state.db` but not the master key gives
/// himself a known password on alice's account and the admin role on his
/// own: both rows fail their MAC, both are refused, and an incident opens.
/// The operator then takes alice's row back.
#[test]
fn rows_changed_behind_tallys_back_are_refused() {
    let tmp = TempDir::new("state-seals");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    for (user, password) in [
        ("alice", "alice-passphrase"),
        ("mallory", "mallory-passphrase"),
    ] {
        tally_ok(
            &["users", "add", user, "--password-stdin", "--data", d],
            Some(&format!("{password}\n")),
        );
    }
    let server = Server::start(&data, None);
    let mallory = login(&server, "mallory", "mallory-passphrase");
    rusqlite::Connection::open(data.join("state.db"))
        .unwrap()
        .execute_batch(
            "UPDATE users SET password_hash = (SELECT password_hash FROM users WHERE name = 'mallory')
                 WHERE name = 'alice';
             UPDATE users SET role = 'admin' WHERE name = 'mallory';",
        )
        .unwrap();

    // Alice's account with mallory's password, and the admin API with
    // mallory's token: refused, as the store is for a row it cannot vouch for.
    let (status, body, _) = try_login(&server, "alice", "mallory-passphrase", None);
    assert_eq!((status, code(&body)), (503, "store_unavailable"), "{body}");
    assert!(body.get("access_token").is_none());
    let r = client()
        .get(server.url("/v1/admin/blocks"))
        .bearer_auth(&mallory)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);

    // A critical incident names the rows; the log says what happened and
    // shows no password hash.
    eventually("an incident for the tampered rows", || {
        let list: Value = serde_json::from_str(&tally_ok(
            &["incident", "list", "--format", "json", "--data", d],
            None,
        ))
        .unwrap();
        list.as_array().unwrap().iter().any(|i| {
            i["severity"] == "critical"
                && i["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("fails its MAC"))
        })
    });
    let log = server.log_text();
    assert!(
        log.contains("state_tampered") && log.contains("\"alice\""),
        "{log}"
    );
    assert!(!log.contains("$argon2id"), "a password hash in the log");

    // The operator takes alice's row back; mallory's password no longer
    // opens it, hers does.
    tally_ok(
        &["users", "reset", "alice", "--password-stdin", "--data", d],
        Some("alice-passphrase-2\n"),
    );
    login(&server, "alice", "alice-passphrase-2");
    let (status, body, _) = try_login(&server, "alice", "mallory-passphrase", None);
    assert_eq!((status, code(&body)), (401, "invalid_credentials"));
    server.stop();

    // The store made to look as if it had never been sealed, with a user of
    // mallory's own: this node has seen it sealed, so it refuses to start
    // rather than seal that row.
    rusqlite::Connection::open(data.join("state.db"))
        .unwrap()
        .execute_batch(
            "DELETE FROM meta WHERE key = 'rows_sealed_at';
             UPDATE users SET mac = NULL;
             INSERT INTO users (name, password_hash, created_at, role)
                 SELECT 'eve', password_hash, 1, 'admin' FROM users WHERE name = 'mallory';",
        )
        .unwrap();
    let out = tally(&["users", "list", "--data", d], None);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seal marker") && err.contains("rows.sealed"),
        "{err}"
    );

    // Without this node's witness (a new node, say), the unsealed rows still
    // wait for an operator: nothing starts, and `tally state seal` lists
    // them, eve the admin among them, and seals nothing without --yes.
    std::fs::remove_file(data.join("rows.sealed")).unwrap();
    let out = tally(&["users", "list", "--data", d], None);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tally state seal"), "{err}");
    let out = tally(&["state", "seal", "--data", d], None);
    assert_eq!(out.status.code(), Some(1));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("eve (role admin)") && listed.contains("mallory (role admin)"),
        "{listed}"
    );
    // The operator removes eve, seals what is left, and takes mallory's
    // admin role away.
    rusqlite::Connection::open(data.join("state.db"))
        .unwrap()
        .execute_batch("DELETE FROM users WHERE name = 'eve';")
        .unwrap();
    let out = tally_ok(&["state", "seal", "--yes", "--data", d], None);
    assert!(out.contains("sealed 2 rows"), "{out}");
    assert!(!out.contains("eve"), "{out}");
    tally_ok(&["users", "role", "mallory", "user", "--data", d], None);
    let server = Server::start(&data, None);
    login(&server, "alice", "alice-passphrase-2");
    server.stop();
}
