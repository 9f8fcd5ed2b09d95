//! Who is signed in to the dashboard: the session cookie (the issuer's access
//! token, `HttpOnly`, `SameSite=Strict`, scoped to `/ui`), the full gate
//! decision plus a role check on every page, stream and form post (the
//! `auditor` or `admin` role to read, `admin` to act), and the same-origin
//! check of the dashboard's form posts.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::views::error_page;
use crate::app::App;
use crate::http::admin::{Booking, Caller, check_caller};
use crate::http::request::Facts;

/// The session cookie's name.
pub(super) const COOKIE: &str = "tally_ui";

/// The session cookie's token, if the request carries one.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The signed-in user, who has one of `roles`, or the response to send
/// instead: a redirect to the sign-in page, or a page saying which role is
/// needed. A request is booked as any admin request is (on route `admin`,
/// with its method and path); the stream's repeated checks are not.
pub(super) async fn signed_in(
    app: &Arc<App>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    (method, uri): (&Method, &Uri),
    booking: Booking,
    roles: &[&str],
) -> Result<Caller, Response> {
    let Some(h) = bearer_headers(headers) else {
        return Err(to_login());
    };
    let facts = Facts::read(app, &h, peer);
    match check_caller(app, &facts, method, uri, booking, roles).await {
        Ok(c) => Ok(c),
        // Refused for want of the role (the gate's own refusals carry a
        // verdict): say which role is needed.
        Err(resp)
            if resp.status() == StatusCode::FORBIDDEN
                && !resp.headers().contains_key("x-tally-verdict") =>
        {
            Err(error_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "This needs the role {} (tally users role NAME {}).",
                    roles.join(" or "),
                    roles[0]
                ),
            ))
        }
        // Any other refusal (no valid token any more: expired, revoked,
        // blocked) sends the browser to sign in.
        Err(_) => Err(to_login()),
    }
}

/// The redirect to the sign-in page.
pub(super) fn to_login() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/login"))],
    )
        .into_response()
}

/// `headers` with the session cookie's token as `Authorization: Bearer`
/// (and the cookie itself removed), if there is one.
fn bearer_headers(headers: &HeaderMap) -> Option<HeaderMap> {
    let token = cookie_token(headers)?;
    let mut h = headers.clone();
    h.remove(header::COOKIE);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    Some(h)
}

/// Whether a form post comes from the dashboard itself: browsers send
/// `Sec-Fetch-Site` and `Origin`; a cross-site post (login CSRF, forced
/// sign-out) is refused. `X-Forwarded-Host` names the dashboard's host only
/// on a request from a trusted proxy (`behind_proxy`).
pub(super) fn same_origin(headers: &HeaderMap, behind_proxy: bool) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return false;
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => {
            let o = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or("");
            o == host
                || behind_proxy
                    && headers
                        .get("x-forwarded-host")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|fh| fh == o)
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Whether the request came through a trusted proxy (whose forwarding
/// headers are believed).
pub(super) fn behind_proxy(app: &App, ext: &axum::http::Extensions) -> bool {
    crate::http::request::from_trusted_proxy(app, crate::http::request::peer_of(ext))
}

/// The answer to a cross-site form post.
pub(super) fn cross_site() -> Response {
    (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_forwarded_host_counts_only_from_a_trusted_proxy() {
        let direct = headers(&[
            ("origin", "https://tally.example"),
            ("host", "tally.example"),
        ]);
        assert!(same_origin(&direct, false));
        let forwarded = headers(&[
            ("origin", "https://dash.example"),
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "dash.example"),
        ]);
        assert!(same_origin(&forwarded, true));
        assert!(!same_origin(&forwarded, false), "any client could send it");
        let cross = headers(&[
            ("origin", "https://evil.example"),
            ("host", "tally.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!same_origin(&cross, true));
    }
}
