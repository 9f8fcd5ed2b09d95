//! The form token of a dashboard session: every form that changes
//! something (sign-out, the incident actions) carries it in a hidden field,
//! and a post without the token of the session it comes with is refused.
//!
//! The token is HMAC-SHA256 of the session cookie's value under a key
//! derived from the master key (`ui/form-token`): nothing is stored, every
//! node of a fleet computes the same token, and a session's token is no use
//! with another session. It is checked with `aws-lc-rs`'s HMAC verification,
//! which compares in constant time. It is not the session's credential: the
//! page shows it, the cookie stays `HttpOnly`.

use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::session::cookie_token;
use crate::app::App;

/// The purpose the token's key is derived for.
const PURPOSE: &str = "ui/form-token";

fn key(app: &App) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &app.dir.master.derive(PURPOSE)[..])
}

/// The form token of the session whose cookie `headers` carry (empty
/// without a session: no post is accepted then anyway).
pub(super) fn token(app: &App, headers: &HeaderMap) -> String {
    cookie_token(headers).map_or_else(String::new, |session| {
        URL_SAFE_NO_PAD.encode(hmac::sign(&key(app), session.as_bytes()))
    })
}

/// Whether `presented` is the form token of the session whose cookie
/// `headers` carry.
pub(super) fn valid(app: &App, headers: &HeaderMap, presented: &str) -> bool {
    let (Some(session), Ok(tag)) = (cookie_token(headers), URL_SAFE_NO_PAD.decode(presented))
    else {
        return false;
    };
    hmac::verify(&key(app), session.as_bytes(), &tag).is_ok()
}
