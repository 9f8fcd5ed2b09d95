//! One phase of the demo: a data directory, a real `tally serve` with its
//! gate in front of the shop, customers browsing, the insider's scrape, and
//! the figures and the report read back from tally.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};
use tally_core::jose::{Algorithm, SigningKey};
use tally_core::verdict::Verdict;

use tally_server::App;

use crate::options::{Options, Phase, Progress};
use crate::shop::{Shop, customer_id, rng, shop_handler};
use tally_server::config::{Config, GateMode, Overrides};

fn write_config(dir: &Path, shop: u16, mode: GateMode) -> Result<PathBuf, String> {
    let mode = match mode {
        GateMode::Monitor => "monitor",
        GateMode::Enforce => "enforce",
    };
    // (a) models what the breached company had: no limit on unknown tokens
    // either (a refused-unverified request would also carry no subject, and
    // the affected list could not name whose data went out).
    let misses = if mode == "enforce" { 1000.0 } else { 1e9 };
    // Every token of the blocked insider's requests is examined for the
    // record (the default budget, 50 unknown tokens a second per address,
    // would leave most of the attack counted as not examined, which the
    // report would say).
    let examine = 1e7;
    let actions = if mode == "enforce" {
        "[actions]\nforged_token = [\"compromise_key\", \"block_actor\"]\nmass_access = [\"block_actor\"]\n"
    } else {
        ""
    };
    let text = format!(
        r#"listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]
miss_rate_per_sec = {misses}
miss_burst = {misses}
blocked_examine_per_sec = {examine}
blocked_examine_burst = {examine}
blocked_examine_total_per_sec = {examine}
blocked_examine_total_burst = {examine}
{actions}
[contacts]
dpo = "privacy@shop.example"
security = "soc@shop.example"

[gate]
listen = "127.0.0.1:0"
mode = "{mode}"

[[gate.routes]]
prefix = "/profile/"
upstream = "http://127.0.0.1:{shop}"
data = ["name", "email"]

[[gate.routes]]
prefix = "/addresses/"
upstream = "http://127.0.0.1:{shop}"
data = ["address"]

[[gate.routes]]
prefix = "/orders/"
upstream = "http://127.0.0.1:{shop}"
data = ["orders"]
"#
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// An incident's report, written: id, document, impact, HTML and CSV paths.
type Written = (
    i64,
    tally_incident::report::Report,
    tally_incident::report::Impact,
    PathBuf,
    PathBuf,
);

/// Runs one phase in `dir` and returns its figures.
pub async fn phase(
    opts: &Options,
    mode: GateMode,
    progress: Progress<'_>,
) -> Result<Phase, String> {
    let label = match mode {
        GateMode::Monitor => "a",
        GateMode::Enforce => "b",
    };
    let dir = opts.dir.join(label);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The shop, on its own port; its state is filled in once tally is open.
    let shop_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("shop: {e}"))?;
    let shop_port = shop_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    let cfg_path = write_config(&dir, shop_port, mode)?;
    let mut config = Config::load(
        Some(&cfg_path),
        Overrides {
            data: Some(dir.join("data")),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;

    // The company's data directory: its signing key (of which the insider
    // keeps a copy) and its customers.
    progress("preparing customers", 0, opts.customers as u64);
    let insider = {
        let c = config.clone();
        let customers = opts.customers;
        tokio::task::spawn_blocking(move || -> Result<SigningKey, String> {
            let dir =
                tally_server::keyring::DataDir::open_or_init(&c).map_err(|e| e.to_string())?;
            let key = SigningKey::generate(Algorithm::EdDSA).map_err(|e| e.to_string())?;
            tally_server::keyring::store_token_key(&dir, &key, Some("shop-2026-1"), "imported")
                .map_err(|e| e.to_string())?;
            // One password for every synthetic customer: hashed once.
            let hash = tally_server::passwords::hash_once("demo-customer-password")
                .map_err(|e| e.to_string())?;
            let users: Vec<(String, String)> = (1..=customers)
                .map(|i| (customer_id(i), hash.clone()))
                .collect();
            dir.state
                .add_users(&users, tally_store::clock::now_unix())
                .map_err(|e| e.to_string())?;
            Ok(key)
        })
        .await
        .map_err(|e| e.to_string())??
    };
    progress(
        "preparing customers",
        opts.customers as u64,
        opts.customers as u64,
    );
    // tally's own addresses, bound before it opens: its lock file and its
    // issuer name the address it really listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let gate_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    config.listen = listener.local_addr().map_err(|e| e.to_string())?;
    let app = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || App::open(c, &mut |_, _| {}))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let shop = Arc::new(Shop {
        app: app.clone(),
        seed: opts.seed,
        customers: opts.customers,
    });
    let shop_router = axum::Router::new()
        .route("/{kind}/{id}", axum::routing::get(shop_handler))
        .with_state(shop);
    tokio::spawn(async move {
        let _ = axum::serve(shop_listener, shop_router).await;
    });
    let api = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let gate = format!(
        "http://{}",
        gate_listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tally_server::serve_with_gate(
        app.clone(),
        listener,
        Some(gate_listener),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency.max(8))
        .build()
        .map_err(|e| e.to_string())?;
    let routes = ["profile", "addresses", "orders"];
    let mut out = Phase {
        mode: if mode == GateMode::Monitor {
            "monitor"
        } else {
            "enforce"
        }
        .into(),
        ..Default::default()
    };

    // Ordinary customers log in and browse, each from their own address.
    let mut s = opts.seed;
    let browsing: Vec<usize> = (0..opts.browsing.min(opts.customers))
        .map(|_| (rng(&mut s) % opts.customers as u64) as usize + 1)
        .collect();
    let ok_before = app.metrics.count(Verdict::Ok);
    let total = browsing.len() as u64;
    let browsing = Arc::new(browsing);
    let next = Arc::new(AtomicUsize::new(0));
    let legit_sent = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    // Four customers at a time: each login is an argon2id verification.
    for _ in 0..4 {
        let (browsing, next, legit_sent) = (browsing.clone(), next.clone(), legit_sent.clone());
        let (client, api, gate) = (client.clone(), api.clone(), gate.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&n) = browsing.get(i) else { break };
                let id = customer_id(n);
                let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                let Ok(r) = client
                    .post(format!("{api}/v1/login"))
                    .header("x-forwarded-for", &ip)
                    .json(&json!({"username": id, "password": "demo-customer-password"}))
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(body) = r.json::<Value>().await else {
                    continue;
                };
                let Some(token) = body["access_token"].as_str() else {
                    continue;
                };
                for route in routes {
                    if client
                        .get(format!("{gate}/{route}/{id}"))
                        .bearer_auth(token)
                        .header("x-forwarded-for", &ip)
                        .send()
                        .await
                        .is_ok()
                    {
                        legit_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while !set.is_empty() {
        tokio::select! {
            _ = set.join_next() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        progress(
            "customers browsing",
            next.load(Ordering::Relaxed).min(total as usize) as u64,
            total,
        );
    }
    out.legit_requests = legit_sent.load(Ordering::Relaxed);
    out.legit_allowed = app.metrics.count(Verdict::Ok) - ok_before;

    // The insider: a token for every customer id and for member ids that do
    // not exist, each used on every route, from one address.
    let template = {
        let mut m = Map::new();
        m.insert("iss".into(), Value::from(app.config.issuer.clone()));
        m.insert("aud".into(), Value::from(config.audience.clone()));
        m.insert("client_id".into(), Value::from("tally"));
        m
    };
    let mut ids: Vec<(String, bool)> = (1..=opts.customers)
        .map(|i| (customer_id(i), false))
        .chain((1..=opts.ghosts).map(|i| (format!("m{:07}", 9_000_000 + i), true)))
        .collect();
    // A deterministic shuffle: real and invented ids interleaved.
    for i in (1..ids.len()).rev() {
        let j = (rng(&mut s) % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    out.forged_tokens = ids.len() as u64;
    out.ghost_tokens = opts.ghosts as u64;
    let before: Vec<(Verdict, u64)> = Verdict::ALL
        .iter()
        .map(|v| (*v, app.metrics.count(*v)))
        .collect();
    let jobs: Arc<Vec<(String, bool)>> = Arc::new(ids);
    let insider = Arc::new(insider);
    let cursor = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let through = Arc::new(AtomicU64::new(0));
    let ghost_refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let first_sent: Arc<std::sync::OnceLock<Instant>> = Arc::new(std::sync::OnceLock::new());
    // Watch the incident store from the moment the attack starts.
    let watcher = {
        let store = app.watch.store.clone();
        let first = first_sent.clone();
        tokio::spawn(async move {
            let (mut detection, mut incident) = (None, None);
            loop {
                if let Some(t0) = first.get() {
                    if detection.is_none()
                        && store
                            .recent_detections(20)
                            .unwrap_or_default()
                            .iter()
                            .any(|d| d.detection.rule == tally_incident::detect::Rule::ForgedToken)
                    {
                        detection = Some(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    if incident.is_none() && !store.incidents().unwrap_or_default().is_empty() {
                        incident = Some(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    if detection.is_some() && incident.is_some() {
                        return (detection, incident);
                    }
                    if t0.elapsed().as_secs() > 30 {
                        return (detection, incident);
                    }
                }
                // Often enough for the figures' resolution, seldom enough
                // not to compete with the flush that writes the store.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (jobs, cursor, sent, through, ghost_refused, first) = (
            jobs.clone(),
            cursor.clone(),
            sent.clone(),
            through.clone(),
            ghost_refused.clone(),
            first_sent.clone(),
        );
        let (client, gate, key, template) = (
            client.clone(),
            gate.clone(),
            insider.clone(),
            template.clone(),
        );
        set.spawn(async move {
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some((id, ghost)) = jobs.get(i) else {
                    break;
                };
                let now = tally_store::clock::now_unix();
                let mut claims = template.clone();
                claims.insert("sub".into(), Value::from(id.as_str()));
                claims.insert("jti".into(), Value::from(format!("forged-{i}")));
                claims.insert("iat".into(), Value::from(now));
                claims.insert("exp".into(), Value::from(now + 3600));
                let Ok(token) = key.sign_jwt("shop-2026-1", "at+jwt", &claims) else {
                    continue;
                };
                for route in routes {
                    let _ = first.set(Instant::now());
                    let r = client
                        .get(format!("{gate}/{route}/{id}"))
                        .bearer_auth(&token)
                        .header("x-forwarded-for", "203.0.113.66")
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Ok(r) = r {
                        // The gate marks what it refused; the shop's answers carry no verdict.
                        if r.headers().contains_key("x-tally-verdict") && r.status().as_u16() >= 400
                        {
                            if *ghost {
                                ghost_refused.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            through.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    let total = (jobs.len() * routes.len()) as u64;
    while !set.is_empty() {
        tokio::select! {
            _ = set.join_next() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        progress("insider scraping", sent.load(Ordering::Relaxed), total);
    }
    out.attack_secs = started.elapsed().as_secs_f64();
    out.attack_requests = sent.load(Ordering::Relaxed);
    out.attack_let_through = through.load(Ordering::Relaxed);
    out.ghost_requests_refused = ghost_refused.load(Ordering::Relaxed);
    for (v, n) in before {
        let d = app.metrics.count(v) - n;
        if v != Verdict::Ok && d > 0 {
            out.attack_refused.insert(v.code().to_string(), d);
        }
    }
    if mode == GateMode::Monitor {
        // Monitor mode refuses nothing: the counters are what it would have refused.
        out.attack_refused.clear();
    }
    let (detection, incident) = watcher.await.unwrap_or((None, None));
    out.detection_ms = detection;
    out.incident_ms = incident;

    // The last events reach the access log and the detector, then what the
    // detector found reaches the incident store, before anything is counted.
    if let Some(events) = app.access_events.get()
        && !events.settle(std::time::Duration::from_secs(60)).await
    {
        tracing::warn!("the access log is still behind after 60 s: the figures may fall short");
    }
    {
        let a = app.clone();
        let _ = tokio::task::spawn_blocking(move || a.watch.flush(&a.alerts, &*a)).await;
    }
    let store = app.watch.store.clone();
    let log = app.access_log.clone();
    let regimes = app.config.regimes.clone();
    let contacts = app.config.contacts.clone();
    let outdir = opts.out.clone();
    let users = app.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<Option<Written>, String> {
        let Some(inc) = store
            .incidents()
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let now = tally_store::clock::now_unix();
        let (doc, impact) = tally_incident::report::report_for(
            &store,
            &[("access.db".to_string(), &*log)],
            inc.id,
            &regimes,
            &contacts,
            now,
            // A member id the directory does not hold is evidence of
            // minting, not an affected customer.
            &|s| users.dir.state.user_role(s).map_or(true, |r| r.is_some()),
            &mut |_| {},
        )?;
        std::fs::create_dir_all(&outdir)
            .map_err(|e| format!("cannot create {}: {e}", outdir.display()))?;
        let html = outdir.join(format!("report-{label}.html"));
        let csv = outdir.join(format!("affected-{label}.csv"));
        std::fs::write(&html, tally_incident::report::html(&doc)).map_err(|e| e.to_string())?;
        std::fs::write(&csv, tally_incident::report::affected_csv(&impact))
            .map_err(|e| e.to_string())?;
        Ok(Some((inc.id, doc, impact, html, csv)))
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some((id, doc, impact, html, csv)) = report {
        out.incident = Some(id);
        out.records_exposed = impact.requests_exposed;
        out.customers_exposed = impact.exposed_subjects() as u64;
        out.customers_attempted_only = impact.attempted_subjects() as u64;
        out.report_refused = doc.affected.records_refused;
        out.report_allowed_monitor = doc.affected.records_allowed_monitor;
        out.report_forged_requests = doc.affected.forged_requests;
        out.report_ghost_members = doc.affected.unknown_subjects as u64;
        out.report_ghost_tokens = doc.affected.unknown_subject_tokens;
        out.report_ghost_requests = doc.affected.unknown_subject_requests;
        out.deadlines = doc
            .regimes
            .iter()
            .map(|r| (r.name.clone(), r.due_at.to_string()))
            .collect();
        out.report = Some(html);
        out.affected = Some(csv);
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(out)
}
