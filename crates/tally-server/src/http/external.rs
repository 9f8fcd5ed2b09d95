//! `POST /v1/issuances`: an external issuer registers a token it minted,
//! authenticating with its credential, before handing the token out.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tally_core::digest::TokenDigest;
use tally_core::jose::{self, ClaimsPolicy};
use tally_core::record::IssuanceRecord;

use crate::app::App;
use crate::error::ApiError;

/// Body of `POST /v1/issuances`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Registration {
    token: String,
}

fn issuer_unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_issuer_credential",
        "send the issuer's credential as Authorization: Bearer",
    )
}

/// `POST /v1/issuances` `{"token"}`: an external issuer registers a token it is
/// about to hand out. Answers `201` once the record is durable in the ledger.
pub(super) async fn register(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(issuer_unauthorized)?;
    let issuer = app.externals.authenticate(credential).ok_or_else(|| {
        tracing::warn!(
            event = "issuer_auth_failed",
            "registration refused: unknown issuer credential"
        );
        issuer_unauthorized()
    })?;
    let Json(reg) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "expected JSON {{\"token\"}}: {}",
                crate::error::json_rejection_problem(&e)
            ),
        )
    })?;
    let name = issuer.config.name.clone();
    let refuse = |code: &'static str, message: String| {
        tracing::warn!(event = "registration_refused", issuer = %name, code, "{message}");
        ApiError::bad_request(code, message)
    };
    let vt = jose::verify(reg.token.as_bytes(), &issuer.keys).map_err(|r| {
        refuse(
            "invalid_token",
            format!(
                "the token does not verify against {}'s keys: {}",
                issuer.config.name,
                r.code()
            ),
        )
    })?;
    let now = app.clock.now();
    let policy = ClaimsPolicy {
        issuer: issuer.config.iss.clone(),
        ..app.gate.policy().clone()
    };
    policy.check(vt.claims(), now).map_err(|r| {
        refuse(
            "invalid_token",
            format!("the token's claims are not acceptable here: {}", r.code()),
        )
    })?;
    let claims = vt.claims();
    let Some(jti) = claims.jti.clone().filter(|j| !j.is_empty()) else {
        return Err(refuse(
            "missing_jti",
            "the token has no jti; tally records every token by id".into(),
        ));
    };
    let Some(exp) = claims.exp else {
        return Err(refuse("invalid_token", "the token has no exp".into()));
    };
    let subject = claims.sub.clone().unwrap_or_default();
    let known = match &issuer.subjects {
        Some(list) => list.contains(&subject),
        None => {
            let a = app.clone();
            let s = subject.clone();
            tokio::task::spawn_blocking(move || a.dir.state.password_hash(&s))
                .await
                .map_err(|_| ApiError::unavailable("internal"))?
                .map_err(|_| ApiError::unavailable("store_unavailable"))?
                .is_some()
        }
    };
    if !known {
        tracing::warn!(event = "unknown_subject", issuer = %issuer.config.name, sub = ?subject, "registration refused: the subject is not in the directory");
        app.metrics.unknown_subject();
        app.watch
            .signal(tally_incident::detect::Signal::UnknownSubject {
                subject: subject.to_string(),
                requested_by: format!("issuer:{}", issuer.config.name),
            });
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_subject",
            "no token is registered for a subject that is not in the directory",
        ));
    }
    let digest = TokenDigest::of(reg.token.as_bytes());
    let record = IssuanceRecord {
        token_id: jti.clone(),
        token_sha256: digest,
        subject: subject.clone(),
        kid: vt.header().kid.clone(),
        issuer: issuer.config.iss.clone(),
        issued_at: claims.iat.unwrap_or(now),
        expires_at: exp,
        auth_context: format!("external:{}", issuer.config.name),
    };
    let index = tally_store::store::append(&*app.ledger, record)
        .await
        .map_err(|e| match e {
            tally_store::LedgerError::DuplicateTokenId => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_token_id",
                "a token with this jti is already recorded",
            ),
            tally_store::LedgerError::InvalidRecord(m) => ApiError::bad_request("invalid_token", m),
            other => {
                tracing::error!(code = other.code(), error = %other, "registration not recorded");
                ApiError::unavailable(other.code())
            }
        })?;
    app.gate.registry().insert(&digest, exp);
    app.signed_until(&vt.header().kid, exp);
    app.metrics.issued();
    tracing::info!(event = "token_registered", issuer = %issuer.config.name, token_id = ?jti, sub = ?subject, ledger_index = index, "external token recorded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"token_id": jti, "ledger_index": index})),
    ))
}
