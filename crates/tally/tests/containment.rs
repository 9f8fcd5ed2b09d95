//! Containment: blocks on subjects, tokens, client addresses (through a
//! trusted proxy's X-Forwarded-For) and devices, effective on a running server
//! within a second, with expiry and lifting.

mod support;

use std::time::Duration;
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
    init(d);
    add_user(d, "alice", "alice-passphrase");
    add_user(d, "bob", "bob-passphrase");
    let server = Server::start(&data, Some(&cfg));
    let ta = login(&server, "alice", "alice-passphrase");
    let tb = login(&server, "bob", "bob-passphrase");
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

    // A device, for a while only (long enough to be seen on a loaded
    // machine: the block counts from the command's start, in whole seconds).
    tally_ok(
        &[
            "block",
            "add",
            "--device",
            "dev-evil",
            "--reason",
            "stolen phone",
            "--for",
            "8s",
            "--data",
            d,
        ],
        None,
    );
    eventually("device blocked", || {
        verdict(&server, &tb, &[("X-Device-Id", "dev-evil")]) == "blocked_actor"
    });
    assert_eq!(verdict(&server, &tb, &[("X-Device-Id", "dev-ok")]), "ok");
    eventually_within("device block expired", Duration::from_secs(30), || {
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

/// The admin API: blocks and legal holds over HTTP, only for a tallied token
/// whose subject has the admin role right now; a forged admin token is
/// refused like any forgery.
#[test]
fn admin_api_manages_blocks_and_holds() {
    use serde_json::{Value, json};

    let tmp = TempDir::new("admin-api");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    init(d);
    // A signing key an insider kept a copy of.
    let insider = import_insider_key(tmp.path(), d, "k1");
    add_user(d, "alice", "alice-passphrase");
    add_user(d, "root", "root-passphrase");
    let out = tally(&["users", "role", "ghost", "admin", "--data", d], None);
    assert!(
        !out.status.success(),
        "no role for a user that does not exist"
    );
    tally_ok(&["users", "role", "root", "admin", "--data", d], None);
    let server = Server::start(&data, None);
    let c = client();
    let alice = login(&server, "alice", "alice-passphrase");
    let root = login(&server, "root", "root-passphrase");
    let forged = forge(&insider, "k1", &root, "forged-admin", "root");
    let status_and_code = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let verdict = r
            .headers()
            .get("x-tally-verdict")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().map(str::to_string);
        (status, verdict.or(code).unwrap_or_default())
    };
    let blocks = server.url("/v1/admin/blocks");

    // Who may not: nobody, a user, a forger holding the real key.
    assert_eq!(
        status_and_code(c.get(&blocks).send().unwrap()),
        (401, "missing".into())
    );
    assert_eq!(
        status_and_code(c.get(&blocks).bearer_auth(&alice).send().unwrap()),
        (403, "forbidden".into())
    );
    assert_eq!(
        status_and_code(c.get(&blocks).bearer_auth(&forged).send().unwrap()),
        (403, "not_issued".into())
    );

    // An administrator blocks alice: in force on this node at once.
    assert_eq!(verdict(&server, &alice, &[]), "ok");
    let r = c
        .post(&blocks)
        .bearer_auth(&root)
        .json(&json!({"kind": "subject", "value": "alice", "reason": "INC-7 scraping", "expires_in_secs": 3600}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let block: Value = r.json().unwrap();
    assert_eq!(block["actor"], "admin:root");
    assert_eq!(block["kind"], "subject");
    assert_eq!(verdict(&server, &alice, &[]), "blocked_actor");
    let listed: Value = c
        .get(&blocks)
        .bearer_auth(&root)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["blocks"].as_array().unwrap().len(), 1);
    assert!(tally_ok(&["block", "list", "--data", d], None).contains("INC-7 scraping"));
    // Bad requests name the problem.
    for bad in [
        json!({"kind": "planet", "value": "x", "reason": "r"}),
        json!({"kind": "ip", "value": "not-an-ip", "reason": "r"}),
        json!({"kind": "subject", "value": "bob", "reason": " "}),
        json!({"kind": "subject", "value": "bob", "reason": "r", "expires_in_secs": 0}),
        json!({"kind": "subject", "value": "bob", "reason": "r", "colour": "red"}),
    ] {
        let r = c
            .post(&blocks)
            .bearer_auth(&root)
            .json(&bad)
            .send()
            .unwrap();
        assert_eq!(status_and_code(r), (400, "invalid_request".into()), "{bad}");
    }
    // Lifting it.
    let one = format!("{blocks}/{}", block["id"]);
    assert_eq!(
        c.delete(&one).bearer_auth(&root).send().unwrap().status(),
        204
    );
    assert_eq!(
        c.delete(&one).bearer_auth(&root).send().unwrap().status(),
        404
    );
    assert_eq!(verdict(&server, &alice, &[]), "ok");

    // Legal holds.
    let holds = server.url("/v1/admin/holds");
    let now_ms = now() * 1000;
    let r = c
        .post(&holds)
        .bearer_auth(&root)
        .json(&json!({"from_ms": now_ms - 86_400_000, "until_ms": now_ms + 86_400_000, "reason": "preservation order 2026-17"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let hold: Value = r.json().unwrap();
    assert!(
        tally_ok(&["access", "holds", "--data", d], None).contains("preservation order 2026-17")
    );
    let r = c
        .post(&holds)
        .bearer_auth(&root)
        .json(&json!({"from_ms": 10, "until_ms": 5, "reason": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let one = format!("{holds}/{}", hold["id"]);
    assert_eq!(
        c.delete(&one).bearer_auth(&alice).send().unwrap().status(),
        403
    );
    // Ending a preservation order needs a reason, kept with the hold.
    assert_eq!(
        c.delete(&one).bearer_auth(&root).send().unwrap().status(),
        400
    );
    assert_eq!(
        c.delete(format!("{one}?reason=court%20order%20lifted"))
            .bearer_auth(&root)
            .send()
            .unwrap()
            .status(),
        204
    );
    let raw = rusqlite::Connection::open(data.join("access.db")).unwrap();
    let (by, why): (String, String) = raw
        .query_row(
            "SELECT released_by, release_reason FROM holds WHERE id = ?1",
            [hold["id"].as_i64().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (by.as_str(), why.as_str()),
        ("admin:root", "court order lifted")
    );
    let listed: Value = c
        .get(&holds)
        .bearer_auth(&root)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["holds"], json!([]));

    // The role is read on every request: taking it away works at once.
    tally_ok(&["users", "role", "root", "user", "--data", d], None);
    assert_eq!(
        status_and_code(c.get(&blocks).bearer_auth(&root).send().unwrap()),
        (403, "forbidden".into())
    );
}

/// A request refused by containment still has its token accounted for: the
/// gate examines it for the record (within a budget for all blocked
/// clients), so the access log, the detector and the incident report count
/// a forged token from a blocked address as forged, and a genuine one as
/// genuine; beyond the budget the token is recorded as not examined.
#[test]
fn tokens_refused_by_containment_are_examined_for_the_record() {
    use serde_json::Value;

    let tmp = TempDir::new("blocked-tokens");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let cfg = tmp.path().join("tally.toml");
    // Two examinations of unknown tokens at once for this address, and
    // none more.
    std::fs::write(
        &cfg,
        "trusted_proxies = [\"127.0.0.1\"]\nblocked_examine_per_sec = 0\nblocked_examine_burst = 2\n",
    )
    .unwrap();
    init(d);
    let insider = import_insider_key(tmp.path(), d, "k1");
    add_user(d, "alice", "alice-passw0rd");
    let server = Server::start(&data, Some(&cfg));
    let alice = login(&server, "alice", "alice-passw0rd");
    let mint = |jti: &str, sub: &str| forge(&insider, "k1", &alice, jti, sub);
    tally_ok(
        &[
            "block",
            "add",
            "--ip",
            "203.0.113.66",
            "--reason",
            "insider",
            "--data",
            d,
        ],
        None,
    );
    let from_blocked = &[("X-Forwarded-For", "203.0.113.66")];
    eventually("address blocked", || {
        verdict(&server, &alice, from_blocked) == "blocked_actor"
    });
    // The genuine token above is known to the registry and costs no
    // examination; two forged ones fit in the budget, the third does not;
    // a request without a token costs nothing either.
    // Whatever the examination finds, the client gets the same answer.
    let answer = |token: &str| {
        let r = client()
            .get(server.url("/v1/check"))
            .bearer_auth(token)
            .header("X-Forwarded-For", "203.0.113.66")
            .send()
            .unwrap();
        let verdict = r.headers()["x-tally-verdict"].to_str().unwrap().to_string();
        (r.status().as_u16(), verdict, r.text().unwrap())
    };
    let genuine_answer = answer(&alice);
    assert_eq!(
        (genuine_answer.0, genuine_answer.1.as_str()),
        (403, "blocked_actor")
    );
    for (token, what) in [
        (mint("forged-1", "bob"), "forged, examined"),
        (mint("forged-2", "carol"), "forged, examined"),
        (mint("forged-3", "dave"), "over the budget"),
    ] {
        assert_eq!(answer(&token), genuine_answer, "{what}");
    }
    let r = client()
        .get(server.url("/v1/check"))
        .header("X-Forwarded-For", "203.0.113.66")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    let events = || -> Vec<Value> {
        tally_ok(&["access", "tail", "--limit", "50", "--data", d], None)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["verdict"] == "blocked_actor")
            .collect()
    };
    eventually("the blocked requests are in the access log", || {
        let e = events();
        e.iter().any(|e| e["examined"]["verdict"] == "missing")
            && e.iter().any(|e| e["token_id"] == "forged-2")
            && e.iter().any(|e| e["examined"]["verdict"] == "unavailable")
    });
    let events = events();
    let find = |pred: &dyn Fn(&Value) -> bool| -> Value {
        events
            .iter()
            .find(|e| pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("no such event in {events:#?}"))
    };
    // Alice's genuine token: examined, the ledger tallies it.
    let genuine = find(&|e| e["subject"] == "alice");
    assert_eq!(genuine["examined"]["verdict"], "ok", "{genuine:#}");
    // The forged ones within the budget: not_issued, named by the key and
    // the subject their verified signature carries.
    for (jti, sub) in [("forged-1", "bob"), ("forged-2", "carol")] {
        let e = find(&|e| e["token_id"] == jti);
        assert_eq!(e["examined"]["verdict"], "not_issued", "{e:#}");
        assert_eq!(e["subject"], sub);
        assert_eq!(e["kid"], "k1");
    }
    // The third: not examined, so nothing about it is claimed.
    let over = find(&|e| e["examined"]["verdict"] == "unavailable" && e["subject"].is_null());
    assert!(
        over["examined"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not examined"),
        "{over:#}"
    );
    let missing = find(&|e| e["examined"]["verdict"] == "missing");
    assert!(missing["token_id"].is_null());

    // The detector saw the forgeries: an incident names the stolen key,
    // and its report counts both forged requests, and the one it could not
    // examine apart.
    let incident = || -> Option<i64> {
        let out = tally_ok(&["incident", "list", "--format", "json", "--data", d], None);
        let list: Value = serde_json::from_str(&out).ok()?;
        list.as_array()?
            .iter()
            .find(|i| i["title"].as_str().unwrap_or("").contains("k1"))
            .and_then(|i| i["id"].as_i64())
    };
    eventually("an incident for the stolen key", || incident().is_some());
    let id = incident().unwrap().to_string();
    let report = tally_ok(
        &["incident", "report", &id, "--format", "json", "--data", d],
        None,
    );
    let report: Value = serde_json::from_str(&report).unwrap();
    let a = &report["affected"];
    assert_eq!(a["forged_requests"], 2, "{a:#}");
    assert_eq!(a["forged_refused_by_containment"], 2, "{a:#}");
    assert_eq!(a["requests_unexamined"], 1, "{a:#}");
}
