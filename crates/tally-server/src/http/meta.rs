//! Health, readiness, metrics, JWKS and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::{self, AccessCounts, ConnectionCounts, Scrape};

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

/// `GET /metrics`: Prometheus text (exposition format 0.0.4), the process's
/// counters and what the app's state holds now.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &app.connections;
    let scrape = Scrape {
        ledger_size: app.ledger.size(),
        registry_live_tokens: app.gate.registry().len() as u64,
        ledger_healthy: app.ledger.is_healthy(),
        access: app.access_events.get().map(|e| {
            let b = e.bites();
            AccessCounts {
                dropped: e.lost(),
                written: e.written(),
                logged: e.logged(),
                aggregated: e.aggregated(),
                log_bytes: e.log_bytes(),
                bites_bytes: b.bytes,
                bites_queue: b.queue,
                bites_actors: b.keys,
                queue_bytes: e.queued_bytes(),
            }
        }),
        connections: ConnectionCounts {
            open: c.open.load(Relaxed) as u64,
            accepted: c.accepted.load(Relaxed),
            refused_per_address: c.refused_per_address.load(Relaxed),
            refused_total: c.refused_total.load(Relaxed),
            idle_closed: c.idle_closed.load(Relaxed),
        },
        store_reachable: app.ledger.is_reachable(),
        sequencer: app.ledger.is_sequencer(),
        forged_tokens_remembered: app.misses.len() as u64,
        fleet_counts_dropped: app.watch.fleet_dropped(),
    };
    match app.metrics.render(scrape) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            )],
            body,
        )
            .into_response(),
        Err(_) => {
            tracing::error!(
                event = "metrics_encode_failed",
                "the metrics could not be encoded"
            );
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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
