//! The regular issuance process: authenticate, mint, record durably, then answer.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};
use tally_core::digest::TokenDigest;
use tally_core::record::IssuanceRecord;

use crate::app::App;
use crate::error::ApiError;
use crate::keys::now_unix;
use tally_store::Session;

/// Longest accepted user name.
pub const MAX_USERNAME: usize = 64;
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD: usize = 1024;

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

/// `POST /v1/login` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    client_id: Option<String>,
    /// The current one-time code, for users enrolled in TOTP.
    #[serde(default)]
    totp: Option<String>,
    /// The audience to issue for (a gate route's); default: the server's.
    #[serde(default)]
    audience: Option<String>,
}

/// RFC 8707's code for a resource (audience) this server does not serve.
pub fn invalid_target() -> ApiError {
    ApiError::bad_request(
        "invalid_target",
        "no token is issued for this audience: use the server's audience or a gate route's",
    )
}

impl LoginRequest {
    /// A login for `username` (the dashboard's form posts these).
    pub fn new(username: String, password: String, totp: Option<String>) -> LoginRequest {
        LoginRequest {
            username,
            password,
            client_id: Some("tally-ui".into()),
            totp,
            audience: None,
        }
    }
}

fn invalid_credentials() -> ApiError {
    // One message for unknown user and wrong password: no user enumeration.
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "user name or password is wrong",
    )
}

/// `POST /v1/login`: `{"username","password"}` → an access token whose issuance
/// record is durable in the ledger before this answer is written.
pub async fn login(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: axum::http::HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "expected JSON {{\"username\", \"password\"}}: {}",
                crate::error::json_rejection_problem(&e)
            ),
        )
    })?;
    if req.password.len() > MAX_PASSWORD {
        return Err(invalid_credentials());
    }
    let client_id = req.client_id.unwrap_or_else(|| "tally".into());
    if let Some(a) = &req.audience
        && !app.config.accepts_audience(a)
    {
        return Err(invalid_target());
    }
    let audience = req.audience;
    if client_id.is_empty() || client_id.len() > 128 || client_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "client_id must be 1..=128 printable characters",
        ));
    }
    let username = req.username;
    let now = now_unix().max(0) as u64;
    // Clock seconds are whole: a failure is booked at the end of its second,
    // so a lock of N seconds never lasts less than N seconds.
    let failed_at = now + 1;
    // Throttled per (user, address), per address and per user; the per-user
    // lock does not apply at an address the user recently logged in from, so
    // guesses from elsewhere cannot lock the user out (see `guard`).
    let attempt = crate::guard::attempt(&app, &format!("user:{username}"), &ext, &headers);
    if let Err(e) = crate::guard::admit(&app, &attempt, now).await {
        app.metrics.login_failed();
        tracing::info!(
            event = "login_throttled",
            "login refused: too many failures"
        );
        return Err(e);
    }
    let mut slot = password_slot(&app).await?;
    let a = app.clone();
    let user = username.clone();
    let password = zeroize::Zeroizing::new(req.password);
    let authenticated = tokio::task::spawn_blocking(move || {
        let stored = if valid_username(&user) {
            a.dir.state.password_hash(&user)
        } else {
            Ok(None)
        };
        match stored {
            Ok(Some(phc)) => Ok(slot.verify(&phc, &password)),
            Ok(None) => {
                // Same work as for a real user, then refuse.
                let _ = slot.verify(&a.dummy_hash, &password);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|_| ApiError::unavailable("internal"))?
    .map_err(|e| {
        tracing::error!(code = e.code(), error = %e, "state store failed or refused a row during login");
        ApiError::unavailable("store_unavailable")
    })?;
    if !authenticated {
        crate::guard::failed(&app, &attempt, failed_at).await?;
        app.metrics.login_failed();
        tracing::info!(event = "login_failed", "login refused");
        return Err(invalid_credentials());
    }
    let auth_context = match second_factor(&app, &username, req.totp.as_deref(), now).await? {
        SecondFactor::NotEnrolled => "pwd",
        SecondFactor::Passed => "pwd+otp",
        SecondFactor::Missing => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "this account needs a one-time code: send it as \"totp\"",
            ));
        }
        SecondFactor::Failed => {
            crate::guard::failed(&app, &attempt, failed_at).await?;
            app.metrics.login_failed();
            tracing::info!(event = "login_failed", factor = "totp", "login refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_totp",
                "the one-time code is wrong or was already used",
            ));
        }
    };
    crate::guard::succeeded(&app, &attempt, now).await?;
    let jkt = crate::sessions::dpop_key(&app, &headers, "/v1/login")?;
    let (issued, refresh) = crate::sessions::start_session(
        &app,
        &Session {
            family: String::new(),
            subject: username,
            client_id,
            auth_context: auth_context.to_string(),
            jkt,
            audience,
        },
    )
    .await?;
    Ok(crate::sessions::token_response(&issued, &refresh))
}

enum SecondFactor {
    NotEnrolled,
    Missing,
    Passed,
    Failed,
}

/// Sealing context of a user's TOTP secret.
pub fn totp_context(user: &str) -> String {
    format!("tally/totp/{user}")
}

async fn second_factor(
    app: &Arc<App>,
    user: &str,
    code: Option<&str>,
    now: u64,
) -> Result<SecondFactor, ApiError> {
    let a = app.clone();
    let (user, code) = (user.to_string(), code.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        let Some((sealed, last)) = a.dir.state.totp(&user)? else {
            return Ok(SecondFactor::NotEnrolled);
        };
        let Some(code) = code else {
            return Ok(SecondFactor::Missing);
        };
        let Ok(secret) = a.dir.master.open(&totp_context(&user), &sealed) else {
            tracing::error!("a TOTP secret does not open with the master key; refusing the login");
            return Ok(SecondFactor::Failed);
        };
        let Ok(secret) = tally_core::totp::TotpSecret::from_bytes(&secret) else {
            return Ok(SecondFactor::Failed);
        };
        let totp = tally_core::totp::Totp::default();
        let last = last.and_then(|l| u64::try_from(l).ok());
        match totp.verify(&secret, code.trim(), now, last) {
            Ok(step) => {
                // Atomic: of two logins with the same code, one wins.
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                Ok(if a.dir.state.use_totp_step(&user, step)? {
                    SecondFactor::Passed
                } else {
                    SecondFactor::Failed
                })
            }
            Err(_) => Ok(SecondFactor::Failed),
        }
    })
    .await
    .map_err(|_| ApiError::unavailable("internal"))?
    .map_err(|e: tally_store::StateError| {
        tracing::error!(code = e.code(), error = %e, "state store failed or refused a row during login");
        ApiError::unavailable("store_unavailable")
    })
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
            subject,
            client_id,
            auth_context,
            jkt: None,
            audience: None,
        },
    )
    .await
}

/// What a token is minted for.
#[derive(Clone, Copy, Debug)]
pub struct TokenRequest<'a> {
    /// `sub`: must be in the directory.
    pub subject: &'a str,
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
    let a = app.clone();
    let who = subject.to_string();
    let known = tokio::task::spawn_blocking(move || a.dir.state.password_hash(&who))
        .await
        .map_err(|_| ApiError::unavailable("internal"))?
        .map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "state store failed or refused a row during issuance");
            ApiError::unavailable("store_unavailable")
        })?
        .is_some();
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
    let now = now_unix();
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
