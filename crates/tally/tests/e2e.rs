//! End to end over real HTTP against the `tally` binary: the attack table,
//! the insider's copy of the signing key, and Go interoperability of checkpoints.

mod support;

use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use serde_json::{Value, json};
use support::*;
use tally_core::jose::{Algorithm, SigningKey};

const ISSUER: &str = "https://tally.test";
const AUDIENCE: &str = "api";
const PASSWORD: &str = "correct horse battery staple";

/// Claims that pass every claim check, with a fresh `jti`.
fn good_claims(sub: &str) -> Value {
    let n = now();
    json!({
        "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": n + 600, "iat": n,
        "jti": format!("forged-{}", n as u128 * 1_000_000 + (rand_u32() as u128)),
        "client_id": "tally",
    })
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b).unwrap();
    u32::from_be_bytes(b)
}

fn with(mut claims: Value, key: &str, v: Value) -> String {
    claims[key] = v;
    claims.to_string()
}

fn hdr(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "kid": kid, "typ": "at+jwt"}).to_string()
}

struct Check {
    status: u16,
    verdict: String,
    subject: Option<String>,
    token_id: Option<String>,
}

fn check(server: &Server, token: Option<&str>) -> Check {
    let mut req = client()
        .get(server.url("/v1/check"))
        .header("X-Original-URI", "/account/address")
        .header("X-Original-Method", "GET");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Check {
        status: resp.status().as_u16(),
        verdict: h("x-tally-verdict").expect("every answer carries X-Tally-Verdict"),
        subject: h("x-tally-subject"),
        token_id: h("x-tally-token-id"),
    }
}

fn write_config(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("version = 1\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}"),
    )
    .unwrap();
    p
}

/// Logs in until the token is signed with `alg` (a key change reaches the
/// running server through its one-second reload).
fn login_until_alg(server: &Server, alg: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = login(server, "alice", PASSWORD);
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                t.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        if header["alg"] == alg {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "imported key never became active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Row = (&'static str, Option<String>, &'static str, u16);

#[test]
fn attack_table_over_http() {
    let tmp = TempDir::new("attacks");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let main_cfg = write_config(tmp.path(), "main.toml", "");

    // The insider's copies: an ES256 and an EdDSA key, imported into tally the
    // way an operator migrating from an existing issuer would.
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let es_der = es.to_pkcs8_der().unwrap();
    let ed_der = ed.to_pkcs8_der().unwrap();
    let es_pem = tmp.path().join("es.pem");
    let ed_pem = tmp.path().join("ed.pem");
    std::fs::write(&es_pem, pem(&es_der)).unwrap();
    std::fs::write(&ed_pem, pem(&ed_der)).unwrap();
    let insider_es = RawKey::from_pkcs8(&es_der);
    let insider_ed = RawKey::from_pkcs8(&ed_der);

    tally_ok(&["init", "--data", data_s], None);
    tally_ok(
        &[
            "keys",
            "import",
            "--kid",
            "insider-es",
            "--pem",
            es_pem.to_str().unwrap(),
            "--data",
            data_s,
        ],
        None,
    );
    tally_ok(
        &[
            "users",
            "add",
            "alice",
            "--password-stdin",
            "--data",
            data_s,
        ],
        Some(&format!("{PASSWORD}\n")),
    );

    let server = Server::start(&data, Some(&main_cfg));
    let t_es = login_until_alg(&server, "ES256");
    // Import the EdDSA key while the server runs: it becomes active, the ES256
    // key turns `retiring` and keeps verifying what it signed.
    tally_ok(
        &[
            "keys",
            "import",
            "--kid",
            "insider-ed",
            "--pem",
            ed_pem.to_str().unwrap(),
            "--data",
            data_s,
        ],
        None,
    );
    let t_ed = login_until_alg(&server, "EdDSA");
    let keys_list = tally_ok(&["keys", "list", "--data", data_s], None);
    assert!(
        keys_list.contains("insider-ed") && keys_list.contains("active"),
        "{keys_list}"
    );
    assert!(keys_list.contains("retiring"), "{keys_list}");

    // The JWKS publishes both verifying keys, and never a private member.
    let jwks: Value = jwks(&server);
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(
        kids.contains(&"insider-ed") && kids.contains(&"insider-es"),
        "{jwks}"
    );
    assert!(keys.iter().all(|k| k.get("d").is_none()));
    let ed_jwk = keys.iter().find(|k| k["kid"] == "insider-ed").unwrap();
    let ed_public = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ed_jwk["x"].as_str().unwrap(),
    )
    .unwrap();

    let p_ed = payload(&t_ed);
    let segs: Vec<&str> = t_ed.split('.').collect();
    let ed_sign = |h: &str, p: &str| jws(&insider_ed, h, p);
    let outsider = RawKey::from_pkcs8(
        &SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .to_pkcs8_der()
            .unwrap(),
    );

    // HS256 "signed" with the public key as the HMAC secret.
    let hs_input = format!(
        "{}.{}",
        b64u(hdr("HS256", "insider-ed").as_bytes()),
        b64u(good_claims("alice").to_string().as_bytes())
    );
    let hs_tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &ed_public),
        hs_input.as_bytes(),
    );
    let hs256 = format!("{hs_input}.{}", b64u(hs_tag.as_ref()));

    // A forged token whose signature's base64url uses '-' or '_', re-encoded
    // with the standard alphabet.
    let std_alphabet = loop {
        let t = ed_sign(
            &hdr("EdDSA", "insider-ed"),
            &good_claims("alice").to_string(),
        );
        let (input, sig) = t.rsplit_once('.').unwrap();
        if sig.contains('-') || sig.contains('_') {
            break format!("{input}.{}", sig.replace('-', "+").replace('_', "/"));
        }
    };

    let dup_exp = {
        let c = good_claims("alice");
        let s = c.to_string();
        let s = s.replacen('{', &format!("{{\"exp\":{},", now() + 100_000), 1);
        ed_sign(&hdr("EdDSA", "insider-ed"), &s)
    };
    let unsigned_none = format!(
        "{}.{}.",
        b64u(hdr("none", "insider-ed").as_bytes()),
        b64u(good_claims("alice").to_string().as_bytes())
    );
    let big = with(good_claims("alice"), "pad", json!("x".repeat(9 * 1024)));

    let rows: Vec<Row> = vec![
        ("no token", None, "missing", 401),
        (
            "alg none, unsigned",
            Some(unsigned_none),
            "unsupported_alg",
            401,
        ),
        (
            "alg none, signed",
            Some(ed_sign(
                &hdr("none", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "alg None, signed",
            Some(ed_sign(
                &hdr("None", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "alg NONE, signed",
            Some(ed_sign(
                &hdr("NONE", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "HS256 with the public key as secret",
            Some(hs256),
            "unsupported_alg",
            401,
        ),
        (
            "EdDSA key used as ES256",
            Some(ed_sign(
                &hdr("ES256", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "unknown kid",
            Some(ed_sign(
                &hdr("EdDSA", "no-such-key"),
                &good_claims("alice").to_string(),
            )),
            "unknown_key",
            401,
        ),
        (
            "kid with ../",
            Some(ed_sign(
                &hdr("EdDSA", "../../../etc/passwd"),
                &good_claims("alice").to_string(),
            )),
            "unknown_key",
            401,
        ),
        (
            "kid with SQL",
            Some(ed_sign(
                &hdr("EdDSA", "' OR '1'='1' --"),
                &good_claims("alice").to_string(),
            )),
            "unknown_key",
            401,
        ),
        (
            "header with embedded jwk",
            Some(ed_sign(
                &json!({"alg":"EdDSA","kid":"insider-ed","jwk":ed_jwk}).to_string(),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "header with jku",
            Some(ed_sign(
                &json!({"alg":"EdDSA","kid":"insider-ed","jku":"https://evil.example/jwks"})
                    .to_string(),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "header with x5u",
            Some(ed_sign(
                &json!({"alg":"EdDSA","kid":"insider-ed","x5u":"https://evil.example/cert"})
                    .to_string(),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        (
            "unknown crit",
            Some(ed_sign(
                &json!({"alg":"EdDSA","kid":"insider-ed","crit":["exp"]}).to_string(),
                &good_claims("alice").to_string(),
            )),
            "unsupported_alg",
            401,
        ),
        ("duplicate exp member", Some(dup_exp), "malformed", 401),
        (
            "base64 with padding",
            Some(format!("{}=.{}.{}", segs[0], segs[1], segs[2])),
            "malformed",
            401,
        ),
        ("base64 with + and /", Some(std_alphabet), "malformed", 401),
        (
            "trailing data (four segments)",
            Some(format!("{t_ed}.AAAA")),
            "malformed",
            401,
        ),
        (
            "two segments",
            Some(format!("{}.{}", segs[0], segs[1])),
            "malformed",
            401,
        ),
        (
            "empty signature",
            Some(format!("{}.{}.", segs[0], segs[1])),
            "malformed",
            401,
        ),
        (
            "9 KiB token",
            Some(ed_sign(&hdr("EdDSA", "insider-ed"), &big)),
            "malformed",
            401,
        ),
        (
            "signed by a key not in the key set, real kid",
            Some(jws(
                &outsider,
                &hdr("EdDSA", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "bad_signature",
            401,
        ),
        (
            "signed by a key not in the key set, own kid",
            Some(jws(
                &outsider,
                &hdr("EdDSA", "outsider"),
                &good_claims("alice").to_string(),
            )),
            "unknown_key",
            401,
        ),
        // The breach: valid signatures from the real key, never issued.
        (
            "forged with the real key, never issued",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &good_claims("alice").to_string(),
            )),
            "not_issued",
            403,
        ),
        (
            "forged for a member who does not exist",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &good_claims("ghost-4711").to_string(),
            )),
            "not_issued",
            403,
        ),
        (
            "forged with the retiring ES256 key",
            Some(jws(
                &insider_es,
                &hdr("ES256", "insider-es"),
                &good_claims("alice").to_string(),
            )),
            "not_issued",
            403,
        ),
        (
            "forged and expired: forgery wins",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(good_claims("alice"), "exp", json!(now() - 3600)),
            )),
            "not_issued",
            403,
        ),
        (
            "forged with nbf in the future: forgery wins",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(good_claims("alice"), "nbf", json!(now() + 3600)),
            )),
            "not_issued",
            403,
        ),
        (
            "forged for another audience: forgery wins",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(good_claims("alice"), "aud", json!("other")),
            )),
            "not_issued",
            403,
        ),
        (
            "forged for another issuer: forgery wins",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(good_claims("alice"), "iss", json!("https://evil.example")),
            )),
            "not_issued",
            403,
        ),
        (
            "forged without jti",
            Some(ed_sign(&hdr("EdDSA", "insider-ed"), &{
                let mut c = good_claims("alice");
                c.as_object_mut().unwrap().remove("jti");
                c.to_string()
            })),
            "not_issued",
            403,
        ),
        (
            "recorded jti, claims altered, re-signed",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(p_ed.clone(), "sub", json!("admin")),
            )),
            "altered",
            403,
        ),
        (
            "recorded jti, exp extended, re-signed",
            Some(ed_sign(
                &hdr("EdDSA", "insider-ed"),
                &with(p_ed.clone(), "exp", json!(now() + 86_400 * 365)),
            )),
            "altered",
            403,
        ),
        (
            "same claims, other JSON bytes, re-signed",
            Some(ed_sign(
                std::str::from_utf8(
                    &base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        segs[0],
                    )
                    .unwrap(),
                )
                .unwrap(),
                &serde_json::to_string_pretty(&p_ed).unwrap(),
            )),
            "altered",
            403,
        ),
        (
            "ES256 (r, n-s) twin of an issued token",
            Some(es256_twin(&t_es)),
            "altered",
            403,
        ),
        ("issued EdDSA token", Some(t_ed.clone()), "ok", 200),
        (
            "issued ES256 token, key now retiring",
            Some(t_es.clone()),
            "ok",
            200,
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, want, status) in &rows {
        // Twice: the first sight and the cached path must agree.
        for round in 0..2 {
            let got = check(&server, token.as_deref());
            if got.verdict != *want || got.status != *status {
                failures.push(format!(
                    "{name} (round {round}): got {} {}, want {status} {want}",
                    got.status, got.verdict
                ));
            }
            if *want == "ok" {
                assert_eq!(got.subject.as_deref(), Some("alice"));
                assert!(got.token_id.is_some());
            } else {
                assert!(got.subject.is_none() && got.token_id.is_none(), "{name}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "attack table failures:\n{}",
        failures.join("\n")
    );
    let t_ed_id = p_ed["jti"].as_str().unwrap().to_string();
    assert_eq!(
        check(&server, Some(&t_ed)).token_id.as_deref(),
        Some(t_ed_id.as_str())
    );

    // Forgeries are logged as such, with the key that made them.
    eventually("the forgery logged", || {
        let log = server.log_text();
        log.contains("forged_token") && log.contains("kid=insider-ed")
    });
    let log = server.log_text();
    assert!(!log.contains(&t_ed), "a token appeared in the log");

    // Metrics count the verdicts.
    let metrics = get_text(&server, "/metrics");
    assert!(
        metrics.contains("tally_gate_decisions_total{verdict=\"not_issued\"} 16"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_gate_decisions_total{verdict=\"altered\"} 8"),
        "{metrics}"
    );
    assert_eq!(server.stop().code(), Some(0));

    // Claim checks for really issued tokens, through configuration changes on
    // the same data directory.
    let other_aud = tmp.path().join("aud.toml");
    std::fs::write(
        &other_aud,
        format!("issuer = \"{ISSUER}\"\naudience = \"billing\"\n"),
    )
    .unwrap();
    let server = Server::start(&data, Some(&other_aud));
    let c = check(&server, Some(&t_ed));
    assert_eq!((c.status, c.verdict.as_str()), (401, "wrong_audience"));
    server.stop();

    let other_iss = tmp.path().join("iss.toml");
    std::fs::write(
        &other_iss,
        format!("issuer = \"https://other.test\"\naudience = \"{AUDIENCE}\"\n"),
    )
    .unwrap();
    let server = Server::start(&data, Some(&other_iss));
    let c = check(&server, Some(&t_ed));
    assert_eq!((c.status, c.verdict.as_str()), (401, "wrong_issuer"));
    server.stop();

    let short = write_config(
        tmp.path(),
        "short.toml",
        // Long enough to be checked once while valid, even on a busy machine.
        "token_ttl_secs = 10\nleeway_secs = 0\n",
    );
    let server = Server::start(&data, Some(&short));
    let t_short = login(&server, "alice", PASSWORD);
    assert_eq!(check(&server, Some(&t_short)).verdict, "ok");
    let exp = payload(&t_short)["exp"].as_i64().unwrap();
    while now() <= exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = check(&server, Some(&t_short));
    assert_eq!((c.status, c.verdict.as_str()), (401, "expired"));
    server.stop();

    // After a restart the registry is rebuilt from the verified ledger (no
    // leeway here, so the short-lived token is expired, not within skew).
    let server = Server::start(&data, Some(&short));
    assert_eq!(check(&server, Some(&t_ed)).verdict, "ok");
    assert_eq!(check(&server, Some(&es256_twin(&t_es))).verdict, "altered");
    // Refused, but named for what it is: anyone holding the issued token can
    // make its twin, so it is no evidence of a stolen key.
    let body: serde_json::Value = client()
        .get(server.url("/v1/check"))
        .bearer_auth(es256_twin(&t_es))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("signature malleability"), "{message}");
    assert_eq!(check(&server, Some(&t_short)).verdict, "expired");
    server.stop();
    let verify = tally_ok(&["ledger", "verify", "--data", data_s], None);
    assert!(verify.contains("OK"), "{verify}");
}

#[test]
fn errors_are_json_with_stable_codes() {
    let tmp = TempDir::new("errors");
    let data = tmp.path().join("data");
    init(data.to_str().unwrap());
    tally_ok(
        &[
            "users",
            "add",
            "bob",
            "--password-stdin",
            "--data",
            data.to_str().unwrap(),
        ],
        Some("bob-passphrase\n"),
    );
    tally_ok(
        &[
            "users",
            "role",
            "bob",
            "auditor",
            "--data",
            data.to_str().unwrap(),
        ],
        None,
    );
    let server = Server::start(&data, None);
    let auditor = login(&server, "bob", "bob-passphrase");
    let c = client();
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            c.post(server.url("/v1/login"))
                .json(&json!({"username": "bob", "password": "wrong"})),
            401,
            "invalid_credentials",
        ),
        (
            c.post(server.url("/v1/login"))
                .json(&json!({"username": "nobody", "password": "wrong"})),
            401,
            "invalid_credentials",
        ),
        (
            c.post(server.url("/v1/login"))
                .body("{not json")
                .header("content-type", "application/json"),
            400,
            "invalid_request",
        ),
        (
            c.post(server.url("/v1/login"))
                .json(&json!({"username": "bob", "password": "bob-passphrase", "extra": 1})),
            400,
            "invalid_request",
        ),
        (
            c.get(server.url("/v1/ledger/proof/inclusion?token_id=nope")),
            404,
            "not_found",
        ),
        (
            c.get(server.url("/v1/ledger/proof/consistency?from=5&to=2")),
            400,
            "out_of_range",
        ),
        (
            c.get(server.url("/v1/ledger/proof/consistency?from=x")),
            400,
            "invalid_request",
        ),
        (
            c.get(server.url("/v1/ledger/entries?start=100&end=101"))
                .bearer_auth(&auditor),
            400,
            "out_of_range",
        ),
        (
            c.get(server.url("/v1/ledger/entries?start=0&end=1")),
            401,
            "missing",
        ),
        (c.get(server.url("/no/such/path")), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Unknown user and wrong password read the same.
    let a: Value = c
        .post(server.url("/v1/login"))
        .json(&json!({"username": "bob", "password": "x"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let b: Value = c
        .post(server.url("/v1/login"))
        .json(&json!({"username": "zed", "password": "x"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(a, b);
    let ready: Value = c.get(server.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["status"], "ready");
    let api: Value = c
        .get(server.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    assert!(api["paths"]["/v1/check"].is_object());
    server.stop();
}

/// Go's `golang.org/x/mod/sumdb/note` verifies a checkpoint fetched from a
/// running server, with the verifier key `tally ledger key` prints.
#[test]
fn checkpoint_verifies_with_go_sumdb_note() {
    let gopath = std::env::var("TALLY_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    let have_go = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        && std::path::Path::new(&gopath)
            .join("src/golang.org/x/mod/sumdb/note")
            .exists();
    if !have_go {
        skip("go and golang.org/x/mod are not installed");
        return;
    }
    let tmp = TempDir::new("go");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    init(data_s);
    tally_ok(
        &[
            "users",
            "add",
            "carol",
            "--password-stdin",
            "--data",
            data_s,
        ],
        Some("carol-passphrase\n"),
    );
    let server = Server::start(&data, None);
    for _ in 0..3 {
        login(&server, "carol", "carol-passphrase");
    }
    let note = get_text(&server, "/v1/ledger/checkpoint");
    let served_key = get_text(&server, "/v1/ledger/key");
    server.stop();
    let vkey = tally_ok(&["ledger", "key", "--data", data_s], None);
    assert_eq!(vkey.trim(), served_key.trim());
    assert!(note.lines().nth(1) == Some("3"), "{note}");

    let main_go = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/notecheck/main.go");
    let run_go = |vkey: &str, input: &str| {
        let mut child = std::process::Command::new("go")
            .args(["run", main_go, vkey])
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOCACHE", tmp.path().join("gocache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = run_go(vkey.trim(), &note);
    assert!(
        ok.status.success(),
        "Go rejected our checkpoint: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text_end = note.find("\n\n").unwrap() + 1;
    assert_eq!(String::from_utf8_lossy(&ok.stdout), &note[..text_end]);
    // One changed byte in the body: Go must refuse it.
    let tampered = note.replacen("\n3\n", "\n4\n", 1);
    let bad = run_go(vkey.trim(), &tampered);
    assert!(!bad.status.success(), "Go accepted a tampered checkpoint");
}

/// Migrating from an existing issuer: an RSA key (PKCS#8 PEM) is imported and
/// signs RS256 tokens that pass; P-384 and RSA-1024 keys are refused with a
/// clear error; `keys list` shows the table.
#[test]
fn import_rsa_and_refuse_weak_or_unsupported_keys() {
    let tmp = TempDir::new("import");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../tally-core/testdata/jose");
    tally_ok(&["init", "--data", data_s], None);
    for (file, needle) in [("rsa1024.pk8.pem", "2048"), ("p384.pk8.pem", "unsupported")] {
        let out = tally(
            &[
                "keys",
                "import",
                "--kid",
                "weak",
                "--pem",
                &format!("{testdata}/{file}"),
                "--data",
                data_s,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{file} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{file}: {err}");
    }
    tally_ok(
        &[
            "keys",
            "import",
            "--kid",
            "legacy-rsa",
            "--pem",
            &format!("{testdata}/rsa2048.pk8.pem"),
            "--data",
            data_s,
        ],
        None,
    );
    // The same kid twice is refused.
    let again = tally(
        &[
            "keys",
            "import",
            "--kid",
            "legacy-rsa",
            "--pem",
            &format!("{testdata}/ed25519.pk8.pem"),
            "--data",
            data_s,
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(2));
    tally_ok(
        &["users", "add", "dave", "--password-stdin", "--data", data_s],
        Some("dave-passphrase\n"),
    );
    let list = tally_ok(&["keys", "list", "--data", data_s], None);
    let header = list.lines().next().unwrap();
    for col in ["KID", "ALG", "STATE", "CREATED"] {
        assert!(header.contains(col), "{list}");
    }
    let rsa_line = list.lines().find(|l| l.starts_with("legacy-rsa")).unwrap();
    assert!(
        rsa_line.contains("RS256") && rsa_line.contains("active") && rsa_line.contains("imported"),
        "{list}"
    );
    assert_eq!(
        list.lines().filter(|l| l.contains(" active ")).count(),
        1,
        "{list}"
    );

    let server = Server::start(&data, None);
    let t = login(&server, "dave", "dave-passphrase");
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            t.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header,
        json!({"alg": "RS256", "kid": "legacy-rsa", "typ": "at+jwt"})
    );
    let c = check(&server, Some(&t));
    assert_eq!(
        (c.status, c.verdict.as_str(), c.subject.as_deref()),
        (200, "ok", Some("dave"))
    );
    // The insider's copy of the RSA key mints a perfect RS256 token: refused.
    let raw = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read_to_string(format!("{testdata}/rsa2048.pk8.pem"))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap(),
    )
    .unwrap();
    let input = format!(
        "{}.{}",
        b64u(hdr("RS256", "legacy-rsa").as_bytes()),
        b64u(good_claims("dave").to_string().as_bytes())
    );
    let mut sig = vec![0u8; raw.public_modulus_len()];
    raw.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let forged = format!("{input}.{}", b64u(&sig));
    let c = check(&server, Some(&forged));
    assert_eq!((c.status, c.verdict.as_str()), (403, "not_issued"));
    server.stop();
}

/// `tally ledger verify` checks checkpoints with a key derived from the sealed
/// ledger key (or one pinned with `--key`), never with a public key that the
/// state database merely claims.
#[test]
fn ledger_verify_trusts_only_the_sealed_or_pinned_key() {
    let tmp = TempDir::new("verify-key");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    init(data_s);
    tally_ok(
        &["users", "add", "erin", "--password-stdin", "--data", data_s],
        Some("erin-passphrase\n"),
    );
    let server = Server::start(&data, None);
    login(&server, "erin", "erin-passphrase");
    login(&server, "erin", "erin-passphrase");
    server.stop();
    let vkey = tally_ok(&["ledger", "key", "--data", data_s], None);
    let vkey = vkey.trim();
    let pinned = tally_ok(&["ledger", "verify", "--key", vkey, "--data", data_s], None);
    assert!(
        pinned.contains("OK") && pinned.contains("entries      2"),
        "{pinned}"
    );

    let name = vkey.split('+').next().unwrap();
    let (impostor, _) = tally_core::note::NoteSigner::generate(name).unwrap();
    let out = tally(
        &[
            "ledger",
            "verify",
            "--key",
            &impostor.verifier_key(),
            "--data",
            data_s,
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a checkpoint verified under another key"
    );

    // Swap the stored public key: verify must not be talked into trusting it.
    let state = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let n = state
        .execute(
            "UPDATE keys SET public = ?1 WHERE purpose = 'ledger'",
            [impostor.verifier_key()],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(state);
    let out = tally(&["ledger", "verify", "--data", data_s], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match the sealed ledger key"),
        "{err}"
    );
}

/// Editing a ledger row under a running server is reported within seconds,
/// even with no issuance going on: readiness fails with `ledger_tampered`,
/// issuance stops (no token is handed out unrecorded), and the log says so.
#[test]
fn tampering_under_a_running_server_is_reported_and_stops_issuance() {
    let tmp = TempDir::new("live-tamper");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    init(data_s);
    tally_ok(
        &["users", "add", "fay", "--password-stdin", "--data", data_s],
        Some("fay-passphrase\n"),
    );
    let server = Server::start(&data, None);
    let t = login(&server, "fay", "fay-passphrase");
    login(&server, "fay", "fay-passphrase");
    let ready = client().get(server.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);

    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = db
        .execute(
            "UPDATE ledger SET record = CAST(record || x'00' AS BLOB) WHERE idx = 0",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = client().get(server.url("/readyz")).send().unwrap();
        if resp.status() == 503 {
            let body: Value = resp.json().unwrap();
            assert_eq!(body["error"]["code"], "ledger_tampered");
            assert!(
                !body.to_string().contains("index"),
                "finding leaked to callers: {body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "tampering never reported");
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = client()
        .post(server.url("/v1/login"))
        .json(&json!({"username": "fay", "password": "fay-passphrase"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "ledger_tampered");
    assert!(body.get("access_token").is_none());
    // Tokens already in the registry (verified records) still decide normally.
    assert_eq!(check(&server, Some(&t)).verdict, "ok");
    eventually("the tampering logged", || {
        let log = server.log_text();
        log.contains("ledger tampered") && log.contains("index 0")
    });
    server.stop();
    let out = tally(&["ledger", "verify", "--data", data_s], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("index 0"));
}

/// Regression: a wrong (but well-formed) TALLY_MASTER_KEY must not seal new
/// keys the real master key cannot open; the command refuses and changes nothing.
#[test]
fn a_wrong_master_key_changes_nothing() {
    let tmp = TempDir::new("wrong-master");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    tally_ok(&["init", "--data", d], None);
    // Each key's kid and state (the listing's AGE column moves on between
    // two runs).
    let keys = || -> Vec<(String, String)> {
        tally_ok(&["keys", "list", "--data", d], None)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[2].to_string())
            })
            .collect()
    };
    let before = keys();
    assert_eq!(before.len(), 1, "{before:?}");
    let out = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--data", d])
        .env("TALLY_MASTER_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not open the keys"), "{err}");
    assert_eq!(keys(), before);
    let server = Server::start(&data, None);
    server.stop();
}
