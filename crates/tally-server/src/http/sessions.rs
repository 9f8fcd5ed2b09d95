//! Sessions: refresh tokens rotated on every use, reuse detection, RFC 7009
//! revocation, RFC 7662 introspection, and logout.
//!
//! A login starts a session (a refresh-token *family*). Each refresh spends the
//! presented refresh token and hands out a new access token and a new refresh
//! token of the same family. Presenting a spent refresh token again means a
//! copy is in someone else's hands: the whole family is revoked, with every
//! unexpired access token it produced (`refresh_reuse`). Refresh tokens are
//! opaque (`tally_rt_` + 256 random bits) and stored only as SHA-256 hashes.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use tally_core::digest::TokenDigest;
use tally_store::{RefreshUse, Session};

use super::request::{Facts, peer_of};
use crate::app::App;
use crate::blocking::blocking;
use crate::error::ApiError;
use crate::issuance::{self as issuer, Issued};

/// Prefix of every refresh token.
pub(super) const REFRESH_PREFIX: &str = "tally_rt_";

/// A new refresh token and the hash that is stored.
pub(super) fn new_refresh_token() -> Result<(String, [u8; 32]), ApiError> {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| ApiError::unavailable("internal"))?;
    let token = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = *TokenDigest::of(token.as_bytes()).as_bytes();
    Ok((token, hash))
}

fn refresh_hash(token: &str) -> Option<[u8; 32]> {
    let rest = token.strip_prefix(REFRESH_PREFIX)?;
    if rest.len() != 43
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(*TokenDigest::of(token.as_bytes()).as_bytes())
}

/// Issues an access token inside `session` and records it as the session's.
/// `subject` is the session's, found in the directory by this request or
/// to be looked up.
pub(super) async fn issue_in_session(
    app: &Arc<App>,
    session: &Session,
    subject: issuer::Subject<'_>,
    jkt: Option<&str>,
) -> Result<Issued, ApiError> {
    let issued = issuer::issue_for(
        app,
        &issuer::TokenRequest {
            subject,
            client_id: &session.client_id,
            auth_context: &session.auth_context,
            jkt,
            audience: session.audience.as_deref(),
        },
    )
    .await?;
    let a = app.clone();
    let family = session.family.clone();
    let (jti, digest, exp) = (
        issued.token_id.clone(),
        *TokenDigest::of(issued.token.as_bytes()).as_bytes(),
        app.clock.now() + issued.expires_in,
    );
    blocking(move || a.dir.state.add_session_token(&family, &jti, &digest, exp)).await?;
    Ok(issued)
}

/// Starts a session for a subject this request authenticated (`template`
/// minus its family, which is drawn here): access and refresh token.
pub(super) async fn start_session(
    app: &Arc<App>,
    template: &Session,
) -> Result<(Issued, String), ApiError> {
    let mut fam = [0u8; 16];
    SystemRandom::new()
        .fill(&mut fam)
        .map_err(|_| ApiError::unavailable("internal"))?;
    let session = Session {
        family: URL_SAFE_NO_PAD.encode(fam),
        ..template.clone()
    };
    let (refresh, hash) = new_refresh_token()?;
    let now = app.clock.now();
    let exp = now + app.config.refresh_ttl_secs;
    let a = app.clone();
    let s2 = session.clone();
    blocking(move || a.dir.state.create_session(&s2, &hash, exp, now)).await?;
    let subject = issuer::Subject::found(&session.subject);
    let issued = issue_in_session(app, &session, subject, session.jkt.as_deref()).await?;
    Ok((issued, refresh))
}

/// The JSON answer carrying a token pair.
pub(super) fn token_response(issued: &Issued, refresh: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    (
        headers,
        Json(json!({
            "access_token": issued.token,
            "token_type": if issued.bound { "DPoP" } else { "Bearer" },
            "expires_in": issued.expires_in,
            "refresh_token": refresh,
        })),
    )
        .into_response()
}

fn invalid_grant() -> ApiError {
    ApiError::bad_request(
        "invalid_grant",
        "the refresh token is invalid, expired, already used or its session ended; log in again",
    )
}

/// The key a token request proves possession of with a `DPoP` header
/// (RFC 9449), if it carries one; a present but invalid proof is an error.
/// With server nonces on (`dpop_nonce`), a proof without a current nonce is
/// answered `400 use_dpop_nonce` with a fresh `DPoP-Nonce` (RFC 9449 section 8).
pub(super) fn dpop_key(
    app: &App,
    headers: &HeaderMap,
    path: &str,
    now: i64,
) -> Result<Option<String>, ApiError> {
    let mut proofs = headers.get_all("dpop").iter();
    let Some(proof) = proofs.next() else {
        return Ok(None);
    };
    let bad = |detail: &str| {
        ApiError::bad_request(
            "invalid_dpop_proof",
            format!("the DPoP proof is not acceptable: {detail}"),
        )
    };
    if proofs.next().is_some() {
        return Err(bad("more than one DPoP header"));
    }
    let proof = proof.to_str().map_err(|_| bad("not ASCII"))?;
    // Token requests reach tally directly or through a proxy that keeps Host.
    let target = super::request::Target::from_headers(headers, "POST", path, false);
    let policy = tally_core::dpop::DpopPolicy::default();
    let p = tally_core::dpop::verify_proof(
        proof,
        &target.method,
        &target.url,
        None,
        None,
        now,
        &policy,
    )
    .map_err(|e| bad(e.detail()))?;
    match super::decide::accept_proof(app, &p, &policy, now) {
        Ok(()) => {}
        Err(super::decide::ProofRefused::Replayed) => {
            return Err(bad("the proof was already used"));
        }
        Err(super::decide::ProofRefused::UseNonce) => {
            let current = app.dpop_nonces.as_ref().map(|n| n.current(now));
            let e = ApiError::bad_request(
                "use_dpop_nonce",
                "this server requires a DPoP nonce: retry with the one in the DPoP-Nonce header",
            );
            return Err(match current {
                Some(n) => e.with_header(
                    axum::http::HeaderName::from_static("dpop-nonce"),
                    super::respond::header_value(&n),
                ),
                None => e,
            });
        }
    }
    Ok(Some(p.jkt))
}

/// Body of `/v1/refresh`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// `POST /v1/refresh` `{"refresh_token"}` → a new access and refresh token.
pub(super) async fn refresh(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: RefreshRequest = parse_body(&headers, &body)?;
    let now = app.clock.now();
    let jkt = dpop_key(&app, &headers, "/v1/refresh", now)?;
    let Some(hash) = refresh_hash(&req.refresh_token) else {
        return Err(invalid_grant());
    };
    let a = app.clone();
    let proven = jkt.clone();
    match blocking(move || a.dir.state.use_refresh_token(&hash, proven.as_deref(), now)).await? {
        RefreshUse::Invalid => Err(invalid_grant()),
        RefreshUse::WrongKey(session) => {
            tracing::warn!(
                event = "refresh_wrong_key",
                sub = ?session.subject,
                client_id = ?session.client_id,
                session = %session.family,
                "a DPoP-bound refresh token was presented without a proof by its key: refused, not spent"
            );
            Err(ApiError::bad_request(
                "invalid_dpop_proof",
                "this refresh token is bound to a DPoP key: send a DPoP proof signed by that key",
            ))
        }
        RefreshUse::Reused(session) => {
            let a = app.clone();
            let fam = session.family.clone();
            let revoked =
                blocking(move || a.dir.state.revoke_session(&fam, "refresh_reuse", now)).await?;
            let _ = app.apply_revocations();
            tracing::warn!(
                event = "refresh_reuse",
                sub = ?session.subject,
                client_id = ?session.client_id,
                session = %session.family,
                revoked_access_tokens = revoked,
                "a spent refresh token was presented again: the whole session is revoked"
            );
            app.metrics.refresh_reuse();
            app.watch
                .signal(tally_incident::detect::Signal::RefreshReuse {
                    subject: session.subject.clone(),
                    session: session.family.clone(),
                });
            Err(invalid_grant())
        }
        RefreshUse::Rotated(session) => {
            let (refresh, hash) = new_refresh_token()?;
            let a = app.clone();
            let fam = session.family.clone();
            let exp = now + app.config.refresh_ttl_secs;
            blocking(move || a.dir.state.add_refresh_token(&fam, &hash, exp, now)).await?;
            // A bound session stays bound to its key; an unbound one gets a
            // bound access token when the request proves a key.
            let bind = session.jkt.clone().or(jkt);
            let subject = issuer::Subject::named(&session.subject);
            let issued = issue_in_session(&app, &session, subject, bind.as_deref()).await?;
            Ok(token_response(&issued, &refresh))
        }
    }
}

/// A request naming a token (`token=…` form or `{"token": …}` JSON).
#[derive(Deserialize)]
pub(super) struct TokenParam {
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("invalid_request", crate::error::body_problem(&e)))
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(body).map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "a form body with the expected fields (token, optional token_type_hint)",
            )
        })
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            "send application/x-www-form-urlencoded or application/json",
        ))
    }
}

/// The one decision on a token presented to a token-management endpoint
/// (`route`, `POST path`), booked like a gate decision: blocks, the miss
/// limiter, forgery reports and sender binding apply as at the gate.
async fn decide_booked(
    app: &Arc<App>,
    presented: Result<super::request::Presented<'_>, tally_core::verdict::Verdict>,
    facts: &Facts<'_>,
    (route, path): (&str, &str),
) -> (tally_core::gate::Decision, tally_core::verdict::Verdict) {
    // Token endpoints are reached directly or through a proxy that keeps Host
    // (as for the DPoP proof of a token request).
    let target = super::request::Target::from_headers(facts.headers, "POST", path, false);
    let inquiry = matches!(presented, Ok(super::request::Presented::Inquiry(_)));
    let decision = super::decide::decide_presented(app, presented, facts, &target).await;
    let verdict = super::decide::book(app, &decision, facts, (route, "POST", path), inquiry);
    (decision, verdict)
}

/// Revokes an access token tally issued (with its session, if it has one).
/// Returns how many access tokens were newly revoked.
async fn revoke_access(
    app: &Arc<App>,
    tallied: &tally_core::gate::TalliedToken,
    token: &[u8],
    reason: &'static str,
) -> Result<usize, ApiError> {
    let now = app.clock.now();
    let jti = tallied.token_id().to_string();
    let digest = *TokenDigest::of(token).as_bytes();
    let exp = tallied.expires_at();
    let a = app.clone();
    let n = blocking(move || {
        let mut n = a.dir.state.revoke(
            &[tally_store::Revocation {
                token_id: jti.clone(),
                token_sha256: digest,
                expires_at: exp,
            }],
            reason,
            now,
        )?;
        if let Some(family) = a.dir.state.session_of_token(&jti)? {
            n += a.dir.state.revoke_session(&family, reason, now)?;
        }
        Ok::<_, tally_store::StateError>(n)
    })
    .await?;
    let _ = app.apply_revocations();
    Ok(n)
}

/// Revokes the session of a refresh token. A session bound to a DPoP key
/// is ended only with a proof by that key: a thief of its refresh token
/// cannot log its owner out. Returns how many access tokens were newly
/// revoked.
async fn revoke_refresh(
    app: &Arc<App>,
    headers: &HeaderMap,
    token: &str,
) -> Result<usize, ApiError> {
    let now = app.clock.now();
    let Some(hash) = refresh_hash(token) else {
        return Ok(0);
    };
    let a = app.clone();
    let status = blocking(move || a.dir.state.refresh_token_status(&hash, now)).await?;
    let Some((session, _, _)) = status else {
        return Ok(0);
    };
    if let Some(bound) = &session.jkt {
        let proven = dpop_key(app, headers, "/v1/revoke", now)?;
        let same = proven.is_some_and(|p| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                p.as_bytes(),
                bound.as_bytes(),
            ))
        });
        if !same {
            return Err(proof_required());
        }
    }
    let a = app.clone();
    let n = blocking(move || a.dir.state.revoke_session(&session.family, "revoked", now)).await?;
    let _ = app.apply_revocations();
    Ok(n)
}

/// A sender-constrained token or session, without a proof by its key.
fn proof_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_dpop_proof",
        "this token is bound to a DPoP key: send a DPoP proof signed by that key",
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("DPoP error=\"invalid_dpop_proof\""),
    )
}

/// `POST /v1/revoke` (RFC 7009). `200` for a well-formed request whether or
/// not the token was valid, so the endpoint tells an attacker nothing; but
/// an access token goes through the gate's decision first: a forgery is
/// reported and counted against the caller's address, a blocked caller is
/// refused, a DPoP-bound token needs a proof by its key, and a store that
/// cannot say whether tally issued it answers `503` (nothing was revoked).
pub(super) async fn revoke(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TokenParam = parse_body(&headers, &body)?;
    let facts = Facts::read(&app, &headers, peer_of(&ext));
    let n = if req.token.starts_with(REFRESH_PREFIX) {
        revoke_refresh(&app, &headers, &req.token).await?
    } else {
        let presented = Ok(super::request::Presented::Body(req.token.as_bytes()));
        let (decision, verdict) =
            decide_booked(&app, presented, &facts, ("revoke", "/v1/revoke")).await;
        use tally_core::verdict::Verdict;
        match decision {
            Ok(t) => revoke_access(&app, &t, req.token.as_bytes(), "revoked").await?,
            Err(r)
                if matches!(
                    verdict,
                    Verdict::Unavailable | Verdict::BlockedActor | Verdict::BindingMismatch
                ) =>
            {
                return Ok(super::respond::refuse(&app, &r, verdict, facts.now()));
            }
            // Anything else tally did not issue, or no longer honours: there
            // is nothing to revoke (RFC 7009 section 2.2).
            Err(_) => 0,
        }
    };
    if n > 0 {
        tracing::info!(
            event = "token_revoked",
            access_tokens = n,
            "revocation requested"
        );
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /v1/logout` with the access token in `Authorization` (`Bearer`, or
/// `DPoP` with a proof for this request): ends the session the token belongs
/// to (its refresh tokens and access tokens). The token gets the gate's
/// decision, booked and reported like any other.
pub(super) async fn logout(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let facts = Facts::read(&app, &headers, peer_of(&ext));
    let presented = facts
        .credentials
        .map(|(s, t)| super::request::Presented::Header(s, t));
    let token = presented.map(|p| p.token().to_vec()).unwrap_or_default();
    let (decision, verdict) =
        decide_booked(&app, presented, &facts, ("logout", "/v1/logout")).await;
    let tallied = match decision {
        Ok(t) => t,
        Err(r) => return Ok(super::respond::refuse(&app, &r, verdict, facts.now())),
    };
    let n = revoke_access(&app, &tallied, &token, "logout").await?;
    tracing::info!(event = "logout", sub = ?tallied.subject(), access_tokens = n, "session ended");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn invalid_client() -> Response {
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tally\""),
    );
    r
}

/// Checks HTTP Basic client credentials against the registered clients, with
/// the same argon2 work for unknown clients. Throttled as logins are, per
/// (client, address), per address and per client (`guard`): a throttled
/// attempt is answered `429` before any secret is checked, for known and
/// unknown client ids alike.
async fn authenticate_client(app: &Arc<App>, facts: &Facts<'_>) -> Result<bool, ApiError> {
    let Some(value) = facts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(false);
    };
    let Some(b64) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Ok(false);
    };
    let Ok(decoded) = STANDARD.decode(b64.trim()) else {
        return Ok(false);
    };
    let decoded = zeroize::Zeroizing::new(decoded);
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        return Ok(false);
    };
    let Some((id, secret)) = decoded.split_once(':') else {
        return Ok(false);
    };
    if secret.len() > crate::passwords::MAX_BYTES {
        return Ok(false);
    }
    let now = facts.now().max(0) as u64;
    let attempt = super::guard::attempt(&format!("client:{id}"), facts);
    if let Err(e) = super::guard::admit(app, &attempt, now).await {
        tracing::info!(
            event = "client_auth_throttled",
            "client authentication refused: too many failures"
        );
        return Err(e);
    }
    let mut slot = issuer::password_slot(app).await?;
    let a = app.clone();
    let (id, secret) = (id.to_string(), zeroize::Zeroizing::new(secret.to_string()));
    let authenticated = blocking(move || {
        Ok::<_, tally_store::StateError>(match a.dir.state.client_secret_hash(&id)? {
            Some(h) => slot.verify(&h, &secret),
            None => {
                let _ = slot.verify(&a.dummy_hash, &secret);
                false
            }
        })
    })
    .await?;
    if authenticated {
        super::guard::succeeded(app, &attempt, now).await?;
    } else {
        // Booked at the end of its second, as a failed login is.
        super::guard::failed(app, &attempt, now + 1).await?;
        tracing::info!(
            event = "client_auth_failed",
            "client authentication refused"
        );
    }
    Ok(authenticated)
}

/// `POST /v1/introspect` (RFC 7662), for clients registered with
/// `tally clients add` and authenticated with HTTP Basic.
pub(super) async fn introspect(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let facts = Facts::read(&app, &headers, peer_of(&ext));
    if !authenticate_client(&app, &facts).await? {
        return Ok(invalid_client());
    }
    let req: TokenParam = parse_body(&headers, &body)?;
    let inactive = || Json(json!({"active": false})).into_response();
    if req.token.starts_with(REFRESH_PREFIX) {
        let Some(hash) = refresh_hash(&req.token) else {
            return Ok(inactive());
        };
        let now = facts.now();
        let a = app.clone();
        return Ok(
            match blocking(move || a.dir.state.refresh_token_status(&hash, now)).await? {
                Some((s, exp, true)) => Json(json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "sub": s.subject,
                    "client_id": s.client_id,
                    "exp": exp,
                    "iss": app.config.issuer,
                }))
                .into_response(),
                _ => inactive(),
            },
        );
    }
    // The gate's decision, booked as an inquiry: a forgery shown to a
    // resource server is reported like one shown to the gate.
    let presented = Ok(super::request::Presented::Inquiry(req.token.as_bytes()));
    let (decision, verdict) =
        decide_booked(&app, presented, &facts, ("introspect", "/v1/introspect")).await;
    Ok(match decision {
        Ok(t) => Json(json!({
            "active": true,
            "token_type": "access_token",
            "sub": t.subject(),
            "jti": t.token_id(),
            "exp": t.expires_at(),
            "iss": app.config.issuer,
            "aud": t.audiences().collect::<Vec<_>>(),
        }))
        .into_response(),
        // The store cannot say: the resource server must not take "inactive"
        // for an answer it could cache.
        Err(r) if verdict == tally_core::verdict::Verdict::Unavailable => {
            super::respond::refuse(&app, &r, verdict, facts.now())
        }
        Err(_) => inactive(),
    })
}
