//! Zero false rejects: tokens issued through the regular issuance process
//! (`issuer::issue`: sign, record durably in the ledger, register) all pass the
//! gate: 100,000 in-process, 10,000 over real HTTP.

use std::sync::Arc;

use tally_core::gate::Step;
use tally_server::{App, Config, Overrides};
use tally_store::clock::now_unix;

fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tally-{tag}-"))
        .tempdir()
        .unwrap()
}

fn open_app(dir: &std::path::Path) -> Arc<App> {
    let config = Config::load(
        None,
        Overrides {
            listen: Some("127.0.0.1:0".into()),
            data: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    App::open(config, &mut |_, _| {}).unwrap()
}

async fn issue_many(app: &Arc<App>, n: usize) -> Vec<(String, String)> {
    // Tokens are issued only for subjects in the directory.
    let users: Vec<(String, String)> = (0..n.div_ceil(1000))
        .flat_map(|chunk| {
            (0..1000.min(n - chunk * 1000))
                .map(move |i| (format!("user-{chunk}-{i}"), "$argon2id$unused".to_string()))
        })
        .collect();
    app.dir.state.add_users(&users, 0).unwrap();
    let mut out = Vec::with_capacity(n);
    let mut handles = Vec::new();
    for chunk in 0..n.div_ceil(1000) {
        let count = 1000.min(n - chunk * 1000);
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..count {
                let app = app.clone();
                let sub = format!("user-{chunk}-{i}");
                set.spawn(async move {
                    let issued = tally_server::issuance::issue(&app, &sub, "volume-test", "pwd")
                        .await
                        .expect("issuance must succeed");
                    (issued.token, issued.token_id)
                });
            }
            let mut v = Vec::with_capacity(count);
            while let Some(r) = set.join_next().await {
                v.push(r.unwrap());
            }
            v
        }));
    }
    for h in handles {
        out.extend(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_issued_tokens_all_pass_in_process() {
    let dir = temp_dir("volume-inproc");
    let app = open_app(dir.path());
    let tokens = issue_many(&app, 100_000).await;
    assert_eq!(tokens.len(), 100_000);
    assert_eq!(app.ledger.size(), 100_000);
    // And never for one that is not.
    let refused = tally_server::issuance::issue(&app, "ghost-member", "volume-test", "pwd").await;
    assert_eq!(refused.err().map(|e| e.code()), Some("unknown_subject"));
    assert_eq!(app.ledger.size(), 100_000);
    let now = now_unix();
    let mut ids = std::collections::HashSet::new();
    for (token, jti) in &tokens {
        assert!(ids.insert(jti.clone()), "duplicate jti {jti}");
        // First sight (verify + tally), then the cached hot path: both must allow.
        for _ in 0..2 {
            match app.gate.check(token.as_bytes(), now) {
                Step::Decided(Ok(t)) => assert_eq!(t.token_id(), jti),
                Step::Decided(Err(r)) => panic!("false reject {:?} for {jti}", r.verdict()),
                Step::AskLedger(_) => panic!("issued token missing from the registry: {jti}"),
            }
        }
    }
    app.ledger.close();
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_issued_tokens_all_pass_over_http() {
    let dir = temp_dir("volume-http");
    let app = open_app(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tally_server::serve(app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let tokens = issue_many(&app, 10_000).await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/check");
    let tokens = Arc::new(tokens);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let tokens = tokens.clone();
        let client = client.clone();
        let url = url.clone();
        set.spawn(async move {
            let mut ok = 0usize;
            for (token, jti) in tokens.iter().skip(w).step_by(8) {
                let resp = client
                    .get(&url)
                    .bearer_auth(token)
                    .header("X-Original-URI", "/orders")
                    .header("X-Original-Method", "GET")
                    .send()
                    .await
                    .unwrap();
                let verdict = resp.headers()["x-tally-verdict"]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert_eq!(
                    resp.status(),
                    200,
                    "false reject over HTTP: {verdict} for {jti}"
                );
                assert_eq!(verdict, "ok");
                assert_eq!(resp.headers()["x-tally-token-id"].to_str().unwrap(), jti);
                ok += 1;
            }
            ok
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r.unwrap();
    }
    assert_eq!(total, 10_000);
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tally_gate_decisions_total{verdict=\"ok\"} 10000"),
        "{metrics}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(dir);
}
