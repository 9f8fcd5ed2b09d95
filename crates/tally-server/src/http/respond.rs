//! Answers about a token: the identity headers an allowed request carries
//! (tally's alone: every client `X-Tally-*` header was stripped before), and
//! the refusal, with the challenge a client needs to retry.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::gate::{Refusal, TalliedToken};
use tally_core::verdict::Verdict;

use super::decide::USE_DPOP_NONCE;
use crate::app::App;

/// The identity headers of an allowed request: `X-Tally-Verdict: ok`,
/// `X-Tally-Subject` and `X-Tally-Token-Id`. The one place that writes them,
/// for `/v1/check`'s answer and for the proxy's upstream request alike; the
/// proxy has removed every client header of that family before.
pub(super) fn insert_identity(out: &mut HeaderMap, t: &TalliedToken) {
    out.insert(
        "x-tally-verdict",
        HeaderValue::from_static(Verdict::Ok.code()),
    );
    out.insert("x-tally-subject", header_value(t.subject()));
    out.insert("x-tally-token-id", header_value(t.token_id()));
}

/// The next `DPoP-Nonce` for a DPoP-bound token, when nonces are required
/// (`now`: the request's instant).
pub(super) fn next_dpop_nonce(app: &App, t: &TalliedToken, now: i64) -> Option<HeaderValue> {
    let nonces = app.dpop_nonces.as_ref()?;
    t.jkt()?;
    Some(header_value(&nonces.current(now)))
}

/// Header-safe rendering: visible ASCII kept, everything else percent-encoded.
pub(super) fn header_value(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// [`refusal_response`], plus what a DPoP client needs to retry when server
/// nonces are on: a fresh `DPoP-Nonce` on every `binding_mismatch`, and the
/// `use_dpop_nonce` challenge when that was the problem (RFC 9449 section 9).
/// `now` is the request's instant.
pub(super) fn refuse(app: &App, r: &Refusal, verdict: Verdict, now: i64) -> Response {
    let mut resp = refusal_response(r, verdict);
    if verdict == Verdict::BindingMismatch
        && let Some(nonces) = &app.dpop_nonces
    {
        let h = resp.headers_mut();
        h.insert("dpop-nonce", header_value(&nonces.current(now)));
        if r.detail == Some(USE_DPOP_NONCE) {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            let h = resp.headers_mut();
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
                ),
            );
        }
    }
    resp
}

/// The answer to a refused request: `401` (with a Bearer challenge), `403`
/// or `503`, `X-Tally-Verdict`, and a JSON error naming the verdict.
pub(super) fn refusal_response(r: &Refusal, verdict: Verdict) -> Response {
    let mut out = HeaderMap::new();
    out.insert("x-tally-verdict", HeaderValue::from_static(verdict.code()));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let status = StatusCode::from_u16(verdict.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if verdict == Verdict::Missing {
            "Bearer"
        } else {
            "Bearer error=\"invalid_token\""
        };
        out.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    let message = match r.detail {
        Some(d) => format!("token refused: {} ({d})", verdict.code()),
        None => format!("token refused: {}", verdict.code()),
    };
    (
        status,
        out,
        axum::Json(json!({"error": {"code": verdict.code(), "message": message}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_safe() {
        assert_eq!(header_value("alice").to_str().unwrap(), "alice");
        assert_eq!(header_value("a b\n%").to_str().unwrap(), "a%20b%0A%25");
    }
}
