//! Containment: blocks on subjects, tokens, client addresses (through a
//! trusted proxy's X-Forwarded-For) and devices, effective on a running server
//! within a second, with expiry and lifting.

mod support;

use support::*;

fn verdict(server: &Server, token: &str, headers: &[(&str, &str)]) -> String {
    let mut req = client().get(server.url("/v1/check")).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let v = resp.headers()["x-tally-verdict"]
        .to_str()
        .unwrap()
        .to_string();
    if v == "blocked_actor" {
        assert_eq!(resp.status(), 403);
    }
    v
}

#[test]
fn blocks_apply_within_a_second_and_expire() {
    let tmp = TempDir::new("containment");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(&cfg, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    let c = cfg.to_str().unwrap();
    tally_ok(
        &["users", "add", "alice", "--password-stdin", "--data", d],
        Some("pw-a\n"),
    );
    tally_ok(
        &["users", "add", "bob", "--password-stdin", "--data", d],
        Some("pw-b\n"),
    );
    let server = Server::start(&data, Some(&cfg));
    let ta = login(&server, "alice", "pw-a");
    let tb = login(&server, "bob", "pw-b");
    assert_eq!(verdict(&server, &ta, &[]), "ok");

    // A subject: every token of alice, on the next request.
    let out = tally_ok(
        &[
            "block",
            "add",
            "--subject",
            "alice",
            "--reason",
            "account takeover",
            "--actor",
            "soc",
            "--data",
            d,
            "--config",
            c,
        ],
        None,
    );
    let id: String = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    eventually("alice blocked", || {
        verdict(&server, &ta, &[]) == "blocked_actor"
    });
    assert_eq!(verdict(&server, &tb, &[]), "ok");

    // A client address, seen through the trusted proxy's X-Forwarded-For.
    tally_ok(
        &[
            "block",
            "add",
            "--ip",
            "203.0.113.0/24",
            "--reason",
            "scraper",
            "--data",
            d,
        ],
        None,
    );
    let via = |xff: &str| verdict(&server, &tb, &[("X-Forwarded-For", xff)]);
    eventually("range blocked", || via("203.0.113.9") == "blocked_actor");
    assert_eq!(via("198.51.100.1"), "ok");
    assert_eq!(via("203.0.113.9, 127.0.0.1"), "blocked_actor");
    // A client cannot hide behind a made-up hop in front of its real address.
    assert_eq!(via("198.51.100.1, 203.0.113.9"), "blocked_actor");

    // A device, for a while only.
    tally_ok(
        &[
            "block",
            "add",
            "--device",
            "dev-evil",
            "--reason",
            "stolen phone",
            "--for",
            "2s",
            "--data",
            d,
        ],
        None,
    );
    eventually("device blocked", || {
        verdict(&server, &tb, &[("X-Device-Id", "dev-evil")]) == "blocked_actor"
    });
    assert_eq!(verdict(&server, &tb, &[("X-Device-Id", "dev-ok")]), "ok");
    eventually("device block expired", || {
        verdict(&server, &tb, &[("X-Device-Id", "dev-evil")]) == "ok"
    });

    // A single token.
    let jti = payload(&tb)["jti"].as_str().unwrap().to_string();
    tally_ok(
        &[
            "block",
            "add",
            "--token",
            &jti,
            "--reason",
            "leaked in a ticket",
            "--data",
            d,
        ],
        None,
    );
    eventually("token blocked", || {
        verdict(&server, &tb, &[]) == "blocked_actor"
    });

    let list = tally_ok(&["block", "list", "--data", d], None);
    assert!(list.lines().next().unwrap().contains("REASON"), "{list}");
    assert!(
        list.contains("account takeover")
            && list.contains("soc")
            && list.contains("203.0.113.0/24"),
        "{list}"
    );
    assert!(
        !list.contains("dev-evil"),
        "an expired block is still listed:\n{list}"
    );

    // Lifting a block.
    tally_ok(&["block", "remove", &id, "--data", d], None);
    eventually("alice unblocked", || verdict(&server, &ta, &[]) == "ok");
    assert_eq!(
        tally(&["block", "remove", &id, "--data", d], None)
            .status
            .code(),
        Some(2)
    );

    // Bad input gets a clear error and changes nothing.
    let out = tally(
        &[
            "block",
            "add",
            "--ip",
            "10.0.0.1/8",
            "--reason",
            "x",
            "--data",
            d,
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.0/8"));
    let out = tally(
        &[
            "block",
            "add",
            "--ip",
            "10.0.0.0/8",
            "--subject",
            "x",
            "--reason",
            "x",
            "--data",
            d,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = tally(
        &[
            "block",
            "add",
            "--subject",
            "x",
            "--reason",
            "x",
            "--for",
            "soon",
            "--data",
            d,
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--for"));
    server.stop();

    // Without a trusted proxy, X-Forwarded-For is the client's own claim: ignored.
    let server = Server::start(&data, None);
    assert_eq!(
        verdict(&server, &ta, &[("X-Forwarded-For", "203.0.113.9")]),
        "ok"
    );
    server.stop();
}
