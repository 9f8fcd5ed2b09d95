//! Real nginx in front of tally and a recording upstream, configured by
//! docs/nginx.conf itself (ports and file paths substituted): every forged,
//! altered, revoked or expired token is refused at nginx with tally's verdict,
//! nginx fails closed when tally is down, and the upstream sees exactly the
//! legitimate requests, each with tally's subject and token id (never a value
//! the client sent).
//!
//! Skipped when nginx (with `auth_request`) is not installed; with `CI=true`
//! that fails.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::nginx::{Nginx, nginx_binary};
use support::*;
use tally_core::jose::{Algorithm, SigningKey};

const ISSUER: &str = "https://tally.test";
const AUDIENCE: &str = "api";
const PASSWORD: &str = "correct horse battery staple";

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    /// Every header whose name, with `_` read as `-`, starts with `x-tally-`:
    /// lower-cased name and value, sorted.
    tally: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The protected application: records each request, answers `upstream-ok`.
struct Upstream {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let record = record.clone();
                std::thread::spawn(move || serve_upstream(conn, &record));
            }
        });
        Upstream { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A minimal HTTP/1.x server loop on one connection.
fn serve_upstream(conn: TcpStream, record: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut close = parts.next() != Some("HTTP/1.1");
        let mut tally = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if name.replace('_', "-").starts_with("x-tally-") {
                tally.push((name, value));
            } else if name == "content-length" {
                length = value.parse().unwrap_or(0);
            } else if name == "connection" && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        tally.sort();
        // Recorded before answering: once a client has nginx's 200, the
        // request is in the record.
        record.lock().unwrap().push(Seen {
            method,
            path,
            tally,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nupstream-ok";
        if writer.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// A TCP relay in front of tally that keeps every byte nginx sends it: the
/// check subrequests exactly as tally receives them.
struct Spy {
    addr: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Spy {
    fn start(target: &str) -> Spy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let record = bytes.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut from_nginx) = conn else { continue };
                // tally down: the connection is dropped, as a refused one would be.
                let Ok(mut to_tally) = TcpStream::connect(&target) else {
                    continue;
                };
                let (Ok(mut back_to_nginx), Ok(mut from_tally)) =
                    (from_nginx.try_clone(), to_tally.try_clone())
                else {
                    continue;
                };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = from_nginx.read(&mut buf) {
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to_tally.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_tally.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_tally, &mut back_to_nginx);
                    let _ = back_to_nginx.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Spy { addr, bytes }
    }

    /// The requests received so far, each as its header block.
    fn requests(&self) -> Vec<String> {
        let bytes = self.bytes.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .split("\r\n\r\n")
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// nginx's answer to a client.
#[derive(Debug)]
struct Answer {
    status: u16,
    verdict: Option<String>,
    challenge: Option<String>,
    body: String,
}

fn send(
    nginx: &Nginx,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut req = client().request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", nginx.base),
    );
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if method == "POST" {
        req = req.body("amount=100");
    }
    let resp = req.send().unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: resp.status().as_u16(),
        verdict: h("x-tally-verdict"),
        challenge: h("www-authenticate"),
        body: resp.text().unwrap(),
    }
}

fn get(nginx: &Nginx, path: &str, token: Option<&str>) -> Answer {
    send(nginx, "GET", path, token, &[])
}

/// Asserts a refusal at nginx: status, verdict header and JSON body.
fn assert_refused(a: &Answer, status: u16, verdict: &str, what: &str) {
    assert_eq!(
        (a.status, a.verdict.as_deref()),
        (status, Some(verdict)),
        "{what}: {a:?}"
    );
    let body: Value = serde_json::from_str(&a.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {a:?}"));
    assert_eq!(body["error"]["code"], verdict, "{what}: {a:?}");
    if status == 401 {
        assert!(
            a.challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what}: 401 without a Bearer challenge: {a:?}"
        );
    }
}

fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("version = 1\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}"),
    )
    .unwrap();
    p
}

fn decode(segment: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// Logs in until the token is signed by the key `kid` (the imported key
/// becomes active through the server's key reload).
fn login_with_kid(server: &Server, kid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = login(server, "alice", PASSWORD);
        let header: Value = serde_json::from_str(&decode(t.split('.').next().unwrap())).unwrap();
        if header["kid"] == kid {
            return t;
        }
        assert!(Instant::now() < deadline, "{kid} never became active");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the upstream must see for a legitimate request by `token`.
fn legit(method: &str, path: &str, token: &str, body: &[u8]) -> Seen {
    let jti = payload(token)["jti"].as_str().unwrap().to_string();
    Seen {
        method: method.into(),
        path: path.into(),
        tally: vec![
            ("x-tally-subject".into(), "alice".into()),
            ("x-tally-token-id".into(), jti),
            ("x-tally-verdict".into(), "ok".into()),
        ],
        body: body.to_vec(),
    }
}

#[test]
fn nginx_auth_request_refuses_forgeries_before_the_upstream() {
    let Some(bin) = nginx_binary() else {
        skip("nginx (with http_auth_request_module) is not installed");
        return;
    };

    let tmp = TempDir::new("nginx");
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let main_cfg = write_config(tmp.path(), "main.toml", "");

    // The insider's copy of the real signing key, imported as tally's active key.
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let key_pem = tmp.path().join("insider.pem");
    std::fs::write(&key_pem, pem(&der)).unwrap();
    let insider = RawKey::from_pkcs8(&der);
    tally_ok(&["init", "--data", data_s], None);
    tally_ok(
        &[
            "keys",
            "import",
            "--kid",
            "insider",
            "--pem",
            key_pem.to_str().unwrap(),
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

    let upstream = Upstream::start();
    let server = Server::start(&data, Some(&main_cfg));
    // nginx -> spy -> tally: the spy shows what the check subrequests carry.
    let spy = Spy::start(server.base.strip_prefix("http://").unwrap());
    let nginx = Nginx::from_doc(&bin, &tmp.path().join("nginx-1"), &spy.addr, &upstream.addr);
    let mut expected: Vec<Seen> = Vec::new();

    let token = login_with_kid(&server, "insider");
    let claims = payload(&token);
    let header = decode(token.split('.').next().unwrap());
    // Claims that pass every claim check, with a jti tally never issued.
    let forged_count = std::cell::Cell::new(0);
    let fresh_claims = |sub: &str| {
        let n = now();
        forged_count.set(forged_count.get() + 1);
        json!({
            "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": n + 600, "iat": n,
            "jti": format!("forged-{n}-{}", forged_count.get()), "client_id": "tally",
        })
        .to_string()
    };

    // A legitimately issued token passes, with tally's subject and token id.
    let a = get(&nginx, "/legit/1?page=2", Some(&token));
    assert_eq!((a.status, a.body.as_str()), (200, "upstream-ok"), "{a:?}");
    expected.push(legit("GET", "/legit/1?page=2", &token, b""));
    assert_eq!(upstream.seen(), expected);

    // The body goes upstream (only the check subrequest goes without it).
    let a = send(&nginx, "POST", "/legit/2", Some(&token), &[]);
    assert_eq!(a.status, 200, "{a:?}");
    expected.push(legit("POST", "/legit/2", &token, b"amount=100"));
    assert_eq!(upstream.seen(), expected);

    // Identity headers sent by the client are overwritten with tally's, in any
    // letter case; names with underscores never get through.
    let a = send(
        &nginx,
        "GET",
        "/legit/3",
        Some(&token),
        &[
            ("X-Tally-Subject", "admin"),
            ("x-tally-token-id", "someone-elses-jti"),
            ("X-TALLY-VERDICT", "ok-admin"),
            ("X_Tally_Subject", "admin"),
        ],
    );
    assert_eq!(a.status, 200, "{a:?}");
    expected.push(legit("GET", "/legit/3", &token, b""));
    assert_eq!(upstream.seen(), expected);

    // Refusals: (what, Authorization token, status, verdict).
    let mut altered_claims = claims.clone();
    altered_claims["sub"] = json!("admin");
    let mut extended = claims.clone();
    extended["exp"] = json!(now() + 86_400 * 365);
    let outsider = RawKey::from_pkcs8(
        &SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .to_pkcs8_der()
            .unwrap(),
    );
    let (input, _) = token.rsplit_once('.').unwrap();
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing"),
        ("malformed", Some("not-a-token".into()), 401, "malformed"),
        (
            "issued token with its signature cut",
            Some(format!("{input}.")),
            401,
            "malformed",
        ),
        (
            "alg none, unsigned",
            Some(format!(
                "{}.{}.",
                b64u(
                    json!({"alg": "none", "kid": "insider", "typ": "at+jwt"})
                        .to_string()
                        .as_bytes()
                ),
                b64u(fresh_claims("alice").as_bytes())
            )),
            401,
            "unsupported_alg",
        ),
        (
            "signed by another key under the real kid",
            Some(jws(&outsider, &header, &fresh_claims("alice"))),
            401,
            "bad_signature",
        ),
        (
            "forged with the real key, never issued",
            Some(jws(&insider, &header, &fresh_claims("alice"))),
            403,
            "not_issued",
        ),
        (
            "forged with the real key for admin",
            Some(jws(&insider, &header, &fresh_claims("admin"))),
            403,
            "not_issued",
        ),
        (
            "recorded jti, subject changed, re-signed",
            Some(jws(&insider, &header, &altered_claims.to_string())),
            403,
            "altered",
        ),
        (
            "recorded jti, exp extended, re-signed",
            Some(jws(&insider, &header, &extended.to_string())),
            403,
            "altered",
        ),
    ];
    for (what, t, status, verdict) in &cases {
        let a = get(&nginx, "/refused", t.as_deref());
        assert_refused(&a, *status, verdict, what);
    }

    // A forged token with the client's own identity headers: refused all the same.
    let forged = jws(&insider, &header, &fresh_claims("admin"));
    let a = send(
        &nginx,
        "POST",
        "/admin/orders?id=42",
        Some(&forged),
        &[("X-Tally-Subject", "admin"), ("X-Tally-Verdict", "ok")],
    );
    assert_refused(&a, 403, "not_issued", "forged + X-Tally-Subject: admin");
    // tally's forgery report names what the client asked for (X-Original-*).
    let report = r#"/admin/orders?id=42""#;
    let reported = |log: &str| {
        log.lines().any(|l| {
            l.contains("forged_token") && l.contains(r#"method="POST""#) && l.contains(report)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reported(&server.log_text()) {
        assert!(
            Instant::now() < deadline,
            "no forgery report with {report}:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A client cannot reach the check location itself.
    let a = get(&nginx, "/_tally/check", Some(&token));
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(upstream.seen(), expected, "a refused request got through");

    // What tally received: one bodiless `GET /v1/check` per request to nginx
    // (a forwarded body would show up as the start of the next "request"),
    // with the original URI and method, and the client's Authorization.
    let checks = spy.requests();
    // (3 legitimate, the refusals, the forged POST; /_tally/check is not one.)
    assert_eq!(checks.len(), 3 + cases.len() + 1, "{checks:#?}");
    for c in &checks {
        let lower = c.to_ascii_lowercase();
        assert!(c.starts_with("GET /v1/check HTTP/1.1\r\n"), "{c}");
        assert!(!lower.contains("\r\ncontent-length:"), "{c}");
        assert!(!lower.contains("\r\ntransfer-encoding:"), "{c}");
        assert!(!c.contains("amount=100"), "{c}");
    }
    for (uri, method) in [
        ("/legit/1?page=2", "GET"),
        ("/legit/2", "POST"),
        ("/admin/orders?id=42", "POST"),
    ] {
        let needle = format!("\r\nX-Original-URI: {uri}\r\nX-Original-Method: {method}\r\n");
        assert!(
            checks.iter().any(|c| c.contains(&needle)),
            "no check with {uri} {method}: {checks:#?}"
        );
    }
    assert!(
        checks[0].contains(&format!(": Bearer {token}\r\n")),
        "{}",
        checks[0]
    );

    // Revocation: the same token passes, then is refused once revoked.
    let revoked = login(&server, "alice", PASSWORD);
    let a = get(&nginx, "/legit/4", Some(&revoked));
    assert_eq!(a.status, 200, "{a:?}");
    expected.push(legit("GET", "/legit/4", &revoked, b""));
    let resp = client()
        .post(server.url("/v1/revoke"))
        .form(&[("token", revoked.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_refused(
        &get(&nginx, "/refused", Some(&revoked)),
        403,
        "revoked",
        "revoked token",
    );
    // Another session's token is untouched.
    let a = get(&nginx, "/legit/5", Some(&token));
    assert_eq!(a.status, 200, "{a:?}");
    expected.push(legit("GET", "/legit/5", &token, b""));
    assert_eq!(upstream.seen(), expected);

    // tally down: nginx fails closed (503 from the example's error_page 500;
    // a bare 500 without it), and the upstream sees nothing.
    assert!(server.stop().success());
    let a = get(&nginx, "/while-down", Some(&token));
    assert!(a.status >= 500, "{a:?}");
    assert_eq!(
        (a.status, a.verdict.as_deref()),
        (503, Some("unavailable")),
        "{a:?}"
    );
    assert!(
        nginx.logs().contains("auth request unexpected status"),
        "{}",
        nginx.logs()
    );
    assert_eq!(
        upstream.seen(),
        expected,
        "a request got through while tally was down"
    );
    drop(nginx);

    // Expiry: tally again on the same data directory, with one-second tokens
    // and no leeway; a second nginx points at its new port.
    let short = write_config(
        tmp.path(),
        "short.toml",
        "token_ttl_secs = 1\nleeway_secs = 0\n",
    );
    let server = Server::start(&data, Some(&short));
    let nginx = Nginx::from_doc(
        &bin,
        &tmp.path().join("nginx-2"),
        server.base.strip_prefix("http://").unwrap(),
        &upstream.addr,
    );
    let short_lived = login(&server, "alice", PASSWORD);
    // The long-lived token still passes after the restart.
    let a = get(&nginx, "/legit/6", Some(&token));
    assert_eq!(a.status, 200, "{a:?}");
    expected.push(legit("GET", "/legit/6", &token, b""));
    let exp = payload(&short_lived)["exp"].as_i64().unwrap();
    while now() <= exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_refused(
        &get(&nginx, "/refused", Some(&short_lived)),
        401,
        "expired",
        "expired token",
    );
    assert_refused(
        &get(&nginx, "/refused", Some(&revoked)),
        403,
        "revoked",
        "revoked token after a restart",
    );

    // In all, the upstream saw exactly the legitimate requests.
    let seen = upstream.seen();
    assert_eq!(seen, expected);
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|s| s.path.starts_with("/legit/")));
    assert!(
        seen.iter()
            .all(|s| s.tally.iter().all(|(_, v)| v != "admin")),
        "{seen:?}"
    );
    server.stop();
}
