//! Knocking the gate over: memory (huge fields), disk and lost evidence (a
//! flood of refusals), connections (half-sent requests, idle sockets, one
//! address holding them all).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::Fixture;
use crate::http;
use crate::support::*;
use crate::{Attack, Run};

/// One counter of `/metrics`, summed over its label sets.
fn metric(server: &Server, name: &str) -> u64 {
    counter(&get_text(server, "/metrics"), name)
}

/// One counter of a `/metrics` text, summed over its label sets.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every row of the access log (oldest first is not promised).
fn all_events(data: &str) -> Vec<Value> {
    tally_ok(
        &["access", "tail", "--limit", "1000000", "--data", data],
        None,
    )
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

/// Waits until the log accounts for every decision the gate counted.
fn settled(server: &Server) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let decided = metric(server, "tally_gate_decisions_total");
        let logged = metric(server, "tally_access_decisions_logged_total");
        if decided == logged {
            return Ok(decided);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{decided} decisions, {logged} in the access log after 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` requests on one keep-alive connection, each `request(i)`.
fn keep_alive(addr: &str, n: usize, request: impl Fn(usize) -> String) -> Result<Vec<u16>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        s.write_all(request(i).as_bytes())
            .map_err(|e| e.to_string())?;
        out.push(http::read_answer(&mut s)?.status);
    }
    Ok(out)
}

/// Fields of any size are cut before they are queued or stored.
fn huge_fields(f: &Fixture) -> Result<(), String> {
    let big = "A".repeat(100_000);
    let path = format!("/{big}");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let a = http::get(
            &f.api,
            "/v1/check",
            &[
                &format!("X-Original-URI: {path}?{i}"),
                "X-Original-Method: GET",
                &format!("X-Device-Id: {big}{i}"),
                &format!("Authorization: Bearer {big}"),
            ],
        )?;
        statuses.push(a.status);
        let a = http::get(
            &f.gate,
            &format!("/open{path}"),
            &[&format!("X-Device-Id: {big}")],
        )?;
        statuses.push(a.status);
    }
    settled(&f.server)?;
    let events = f.events();
    let worst = events
        .iter()
        .flat_map(|e| {
            [
                "path", "device", "method", "subject", "token_id", "kid", "route",
            ]
            .map(|k| e[k].as_str().map_or(0, str::len))
        })
        .max()
        .unwrap_or(0);
    if worst > 1100 {
        return Err(format!(
            "a stored field holds {worst} bytes of what a client sent (answers {statuses:?})"
        ));
    }
    if !events.iter().any(|e| {
        e["device"]
            .as_str()
            .is_some_and(|d| d.contains("bytes, sha256"))
    }) {
        return Err("no cut field carries its marker".into());
    }
    Ok(())
}

/// A flood of refusals from one address is a handful of rows a second,
/// every decision is still in the log, and no legitimate one is missing.
fn refusal_flood() -> Result<(), String> {
    let tmp = TempDir::new("flood");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap().to_string();
    init(&d);
    add_user(&d, "alice", "alice-passphrase");
    let server = Server::start(&data, None);
    let token = login(&server, "alice", "alice-passphrase");
    let jti = payload(&token)["jti"].as_str().unwrap().to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let (flood_n, legit_n) = (4 * 1500, 200);
    let flood: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                keep_alive(&addr, 1500, |i| {
                    let auth = if i % 2 == 0 {
                        String::new()
                    } else {
                        format!("Authorization: Bearer x{t}.{i}.y\r\n")
                    };
                    // A new device id every time must not escape aggregation.
                    format!(
                        "GET /v1/check HTTP/1.1\r\nHost: t\r\nX-Device-Id: d{t}-{i}\r\n{auth}\r\n"
                    )
                })
            })
        })
        .collect();
    let legit = keep_alive(&addr, legit_n, |_| {
        format!("GET /v1/check HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
    })?;
    for h in flood {
        h.join().map_err(|_| "flood thread")??;
    }
    if legit.iter().any(|s| *s != 200) {
        return Err("a legitimate request was refused".into());
    }
    let decided = settled(&server)?;
    // The login's own check is not on /v1/check; every request above is.
    let events = all_events(&d);
    let accounted: u64 = events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    let ok_rows = events
        .iter()
        .filter(|e| e["verdict"] == "ok" && e["token_id"] == jti.as_str())
        .count();
    let want = (flood_n + legit_n) as u64;
    if decided != want || accounted != want {
        return Err(format!(
            "{want} requests, {decided} decisions counted, {accounted} in the log"
        ));
    }
    if ok_rows != legit_n {
        return Err(format!(
            "{ok_rows} of {legit_n} legitimate decisions in the log"
        ));
    }
    if events.len() > 600 {
        return Err(format!(
            "{} rows for {flood_n} refusals from one address: the flood was written one by one",
            events.len()
        ));
    }
    Ok(())
}

/// Refusals from many addresses at once spend the byte budget: the rest are
/// counted, the bite is in /metrics, the log and the detections.
fn budget_bites() -> Result<(), String> {
    let tmp = TempDir::new("budget");
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        "trusted_proxies = [\"127.0.0.1\"]\n\n[access_log]\nrefusal_bytes_per_sec = 4096\nrefusal_burst_bytes = 8192\n",
    )
    .unwrap();
    let server = Server::start(&data, Some(&cfg));
    let addr = server.base.trim_start_matches("http://").to_string();
    keep_alive(&addr, 2000, |i| {
        format!(
            "GET /v1/check HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.{}.{}.{}\r\n\r\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        )
    })?;
    let decided = settled(&server)?;
    let events = all_events(data.to_str().unwrap());
    let accounted: u64 = events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    if decided != 2000 || accounted != 2000 {
        return Err(format!(
            "2000 requests, {decided} counted, {accounted} in the log"
        ));
    }
    if metric(&server, "tally_access_budget_bites_total") == 0 {
        return Err("the budget bit, and /metrics does not say so".into());
    }
    if !server.log_text().contains("access_flood") {
        return Err("no access_flood line in the server's log".into());
    }
    if events.len() > 400 {
        return Err(format!(
            "{} rows: the byte budget did not hold",
            events.len()
        ));
    }
    Ok(())
}

/// Whether the server closes `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).ok();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// A TCP connection to `addr` from the loopback address `from`.
fn connect_from(from: &str, addr: &str) -> Result<TcpStream, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    let from: std::net::SocketAddr = format!("{from}:0").parse().map_err(|e| format!("{e}"))?;
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.bind(from).map_err(|e| e.to_string())?;
        let s = sock.connect(to).await.map_err(|e| e.to_string())?;
        s.into_std().map_err(|e| e.to_string())
    })
    .and_then(|s| {
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        Ok(s)
    })
}

/// Half-sent requests and idle connections are closed; one address cannot
/// hold every connection.
fn connections() -> Result<(), String> {
    let tmp = TempDir::new("connections");
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        "[connections]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\nmax_per_address = 16\n",
    )
    .unwrap();
    let server = Server::start(&data, Some(&cfg));
    let addr = server.base.trim_start_matches("http://").to_string();
    // A half-sent request, and a connection never used.
    let mut half = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .map_err(|e| e.to_string())?;
    let mut silent = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    // Generous: the point is that they are closed at all.
    for (what, s) in [
        ("half-sent request", &mut half),
        ("unused connection", &mut silent),
    ] {
        if !closed_within(s, Duration::from_secs(30)) {
            return Err(format!("a {what} was never closed"));
        }
    }
    // One address holding its quota; the next connection from it is closed
    // at once, and another address is still served.
    let held: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(&addr))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    if !closed_within(&mut over, Duration::from_secs(10)) {
        return Err("the 17th connection from one address was served".into());
    }
    let mut other = connect_from("127.0.0.2", &addr)?;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let a = http::read_answer(&mut other)?;
    if a.status != 200 {
        return Err(format!("another address got {}", a.status));
    }
    drop(held);
    // Scraped from the other address: the server may not have seen the
    // held connections close yet, and the first address's quota may still
    // be full.
    let mut scrape = connect_from("127.0.0.2", &addr)?;
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let metrics = http::read_answer(&mut scrape)?;
    let refused = counter(&metrics.body, "tally_connections_refused_total");
    if refused == 0 {
        return Err("/metrics does not count the refused connection".into());
    }
    Ok(())
}

pub const ROWS: &[Attack] = &[
    Attack {
        id: "memory.huge-fields",
        item: 5,
        what: "100 KB paths, device ids and tokens are cut before they are queued or stored",
        run: Run::WithFixture(huge_fields),
    },
    Attack {
        id: "disk.refusal-flood",
        item: 6,
        what: "a refusal flood is a few rows a second, every decision accounted for, none legit lost",
        run: Run::Scenario(refusal_flood),
    },
    Attack {
        id: "disk.budget-bites",
        item: 6,
        what: "refusals from many addresses spend the byte budget; the bite is reported",
        run: Run::Scenario(budget_bites),
    },
    Attack {
        id: "connections.timeouts-and-caps",
        item: 7,
        what: "half-sent requests and idle sockets are closed; one address cannot hold them all",
        run: Run::Scenario(connections),
    },
];
