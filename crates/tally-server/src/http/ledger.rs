//! The public ledger API: checkpoint, verifier key, proofs and entries.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use tally_store::LedgerError;

use crate::app::App;
use crate::blocking::blocking;
use crate::error::ApiError;

fn ledger_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::OutOfRange(m) => ApiError::bad_request("out_of_range", m),
        other => {
            tracing::error!(code = other.code(), error = %other, "ledger read failed");
            ApiError::unavailable(other.code())
        }
    }
}

fn bad_query(e: QueryRejection) -> ApiError {
    // Query parameters are not secret, but keep one rule for every body and
    // query: never repeat the client's input.
    let _ = e;
    ApiError::bad_request(
        "invalid_request",
        "missing, unknown or mistyped query parameters (see /openapi.json)",
    )
}

/// `GET /v1/ledger/checkpoint`: the latest C2SP signed note, `text/plain`.
pub(super) async fn checkpoint(State(app): State<Arc<App>>) -> Response {
    let note = app.ledger.checkpoint().note().to_string();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        note,
    )
        .into_response()
}

/// `GET /v1/ledger/key`: the verifier key (`<name>+<hash>+<base64>`).
pub(super) async fn key(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{}\n", app.ledger.verifier().verifier_key()),
    )
        .into_response()
}

/// Query of `/v1/ledger/proof/inclusion`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InclusionQuery {
    token_id: String,
    size: Option<u64>,
}

/// `GET /v1/ledger/proof/inclusion?token_id=…&size=…`.
pub(super) async fn inclusion(
    State(app): State<Arc<App>>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let a = app.clone();
    let proof = blocking(move || a.ledger.inclusion_proof(&q.token_id, q.size))
        .await?
        .ok_or_else(|| ApiError::not_found("no issuance record for this token id"))?;
    Ok(Json(json!({
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "hashes": proof.hashes.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
    })))
}

/// Query of `/v1/ledger/proof/consistency`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/ledger/proof/consistency?from=…&to=…`.
pub(super) async fn consistency(
    State(app): State<Arc<App>>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let hashes = app
        .ledger
        .consistency_proof(q.from, q.to)
        .map_err(ledger_error)?;
    Ok(Json(json!({
        "from": q.from,
        "to": q.to,
        "hashes": hashes.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
    })))
}

/// Query of `/v1/ledger/entries`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EntriesQuery {
    start: u64,
    end: u64,
}

/// `GET /v1/ledger/entries?start=…&end=…` (end exclusive, at most 1000).
/// Each record names a customer (its subject), when they logged in and how,
/// so the entries are for the `auditor` and `admin` roles only, with a token
/// that passes the gate's decision (booked like any request). Checkpoints and
/// proofs stay public: they reveal hashes, never a subject.
pub(super) async fn entries(
    State(app): State<Arc<App>>,
    _auditor: super::admin::Auditor,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, Response> {
    let Query(q) = q.map_err(|e| bad_query(e).into_response())?;
    let a = app.clone();
    let rows = blocking(move || a.ledger.entries(q.start, q.end))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(json!({
        "start": q.start,
        "end": q.end,
        "entries": rows.iter().map(|r| STANDARD.encode(r)).collect::<Vec<_>>(),
    })))
}
