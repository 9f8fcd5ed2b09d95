//! The gate as a reverse proxy, against a recording upstream: refused requests
//! never reach it, allowed ones carry tally's identity headers (never a
//! client's), monitor mode lets traffic through marked, upstream failures are
//! JSON 502/504, bodies stream both ways.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body_len: usize,
}

/// A tiny HTTP/1.1 upstream that records every request it receives.
fn recording_upstream() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut it = line.split_whitespace();
                let (method, path) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                );
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let mut body_len = 0;
                if let Some(n) = headers
                    .get("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    let mut buf = vec![0u8; n];
                    reader.read_exact(&mut buf).unwrap();
                    body_len = n;
                } else if headers
                    .get("transfer-encoding")
                    .is_some_and(|v| v.contains("chunked"))
                {
                    loop {
                        let mut size = String::new();
                        reader.read_line(&mut size).unwrap();
                        let n = usize::from_str_radix(size.trim(), 16).unwrap();
                        let mut buf = vec![0u8; n + 2];
                        reader.read_exact(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        body_len += n;
                    }
                }
                if path.ends_with("/slow") {
                    std::thread::sleep(Duration::from_secs(20));
                }
                log.lock().unwrap().push(Seen {
                    method,
                    path,
                    headers,
                    body_len,
                });
                let body = "upstream-ok";
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Upstream: yes\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, seen)
}

fn gate_base(server: &Server) -> String {
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("tally gate listening on http://"))
        .unwrap_or_else(|| panic!("no gate line:\n{log}"));
    let addr = line
        .trim_start_matches("tally gate listening on http://")
        .split_whitespace()
        .next()
        .unwrap();
    format!("http://{addr}")
}

#[test]
fn reverse_proxy_refuses_before_the_upstream() {
    let tmp = TempDir::new("proxy");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (up, seen) = recording_upstream();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gate]
listen = "127.0.0.1:0"
upstream_timeout_secs = 5

[[gate.routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:{up}"
data = ["name", "address", "orders"]

[[gate.routes]]
prefix = "/public/"
upstream = "http://127.0.0.1:{up}"
require_token = false

[[gate.routes]]
prefix = "/watch/"
upstream = "http://127.0.0.1:{up}"
mode = "monitor"

[[gate.routes]]
prefix = "/down/"
upstream = "http://127.0.0.1:{closed}"
"#
        ),
    )
    .unwrap();
    init(d);
    let insider = import_insider_key(tmp.path(), d, "k1");
    add_user(d, "alice", "alice-passphrase");
    let server = Server::start(&data, Some(&cfg));
    let gate = gate_base(&server);
    let token = login(&server, "alice", "alice-passphrase");
    let jti = payload(&token)["jti"].as_str().unwrap().to_string();
    let mut forged_claims = payload(&token);
    forged_claims["jti"] = json!("forged-1");
    forged_claims["sub"] = json!("admin");
    let forged = jws(
        &insider,
        &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}).to_string(),
        &forged_claims.to_string(),
    );
    let c = client();
    let count = || seen.lock().unwrap().len();

    // Allowed: tally's identity headers reach the upstream, a client's never do.
    let r = c
        .get(format!("{gate}/api/orders?page=2"))
        .bearer_auth(&token)
        .header("X-Tally-Subject", "admin")
        .header("X-Tally-Token-Id", "spoofed")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(r.text().unwrap(), "upstream-ok");
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/api/orders?page=2")
    );
    assert_eq!(last.headers["x-tally-subject"], "alice");
    assert_eq!(last.headers["x-tally-token-id"], jti);
    assert!(last.headers["authorization"].starts_with("Bearer "));

    // Refused at the gate: the upstream sees nothing.
    let before = count();
    for (tok, status, verdict) in [
        (Some(forged.as_str()), 403, "not_issued"),
        (None, 401, "missing"),
        (Some("garbage"), 401, "malformed"),
    ] {
        let mut req = c
            .get(format!("{gate}/api/address"))
            .header("X-Tally-Subject", "admin");
        if let Some(t) = tok {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["x-tally-verdict"], verdict);
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], verdict);
    }
    // A revoked token too.
    let t2 = login(&server, "alice", "alice-passphrase");
    assert_eq!(
        c.post(server.url("/v1/revoke"))
            .form(&[("token", t2.as_str())])
            .send()
            .unwrap()
            .status(),
        200
    );
    let r = c
        .get(format!("{gate}/api/orders"))
        .bearer_auth(&t2)
        .send()
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["x-tally-verdict"].to_str().unwrap()
        ),
        (403, "revoked")
    );
    assert_eq!(count(), before, "a refused request reached the upstream");

    // A public route needs no token, and still strips client X-Tally-* headers.
    let r = c
        .get(format!("{gate}/public/catalog"))
        .header("X-Tally-Subject", "admin")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert!(!last.headers.contains_key("x-tally-subject"), "{last:?}");

    // Monitor mode: the forged request passes, marked for the upstream.
    let r = c
        .get(format!("{gate}/watch/profile"))
        .bearer_auth(&forged)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.headers["x-tally-verdict"], "not_issued");
    assert!(!last.headers.contains_key("x-tally-subject"));

    // Bodies stream through.
    let big = vec![b'x'; 1 << 20];
    let r = c
        .post(format!("{gate}/api/upload"))
        .bearer_auth(&token)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.lock().unwrap().last().unwrap().body_len, 1 << 20);

    // Upstream failures are JSON.
    let r = c
        .get(format!("{gate}/down/x"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "upstream_unavailable"
    );
    let r = c
        .get(format!("{gate}/api/slow"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "upstream_timeout"
    );
    // A client that gives up while the upstream is still working: its
    // decision is in the access log all the same, with no upstream status.
    let gave_up = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .get(format!("{gate}/api/gave-up/slow"))
        .bearer_auth(&token)
        .send();
    assert!(gave_up.is_err(), "the client gave up");
    eventually("the abandoned request in the access log", || {
        tally_ok(&["access", "tail", "--data", d], None)
            .lines()
            .any(|l| l.contains("/api/gave-up/slow") && !l.contains("upstream_status"))
    });
    let r = c
        .get(format!("{gate}/elsewhere"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Everything the upstream saw came with a tallied token or on a public or
    // monitored route.
    for s in seen.lock().unwrap().iter() {
        let public = s.path.starts_with("/public/") || s.path.starts_with("/watch/");
        assert!(
            public || s.headers.get("x-tally-subject").map(String::as_str) == Some("alice"),
            "{s:?}"
        );
    }
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("tally_gate_decisions_total{verdict=\"not_issued\"} 2"),
        "{metrics}"
    );
    for line in [
        "tally_gate_route_decisions_total{route=\"/api/\",verdict=\"not_issued\"} 1",
        "tally_gate_route_decisions_total{route=\"/watch/\",verdict=\"not_issued\"} 1",
        "tally_gate_route_decisions_total{route=\"/api/\",verdict=\"revoked\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let decided: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_gate_decision_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(decided >= 8, "{metrics}");
    server.stop();
}

/// A route with its own audience admits only tokens minted for it, and the
/// server's audience only tokens minted for that: one API's token does not
/// open another's, though tally issued both. Refresh keeps the audience.
#[test]
fn routes_with_their_own_audience() {
    let tmp = TempDir::new("proxy-aud");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (up, seen) = recording_upstream();
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
trusted_proxies = ["127.0.0.1"]

[gate]
listen = "127.0.0.1:0"

[[gate.routes]]
prefix = "/profile/"
upstream = "http://127.0.0.1:{up}"
data = ["name", "email"]

[[gate.routes]]
prefix = "/orders/"
upstream = "http://127.0.0.1:{up}"
data = ["orders"]
audience = "orders-api"
"#
        ),
    )
    .unwrap();
    init(d);
    add_user(d, "alice", "alice-passphrase");
    let server = Server::start(&data, Some(&cfg));
    let gate = gate_base(&server);
    let c = client();
    let login_for = |audience: Option<&str>| {
        let mut body = json!({"username": "alice", "password": "alice-passphrase"});
        if let Some(a) = audience {
            body["audience"] = json!(a);
        }
        c.post(server.url("/v1/login")).json(&body).send().unwrap()
    };
    let verdict = |path: &str, token: &str| {
        let r = c
            .get(format!("{gate}{path}"))
            .bearer_auth(token)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            // Refusals carry the verdict; allowed requests the upstream's answer.
            r.headers()
                .get("x-tally-verdict")
                .map_or("upstream".to_string(), |v| v.to_str().unwrap().to_string()),
        )
    };

    let plain = login_for(None).json::<Value>().unwrap();
    let plain_token = plain["access_token"].as_str().unwrap();
    assert_eq!(payload(plain_token)["aud"], "tally");
    let r = login_for(Some("orders-api"));
    assert_eq!(r.status(), 200);
    let orders = r.json::<Value>().unwrap();
    let orders_token = orders["access_token"].as_str().unwrap();
    assert_eq!(payload(orders_token)["aud"], "orders-api");

    assert_eq!(
        verdict("/profile/me", plain_token),
        (200, "upstream".into())
    );
    assert_eq!(
        verdict("/orders/1", plain_token),
        (401, "wrong_audience".into())
    );
    assert_eq!(verdict("/orders/1", orders_token), (200, "upstream".into()));
    assert_eq!(
        verdict("/profile/me", orders_token),
        (401, "wrong_audience".into())
    );
    // /v1/check (nginx): the audience comes from the route the original URI
    // falls under, never from a header a client could send along.
    let check = |token: &str, uri: &str| {
        let r = c
            .get(server.url("/v1/check"))
            .bearer_auth(token)
            .header("X-Original-URI", uri)
            .header("X-Tally-Audience", "orders-api")
            .send()
            .unwrap();
        r.headers()["x-tally-verdict"].to_str().unwrap().to_string()
    };
    assert_eq!(check(orders_token, "/orders/7?page=2"), "ok");
    assert_eq!(check(orders_token, "/profile/me"), "wrong_audience");
    assert_eq!(check(orders_token, "/elsewhere"), "wrong_audience");
    assert_eq!(check(plain_token, "/orders/7"), "wrong_audience");
    assert_eq!(check(plain_token, "/profile/me"), "ok");
    let upstream_paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(upstream_paths, ["/profile/me", "/orders/1"]);

    // An audience tally does not serve gets no token.
    let r = login_for(Some("payments"));
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "invalid_target"
    );

    // Refresh keeps the session's audience.
    let r = c
        .post(server.url("/v1/refresh"))
        .json(&json!({"refresh_token": orders["refresh_token"]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let next = r.json::<Value>().unwrap();
    let next_token = next["access_token"].as_str().unwrap();
    assert_eq!(payload(next_token)["aud"], "orders-api");
    assert_eq!(verdict("/orders/2", next_token), (200, "upstream".into()));
}
