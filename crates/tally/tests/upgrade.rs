//! Upgrade: a data directory written by the release before the crate
//! restructuring (commit 50f5721) opens, verifies and serves with this build.
//! `tests/fixtures/make-datadir-v1.sh` made the directory with that release's
//! binary (`datadir-v1.tar.gz`) and wrote down what it holds
//! (`datadir-v1.expect.json`): every check here compares with that file.
//! The tests work on unpacked copies; the committed fixture stays as it is.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn expect() -> Value {
    let path = fixtures().join("datadir-v1.expect.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rest of the line of `text` that starts with `key` and a space.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).filter(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        .trim()
}

fn int(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The rows of a table `print_table` printed, cut at the header's columns.
fn table(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no table in {out:?}"));
    let names: Vec<&str> = header.split_whitespace().collect();
    let starts: Vec<usize> = names
        .iter()
        .scan(0, |from, n| {
            let at = *from + header[*from..].find(n).unwrap();
            *from = at + n.len();
            Some(at)
        })
        .collect();
    lines
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let end = starts.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                    let cell = l.get(starts[i].min(end)..end).unwrap_or("");
                    (n.to_string(), cell.trim().to_string())
                })
                .collect()
        })
        .collect()
}

/// `tally ledger verify`: OK, with the entries and checkpoints counted.
fn verify_ledger(d: &str) -> (u64, u64, String) {
    let out = tally_ok(&["ledger", "verify", "--data", d], None);
    assert!(field(&out, "result").starts_with("OK"), "{out}");
    (
        field(&out, "entries").parse().unwrap(),
        field(&out, "checkpoints").parse().unwrap(),
        field(&out, "root").to_string(),
    )
}

/// `tally access verify`: OK, with the events counted.
fn verify_access(d: &str) -> u64 {
    let out = tally_ok(&["access", "verify", "--data", d], None);
    assert!(field(&out, "result").starts_with("OK"), "{out}");
    field(&out, "events")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The size and root of a signed checkpoint note.
fn size_and_root(note: &str) -> (u64, String) {
    let lines: Vec<&str> = note.lines().collect();
    assert!(lines.len() >= 3, "not a checkpoint: {note:?}");
    (lines[1].parse().unwrap(), lines[2].to_string())
}

#[test]
fn the_cli_reads_and_verifies_a_data_directory_of_the_previous_release() {
    let before = std::fs::read(tarball()).unwrap();
    let expect = expect();
    let tmp = TempDir::new("upgrade-cli");
    let data = unpack(&tmp);
    let d = data.to_str().unwrap();

    // The ledger: every leaf recomputed, every checkpoint verified, with the
    // key derived from the sealed ledger key.
    let ledger = &expect["ledger"];
    assert_eq!(
        verify_ledger(d),
        (
            int(&ledger["entries"]),
            int(&ledger["checkpoints"]),
            text(&ledger["root"]).to_string()
        )
    );
    assert_eq!(
        tally_ok(&["ledger", "key", "--data", d], None).trim(),
        text(&ledger["key"])
    );
    let note = tally_ok(&["ledger", "checkpoint", "--data", d], None);
    assert_eq!(
        size_and_root(&note),
        (
            int(&ledger["checkpoint_size"]),
            text(&ledger["checkpoint_root"]).to_string()
        )
    );
    assert_eq!(
        note.lines().next(),
        text(&ledger["key"]).split('+').next(),
        "the checkpoint's origin"
    );

    // Users.
    let mut users: Vec<String> = tally_ok(&["users", "list", "--data", d], None)
        .lines()
        .map(str::to_string)
        .collect();
    users.sort();
    let mut want: Vec<String> = expect["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| text(&u["name"]).to_string())
        .collect();
    want.sort();
    assert_eq!(users, want);

    // Token-signing keys: the same kids, algorithms and states (the active
    // key may since have passed its maximum age: a note after the state).
    let mut keys: Vec<(String, String, String)> =
        table(&tally_ok(&["keys", "list", "--data", d], None))
            .into_iter()
            .map(|r| {
                let state = r["STATE"].trim_end_matches(" (over max age)").to_string();
                (r["KID"].clone(), r["ALG"].clone(), state)
            })
            .collect();
    keys.sort();
    let mut want: Vec<(String, String, String)> = expect["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                text(&k["kid"]).to_string(),
                text(&k["alg"]).to_string(),
                text(&k["state"]).to_string(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(keys, want);

    // Incidents, with their detections.
    let list: Value = serde_json::from_str(&tally_ok(
        &["incident", "list", "--format", "json", "--data", d],
        None,
    ))
    .unwrap();
    let list = list.as_array().unwrap();
    let want = expect["incidents"].as_array().unwrap();
    assert_eq!(list.len(), want.len(), "{list:?}");
    for (got, want) in list.iter().zip(want) {
        for k in ["id", "title", "severity", "state", "aware_at"] {
            assert_eq!(got[k], want[k], "incident {}: {k}", want["id"]);
        }
        let id = want["id"].to_string();
        let shown: Value = serde_json::from_str(&tally_ok(
            &["incident", "show", &id, "--format", "json", "--data", d],
            None,
        ))
        .unwrap();
        let dets: Vec<Value> = shown["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let x = &x["detection"];
                json!({"rule": x["rule"], "key": x["key"], "severity": x["severity"], "count": x["count"]})
            })
            .collect();
        assert_eq!(Value::from(dets), want["detections"], "incident {id}");
    }

    // The access log's hash chain.
    assert_eq!(verify_access(d), int(&expect["access_log"]["events"]));

    // Containment blocks.
    let blocks: Vec<Value> = table(&tally_ok(&["block", "list", "--data", d], None))
        .into_iter()
        .map(|r| {
            json!({
                "id": r["ID"].parse::<u64>().unwrap(),
                "kind": r["KIND"],
                "value": r["VALUE"],
                "by": r["BY"],
                "reason": r["REASON"],
            })
        })
        .collect();
    assert_eq!(Value::from(blocks), expect["blocks"]);

    assert!(
        std::fs::read(tarball()).unwrap() == before,
        "the committed fixture changed"
    );
}

#[test]
fn the_server_serves_a_data_directory_of_the_previous_release() {
    let expect = expect();
    let tmp = TempDir::new("upgrade-serve");
    let data = unpack(&tmp);
    let d = data.to_str().unwrap();
    let ledger = &expect["ledger"];
    let size = int(&ledger["checkpoint_size"]);
    let events = int(&expect["access_log"]["events"]);
    // The blocked address reaches the gate as a trusted proxy reports it.
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(&cfg, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();

    let server = Server::start(&data, Some(&cfg));
    let c = client();
    let mut ready = Value::Null;
    eventually_within("/readyz is ready", Duration::from_secs(30), || {
        match c.get(server.url("/readyz")).send() {
            Ok(r) if r.status() == 200 => {
                ready = r.json().unwrap();
                true
            }
            _ => false,
        }
    });
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(int(&ready["ledger_size"]), size, "{ready}");
    assert_eq!(
        size_and_root(&get_text(&server, "/v1/ledger/checkpoint")),
        (size, text(&ledger["checkpoint_root"]).to_string())
    );
    assert_eq!(
        get_text(&server, "/v1/ledger/key").trim(),
        text(&ledger["key"])
    );

    // Every user logs in with the password the old release stored, under
    // the issuer it fixed, and the new token passes the gate. Those
    // passwords are shorter than today's minimum for a new one (12
    // characters): the minimum applies when a password is set, never at
    // login.
    let users = expect["users"].as_array().unwrap();
    let mut tokens = Vec::new();
    for u in users {
        let (name, password) = (text(&u["name"]), text(&u["password"]));
        assert!(password.chars().count() < 12, "{name}: {password}");
        let wrong = c
            .post(server.url("/v1/login"))
            .json(&json!({"username": name, "password": format!("{password}-not")}))
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 401, "{name} with a wrong password");
        let token = login(&server, name, password);
        let claims = payload(&token);
        assert_eq!(claims["iss"], expect["issuer"], "{claims}");
        assert_eq!(claims["sub"], name, "{claims}");
        assert_eq!(checked(&server, &token), (200, "ok".to_string()), "{name}");
        tokens.push((name, text(&u["role"]), token));
    }

    // The roles the old release stored: the admin API for `admin`, the
    // ledger's entries for `admin` and `auditor`, neither for `user`.
    let status = |path: &str, token: &str| -> (u16, Value) {
        let r = c.get(server.url(path)).bearer_auth(token).send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    for (name, role, token) in &tokens {
        let (admin_api, blocks) = status("/v1/admin/blocks", token);
        let (entries, _) = status("/v1/ledger/entries?start=0&end=1", token);
        let want = match *role {
            "admin" => (200, 200),
            "auditor" => (403, 200),
            "user" => (403, 403),
            other => panic!("unexpected role {other} in the fixture"),
        };
        assert_eq!((admin_api, entries), want, "{name}, role {role}");
        if *role == "admin" {
            // The blocks in force, as the admin API lists them.
            let listed: Vec<Value> = blocks["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    json!({"id": b["id"], "kind": b["kind"], "value": b["value"],
                           "by": b["actor"], "reason": b["reason"]})
                })
                .collect();
            assert_eq!(Value::from(listed), expect["blocks"]);
        }
    }

    // A blocked address is refused, whoever's token it carries.
    let (_, _, token) = tokens
        .iter()
        .find(|(_, role, _)| *role == "user")
        .expect("a user with the role user in the fixture");
    for b in expect["blocks"].as_array().unwrap() {
        if b["kind"] != "ip" {
            continue;
        }
        let addr = text(&b["value"]).split('/').next().unwrap();
        let r = c
            .get(server.url("/v1/check"))
            .bearer_auth(token)
            .header("X-Forwarded-For", addr)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-tally-verdict"], "blocked_actor", "{addr}");
    }

    // The API client the old release registered introspects the new token.
    let client_id = text(&expect["client"]["id"]);
    let introspect = |secret: &str| {
        let r = c
            .post(server.url("/v1/introspect"))
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token.as_str())])
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (s, body) = introspect(text(&expect["client"]["secret"]));
    assert_eq!((s, &body["active"]), (200, &json!(true)), "{body}");
    assert_eq!(introspect("not-the-secret").0, 401);

    // The new issuances extend the old tree.
    let grown = size + users.len() as u64;
    eventually("the checkpoint covers the new logins", || {
        size_and_root(&get_text(&server, "/v1/ledger/checkpoint")).0 == grown
    });

    let exit = server.stop();
    assert!(exit.success(), "tally serve exited with {exit:?}");

    // Stopped, the directory still verifies, old records and new.
    let (entries, _, _) = verify_ledger(d);
    assert_eq!(entries, grown);
    assert!(verify_access(d) > events);
}
