//! The access log: every decision is recorded; a legal hold refuses deletion;
//! edits are detected by the hash chain.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn decisions_are_logged_held_and_tamper_evident() {
    let tmp = TempDir::new("access");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    tally_ok(
        &["users", "add", "alice", "--password-stdin", "--data", d],
        Some("member-passphrase\n"),
    );
    let server = Server::start(&data, None);
    let token = login(&server, "alice", "member-passphrase");
    for (tok, uri) in [(token.as_str(), "/account/address"), ("garbage", "/admin")] {
        client()
            .get(server.url("/v1/check"))
            .bearer_auth(tok)
            .header("X-Original-URI", uri)
            .header("X-Original-Method", "GET")
            .send()
            .unwrap();
    }
    let mut events: Vec<Value> = Vec::new();
    eventually("events written", || {
        events = tally_ok(&["access", "tail", "--data", d], None)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        events.len() >= 2
    });
    let ok = events
        .iter()
        .find(|e| e["verdict"] == "ok")
        .expect("the allowed request");
    assert_eq!(ok["subject"], "alice");
    assert_eq!(ok["path"], "/account/address");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["token_id"], payload(&token)["jti"]);
    let bad = events
        .iter()
        .find(|e| e["verdict"] == "malformed")
        .expect("the refused request");
    assert_eq!(
        (bad["path"].as_str(), bad["passed"].as_bool()),
        (Some("/admin"), Some(false))
    );
    let metrics = get_text(&server, "/metrics");
    assert!(
        metrics.contains("tally_access_events_dropped_total 0"),
        "{metrics}"
    );

    let verify = tally_ok(&["access", "verify", "--data", d], None);
    assert!(verify.contains("OK"), "{verify}");

    // A preservation order: nothing in range can be deleted, by tally or by hand.
    tally_ok(
        &[
            "access",
            "hold",
            "--from",
            "2000-01-01T00:00:00Z",
            "--until",
            "2100-01-01T00:00:00Z",
            "--reason",
            "preservation order 17/2026",
            "--data",
            d,
        ],
        None,
    );
    let holds = tally_ok(&["access", "holds", "--data", d], None);
    assert!(holds.contains("preservation order 17/2026"), "{holds}");
    let out = tally(
        &[
            "access",
            "purge",
            "--before",
            "2099-01-01T00:00:00Z",
            "--data",
            d,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("legal_hold"));
    let raw = rusqlite::Connection::open(data.join("access.db")).unwrap();
    raw.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    assert!(
        raw.execute("DELETE FROM events", []).is_err(),
        "a held event was deleted"
    );

    // Editing an event (after removing the database's own guard) is detected.
    raw.execute_batch(
        "DROP TRIGGER events_append_only;
         UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'alice', 'mallory') AS BLOB)
         WHERE body LIKE '%alice%';",
    )
    .unwrap();
    let out = tally(&["access", "verify", "--data", d], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("TAMPERED"));
    server.stop();
}
