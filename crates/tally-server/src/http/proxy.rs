//! The gate as a reverse proxy: every request to a route is decided before it
//! can reach the upstream, and the upstream receives exactly what was decided.
//!
//! * The request target is normalised first ([`RequestTarget`]): the route
//!   is chosen on the normal form (longest prefix, whole segments) and the
//!   normal form is what is forwarded, so the upstream serves the path that
//!   was decided. A target that cannot be normalised safely is a `400`.
//! * The client's hop-by-hop headers, and those it names in `Connection`,
//!   are removed before anything else; then every header whose name, read
//!   with `_` as `-`, starts with `x-tally-` (CGI and WSGI servers read
//!   `X_Tally_Subject` as `X-Tally-Subject`). Only then are tally's own
//!   headers inserted, so nothing a client sends can forge or remove them.
//! * With a token required, the request gets the same decision as
//!   `/v1/check`. In `enforce` mode a refusal is answered here and the upstream
//!   never sees the request; in `monitor` mode it passes, carrying
//!   `X-Tally-Verdict` so the upstream can see what would have happened.
//! * Allowed requests carry `X-Tally-Subject` and `X-Tally-Token-Id`;
//!   every forwarded request carries the client address tally decided on as
//!   `X-Forwarded-For` (a client's own `X-Forwarded-For`, `Forwarded` and
//!   `X-Real-IP` never pass).
//! * Hop-by-hop headers (RFC 9110 section 7.6.1) are removed both ways; bodies
//!   stream in both directions; upstream connections are pooled and kept alive.
//! * An unreachable upstream is a JSON `502`, a slow one a JSON `504`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tally_core::target::RequestTarget;
use tally_core::verdict::Verdict;

use crate::app::App;
use crate::config::{GateConfig, GateMode, RouteConfig};
use crate::error::ApiError;

/// The proxy's state: the application, the routes and the upstream client.
pub(crate) struct Proxy {
    app: Arc<App>,
    gate: GateConfig,
    mode: GateMode,
    timeout: Duration,
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    /// A proxy for `gate` in front of the upstreams it names.
    pub(crate) fn new(app: Arc<App>, gate: &GateConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Proxy {
            app,
            gate: gate.clone(),
            mode: gate.mode.unwrap_or_default(),
            timeout: Duration::from_secs(gate.upstream_timeout_secs.unwrap_or(30)),
            client,
        }
    }

    fn route(&self, target: &RequestTarget) -> Option<&RouteConfig> {
        self.gate.route(target)
    }
}

/// The proxy's router: everything goes through [`handle`].
pub(crate) fn router(proxy: Arc<Proxy>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(proxy)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a request header claims to be one of tally's: its name, read
/// with `_` as `-` (as CGI, WSGI, Rack and PHP read it), starts with
/// `x-tally-`. Header names reach here lower-cased.
pub(super) fn is_tally_header(name: &str) -> bool {
    let n = name.as_bytes();
    n.len() >= 8
        && n[..8]
            .iter()
            .zip(b"x-tally-")
            .all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
}

fn strip_tally_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_tally_header(n.as_str()))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// Headers that claim a client address: only tally's decision may set one.
const CLIENT_ADDRESS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

fn upstream_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The access event of a request being forwarded: recorded with the
/// upstream's status once it is known ([`PendingEvent::finish`]), and
/// without one if the request is dropped first (the client went away, the
/// server is shutting down), so that the log and the detector see every
/// decision.
struct PendingEvent<'a> {
    event: Option<tally_incident::access::AccessEvent>,
    sink: Option<&'a tally_incident::access::AccessEvents>,
}

impl PendingEvent<'_> {
    fn finish(mut self, upstream_status: Option<u16>) {
        if let (Some(mut e), Some(sink)) = (self.event.take(), self.sink) {
            e.upstream_status = upstream_status;
            sink.record(e);
        }
    }
}

impl Drop for PendingEvent<'_> {
    fn drop(&mut self) {
        if let (Some(e), Some(sink)) = (self.event.take(), self.sink) {
            sink.record(e);
        }
    }
}

/// Decides, then forwards (or refuses) one request.
pub(super) async fn handle(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let peer = super::request::peer_of(&parts.extensions);
    // What the client sent for this hop only, then what it may not claim:
    // removed before the decision, which is made on what is forwarded.
    strip_hop_by_hop(&mut parts.headers);
    strip_tally_headers(&mut parts.headers);
    let facts = super::request::Facts::read(&proxy.app, &parts.headers, peer);
    let raw = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let target = match RequestTarget::parse(raw) {
        Ok(t) => t,
        Err(e) => {
            return super::decide::refuse_target(
                &proxy.app,
                e,
                &facts,
                ("-", parts.method.as_str(), raw),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let Some(route) = proxy.route(&target) else {
        return ApiError::not_found("no gate route for this path").into_response();
    };
    let mode = route.mode.unwrap_or(proxy.mode);
    let client = facts.client;
    let mut upstream_headers = parts.headers.clone();
    for name in CLIENT_ADDRESS {
        upstream_headers.remove(name);
    }
    if let Some(ip) = client {
        upstream_headers.insert(
            "x-forwarded-for",
            super::respond::header_value(&ip.to_string()),
        );
    }
    // A bound token's client gets the next DPoP nonce with every answer.
    let mut next_nonce = None;
    // The access event, recorded once the upstream's status is known.
    let mut pending = PendingEvent {
        event: None,
        sink: proxy.app.access_events.get(),
    };
    if route.require_token {
        // A DPoP proof names the URL the client used, as it sent it.
        let dpop_target = super::request::Target::from_headers(
            &parts.headers,
            parts.method.as_str(),
            raw,
            facts.via_proxy,
        );
        let decision = super::decide::for_audience(
            super::decide::decide_for(&proxy.app, &facts, &dpop_target).await,
            route
                .audience
                .as_deref()
                .unwrap_or(&proxy.app.config.audience),
        );
        proxy.app.metrics.decision_latency(facts.started.elapsed());
        let request = tally_incident::access::Request {
            at_ms: facts.at_ms,
            client_ip: client,
            device: facts.device,
            route: &route.prefix,
            method: parts.method.as_str(),
            path: target.as_str(),
            data: &route.data,
        };
        pending.event = Some(tally_incident::access::event(
            &decision,
            &request,
            decision.is_ok() || mode == GateMode::Monitor,
            facts.started.elapsed(),
        ));
        let verdict = match &decision {
            Ok(_) => Verdict::Ok,
            Err(r) => r.verdict(),
        };
        proxy.app.metrics.verdict(verdict);
        proxy.app.metrics.route_verdict(&route.prefix, verdict);
        match decision {
            Ok(t) => {
                next_nonce = super::respond::next_dpop_nonce(&proxy.app, &t, facts.now());
                super::respond::insert_identity(&mut upstream_headers, &t);
            }
            Err(refusal) => {
                if mode == GateMode::Enforce {
                    pending.finish(None);
                    return super::respond::refuse(&proxy.app, &refusal, verdict, facts.now());
                }
                // Monitor mode: recorded, and the request goes on, marked.
                upstream_headers
                    .insert("x-tally-verdict", HeaderValue::from_static(verdict.code()));
            }
        }
    }
    upstream_headers.remove(header::HOST);
    let Ok(uri) = format!(
        "{}{}",
        route.upstream.trim_end_matches('/'),
        target.as_str()
    )
    .parse::<Uri>() else {
        pending.finish(Some(502));
        return upstream_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "bad upstream address",
        );
    };
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(axum::http::Version::HTTP_11);
    if let Some(h) = out.headers_mut() {
        *h = upstream_headers;
    }
    let Ok(out) = out.body(body) else {
        pending.finish(Some(502));
        return upstream_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "request could not be forwarded",
        );
    };
    match tokio::time::timeout(proxy.timeout, proxy.client.request(out)).await {
        Err(_) => {
            pending.finish(Some(504));
            upstream_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            )
        }
        Ok(Err(e)) => {
            pending.finish(Some(502));
            tracing::warn!(route = %route.prefix, error = %e, "upstream unreachable");
            upstream_error(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream could not be reached",
            )
        }
        Ok(Ok(resp)) => {
            pending.finish(Some(resp.status().as_u16()));
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(n) = next_nonce {
                parts.headers.insert("dpop-nonce", n);
            }
            Response::from_parts(parts, Body::new(body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_headers_in_every_spelling() {
        for yes in [
            "x-tally-subject",
            "x_tally_subject",
            "x-tally_token-id",
            "x_tally-verdict",
            "x-tally-",
        ] {
            assert!(is_tally_header(yes), "{yes}");
        }
        for no in [
            "x-tallyx",
            "x-tall-subject",
            "tally-subject",
            "x-forwarded-for",
            "",
        ] {
            assert!(!is_tally_header(no), "{no}");
        }
    }

    #[test]
    fn connection_names_are_removed_before_anything_is_inserted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-tally-subject, keep-alive, foo"),
        );
        h.insert("foo", HeaderValue::from_static("1"));
        h.insert("x_tally_subject", HeaderValue::from_static("root"));
        strip_hop_by_hop(&mut h);
        strip_tally_headers(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
