//! Health, readiness, metrics, JWKS and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::error::ApiError;

/// `GET /healthz`: the process is alive.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// `GET /readyz`: the store is reachable, the ledger verified, the registry loaded.
pub(super) async fn readyz(
    State(app): State<Arc<App>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if app.ledger.tampered().is_some() {
        // The finding itself goes to the operator's log, not to any caller.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_tampered",
            "the ledger no longer matches what was written and signed; see the server log",
        ));
    }
    if !app.ledger.is_healthy() {
        return Err(ApiError::unavailable("store_unavailable"));
    }
    let a = app.clone();
    let reachable = tokio::task::spawn_blocking(move || a.dir.state.data_version().is_ok())
        .await
        .unwrap_or(false);
    if !reachable {
        return Err(ApiError::unavailable("store_unavailable"));
    }
    Ok(Json(json!({
        "status": "ready",
        "storage": app.ledger.backend(),
        "sequencer": app.ledger.is_sequencer(),
        "ledger_size": app.ledger.size(),
        "registry_live_tokens": app.gate.registry().len(),
    })))
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = app.metrics.render(
        app.ledger.size(),
        app.gate.registry().len(),
        app.ledger.is_healthy(),
    );
    if let Some(e) = app.access_events.get() {
        let counter = |body: &mut String, name: &str, help: &str, v: u64| {
            body.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            &mut body,
            "tally_access_events_dropped_total",
            "Decisions the access log failed to take (write errors); a flood drops none.",
            e.lost(),
        );
        counter(
            &mut body,
            "tally_access_events_written_total",
            "Rows written to the access log (an aggregate row counts once).",
            e.written(),
        );
        counter(
            &mut body,
            "tally_access_decisions_logged_total",
            "Decisions in the access log: rows, plus the refusals aggregate rows count.",
            e.logged(),
        );
        counter(
            &mut body,
            "tally_access_refusals_aggregated_total",
            "Decisions counted in aggregate rows instead of written one by one (refusals under a flood; allowed requests only when the writer is 64 MiB behind).",
            e.aggregated(),
        );
        counter(
            &mut body,
            "tally_access_log_bytes_total",
            "Bytes of rows written to the access log.",
            e.log_bytes(),
        );
        let b = e.bites();
        body.push_str(
            "# HELP tally_access_budget_bites_total Refusals counted because a budget was spent: \
             bytes (the byte rate), queue (the writer's queue), actors (too many actors at once).\n\
             # TYPE tally_access_budget_bites_total counter\n",
        );
        for (reason, v) in [("bytes", b.bytes), ("queue", b.queue), ("actors", b.keys)] {
            body.push_str(&format!(
                "tally_access_budget_bites_total{{reason=\"{reason}\"}} {v}\n"
            ));
        }
        body.push_str(&format!(
            "# HELP tally_access_queue_bytes Bytes of access events waiting to be written.\n\
             # TYPE tally_access_queue_bytes gauge\ntally_access_queue_bytes {}\n",
            e.queued_bytes()
        ));
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &app.connections;
        body.push_str(&format!(
            "# HELP tally_connections_open Client connections open now (API and gate ports).\n\
             # TYPE tally_connections_open gauge\ntally_connections_open {}\n\
             # HELP tally_connections_accepted_total Client connections accepted.\n\
             # TYPE tally_connections_accepted_total counter\ntally_connections_accepted_total {}\n\
             # HELP tally_connections_refused_total Connections closed at once, over a cap.\n\
             # TYPE tally_connections_refused_total counter\n\
             tally_connections_refused_total{{cap=\"per_address\"}} {}\n\
             tally_connections_refused_total{{cap=\"total\"}} {}\n\
             # HELP tally_connections_idle_closed_total Connections closed because no byte moved for the idle timeout.\n\
             # TYPE tally_connections_idle_closed_total counter\ntally_connections_idle_closed_total {}\n",
            c.open.load(Relaxed),
            c.accepted.load(Relaxed),
            c.refused_per_address.load(Relaxed),
            c.refused_total.load(Relaxed),
            c.idle_closed.load(Relaxed),
        ));
    }
    let gauge = |body: &mut String, name: &str, help: &str, v: u64| {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    gauge(
        &mut body,
        "tally_store_reachable",
        "Whether the ledger store answered its last round trip (1) or not (0).",
        u64::from(app.ledger.is_reachable()),
    );
    gauge(
        &mut body,
        "tally_sequencer",
        "Whether this process sequences the ledger (always 1 when embedded).",
        u64::from(app.ledger.is_sequencer()),
    );
    gauge(
        &mut body,
        "tally_forged_tokens_remembered",
        "Tokens the store said it never issued, answered from memory when seen again.",
        app.misses.len() as u64,
    );
    if let Some(n) = app.watch.fleet_dropped() {
        body.push_str(&format!(
            "# HELP tally_fleet_counts_dropped_total Observation batches not added to the fleet's shared counts (queue full).\n\
             # TYPE tally_fleet_counts_dropped_total counter\ntally_fleet_counts_dropped_total {n}\n"
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

/// `GET /.well-known/jwks.json`: public keys that verify tally's tokens.
pub(super) async fn jwks(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        )],
        Json(
            app.own_keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .to_jwks(),
        ),
    )
        .into_response()
}

/// `GET /.well-known/tally-events-jwks.json`: the key that signs Security
/// Event Tokens (created on first use), kept apart from the token JWKS.
pub(super) async fn events_jwks(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    let keys = tokio::task::spawn_blocking(move || {
        a.dir
            .state
            .keys(tally_store::KeyPurpose::Events)
            .map(|rows| {
                rows.into_iter()
                    .filter(|r| r.state == tally_store::KeyState::Active)
                    .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.public).ok())
                    .collect::<Vec<_>>()
            })
    })
    .await;
    match keys {
        Ok(Ok(keys)) => (
            [(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            )],
            Json(serde_json::json!({ "keys": keys })),
        )
            .into_response(),
        _ => crate::error::ApiError::unavailable("store_unavailable").into_response(),
    }
}

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("../openapi.json"),
    )
        .into_response()
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}
