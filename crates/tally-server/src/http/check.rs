//! `GET /v1/check`: the decision endpoint for nginx `auth_request` and the like.

use super::decide::{check_audience, decide_for, for_audience, record_decision, refuse_target};
use super::request::{Target, from_trusted_proxy, original_request};
use super::respond::{insert_identity, next_dpop_nonce, refuse};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_core::target::RequestTarget;

use crate::app::App;

/// `GET /v1/check`.
pub(super) async fn check(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
) -> Response {
    let peer = ext
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let started = std::time::Instant::now();
    let via_proxy = from_trusted_proxy(&app, peer);
    // The original request, normalised as the proxy would: the route (and
    // so the audience) is chosen on the normal form, never on raw bytes.
    let described = original_request(&headers);
    let (method, raw) = described.unwrap_or((None, None));
    let (method, raw) = (method.unwrap_or(""), raw.unwrap_or(""));
    let original = match described.and_then(|(_, uri)| uri.map(RequestTarget::parse).transpose()) {
        Ok(t) => t,
        Err(e) => {
            return refuse_target(
                &app,
                e,
                peer,
                &headers,
                ("check", method, raw),
                started,
                StatusCode::FORBIDDEN,
            );
        }
    };
    let target = Target::original(&headers, via_proxy);
    let decision = for_audience(
        decide_for(&app, &headers, peer, &target).await,
        check_audience(&app, original.as_ref(), via_proxy),
    );
    app.metrics.decision_latency(started.elapsed());
    let path = original.as_ref().map_or("", |t| t.as_str());
    let verdict = record_decision(
        &app,
        &decision,
        peer,
        &headers,
        ("check", method, path),
        started,
    );
    let mut out = HeaderMap::new();
    out.insert("x-tally-verdict", HeaderValue::from_static(verdict.code()));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match decision {
        Ok(t) => {
            insert_identity(&mut out, &t);
            if let Some(nonce) = next_dpop_nonce(&app, &t) {
                out.insert("dpop-nonce", nonce);
            }
            (StatusCode::OK, out).into_response()
        }
        Err(r) => {
            if !verdict.is_forgery() {
                tracing::debug!(
                    verdict = verdict.code(),
                    detail = r.detail.unwrap_or(""),
                    uri = ?path,
                    method = ?tally_incident::access::bounded(method, tally_incident::access::limits::METHOD),
                    "refused"
                );
            }
            refuse(&app, &r, verdict)
        }
    }
}
