//! External issuers, with tokens minted by PyJWT (another ecosystem's JOSE
//! library): a registered token passes the gate; an unregistered one with a
//! perfectly valid signature is `not_issued`; a token for a subject outside the
//! directory is never registered (`unknown_subject`).

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::*;

const CREDENTIAL: &str = "idp-credential-0123456789abcdef";
const IDP_ISS: &str = "https://idp.shop.test";

fn have_pyjwt() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn idp(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_idp.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn register(server: &Server, credential: Option<&str>, token: &str) -> (u16, Value) {
    let mut req = client()
        .post(server.url("/v1/issuances"))
        .json(&json!({"token": token}));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

fn check(server: &Server, token: &str) -> (u16, String, Option<String>) {
    let resp = client()
        .get(server.url("/v1/check"))
        .bearer_auth(token)
        .send()
        .unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    (
        resp.status().as_u16(),
        h("x-tally-verdict").unwrap(),
        h("x-tally-subject"),
    )
}

#[test]
fn pyjwt_tokens_are_guarded_once_registered() {
    let required = std::env::var("TALLY_REQUIRE_PYJWT").is_ok_and(|v| v == "1");
    if !have_pyjwt() {
        assert!(
            !required,
            "TALLY_REQUIRE_PYJWT=1 but python3 with PyJWT and cryptography is missing"
        );
        eprintln!("skipping: PyJWT is not installed");
        return;
    }
    let tmp = TempDir::new("external");
    let idp_dir = tmp.path().join("idp");
    std::fs::create_dir_all(&idp_dir).unwrap();
    let idp_s = idp_dir.to_str().unwrap();
    idp(&["keys", idp_s]);
    std::fs::write(
        tmp.path().join("members.txt"),
        "# members of the shop\nalice\nbob\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            "audience = \"api\"\n\n[[issuers]]\nname = \"shop-idp\"\niss = \"{IDP_ISS}\"\njwks_file = \"{}\"\ncredential_env = \"TALLY_TEST_IDP_CREDENTIAL\"\nsubjects_file = \"{}\"\n",
            idp_dir.join("jwks.json").display(),
            tmp.path().join("members.txt").display()
        ),
    )
    .unwrap();

    let n = now();
    let claims = |sub: &str, jti: &str| json!({"iss": IDP_ISS, "sub": sub, "aud": "api", "iat": n, "exp": n + 600, "jti": jti});
    let specs = json!([
        {"key": "idp-es", "claims": claims("alice", "reg-es")},
        {"key": "idp-rs", "claims": claims("bob", "reg-rs")},
        {"key": "idp-es", "claims": claims("alice", "never-registered")},
        {"key": "idp-es", "claims": claims("ghost-4711", "ghost")},
        {"key": "idp-es", "claims": {"iss": IDP_ISS, "sub": "alice", "aud": "api", "exp": n + 600}},
        {"key": "idp-es", "claims": {"iss": IDP_ISS, "sub": "alice", "aud": "api", "exp": n - 600, "jti": "expired"}},
        {"key": "rogue", "claims": claims("alice", "rogue")},
        {"key": "idp-es", "claims": {"iss": "http://127.0.0.1:8080", "sub": "alice", "aud": "api", "exp": n + 600, "jti": "spoof"}},
    ]);
    let minted = idp(&["mint", idp_s, &specs.to_string()]);
    let t: Vec<&str> = minted.lines().collect();
    let [
        reg_es,
        reg_rs,
        unregistered,
        ghost,
        no_jti,
        expired,
        rogue,
        spoof,
    ] = t[..]
    else {
        panic!("expected 8 tokens, got {minted}");
    };

    // Without the credential the server refuses to start, naming the variable.
    let out = tally(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TALLY_TEST_IDP_CREDENTIAL"));

    let server = Server::start_with_env(
        &data,
        Some(&cfg),
        &[("TALLY_TEST_IDP_CREDENTIAL", CREDENTIAL)],
    );
    // Before registration: valid signature, no record.
    assert_eq!(check(&server, reg_es).1, "not_issued");

    let (s, b) = register(&server, Some(CREDENTIAL), reg_es);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["token_id"], "reg-es");
    // The gate remembered the refusal by nothing: the token now passes.
    assert_eq!(
        check(&server, reg_es),
        (200, "ok".into(), Some("alice".into()))
    );
    assert_eq!(register(&server, Some(CREDENTIAL), reg_rs).0, 201);
    assert_eq!(
        check(&server, reg_rs),
        (200, "ok".into(), Some("bob".into()))
    );

    // Never registered: refused although PyJWT signed it with the real key.
    assert_eq!(
        check(&server, unregistered),
        (403, "not_issued".into(), None)
    );
    // Subjects outside the directory are never registered.
    let (s, b) = register(&server, Some(CREDENTIAL), ghost);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("unknown_subject"))
    );
    assert_eq!(check(&server, ghost).1, "not_issued");
    // Bad registrations get stable codes and change nothing.
    for (token, status, code) in [
        (no_jti, 400, "missing_jti"),
        (expired, 400, "invalid_token"),
        (rogue, 400, "invalid_token"),
        (spoof, 400, "invalid_token"),
        (reg_es, 409, "duplicate_token_id"),
        ("not-a-token", 400, "invalid_token"),
    ] {
        let (s, b) = register(&server, Some(CREDENTIAL), token);
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{b}"
        );
    }
    assert_eq!(register(&server, None, unregistered).0, 401);
    assert_eq!(
        register(&server, Some("wrong-credential-0123456789"), unregistered).0,
        401
    );
    let resp = client()
        .post(server.url("/v1/issuances"))
        .bearer_auth(CREDENTIAL)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A rogue key under the IdP's kid, and the IdP's key claiming tally's issuer.
    assert_eq!(check(&server, rogue).1, "bad_signature");
    assert_eq!(check(&server, spoof).1, "not_issued");
    // tally's JWKS publishes only tally's keys.
    let jwks: Value = client()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| !k["kid"].as_str().unwrap().starts_with("idp-")),
        "{jwks}"
    );
    server.stop();

    // After a restart: the ledger still tallies the registered tokens only.
    let server = Server::start_with_env(
        &data,
        Some(&cfg),
        &[("TALLY_TEST_IDP_CREDENTIAL", CREDENTIAL)],
    );
    assert_eq!(check(&server, reg_es).1, "ok");
    assert_eq!(check(&server, unregistered).1, "not_issued");
    server.stop();
    let verify = tally_ok(
        &["ledger", "verify", "--data", data.to_str().unwrap()],
        None,
    );
    assert!(verify.contains("entries      2"), "{verify}");
}
