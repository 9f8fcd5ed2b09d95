//! DPoP (RFC 9449) end to end, with proofs made by PyJWT (an implementation
//! independent of tally's): a login with a proof yields a bound token, which
//! then passes only with a fresh proof by the same key for the same request.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

fn have_pyjwt() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn client_py(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dpop_client.py");
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
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn proof(dir: &Path, method: &str, url: &str, token: Option<&str>) -> String {
    client_py(&[
        "proof",
        dir.to_str().unwrap(),
        method,
        url,
        token.unwrap_or("-"),
    ])
}

fn check(server: &Server, auth: &str, proof: Option<&str>, path: &str) -> (u16, String) {
    let mut req = client()
        .get(server.url("/v1/check"))
        .header("Authorization", auth)
        .header("X-Original-URI", path)
        .header("X-Original-Method", "GET");
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.send().unwrap();
    (
        r.status().as_u16(),
        r.headers()["x-tally-verdict"].to_str().unwrap().to_string(),
    )
}

/// Whether PyJWT is here (with `CI=true` its absence fails the test).
fn pyjwt_or_skip() -> bool {
    if !have_pyjwt() {
        skip("PyJWT is missing");
        return false;
    }
    true
}

/// Two client keys made by the PyJWT client, in `tmp/k1` and `tmp/k2`; the
/// first one's public JWK.
fn two_client_keys(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf, Value) {
    let (k1, k2) = (tmp.join("k1"), tmp.join("k2"));
    std::fs::create_dir_all(&k1).unwrap();
    std::fs::create_dir_all(&k2).unwrap();
    let jwk: Value = serde_json::from_str(&client_py(&["keygen", k1.to_str().unwrap()])).unwrap();
    client_py(&["keygen", k2.to_str().unwrap()]);
    (k1, k2, jwk)
}

#[test]
fn dpop_bound_tokens_need_a_fresh_proof_by_their_key() {
    if !pyjwt_or_skip() {
        return;
    }
    let tmp = TempDir::new("dpop");
    let (k1, k2, jwk) = two_client_keys(tmp.path());
    let thumbprint = tally_core::jose::VerifyingKey::from_jwk(&jwk)
        .unwrap()
        .thumbprint();

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
    let server = Server::start(&data, None);
    let base = server.base.clone();

    // Login with a proof: a DPoP-bound token.
    let login_proof = proof(&k1, "POST", &format!("{base}/v1/login"), None);
    let resp = client()
        .post(server.url("/v1/login"))
        .header("DPoP", &login_proof)
        .json(&json!({"username": "alice", "password": "member-passphrase"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(payload(&token)["cnf"]["jkt"], thumbprint.as_str());
    let dpop = format!("DPoP {token}");
    let url = format!("{base}/orders");

    // A fresh proof by the key, for this request, with the token's hash.
    let good = proof(&k1, "GET", &url, Some(&token));
    assert_eq!(
        check(&server, &dpop, Some(&good), "/orders"),
        (200, "ok".into())
    );
    // The same proof again: replay.
    assert_eq!(
        check(&server, &dpop, Some(&good), "/orders"),
        (403, "binding_mismatch".into())
    );
    // Stolen token without the key: as a bearer token, with no proof, with
    // another key's proof, or with a proof for another request.
    assert_eq!(
        check(&server, &format!("Bearer {token}"), None, "/orders").1,
        "binding_mismatch"
    );
    assert_eq!(check(&server, &dpop, None, "/orders").1, "binding_mismatch");
    let other = proof(&k2, "GET", &url, Some(&token));
    assert_eq!(
        check(&server, &dpop, Some(&other), "/orders").1,
        "binding_mismatch"
    );
    let elsewhere = proof(&k1, "GET", &format!("{base}/admin"), Some(&token));
    assert_eq!(
        check(&server, &dpop, Some(&elsewhere), "/orders").1,
        "binding_mismatch"
    );
    // A proof made for another site, with the host claimed by an untrusted
    // client header: still not a proof for this request.
    let other_site = proof(&k1, "GET", "http://shop.example/orders", Some(&token));
    let r = client()
        .get(server.url("/v1/check"))
        .header("Authorization", &dpop)
        .header("DPoP", &other_site)
        .header("X-Forwarded-Host", "shop.example")
        .header("X-Original-URI", "/orders")
        .header("X-Original-Method", "GET")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-tally-verdict"], "binding_mismatch");
    let no_ath = proof(&k1, "GET", &url, None);
    assert_eq!(
        check(&server, &dpop, Some(&no_ath), "/orders").1,
        "binding_mismatch"
    );
    let login_again = proof(&k1, "POST", &format!("{base}/v1/login"), None);
    assert_eq!(
        check(&server, &dpop, Some(&login_again), "/orders").1,
        "binding_mismatch"
    );

    // An unbound token stays a bearer token, and the DPoP scheme cannot dress it up.
    let plain = login(&server, "alice", "member-passphrase");
    assert_eq!(
        check(&server, &format!("Bearer {plain}"), None, "/orders"),
        (200, "ok".into())
    );
    let p = proof(&k1, "GET", &url, Some(&plain));
    assert_eq!(
        check(&server, &format!("DPoP {plain}"), Some(&p), "/orders").1,
        "binding_mismatch"
    );

    // A bad proof at login is refused, not ignored.
    let resp = client()
        .post(server.url("/v1/login"))
        .header("DPoP", "garbage")
        .json(&json!({"username": "alice", "password": "member-passphrase"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"]["code"],
        "invalid_dpop_proof"
    );
    server.stop();
}

fn proof_with_nonce(
    dir: &Path,
    method: &str,
    url: &str,
    token: Option<&str>,
    nonce: &str,
) -> String {
    client_py(&[
        "proof",
        dir.to_str().unwrap(),
        method,
        url,
        token.unwrap_or("-"),
        "0",
        nonce,
    ])
}

/// With `dpop_nonce = true` every proof needs a current server nonce (RFC
/// 9449 sections 8 and 9), and a session started with a proof keeps its
/// refresh tokens bound to that key (section 5).
#[test]
fn server_nonces_and_key_bound_refresh_tokens() {
    if !pyjwt_or_skip() {
        return;
    }
    let tmp = TempDir::new("dpop-nonce");
    let (k1, k2, _) = two_client_keys(tmp.path());
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
    let config = tmp.path().join("tally.toml");
    std::fs::write(&config, "dpop_nonce = true\n").unwrap();
    let server = Server::start(&data, Some(&config));
    let base = server.base.clone();
    let login_url = format!("{base}/v1/login");
    let login_body = json!({"username": "alice", "password": "member-passphrase"});

    // A login proof without a nonce: 400 use_dpop_nonce, with the nonce to use.
    let r = client()
        .post(server.url("/v1/login"))
        .header("DPoP", proof(&k1, "POST", &login_url, None))
        .json(&login_body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_string();
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "use_dpop_nonce"
    );
    // A made-up nonce is no better.
    let r = client()
        .post(server.url("/v1/login"))
        .header(
            "DPoP",
            proof_with_nonce(&k1, "POST", &login_url, None, "bm9uY2U"),
        )
        .json(&login_body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "use_dpop_nonce"
    );
    // With the server's nonce: a bound token and a refresh token.
    let r = client()
        .post(server.url("/v1/login"))
        .header(
            "DPoP",
            proof_with_nonce(&k1, "POST", &login_url, None, &nonce),
        )
        .json(&login_body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let dpop = format!("DPoP {token}");
    let url = format!("{base}/orders");

    // At the gate: a proof without a nonce is answered with the challenge.
    let r = client()
        .get(server.url("/v1/check"))
        .header("Authorization", &dpop)
        .header("DPoP", proof(&k1, "GET", &url, Some(&token)))
        .header("X-Original-URI", "/orders")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-tally-verdict"], "binding_mismatch");
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let gate_nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_string();
    // With it: allowed, and the answer carries the next nonce.
    let r = client()
        .get(server.url("/v1/check"))
        .header("Authorization", &dpop)
        .header(
            "DPoP",
            proof_with_nonce(&k1, "GET", &url, Some(&token), &gate_nonce),
        )
        .header("X-Original-URI", "/orders")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-tally-verdict"], "ok");
    assert!(r.headers().contains_key("dpop-nonce"));

    // The refresh token is bound to k1: without a proof, or with k2's proof,
    // it is refused and stays unspent.
    let refresh_url = format!("{base}/v1/refresh");
    let refresh_with = |proof: Option<String>| {
        let mut req = client()
            .post(server.url("/v1/refresh"))
            .json(&json!({"refresh_token": refresh}));
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, body) = refresh_with(None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    let (status, body) = refresh_with(Some(proof_with_nonce(
        &k2,
        "POST",
        &refresh_url,
        None,
        &nonce,
    )));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    // The key holder can still use it (it was not spent, so this is no reuse),
    // and the new access token is bound to the same key.
    let (status, body) = refresh_with(Some(proof_with_nonce(
        &k1,
        "POST",
        &refresh_url,
        None,
        &nonce,
    )));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token2 = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(payload(&token2)["cnf"], payload(&token)["cnf"]);
    let r = client()
        .get(server.url("/v1/check"))
        .header("Authorization", format!("DPoP {token2}"))
        .header(
            "DPoP",
            proof_with_nonce(&k1, "GET", &url, Some(&token2), &gate_nonce),
        )
        .header("X-Original-URI", "/orders")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-tally-verdict"], "ok");
}
