//! The regular issuance process: authenticate, mint, record durably, then answer.

use crate::issuance::{invalid_target, password_slot, totp_context, valid_username};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::app::App;
use crate::error::ApiError;
use tally_store::Session;

/// `POST /v1/login` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
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

impl LoginRequest {
    /// A login for `username` (the dashboard's form posts these).
    pub(super) fn new(username: String, password: String, totp: Option<String>) -> LoginRequest {
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
pub(super) async fn login(
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
    // A password too long to ever have been set is refused as any wrong
    // one, before any hashing. One shorter than `[passwords] min_length` is
    // checked as usual: it may have been set under an older minimum, and a
    // hint that it is too short would only tell a guesser about the policy.
    if req.password.len() > crate::passwords::MAX_BYTES {
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
    let facts = super::request::Facts::read(&app, &headers, super::request::peer_of(&ext));
    let now = facts.now().max(0) as u64;
    // Clock seconds are whole: a failure is booked at the end of its second,
    // so a lock of N seconds never lasts less than N seconds.
    let failed_at = now + 1;
    // Throttled per (user, address), per address and per user; the per-user
    // lock does not apply at an address the user recently logged in from, so
    // guesses from elsewhere cannot lock the user out (see `guard`).
    let attempt = super::guard::attempt(&format!("user:{username}"), &facts);
    if let Err(e) = super::guard::admit(&app, &attempt, now).await {
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
        super::guard::failed(&app, &attempt, failed_at).await?;
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
            super::guard::failed(&app, &attempt, failed_at).await?;
            app.metrics.login_failed();
            tracing::info!(event = "login_failed", factor = "totp", "login refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_totp",
                "the one-time code is wrong or was already used",
            ));
        }
    };
    super::guard::succeeded(&app, &attempt, now).await?;
    let jkt = super::sessions::dpop_key(&app, &headers, "/v1/login", facts.now())?;
    let (issued, refresh) = super::sessions::start_session(
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
    Ok(super::sessions::token_response(&issued, &refresh))
}

enum SecondFactor {
    NotEnrolled,
    Missing,
    Passed,
    Failed,
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
