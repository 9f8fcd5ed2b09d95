//! Guessing, throttled: the process's [`Guard`](tally_core::throttle::Guard)
//! for logins and client authentication, and in a fleet the same counts and
//! known addresses in the shared state store, so that N nodes do not allow N
//! times the guesses.

use std::sync::Arc;

use axum::http::StatusCode;
use tally_core::throttle::Attempt;

use crate::app::App;
use crate::error::ApiError;

/// The attempt of `subject` (`user:NAME`, `client:ID`) from the request's
/// client address: the peer, or behind a trusted proxy the address it
/// reports (see `trusted_proxies`).
pub(super) fn attempt(subject: &str, facts: &super::request::Facts<'_>) -> Attempt {
    let address = facts
        .client
        .map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"));
    Attempt::new(subject, &address)
}

/// `Ok` when `attempt` may be checked at `now`; otherwise `429
/// too_many_attempts` with `Retry-After`, the same for every subject, known or
/// not.
pub(super) async fn admit(app: &Arc<App>, attempt: &Attempt, now: u64) -> Result<(), ApiError> {
    let mut throttled = app.guard.check(attempt, now);
    if throttled.is_ok() && app.config.storage.is_shared() {
        let known_here = app.guard.is_known(attempt, now);
        let remember = app.guard.policy().known.remember_secs;
        let (a, at) = (app.clone(), attempt.clone());
        let locked = crate::blocking::blocking(move || {
            let state = &a.dir.state;
            let now = i64::try_from(now).unwrap_or(i64::MAX);
            let mut keys = vec![at.pair(), at.address()];
            let since = now.saturating_sub(i64::try_from(remember).unwrap_or(i64::MAX));
            if !known_here && !state.address_known(at.subject(), at.address(), since)? {
                keys.push(at.subject());
            }
            state.login_locked_for(&keys, now)
        })
        .await?;
        if locked > 0 {
            throttled = Err(locked as u64);
        }
    }
    match throttled {
        Ok(()) => Ok(()),
        Err(retry) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed attempts; retry in {retry} s"),
        )
        .with_retry_after(retry)),
    }
}

/// A failed attempt, booked at `at` for the pair, the address and the
/// subject, here and in the fleet's shared counts.
pub(super) async fn failed(app: &Arc<App>, attempt: &Attempt, at: u64) -> Result<(), ApiError> {
    app.guard.failure(attempt, at);
    if !app.config.storage.is_shared() {
        return Ok(());
    }
    let policy = *app.guard.policy();
    let (a, t) = (app.clone(), attempt.clone());
    crate::blocking::blocking(move || {
        a.dir.state.login_failed_each(
            &[
                (t.pair(), policy.pair),
                (t.address(), policy.address),
                (t.subject(), policy.subject),
            ],
            i64::try_from(at).unwrap_or(i64::MAX),
        )
    })
    .await
    .map(|_| ())
}

/// A complete authentication at `now`: the pair starts from zero and the
/// address becomes known for the subject, here and in the fleet.
pub(super) async fn succeeded(app: &Arc<App>, attempt: &Attempt, now: u64) -> Result<(), ApiError> {
    app.guard.success(attempt, now);
    if !app.config.storage.is_shared() {
        return Ok(());
    }
    let keep = app.guard.policy().known.per_subject;
    let (a, t) = (app.clone(), attempt.clone());
    crate::blocking::blocking(move || {
        let state = &a.dir.state;
        state.login_succeeded(t.pair())?;
        state.remember_address(
            t.subject(),
            t.address(),
            i64::try_from(now).unwrap_or(i64::MAX),
            keep,
        )
    })
    .await
}
