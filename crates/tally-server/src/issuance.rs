//! The regular issuance process: a token is minted for a subject in the
//! directory, its record made durable in the ledger, the token registered,
//! and only then handed out. Login, refresh and the dashboard's sign-in all
//! come through here.

use axum::http::StatusCode;
use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use tally_core::digest::TokenDigest;
use tally_core::record::IssuanceRecord;

use crate::app::App;
use crate::error::ApiError;

/// Longest accepted user name.
pub const MAX_USERNAME: usize = 64;

/// One of the few slots for password hashing (argon2id, 19 MiB each, kept and
/// reused: see `passwords`): waits up to five seconds, then answers `503
/// busy` rather than queue without bound.
pub async fn password_slot(app: &App) -> Result<crate::passwords::Slot, ApiError> {
    match app.passwords.slot(std::time::Duration::from_secs(5)).await {
        Some(slot) => Ok(slot),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many password checks in progress; retry shortly",
        )),
    }
}

/// A valid user name: 1..=64 of `A-Z a-z 0-9 . _ @ -`.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Sealing context of a user's TOTP secret.
pub fn totp_context(user: &str) -> String {
    format!("tally/totp/{user}")
}

/// A freshly issued, recorded token.
pub struct Issued {
    /// Bound to a DPoP key (`token_type` DPoP).
    pub bound: bool,
    /// The compact JWT.
    pub token: String,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Its `jti`.
    pub token_id: String,
    /// Leaf index in the ledger.
    pub ledger_index: u64,
}

/// Mints a token for `subject`, records it in the ledger (durably), adds it to
/// the registry, and only then returns it. A subject that is not in the
/// directory gets no token (`unknown_subject`): in a breach with a kept
/// signing key, millions of tokens were minted for members who did not exist.
pub async fn issue(
    app: &Arc<App>,
    subject: &str,
    client_id: &str,
    auth_context: &str,
) -> Result<Issued, ApiError> {
    issue_for(
        app,
        &TokenRequest {
            subject: Subject::named(subject),
            client_id,
            auth_context,
            jkt: None,
            audience: None,
        },
    )
    .await
}

/// Who a token is for, and whether this request has already found them in
/// the directory (a login that verified their password row), so that the
/// row is not read twice; anyone else is looked up before anything is signed.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    name: &'a str,
    found: bool,
}

impl<'a> Subject<'a> {
    /// A subject to look up in the directory before issuing.
    pub fn named(name: &'a str) -> Subject<'a> {
        Subject { name, found: false }
    }

    /// A subject this request found in the directory (and authenticated).
    pub(crate) fn found(name: &'a str) -> Subject<'a> {
        Subject { name, found: true }
    }

    /// The `sub`.
    pub fn name(&self) -> &'a str {
        self.name
    }
}

/// What a token is minted for.
#[derive(Clone, Copy, Debug)]
pub struct TokenRequest<'a> {
    /// `sub`: must be in the directory.
    pub subject: Subject<'a>,
    /// `client_id`.
    pub client_id: &'a str,
    /// How the subject authenticated (recorded in the ledger).
    pub auth_context: &'a str,
    /// The DPoP key to bind the token to (`cnf.jkt`, RFC 9449), if any.
    pub jkt: Option<&'a str>,
    /// `aud`: the server's audience unless a route's is asked for (the
    /// caller checks it is one tally accepts).
    pub audience: Option<&'a str>,
}

/// [`issue`] with every option.
pub async fn issue_for(app: &Arc<App>, req: &TokenRequest<'_>) -> Result<Issued, ApiError> {
    let TokenRequest {
        subject,
        client_id,
        auth_context,
        jkt,
        audience,
    } = *req;
    let (found, subject) = (subject.found, subject.name);
    let known = found
        || {
            let a = app.clone();
            let who = subject.to_string();
            tokio::task::spawn_blocking(move || a.dir.state.password_hash(&who))
            .await
            .map_err(|_| ApiError::unavailable("internal"))?
            .map_err(|e| {
                tracing::error!(code = e.code(), error = %e, "state store failed or refused a row during issuance");
                ApiError::unavailable("store_unavailable")
            })?
            .is_some()
        };
    if !known {
        tracing::warn!(event = "unknown_subject", sub = ?subject, client_id = ?client_id, "issuance refused: the subject is not in the directory");
        app.metrics.unknown_subject();
        app.watch
            .signal(tally_incident::detect::Signal::UnknownSubject {
                subject: subject.to_string(),
                requested_by: format!("client:{client_id}"),
            });
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_subject",
            "no token is issued for a subject that is not in the directory",
        ));
    }
    let now = app.clock.now();
    let ttl = app.config.token_ttl_secs;
    let exp = now + ttl;
    let mut jti = [0u8; 16];
    SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| ApiError::unavailable("internal"))?;
    let jti = URL_SAFE_NO_PAD.encode(jti);
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::from(app.config.issuer.clone()));
    claims.insert("sub".into(), Value::from(subject));
    let audience = audience.unwrap_or(&app.config.audience);
    if !app.config.accepts_audience(audience) {
        return Err(invalid_target());
    }
    claims.insert("aud".into(), Value::from(audience));
    claims.insert("exp".into(), Value::from(exp));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("jti".into(), Value::from(jti.clone()));
    claims.insert("client_id".into(), Value::from(client_id));
    if let Some(jkt) = jkt {
        claims.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
    }
    let active = app.active_key();
    let kid = active.kid.clone();
    // Signing, recording and registering run as their own task: if the client
    // goes away meanwhile, the issuance still completes (or is withheld) and
    // the key's account stays exact.
    let a = app.clone();
    let (subject_s, auth_s, jti_s) = (subject.to_string(), auth_context.to_string(), jti.clone());
    let (token, ledger_index) = tokio::spawn(async move {
        let account = active.account().clone();
        account.begin();
        // Signing may talk to a PKCS#11 token: off the async workers.
        let signer = active.clone();
        let signed = tokio::task::spawn_blocking(move || signer.sign_jwt("at+jwt", &claims)).await;
        let token = match signed {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                account.abandon();
                tracing::error!(error = %e, kid = %active.kid, "signing failed");
                return Err(ApiError::unavailable("signing_failed"));
            }
            Err(_) => {
                account.abandon();
                return Err(ApiError::unavailable("internal"));
            }
        };
        let digest = TokenDigest::of(token.as_bytes());
        let record = IssuanceRecord {
            token_id: jti_s,
            token_sha256: digest,
            subject: subject_s,
            kid: active.kid.clone(),
            issuer: a.config.issuer.clone(),
            issued_at: now,
            expires_at: exp,
            auth_context: auth_s,
        };
        match tally_store::store::append(&*a.ledger, record).await {
            Ok(index) => {
                account.end(true);
                a.gate.registry().insert(&digest, exp);
                a.signed_until(&active.kid, exp);
                Ok((token, index))
            }
            Err(e) => {
                account.end(false);
                tracing::error!(code = e.code(), error = %e, "issuance not recorded; token withheld");
                Err(ApiError::unavailable(e.code()))
            }
        }
    })
    .await
    .map_err(|_| ApiError::unavailable("internal"))??;
    app.metrics.issued();
    tracing::info!(event = "token_issued", token_id = %jti, sub = ?subject, kid = %kid, ledger_index, "token issued");
    Ok(Issued {
        bound: jkt.is_some(),
        token,
        expires_in: ttl,
        token_id: jti,
        ledger_index,
    })
}

/// RFC 8707's code for a resource (audience) this server does not serve.
pub fn invalid_target() -> ApiError {
    ApiError::bad_request(
        "invalid_target",
        "no token is issued for this audience: use the server's audience or a gate route's",
    )
}
