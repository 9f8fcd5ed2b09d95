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
    idp_with_prefix("", args)
}

fn idp_with_prefix(prefix: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_idp.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .env("KID_PREFIX", prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
    if !have_pyjwt() {
        skip("PyJWT is not installed");
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
    let jwks: Value = jwks(&server);
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

/// Serves `body()` over HTTP/1.1 on a loopback port, one connection at a time.
fn serve_jwks(body: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = body.lock().unwrap().clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// An issuer whose JWKS is fetched from a URL: keys it publishes later are
/// picked up at the next refresh.
#[test]
fn jwks_from_a_url_is_fetched_and_refreshed() {
    if !have_pyjwt() {
        return;
    }
    let tmp = TempDir::new("external-url");
    let idp_dir = tmp.path().join("idp2");
    std::fs::create_dir_all(&idp_dir).unwrap();
    let idp_s = idp_dir.to_str().unwrap();
    idp_with_prefix("url-", &["keys", idp_s]);
    let full: Value =
        serde_json::from_str(&std::fs::read_to_string(idp_dir.join("jwks.json")).unwrap()).unwrap();
    // At first the provider publishes only its RSA key.
    let rs_only = json!({"keys": full["keys"].as_array().unwrap().iter().filter(|k| k["kid"] == "url-idp-rs").cloned().collect::<Vec<_>>()});
    let served = std::sync::Arc::new(std::sync::Mutex::new(rs_only.to_string()));
    let port = serve_jwks(served.clone());
    let iss2 = "https://idp2.shop.test";
    let data = tmp.path().join("data");
    init(data.to_str().unwrap());
    tally_ok(
        &[
            "users",
            "add",
            "alice",
            "--password-stdin",
            "--data",
            data.to_str().unwrap(),
        ],
        Some("member-passphrase\n"),
    );
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            "audience = \"api\"\n\n[[issuers]]\nname = \"url-idp\"\niss = \"{iss2}\"\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\njwks_refresh_secs = 1\ncredential_env = \"TALLY_TEST_IDP_CREDENTIAL\"\n"
        ),
    )
    .unwrap();
    let n = now();
    let specs = json!([
        {"key": "idp-rs", "claims": {"iss": iss2, "sub": "alice", "aud": "api", "iat": n, "exp": n + 600, "jti": "url-rs"}},
        {"key": "idp-es", "claims": {"iss": iss2, "sub": "alice", "aud": "api", "iat": n, "exp": n + 600, "jti": "url-es"}},
    ]);
    let minted = idp_with_prefix("url-", &["mint", idp_s, &specs.to_string()]);
    let t: Vec<&str> = minted.lines().collect();
    let server = Server::start_with_env(
        &data,
        Some(&cfg),
        &[("TALLY_TEST_IDP_CREDENTIAL", CREDENTIAL)],
    );
    assert_eq!(register(&server, Some(CREDENTIAL), t[0]).0, 201);
    assert_eq!(check(&server, t[0]).1, "ok");
    // The ES256 key is not published yet: its token does not verify.
    assert_eq!(
        register(&server, Some(CREDENTIAL), t[1]).1["error"]["code"],
        "invalid_token"
    );
    *served.lock().unwrap() = full.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, b) = register(&server, Some(CREDENTIAL), t[1]);
        if s == 201 {
            break;
        }
        assert_eq!(b["error"]["code"], "invalid_token");
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never fetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(check(&server, t[1]).1, "ok");
    server.stop();
}
