//! The gate's decision over HTTP: a presented token through the ledger
//! tally, the DPoP binding, the blocks in force and the route's audience;
//! every decision booked in the access log and shown to the detector.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::gate::{Decision, Examined, LedgerAnswer, Refusal, Step, TalliedToken};
use tally_core::target::{RequestTarget, TargetError};
use tally_core::verdict::Verdict;

use super::request::{Facts, Presented, Scheme, Target};
use crate::app::App;

/// The refusal detail of a proof without a current server nonce.
pub(super) const USE_DPOP_NONCE: &str =
    "use_dpop_nonce: retry with the nonce in the DPoP-Nonce header";

fn binding_mismatch(t: &TalliedToken, detail: &'static str) -> Refusal {
    let mut r = Refusal::of_token(Verdict::BindingMismatch, t);
    r.detail = Some(detail);
    r
}

/// Sender binding (RFC 9449): a token bound to a key (`cnf.jkt`) needs a
/// fresh, unreplayed proof by that key for this request, and, when it comes
/// in `Authorization`, the `DPoP` scheme; the `DPoP` scheme with an unbound
/// token is refused too. A token asked about by a third party
/// ([`Presented::Inquiry`]) needs no proof.
pub(super) fn check_binding(
    app: &App,
    t: &TalliedToken,
    presented: Presented<'_>,
    facts: &Facts<'_>,
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
    let mut proofs = facts.headers.get_all("dpop").iter();
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
    let now = facts.now();
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

/// A refusal by containment. Its log line is at debug level: a blocked
/// client decides how many there are, and every one is in the access log
/// and the `blocked_actor` counter already.
fn blocked(block: &tally_core::containment::Block, mut r: Refusal) -> Refusal {
    let token = r.examined.map(|e| e.verdict.code());
    tracing::debug!(event = "blocked_actor", block = block.id, reason = ?block.reason, sub = ?r.subject, token_id = ?r.token_id, token = ?token, "request refused by containment");
    r.detail = Some("blocked by containment");
    r
}

/// A validly signed token the ledger cannot tally proves a signing key is in
/// the wrong hands: count it against the key and log it, once per decision.
fn report_forgery(app: &App, r: &Refusal, target: &Target, now: i64) {
    if !r.proves_stolen_key() {
        return;
    }
    if let Some(kid) = &r.kid {
        app.saw_forgery(kid, now);
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
pub(super) async fn decide_for(app: &Arc<App>, facts: &Facts<'_>, target: &Target) -> Decision {
    let presented = facts.credentials.map(|(s, t)| Presented::Header(s, t));
    decide_presented(app, presented, facts, target).await
}

/// The one decision every endpoint that accepts a token runs, whichever way
/// the token came ([`Presented`]): containment on the client address and
/// device, the token (its registry misses rate-limited per address, a
/// forgery reported), sender binding, then containment on its subject and
/// id. The caller books it ([`book`]).
pub(super) async fn decide_presented(
    app: &Arc<App>,
    presented: Result<Presented<'_>, Verdict>,
    facts: &Facts<'_>,
    target: &Target,
) -> Decision {
    use tally_core::containment::Actor;
    let blocks = app.blocks();
    let now = facts.now();
    let (ip, device) = (facts.client, facts.device);
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
        let refusal = match presented {
            Ok(p) => examined_refusal(&examine_blocked(app, p.token(), facts).await),
            Err(v) => {
                let mut r = Refusal::new(Verdict::BlockedActor);
                r.examined = Some(Examined {
                    verdict: v,
                    detail: None,
                });
                r
            }
        };
        if refusal.carried_forgery()
            && let Some(kid) = &refusal.kid
        {
            app.saw_forgery(kid, now);
        }
        return Err(blocked(b, refusal));
    }
    let presented = presented.map_err(Refusal::new)?;
    let decision = decide_token_for(app, presented.token(), facts)
        .await
        .inspect_err(|r| report_forgery(app, r, target, now))?;
    check_binding(app, &decision, presented, facts, target)?;
    if !blocks.is_empty() {
        let actor = Actor {
            ip,
            device,
            subject: Some(decision.subject()),
            token_id: Some(decision.token_id()),
        };
        if let Some(b) = blocks.matching(&actor, now) {
            return Err(blocked(
                b,
                Refusal::of_token(Verdict::BlockedActor, &decision),
            ));
        }
    }
    Ok(decision)
}

/// Narrows an allowed decision to one audience: a token whose `aud` does not
/// contain `audience` is refused `wrong_audience` (a token minted for one API
/// must not open another, even though both are tally's).
pub(super) fn for_audience(decision: Decision, audience: &str) -> Decision {
    decision.and_then(|t| {
        if t.has_audience(audience) {
            return Ok(t);
        }
        let mut r = Refusal::of_token(Verdict::WrongAudience, &t);
        r.detail = Some("the token is for another audience than this route's");
        Err(r)
    })
}

/// The audience a `/v1/check` request is decided for: the audience of the
/// `[[gate.routes]]` entry (longest prefix, whole segments) that covers the
/// normalised original URI a trusted proxy reports (`X-Original-URI`, which
/// nginx sets), or the server's. Never a value the client names: a header
/// such as `X-Tally-Audience` could be forwarded from the client by the proxy.
pub(super) fn check_audience<'a>(
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
pub(super) fn refuse_target(
    app: &App,
    e: TargetError,
    facts: &Facts<'_>,
    (route, method, raw): (&str, &str, &str),
    status: StatusCode,
) -> Response {
    let mut r = Refusal::new(Verdict::Malformed);
    r.detail = Some(e.message());
    let decision: Decision = Err(r);
    record_decision(app, &decision, facts, (route, method, raw));
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

/// A full decision for the compact token `token` in a request with `facts`:
/// its registry misses (each a signature verification) are rate-limited per
/// client address.
pub(super) async fn decide_token_for(app: &Arc<App>, token: &[u8], facts: &Facts<'_>) -> Decision {
    let allow_miss = || {
        facts
            .client
            .is_none_or(|ip| app.miss_limiter.allow(&ip, facts.at_ms))
    };
    let step = app.gate.check_guarded(token, facts.now(), &allow_miss);
    resolve(app, step, facts.now()).await
}

use tally_core::gate::NOT_EXAMINED;

/// The token of a request containment refuses, decided as if the request
/// had not been refused, for the record only: so that the access log, the
/// detector and the incident report count a forged token as one whoever
/// sent it. A token the registry holds costs a lookup; an unknown one costs
/// a signature verification and a ledger lookup, as it would from an
/// address that is not blocked, and is budgeted like one: per client
/// address (`blocked_examine_per_sec`, `blocked_examine_burst`, by default
/// the same as the miss limiter's, so being blocked buys no more of the
/// gate's time) and for all blocked clients together
/// (`blocked_examine_total_…`). Beyond either, the token is recorded as not
/// examined ([`NOT_EXAMINED`]), which the report counts apart. The buckets
/// are separate from the miss limiter's, which the attacker has usually
/// spent by the time it is blocked.
async fn examine_blocked(app: &Arc<App>, token: &[u8], facts: &Facts<'_>) -> Decision {
    let refused = std::cell::Cell::new(false);
    let step = {
        let allow = || {
            // The address's own share first, so that one blocked client
            // cannot spend what the others are owed.
            let ok = facts
                .client
                .is_none_or(|ip| app.blocked_examinations.allow(&ip, facts.at_ms))
                && app.blocked_examinations_total.allow(&(), facts.at_ms);
            refused.set(!ok);
            ok
        };
        app.gate.check_guarded(token, facts.now(), &allow)
    };
    let mut d = resolve(app, step, facts.now()).await;
    if refused.get()
        && let Err(r) = &mut d
    {
        r.detail = Some(NOT_EXAMINED);
    }
    d
}

/// The refusal of a blocked request whose token got `decision`: it names
/// what the token showed (key, and subject and id when its signature
/// verified) and carries the token's own verdict ([`Examined`]).
fn examined_refusal(decision: &Decision) -> Refusal {
    let mut r = match decision {
        Ok(t) => Refusal::of_token(Verdict::BlockedActor, t),
        Err(e) => {
            let mut r = Refusal::new(Verdict::BlockedActor);
            r.kid.clone_from(&e.kid);
            r.subject.clone_from(&e.subject);
            r.token_id.clone_from(&e.token_id);
            r
        }
    };
    r.examined = Some(Examined::of(decision));
    r
}

/// The gate's first step, finished: a validly signed token the registry
/// does not hold is looked up in the ledger store.
async fn resolve(app: &Arc<App>, step: Step, now: i64) -> Decision {
    match step {
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

/// Books a decision made outside the proxy (`/v1/check`, the admin API,
/// logout, revocation): an access event for route `route` (`(route, method,
/// path)`), and the verdict counter. Returns the verdict.
pub(super) fn record_decision(
    app: &App,
    decision: &Decision,
    facts: &Facts<'_>,
    request: (&str, &str, &str),
) -> Verdict {
    book(app, decision, facts, request, false)
}

/// [`record_decision`], saying whether the decision was an inquiry: a
/// resource server asking about a token (introspection) rather than a
/// request that used it. An inquiry tells nothing about where the token is
/// used, so the detector does not count it as an access by the caller's
/// address (no `mass_access`, no `token_replay`), but a forgery it reveals is
/// a forgery all the same.
pub(super) fn book(
    app: &App,
    decision: &Decision,
    facts: &Facts<'_>,
    (route, method, path): (&str, &str, &str),
    inquiry: bool,
) -> Verdict {
    if let Some(events) = app.access_events.get() {
        let request = tally_incident::access::Request {
            at_ms: facts.at_ms,
            client_ip: facts.client,
            device: facts.device,
            route,
            method,
            path,
            data: &[],
        };
        let mut e = tally_incident::access::event(
            decision,
            &request,
            decision.is_ok(),
            facts.started.elapsed(),
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
