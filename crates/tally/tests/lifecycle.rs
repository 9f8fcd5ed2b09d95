//! Key custody end to end on a running server: offboarding, compromise with
//! revocation, rotation, custodians, the audit log, and automatic rotation at
//! maximum age followed by retirement.

mod support;

use serde_json::{Value, json};
use support::*;
use tally_core::jose::{Algorithm, SigningKey};

fn state_of(list: &str, kid: &str) -> String {
    let line = list
        .lines()
        .find(|l| l.starts_with(kid))
        .unwrap_or_else(|| panic!("{kid} not listed:\n{list}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn offboarding_compromise_and_rotation_on_a_running_server() {
    let tmp = TempDir::new("lifecycle");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let insider = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let der = insider.to_pkcs8_der().unwrap();
    let pem_path = tmp.path().join("k1.pem");
    std::fs::write(&pem_path, pem(&der)).unwrap();
    let insider = RawKey::from_pkcs8(&der);

    tally_ok(&["init", "--data", d], None);
    tally_ok(
        &[
            "keys",
            "import",
            "--kid",
            "k1",
            "--pem",
            pem_path.to_str().unwrap(),
            "--data",
            d,
        ],
        None,
    );
    tally_ok(
        &[
            "keys",
            "custodian",
            "add",
            "k1",
            "mallory",
            "--actor",
            "ciso",
            "--data",
            d,
        ],
        None,
    );
    tally_ok(
        &[
            "keys",
            "custodian",
            "add",
            "k1",
            "olivia",
            "--actor",
            "ciso",
            "--data",
            d,
        ],
        None,
    );
    tally_ok(
        &["users", "add", "alice", "--password-stdin", "--data", d],
        Some("alice-passphrase\n"),
    );
    let list = tally_ok(&["keys", "list", "--data", d], None);
    assert!(
        list.lines().next().unwrap().contains("CUSTODIANS"),
        "{list}"
    );
    assert!(list.contains("mallory,olivia"), "{list}");

    let server = Server::start(&data, None);
    let before = now();
    let t1 = login(&server, "alice", "alice-passphrase");
    assert_eq!(kid_of(&t1), "k1");
    assert_eq!(checked(&server, &t1), (200, "ok".into()));

    // Mallory kept a copy of k1 and mints a token: refused, and counted.
    let claims = payload(&t1);
    let mut forged = claims.clone();
    forged["jti"] = json!("forged-by-mallory");
    forged["sub"] = json!("admin");
    let forged = jws(
        &insider,
        &json!({"alg":"EdDSA","kid":"k1","typ":"at+jwt"}).to_string(),
        &forged.to_string(),
    );
    assert_eq!(checked(&server, &forged), (403, "not_issued".into()));
    // The server books sightings of forgeries in state.db once a second.
    let sightings = tally_store::StateStore::open(&data.join("state.db")).unwrap();
    eventually("the forgery booked", || {
        sightings.forgery_sightings("k1").unwrap().map(|s| s.0) == Some(1)
    });
    drop(sightings);

    // Mallory leaves: k1 is rotated at once; olivia guards the new key.
    let out = tally_ok(
        &[
            "keys", "offboard", "mallory", "--actor", "ciso", "--data", d,
        ],
        None,
    );
    assert!(
        out.contains("custody ended   k1") && out.contains("rotated"),
        "{out}"
    );
    let mut t2 = String::new();
    let mut k1_tokens = 1; // t1, plus any issued before the server reloaded
    eventually("a token signed by the new key", || {
        t2 = login(&server, "alice", "alice-passphrase");
        let done = kid_of(&t2) != "k1";
        k1_tokens += usize::from(!done);
        done
    });
    let k2 = kid_of(&t2);
    let list = tally_ok(&["keys", "list", "--data", d], None);
    assert_eq!(state_of(&list, "k1"), "retiring");
    assert_eq!(state_of(&list, &k2), "active");
    let k2_line = list.lines().find(|l| l.starts_with(&k2)).unwrap();
    assert!(
        k2_line.ends_with("olivia"),
        "custodians did not carry over: {list}"
    );
    // Tokens k1 signed before stay valid while it retires.
    assert_eq!(checked(&server, &t1), (200, "ok".into()));

    // k1 turns out compromised since before t1 was issued: t1 is revoked on
    // its next request, t2 (another key) is untouched, and the command says
    // how many forgeries with k1 were already refused.
    let since = format!("{}", before - 1);
    let out = tally_ok(
        &[
            "keys",
            "compromise",
            "k1",
            "--since",
            &since,
            "--actor",
            "ciso",
            "--data",
            d,
        ],
        None,
    );
    assert!(
        out.contains(&format!("revoked         {k1_tokens} unexpired token")),
        "{out}"
    );
    assert!(
        out.contains("forged          1 validly signed token"),
        "{out}"
    );
    eventually("t1 revoked", || {
        checked(&server, &t1) == (403, "revoked".into())
    });
    assert_eq!(checked(&server, &t2), (200, "ok".into()));
    assert_eq!(checked(&server, &forged), (403, "not_issued".into()));

    // A plain rotation: k2 retires, its token stays valid.
    let out = tally_ok(
        &[
            "keys", "rotate", "--alg", "ES256", "--actor", "ciso", "--data", d,
        ],
        None,
    );
    assert!(out.contains("new active key"), "{out}");
    let mut t3 = String::new();
    eventually("an ES256 token", || {
        t3 = login(&server, "alice", "alice-passphrase");
        kid_of(&t3) != k2
    });
    assert_eq!(checked(&server, &t3), (200, "ok".into()));
    assert_eq!(checked(&server, &t2), (200, "ok".into()));

    // A restart keeps every decision.
    server.stop();
    let server = Server::start(&data, None);
    assert_eq!(checked(&server, &t1), (403, "revoked".into()));
    assert_eq!(checked(&server, &t2), (200, "ok".into()));
    assert_eq!(checked(&server, &t3), (200, "ok".into()));
    server.stop();

    let list = tally_ok(&["keys", "list", "--data", d], None);
    assert_eq!(state_of(&list, "k1"), "compromised");
    assert_eq!(state_of(&list, &k2), "retiring");
    assert_eq!(
        list.lines().filter(|l| l.contains(" active ")).count(),
        1,
        "{list}"
    );
    let log = tally_ok(&["keys", "log", "--data", d], None);
    for needle in [
        "custodian_added",
        "offboarded",
        "rotated_for_offboarding",
        "compromised",
        "rotated",
        "ciso",
        "mallory",
    ] {
        assert!(
            log.contains(needle),
            "{needle} missing from the key log:\n{log}"
        );
    }
    let out = tally(&["keys", "compromise", "no-such-kid", "--data", d], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token-signing key with kid no-such-kid")
    );
}

#[test]
fn keys_rotate_at_max_age_and_retire_when_their_tokens_expired() {
    let tmp = TempDir::new("auto-rotate");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        "token_ttl_secs = 1\nleeway_secs = 0\nkey_max_age_secs = 2\n",
    )
    .unwrap();
    init(d);
    tally_ok(
        &["users", "add", "bob", "--password-stdin", "--data", d],
        Some("bob-passphrase\n"),
    );
    let first = tally_ok(&["keys", "list", "--data", d], None);
    let k1 = first
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let server = Server::start(&data, Some(&cfg));
    eventually("automatic rotation and retirement", || {
        let list = tally_ok(&["keys", "list", "--data", d], None);
        state_of(&list, &k1) == "retired"
    });
    let t = login(&server, "bob", "bob-passphrase");
    assert_ne!(kid_of(&t), k1);
    let log = tally_ok(&["keys", "log", "--data", d], None);
    assert!(
        log.contains("rotated_at_max_age") && log.contains("retired"),
        "{log}"
    );
    // The retired key is gone from the JWKS (the server reloads its keys
    // just after writing the retirement).
    eventually("the retired key gone from the JWKS", || {
        let jwks: Value = jwks(&server);
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != k1.as_str())
    });
    server.stop();
}
