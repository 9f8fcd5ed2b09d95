//! A live server's `/metrics`, after a few requests have given every family
//! samples, passes `promtool check metrics`: Prometheus's own parser of the
//! text format and its linter (names, types, help, suffixes), with nothing
//! to report.
//!
//! Skipped when `promtool` (Debian's `prometheus` package) is not installed;
//! with `CI=true` a skip fails.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

use support::*;

/// Every family the server serves once it has a gate route, an access log
/// and Redis for the fleet's counts: the names that dashboards, alerts, the
/// other tests and the bench scripts read.
const FAMILIES: &[&str] = &[
    "tally_gate_decisions_total",
    "tally_gate_route_decisions_total",
    "tally_gate_decision_seconds",
    "tally_tokens_issued_total",
    "tally_login_failures_total",
    "tally_refresh_reuse_total",
    "tally_unknown_subject_total",
    "tally_incidents_opened_total",
    "tally_ledger_size",
    "tally_registry_live_tokens",
    "tally_ledger_healthy",
    "tally_access_events_dropped_total",
    "tally_access_events_written_total",
    "tally_access_decisions_logged_total",
    "tally_access_refusals_aggregated_total",
    "tally_access_log_bytes_total",
    "tally_access_budget_bites_total",
    "tally_access_queue_bytes",
    "tally_connections_open",
    "tally_connections_accepted_total",
    "tally_connections_refused_total",
    "tally_connections_idle_closed_total",
    "tally_store_reachable",
    "tally_sequencer",
    "tally_forged_tokens_remembered",
    "tally_fleet_counts_dropped_total",
];

/// `promtool`, if it is installed and runs.
fn promtool() -> Option<&'static str> {
    let out = Command::new("promtool").arg("--version").output().ok()?;
    out.status.success().then_some("promtool")
}

/// The Redis the fleet tests use, if it answers: `Some(url)`.
fn redis() -> Option<String> {
    let url =
        std::env::var("TALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url.trim_start_matches("redis://").to_string();
    TcpStream::connect(&addr).ok().map(|_| url)
}

/// The gate's base URL, as the server printed it.
fn gate_base(server: &Server) -> String {
    let log = server.log_text();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("tally gate listening on http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gate line:\n{log}"));
    format!("http://{addr}")
}

#[test]
fn metrics_pass_promtool_check() {
    let Some(promtool) = promtool() else {
        skip("promtool (Debian package prometheus) is not installed");
        return;
    };
    let redis = redis();
    if redis.is_none() {
        skip("Redis is unreachable: tally_fleet_counts_dropped_total is not checked");
    }

    let tmp = TempDir::new("metrics");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    // A route whose upstream nobody listens on: the gate decides, and what
    // it lets through finds no upstream.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = redis
        .as_deref()
        .map(|url| format!("[storage]\nredis_url = \"{url}\"\n\n"))
        .unwrap_or_default();
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(
        &cfg,
        format!(
            "{storage}[gate]\nlisten = \"127.0.0.1:0\"\nupstream_timeout_secs = 5\n\n\
             [[gate.routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:{closed}\"\n"
        ),
    )
    .unwrap();
    init(d);
    add_user(d, "alice", "alice-passphrase");
    let server = Server::start(&data, Some(&cfg));
    let gate = gate_base(&server);

    // Issued, refused at login, decided at /v1/check and at the gate.
    let token = login(&server, "alice", "alice-passphrase");
    let c = client();
    let refused = c
        .post(server.url("/v1/login"))
        .json(&serde_json::json!({"username": "alice", "password": "wrong"}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(checked(&server, &token).1, "ok");
    assert_eq!(checked(&server, "garbage").1, "malformed");
    for auth in [None, Some(token.as_str())] {
        let mut req = c.get(format!("{gate}/api/orders"));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        req.send().unwrap();
    }
    eventually("the access log wrote the decisions", || {
        get_text(&server, "/metrics")
            .lines()
            .any(|l| l.starts_with("tally_access_events_written_total ") && !l.ends_with(" 0"))
    });

    let resp = c.get(server.url("/metrics")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().unwrap();
    for family in FAMILIES {
        if *family == "tally_fleet_counts_dropped_total" && redis.is_none() {
            continue;
        }
        // A histogram's samples are its _bucket, _sum and _count series.
        let sample = match *family {
            "tally_gate_decision_seconds" => "tally_gate_decision_seconds_count",
            f => f,
        };
        assert!(
            text.lines().any(|l| l
                .strip_prefix(sample)
                .is_some_and(|rest| rest.starts_with([' ', '{']))),
            "{family} has no sample:\n{text}"
        );
    }
    assert!(
        text.contains("tally_gate_route_decisions_total{route=\"/api/\",verdict=\"missing\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("tally_tokens_issued_total 1\n"), "{text}");
    assert!(text.contains("tally_login_failures_total 1\n"), "{text}");

    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\n{text}",
        out.status
    );
}
