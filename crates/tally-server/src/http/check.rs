//! `GET /v1/check`: the decision endpoint for nginx `auth_request` and the like.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_core::target::RequestTarget;

use super::decide::{check_audience, decide_for, for_audience, record_decision, refuse_target};
use super::request::{Facts, Target, original_request, peer_of};
use super::respond::{insert_identity, next_dpop_nonce, refuse};
use crate::app::App;

/// `GET /v1/check`.
pub(super) async fn check(
    State(app): State<Arc<App>>,
    ext: Extensions,
    headers: HeaderMap,
) -> Response {
    let facts = Facts::read(&app, &headers, peer_of(&ext));
    // The original request, normalised as the proxy would: the route (and
    // so the audience) is chosen on the normal form, never on raw bytes.
    let described = original_request(&headers);
    let (method, raw) = described.unwrap_or((None, None));
    let original = match described.and_then(|(_, uri)| uri.map(RequestTarget::parse).transpose()) {
        Ok(t) => t,
        Err(e) => {
            let request = ("check", method.unwrap_or(""), raw.unwrap_or(""));
            return refuse_target(&app, e, &facts, request, StatusCode::FORBIDDEN);
        }
    };
    // What a DPoP proof must name: the original request as the proxy in
    // front describes it, `GET /` when it does not.
    let target = Target::from_headers(
        &headers,
        method.unwrap_or("GET"),
        raw.unwrap_or("/"),
        facts.via_proxy,
    );
    let method = method.unwrap_or("");
    let decision = for_audience(
        decide_for(&app, &facts, &target).await,
        check_audience(&app, original.as_ref(), facts.via_proxy),
    );
    app.metrics.decision_latency(facts.started.elapsed());
    let path = original.as_ref().map_or("", |t| t.as_str());
    let verdict = record_decision(&app, &decision, &facts, ("check", method, path));
    let mut out = HeaderMap::new();
    out.insert("x-tally-verdict", HeaderValue::from_static(verdict.code()));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match decision {
        Ok(t) => {
            insert_identity(&mut out, &t);
            if let Some(nonce) = next_dpop_nonce(&app, &t, facts.now()) {
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
            refuse(&app, &r, verdict, facts.now())
        }
    }
}
