//! `GET /v1/check`: the decision endpoint for nginx `auth_request` and the like.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::gate::{Decision, LedgerAnswer, Refusal, Step, TalliedToken};
use tally_core::target::{RequestTarget, TargetError};
use tally_core::verdict::Verdict;

use crate::app::App;
use crate::keys::now_unix;

/// Extracts the bearer token from `Authorization`, or the verdict for its absence.
pub fn bearer(headers: &HeaderMap) -> Result<&[u8], Verdict> {
    credentials(headers).map(|(_, t)| t)
}

/// How the client presented its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP` (RFC 9449), with a `DPoP` proof header.
    Dpop,
}

/// The scheme and token of the `Authorization` header.
pub fn credentials(headers: &HeaderMap) -> Result<(Scheme, &[u8]), Verdict> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Verdict::Missing);
    };
    if values.next().is_some() {
        return Err(Verdict::Malformed);
    }
    let bytes = value.as_bytes();
    let (scheme, token) = if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        (Scheme::Bearer, &bytes[7..])
    } else if bytes.len() > 5 && bytes[..5].eq_ignore_ascii_case(b"dpop ") {
        (Scheme::Dpop, &bytes[5..])
    } else {
        return Err(Verdict::Malformed);
    };
    if token.is_empty() || token.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(Verdict::Malformed);
    }
    Ok((scheme, token))
}

/// How a token reached the endpoint deciding it.
#[derive(Clone, Copy, Debug)]
pub enum Presented<'a> {
    /// In `Authorization`, with its scheme: the caller uses the token as its
    /// own credential (the gate, the admin API, logout).
    Header(Scheme, &'a [u8]),
    /// In the request body, by its holder (RFC 7009 revocation): a
    /// sender-constrained token needs a proof by its key in the `DPoP`
    /// header all the same.
    Body(&'a [u8]),
    /// In the request body, by a resource server asking about it (RFC 7662
    /// introspection): the caller does not hold the token's key, and the
    /// answer tells it the binding instead.
    Inquiry(&'a [u8]),
}

impl Presented<'_> {
    /// The token's bytes.
    pub fn token(&self) -> &[u8] {
        match self {
            Presented::Header(_, t) | Presented::Body(t) | Presented::Inquiry(t) => t,
        }
    }
}

/// The request a token is used for: what a DPoP proof must name.
#[derive(Clone, Debug)]
pub struct Target {
    /// HTTP method.
    pub method: String,
    /// Full URL (scheme, host, path; a query is ignored by the comparison).
    pub url: String,
}

impl Target {
    /// The target described by a request's headers: `Host` and `path`, and,
    /// only when the request comes through a trusted proxy (`via_proxy`),
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` (a client could otherwise
    /// make a proof stolen from another site look like one for this one).
    pub fn from_headers(headers: &HeaderMap, method: &str, path: &str, via_proxy: bool) -> Target {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let fwd = |n: &str| if via_proxy { h(n) } else { None };
        let scheme = fwd("x-forwarded-proto").unwrap_or("http");
        let host = fwd("x-forwarded-host")
            .or_else(|| h("host"))
            .unwrap_or("localhost");
        Target {
            method: method.to_string(),
            url: format!("{scheme}://{host}{path}"),
        }
    }

    /// The original request as the proxy in front describes it (see
    /// [`original_request`]); `GET /` when it does not.
    pub fn original(headers: &HeaderMap, via_proxy: bool) -> Target {
        let (method, uri) = original_request(headers).unwrap_or((None, None));
        Target::from_headers(
            headers,
            method.unwrap_or("GET"),
            uri.unwrap_or("/"),
            via_proxy,
        )
    }
}

/// The method and target of the request a decision is asked for, as the
/// proxy in front names them: nginx `auth_request` with `X-Original-Method`
/// and `X-Original-URI`, Caddy `forward_auth` (and Traefik) with
/// `X-Forwarded-Method` and `X-Forwarded-Uri`. A request that carries both
/// spellings with different values is refused: one of them came from the
/// client, and nobody can tell which.
pub fn original_request(headers: &HeaderMap) -> Result<(Option<&str>, Option<&str>), TargetError> {
    let one = |a: &str, b: &str| -> Result<Option<&str>, TargetError> {
        let get = |n: &str| match headers.get(n) {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| TargetError::BadByte),
        };
        match (get(a)?, get(b)?) {
            (Some(x), Some(y)) if x != y => Err(TargetError::Conflicting),
            (x, y) => Ok(x.or(y)),
        }
    };
    Ok((
        one("x-original-method", "x-forwarded-method")?,
        one("x-original-uri", "x-forwarded-uri")?,
    ))
}

/// The refusal detail of a proof without a current server nonce.
pub const USE_DPOP_NONCE: &str = "use_dpop_nonce: retry with the nonce in the DPoP-Nonce header";

fn binding_mismatch(t: &TalliedToken, detail: &'static str) -> Refusal {
    let mut r = Refusal::new(Verdict::BindingMismatch);
    r.detail = Some(detail);
    r.kid = Some(t.kid().to_string());
    r.subject = Some(t.subject().to_string());
    r.token_id = Some(t.token_id().to_string());
    r
}

/// Sender binding (RFC 9449): a token bound to a key (`cnf.jkt`) needs a
/// fresh, unreplayed proof by that key for this request, and, when it comes
/// in `Authorization`, the `DPoP` scheme; the `DPoP` scheme with an unbound
/// token is refused too. A token asked about by a third party
/// ([`Presented::Inquiry`]) needs no proof.
pub fn check_binding(
    app: &App,
    t: &TalliedToken,
    presented: Presented<'_>,
    headers: &HeaderMap,
    target: &Target,
) -> Result<(), Refusal> {
    let (scheme, token) = match presented {
        Presented::Header(s, t) => (Some(s), t),
        Presented::Body(t) => (None, t),
        Presented::Inquiry(_) => return Ok(()),
    };
    let Some(jkt) = t.jkt() else {
        return match scheme {
            Some(Scheme::Dpop) => Err(binding_mismatch(t, "DPoP scheme with an unbound token")),
            _ => Ok(()),
        };
    };
    if scheme == Some(Scheme::Bearer) {
        return Err(binding_mismatch(
            t,
            "a DPoP-bound token needs the DPoP scheme",
        ));
    }
    let mut proofs = headers.get_all("dpop").iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(binding_mismatch(
            t,
            "exactly one DPoP proof header is required",
        ));
    };
    let proof = proof
        .to_str()
        .map_err(|_| binding_mismatch(t, "DPoP proof is not ASCII"))?;
    let token = std::str::from_utf8(token).map_err(|_| binding_mismatch(t, "token not ASCII"))?;
    let now = now_unix();
    let policy = tally_core::dpop::DpopPolicy::default();
    let p = tally_core::dpop::verify_proof(
        proof,
        &target.method,
        &target.url,
        Some(token),
        None,
        now,
        &policy,
    )
    .map_err(|e| binding_mismatch(t, e.detail()))?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        p.jkt.as_bytes(),
        jkt.as_bytes(),
    )) {
        return Err(binding_mismatch(t, "the proof is signed by another key"));
    }
    accept_proof(app, &p, &policy, now).map_err(|r| match r {
        ProofRefused::UseNonce => binding_mismatch(t, USE_DPOP_NONCE),
        ProofRefused::Replayed => binding_mismatch(t, "DPoP proof replayed"),
    })
}

/// Why a verified DPoP proof is not accepted.
pub(crate) enum ProofRefused {
    /// The server hands out nonces, and the proof carries none of its own.
    UseNonce,
    /// The proof was used before.
    Replayed,
}

/// The server's own conditions on a verified DPoP proof, at the gate as at
/// the token endpoint: its nonce, when the server hands them out, then once
/// only (a proof with a stale nonce is not remembered as used).
pub(crate) fn accept_proof(
    app: &App,
    p: &tally_core::dpop::DpopProof,
    policy: &tally_core::dpop::DpopPolicy,
    now: i64,
) -> Result<(), ProofRefused> {
    if let Some(nonces) = &app.dpop_nonces
        && !p.nonce.as_deref().is_some_and(|n| nonces.accepts(n, now))
    {
        return Err(ProofRefused::UseNonce);
    }
    if !app
        .dpop_replay
        .check_and_insert(&p.jkt, &p.jti, policy.replay_expires_at(p.iat), now)
    {
        return Err(ProofRefused::Replayed);
    }
    Ok(())
}

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most address of `X-Forwarded-For` (every such header, in
/// order) that is not itself a trusted proxy. Addresses to its left were
/// written by someone tally does not trust (the client, to begin with) and
/// are never read. If that right-most entry is not an address, nobody can
/// say who the client is, and the peer is taken.
pub fn client_ip(app: &App, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let trusted = |ip: IpAddr| app.config.trusted_proxies.iter().any(|c| c.contains(ip));
    client_of(peer?.ip(), headers, trusted)
}

/// [`client_ip`], with the trusted proxies as a predicate.
fn client_of(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    if !trusted(peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    for entry in entries.into_iter().rev() {
        match parse_forwarded_addr(entry) {
            Some(ip) if trusted(ip) => continue,
            Some(ip) => return Some(ip),
            None => return Some(peer),
        }
    }
    Some(peer)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Whether the peer is one of the configured trusted proxies.
pub fn from_trusted_proxy(app: &App, peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| {
        app.config
            .trusted_proxies
            .iter()
            .any(|c| c.contains(p.ip()))
    })
}

fn blocked(block: &tally_core::containment::Block, mut r: Refusal) -> Refusal {
    tracing::warn!(event = "blocked_actor", block = block.id, reason = ?block.reason, sub = ?r.subject, token_id = ?r.token_id, "request refused by containment");
    r.detail = Some("blocked by containment");
    r
}

/// A validly signed token the ledger cannot tally proves a signing key is in
/// the wrong hands: count it against the key and log it, once per decision.
fn report_forgery(app: &App, r: &Refusal, target: &Target) {
    if !r.proves_stolen_key() {
        return;
    }
    if let Some(kid) = &r.kid {
        app.saw_forgery(kid, now_unix());
    }
    tracing::warn!(
        event = "forged_token",
        verdict = r.verdict().code(),
        kid = r.kid.as_deref().unwrap_or(""),
        token_id = ?r.token_id.as_deref().unwrap_or(""),
        sub = ?r.subject.as_deref().unwrap_or(""),
        method = ?tally_incident::access::bounded(&target.method, tally_incident::access::limits::METHOD),
        url = ?tally_incident::access::bounded(&target.url, tally_incident::access::limits::PATH),
        "validly signed token that the ledger cannot tally: refused"
    );
}

/// A full decision with containment for the token in `Authorization`:
/// blocks on the client address and device first, then the token, then
/// blocks on its subject and id.
pub async fn decide_for(
    app: &Arc<App>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    target: &Target,
) -> Decision {
    let presented = credentials(headers).map(|(s, t)| Presented::Header(s, t));
    decide_presented(app, presented, headers, peer, target).await
}

/// The one decision every endpoint that accepts a token runs, whichever way
/// the token came ([`Presented`]): containment on the client address and
/// device, the token (its registry misses rate-limited per address, a
/// forgery reported), sender binding, then containment on its subject and
/// id. The caller books it ([`book`]).
pub async fn decide_presented(
    app: &Arc<App>,
    presented: Result<Presented<'_>, Verdict>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    target: &Target,
) -> Decision {
    use tally_core::containment::Actor;
    let blocks = app.blocks();
    let now = now_unix();
    let ip = client_ip(app, peer, headers);
    let device = headers
        .get(app.config.device_header.as_str())
        .and_then(|v| v.to_str().ok());
    if !blocks.is_empty()
        && let Some(b) = blocks.matching(
            &Actor {
                ip,
                device,
                ..Default::default()
            },
            now,
        )
    {
        return Err(blocked(b, Refusal::new(Verdict::BlockedActor)));
    }
    let presented = presented.map_err(Refusal::new)?;
    let decision = decide_token_for(app, presented.token(), ip)
        .await
        .inspect_err(|r| report_forgery(app, r, target))?;
    check_binding(app, &decision, presented, headers, target)?;
    if !blocks.is_empty() {
        let actor = Actor {
            ip,
            device,
            subject: Some(decision.subject()),
            token_id: Some(decision.token_id()),
        };
        if let Some(b) = blocks.matching(&actor, now) {
            let mut r = Refusal::new(Verdict::BlockedActor);
            r.kid = Some(decision.kid().to_string());
            r.subject = Some(decision.subject().to_string());
            r.token_id = Some(decision.token_id().to_string());
            return Err(blocked(b, r));
        }
    }
    Ok(decision)
}

/// Narrows an allowed decision to one audience: a token whose `aud` does not
/// contain `audience` is refused `wrong_audience` (a token minted for one API
/// must not open another, even though both are tally's).
pub fn for_audience(decision: Decision, audience: &str) -> Decision {
    decision.and_then(|t| {
        if t.has_audience(audience) {
            return Ok(t);
        }
        let mut r = Refusal::new(Verdict::WrongAudience);
        r.detail = Some("the token is for another audience than this route's");
        r.kid = Some(t.kid().to_string());
        r.subject = Some(t.subject().to_string());
        r.token_id = Some(t.token_id().to_string());
        Err(r)
    })
}

/// The audience a `/v1/check` request is decided for: the audience of the
/// `[[gate.routes]]` entry (longest prefix, whole segments) that covers the
/// normalised original URI a trusted proxy reports (`X-Original-URI`, which
/// nginx sets), or the server's. Never a value the client names: a header
/// such as `X-Tally-Audience` could be forwarded from the client by the proxy.
pub fn check_audience<'a>(
    app: &'a App,
    original: Option<&RequestTarget>,
    via_proxy: bool,
) -> &'a str {
    if via_proxy
        && let Some(target) = original
        && let Some(gate) = &app.config.gate
        && let Some(route) = gate.route(target)
    {
        return route.audience.as_deref().unwrap_or(&app.config.audience);
    }
    &app.config.audience
}

/// Refuses a request whose target cannot be normalised safely, and books
/// it like any decision (verdict `malformed`): `400` from the proxy, `403`
/// from `/v1/check` (nginx `auth_request` passes only 401 and 403 on).
pub fn refuse_target(
    app: &App,
    e: TargetError,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    (route, method, raw): (&str, &str, &str),
    started: std::time::Instant,
    status: StatusCode,
) -> Response {
    let mut r = Refusal::new(Verdict::Malformed);
    r.detail = Some(e.message());
    let decision: Decision = Err(r);
    record_decision(app, &decision, peer, headers, (route, method, raw), started);
    tracing::debug!(code = e.code(), "request target refused");
    let mut out = HeaderMap::new();
    out.insert("x-tally-verdict", HeaderValue::from_static("malformed"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (
        status,
        out,
        axum::Json(json!({"error": {"code": "bad_request_target", "message": format!("{} ({})", e.message(), e.code())}})),
    )
        .into_response()
}

/// Runs a full decision for the compact token `token`.
pub async fn decide_token(app: &Arc<App>, token: &[u8]) -> Decision {
    decide_token_for(app, token, None).await
}

/// [`decide_token`] for a request from `client`: its registry misses (each a
/// signature verification) are rate-limited per address.
pub async fn decide_token_for(app: &Arc<App>, token: &[u8], client: Option<IpAddr>) -> Decision {
    let now = now_unix();
    let allow_miss =
        || client.is_none_or(|ip| app.miss_limiter.allow(&ip, tally_store::clock::now_ms()));
    match app.gate.check_guarded(token, now, &allow_miss) {
        Step::Decided(d) => d,
        Step::AskLedger(q) => {
            // A forged token seen before is refused from memory: a flood of
            // one forged token costs no store round trips.
            if app.misses.known_forged(q.digest(), now) {
                return app.gate.resolve(q, LedgerAnswer::NotFound, now);
            }
            let a = app.clone();
            let jti = q.token_id().to_string();
            let found = tokio::task::spawn_blocking(move || a.ledger.record_of(&jti)).await;
            let answer = match found {
                Ok(Ok(Some(record))) => {
                    let a = app.clone();
                    let jti = record.token_id.clone();
                    match tokio::task::spawn_blocking(move || a.dir.state.is_revoked(&jti)).await {
                        Ok(Ok(revoked)) => LedgerAnswer::Found {
                            token_sha256: record.token_sha256,
                            expires_at: record.expires_at,
                            revoked,
                        },
                        _ => LedgerAnswer::Unavailable,
                    }
                }
                Ok(Ok(None)) => {
                    app.misses.remember(q.digest(), now);
                    LedgerAnswer::NotFound
                }
                Ok(Err(e)) => {
                    tracing::error!(code = e.code(), error = %e, "ledger lookup failed; failing closed");
                    LedgerAnswer::Unavailable
                }
                Err(_) => LedgerAnswer::Unavailable,
            };
            app.gate.resolve(q, answer, now)
        }
    }
}

/// The identity headers of an allowed request: `X-Tally-Verdict: ok`,
/// `X-Tally-Subject` and `X-Tally-Token-Id`. The one place that writes them,
/// for `/v1/check`'s answer and for the proxy's upstream request alike; the
/// proxy has removed every client header of that family before.
pub fn insert_identity(out: &mut HeaderMap, t: &TalliedToken) {
    out.insert(
        "x-tally-verdict",
        HeaderValue::from_static(Verdict::Ok.code()),
    );
    out.insert("x-tally-subject", header_value(t.subject()));
    out.insert("x-tally-token-id", header_value(t.token_id()));
}

/// The next `DPoP-Nonce` for a DPoP-bound token, when nonces are required.
pub fn next_dpop_nonce(app: &App, t: &TalliedToken) -> Option<HeaderValue> {
    let nonces = app.dpop_nonces.as_ref()?;
    t.jkt()?;
    Some(header_value(&nonces.current(now_unix())))
}

/// Header-safe rendering: visible ASCII kept, everything else percent-encoded.
pub fn header_value(s: &str) -> HeaderValue {
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

/// Books a decision made outside the proxy (`/v1/check`, the admin API,
/// logout, revocation): an access event for route `route` (`(route, method,
/// path)`), and the verdict counter. Returns the verdict.
pub fn record_decision(
    app: &App,
    decision: &Decision,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    request: (&str, &str, &str),
    started: std::time::Instant,
) -> Verdict {
    book(app, decision, peer, headers, request, started, false)
}

/// [`record_decision`], saying whether the decision was an inquiry: a
/// resource server asking about a token (introspection) rather than a
/// request that used it. An inquiry tells nothing about where the token is
/// used, so the detector does not count it as an access by the caller's
/// address (no `mass_access`, no `token_replay`), but a forgery it reveals is
/// a forgery all the same.
pub fn book(
    app: &App,
    decision: &Decision,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    (route, method, path): (&str, &str, &str),
    started: std::time::Instant,
    inquiry: bool,
) -> Verdict {
    if let Some(events) = app.access_events.get() {
        let mut e = tally_incident::access::event(
            decision,
            client_ip(app, peer, headers),
            headers
                .get(app.config.device_header.as_str())
                .and_then(|v| v.to_str().ok()),
            route,
            method,
            path,
            &[],
            decision.is_ok(),
            started.elapsed(),
        );
        e.inquiry = inquiry;
        events.record(e);
    }
    let verdict = match decision {
        Ok(_) => Verdict::Ok,
        Err(r) => r.verdict(),
    };
    app.metrics.verdict(verdict);
    verdict
}

/// `GET /v1/check`.
pub async fn check(
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

/// [`refusal_response`], plus what a DPoP client needs to retry when server
/// nonces are on: a fresh `DPoP-Nonce` on every `binding_mismatch`, and the
/// `use_dpop_nonce` challenge when that was the problem (RFC 9449 section 9).
pub fn refuse(app: &App, r: &Refusal, verdict: Verdict) -> Response {
    let mut resp = refusal_response(r, verdict);
    if verdict == Verdict::BindingMismatch
        && let Some(nonces) = &app.dpop_nonces
    {
        let h = resp.headers_mut();
        h.insert("dpop-nonce", header_value(&nonces.current(now_unix())));
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
pub fn refusal_response(r: &Refusal, verdict: Verdict) -> Response {
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

    fn h(v: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for x in v {
            m.append(header::AUTHORIZATION, HeaderValue::from_str(x).unwrap());
        }
        m
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&h(&[])), Err(Verdict::Missing));
        assert_eq!(bearer(&h(&["Bearer a.b.c"])), Ok(&b"a.b.c"[..]));
        assert_eq!(bearer(&h(&["bearer a.b.c"])), Ok(&b"a.b.c"[..]));
        assert_eq!(bearer(&h(&["Basic abc"])), Err(Verdict::Malformed));
        assert_eq!(bearer(&h(&["Bearer "])), Err(Verdict::Malformed));
        assert_eq!(bearer(&h(&["Bearer a b"])), Err(Verdict::Malformed));
        assert_eq!(
            bearer(&h(&["Bearer a", "Bearer b"])),
            Err(Verdict::Malformed)
        );
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let xff = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = ip("10.0.0.1");
        let cases: [(&[&str], &str); 8] = [
            // Not from a trusted proxy: the header is never read.
            (&["203.0.113.1"], "192.0.2.9"),
            // What the client wrote, then what the proxy appended.
            (&["203.0.113.1, 198.51.100.7"], "198.51.100.7"),
            // Trusted hops on the right are skipped.
            (&["203.0.113.1, 198.51.100.7, 10.0.0.2"], "198.51.100.7"),
            // Several headers are one list, in order.
            (&["203.0.113.1", "198.51.100.7"], "198.51.100.7"),
            // Garbage where the client should be: nobody knows; the peer.
            (&["198.51.100.7, garbage"], "10.0.0.1"),
            // Ports are allowed.
            (&["[2001:db8::1]:443"], "2001:db8::1"),
            // Only trusted hops: the peer.
            (&["10.0.0.3"], "10.0.0.1"),
            (&[], "10.0.0.1"),
        ];
        for (i, (vals, want)) in cases.iter().enumerate() {
            let from = if i == 0 { ip("192.0.2.9") } else { peer };
            assert_eq!(
                client_of(from, &xff(vals), trusted),
                Some(ip(want)),
                "{vals:?}"
            );
        }
    }

    #[test]
    fn header_values_are_safe() {
        assert_eq!(header_value("alice").to_str().unwrap(), "alice");
        assert_eq!(header_value("a b\n%").to_str().unwrap(), "a%20b%0A%25");
    }
}
