//! Serving: the background tasks a running server keeps (access-log writer,
//! alert delivery, detector flushes, key maintenance, state reloads, ledger
//! watch), the API listener and the gate's, and the graceful stop that
//! closes the ledger after the last request.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

/// Starts the background tasks: key reload (every 250 ms, so admin changes
/// reach the server within a second) and expiry eviction.
pub(crate) fn spawn_background(app: &Arc<App>) {
    app.access_events.get_or_init(|| {
        tally_incident::access::AccessEvents::start(
            app.access_log.clone(),
            Some(app.watch.clone()),
            app.config.flood,
        )
    });
    let a = app.clone();
    tokio::spawn(async move {
        // The alert outbox: due deliveries every second, across restarts.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !a.alerts.is_empty() {
                a.alerts.deliver_due(&a.watch.store).await;
                if let Some(own) = &a.node_outbox {
                    a.alerts.deliver_due(own).await;
                }
            }
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        // Detections reach the incident store within a second of the request.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = a.watch.urgent.notified() => {}
            }
            let a2 = a.clone();
            n += 1;
            let expire = n.is_multiple_of(120);
            let _ = tokio::task::spawn_blocking(move || {
                a2.watch.flush(&a2.alerts, &*a2);
                if expire {
                    a2.watch.expire();
                }
            })
            .await;
        }
    });
    let state_changed = Arc::new(tokio::sync::Notify::new());
    if let crate::config::Storage::Postgres { url, schema, .. } = &app.config.storage {
        listen_for_state_changes(
            url.expose().to_string(),
            schema.clone(),
            state_changed.clone(),
        );
    }
    let a = app.clone();
    tokio::spawn(async move {
        // Every 250 ms, or at once when another node announces a change.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state_changed.notified() => {}
            }
            let a2 = a.clone();
            let _ = tokio::task::spawn_blocking(move || a2.reload_keys_if_changed()).await;
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        // The ledger writer re-verifies whenever another connection committed
        // to ledger.db; asking every second reports tampering within a second
        // even when no token is being issued.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported = false;
        let mut reachable = true;
        loop {
            tick.tick().await;
            let now_reachable = a.ledger.is_reachable();
            if now_reachable != reachable {
                reachable = now_reachable;
                a.store_transition(now_reachable);
            }
            match tally_store::store::audit(&*a.ledger).await {
                Err(e @ tally_store::LedgerError::Tampered { .. }) if !reported => {
                    reported = true;
                    a.watch
                        .signal(tally_incident::detect::Signal::LedgerTampered {
                            detail: e.to_string(),
                        });
                    tracing::error!(
                        code = e.code(),
                        finding = %e,
                        "ledger tampered: issuance stopped; preserve the data directory as evidence"
                    );
                }
                Err(tally_store::LedgerError::Closed) => break,
                _ => {}
            }
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let a2 = a.clone();
            let every_other = n.is_multiple_of(2);
            n += 1;
            // When the ledger last grew is noted here, every second, not
            // only when a dashboard asks.
            a.ledger_progress();
            let _ = tokio::task::spawn_blocking(move || {
                a2.flush_sightings();
                if let Err(e) = a2.accounts.flush(&a2.dir.state) {
                    tracing::error!(error = %e, "signature counts not flushed; retrying");
                }
                if every_other {
                    a2.maintain_keys();
                    for m in a2.accounts.reconcile(&a2.dir.state, a2.clock.now()) {
                        a2.watch
                            .signal(tally_incident::detect::Signal::SignerLedgerMismatch {
                                kid: m.kid.clone(),
                                signed: m.counts.signed,
                                recorded: m.counts.recorded,
                            });
                    }
                }
            })
            .await;
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            a.evict();
            let now = a.clock.now().max(0) as u64;
            a.guard.forget_stale(now);
            if a.config.storage.is_shared() {
                let a2 = a.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let now = a2.clock.now();
                    let policy = a2.guard.policy();
                    let keep = policy.forget_after_secs() as i64;
                    a2.dir.state.forget_login_failures(now - keep, now)?;
                    let remember = policy.known.remember_secs as i64;
                    a2.dir.state.forget_known_addresses(now - remember)
                })
                .await;
            }
            // Retention: events older than the configured age go, unless a
            // legal hold covers them.
            let log = a.access_log.clone();
            let before = tally_store::clock::now_ms() - a.config.access_retention_days * 86_400_000;
            let _ = tokio::task::spawn_blocking(move || match log.purge(before) {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "access events past retention removed"),
                Err(e) => tracing::info!(code = e.code(), reason = %e, "retention deferred"),
            })
            .await;
        }
    });
}

/// LISTENs for changes to the shared state (keys, revocations, blocks,
/// users) announced by any node or admin command, and wakes the reload task.
/// Polling every 250 ms catches up regardless, so a lost connection delays
/// nothing by more than that.
fn listen_for_state_changes(url: String, schema: String, wake: Arc<tokio::sync::Notify>) {
    let channel = tally_store::state::change_channel(&schema);
    let _ = std::thread::Builder::new()
        .name("tally-state-listener".into())
        .spawn(move || tally_store::fleet::listen(&url, &channel, &|| wake.notify_one()));
}

/// Serves until `shutdown` resolves, then drains in-flight requests and closes
/// the ledger (every acknowledged record is already durable).
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_gate(app, listener, None, shutdown).await
}

/// Like [`serve`], and also runs the reverse proxy (`[gate]`) on `gate_listener`.
pub async fn serve_with_gate(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    gate_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_background(&app);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = app.config.connections;
    let exempt = app.config.trusted_proxies.clone();
    let gate = match (gate_listener, app.config.gate.as_ref()) {
        (Some(l), Some(cfg)) => {
            let proxy = Arc::new(crate::http::Proxy::new(app.clone(), cfg));
            let rx = stop_rx.clone();
            let (exempt, stats) = (exempt.clone(), app.connections.clone());
            Some(tokio::spawn(async move {
                crate::listener::serve(
                    l,
                    crate::http::proxy_router(proxy),
                    limits,
                    exempt,
                    stats,
                    stopped(rx),
                )
                .await
            }))
        }
        _ => None,
    };
    let result = crate::listener::serve(
        listener,
        crate::http::router(app.clone()),
        limits,
        exempt,
        app.connections.clone(),
        stopped(stop_rx),
    )
    .await;
    if let Some(g) = gate {
        let _ = g.await;
    }
    let a = app.clone();
    let _ = tokio::task::spawn_blocking(move || {
        a.ledger.close();
        let _ = a.accounts.flush(&a.dir.state);
        a.flush_sightings();
    })
    .await;
    result
}
