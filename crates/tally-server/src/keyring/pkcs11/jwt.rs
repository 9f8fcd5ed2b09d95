//! A JWS signed inside the token: header and claims checked, the signature
//! made by the token and returned as the compact form.

use serde_json::{Map, Value};
use tally_core::jose::MAX_TOKEN_BYTES;

use super::error::HsmError;
use super::hsm::{Hsm, HsmKey, b64};

/// The header [`sign_jwt`] writes, member order fixed (as
/// `SigningKey::sign_jwt` writes it).
#[derive(serde::Serialize)]
struct OutHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

/// Signs a JWT with an HSM key exactly as `SigningKey::sign_jwt` does: header
/// `{"alg","kid","typ"}`, `claims` as payload, base64url without padding. The
/// claims are first checked with the rules the JOSE verifier applies, and the
/// token must fit in [`MAX_TOKEN_BYTES`], so every token returned is one
/// `tally_core::jose::verify` accepts under `key.public` (with `kid`).
///
/// # Errors
/// [`HsmError::InvalidClaims`], [`HsmError::TokenTooLarge`], then as
/// [`Hsm::sign`].
pub fn sign_jwt(
    hsm: &Hsm,
    key: &HsmKey,
    kid: &str,
    typ: &str,
    claims: &Map<String, Value>,
) -> Result<String, HsmError> {
    check_claims(claims).map_err(HsmError::InvalidClaims)?;
    let header = serde_json::to_vec(&OutHeader {
        alg: key.alg.name(),
        kid,
        typ,
    })
    .map_err(|_| HsmError::InvalidClaims("header is not serializable"))?;
    let payload =
        serde_json::to_vec(claims).map_err(|_| HsmError::InvalidClaims("not serializable"))?;
    let mut token = b64(&header);
    token.push('.');
    token.push_str(&b64(&payload));
    // Both signatures are 64 bytes, 86 characters.
    if token.len() + 1 + 86 > MAX_TOKEN_BYTES {
        return Err(HsmError::TokenTooLarge);
    }
    let signature = hsm.sign(key, token.as_bytes())?;
    token.push('.');
    token.push_str(&b64(&signature));
    if token.len() > MAX_TOKEN_BYTES {
        return Err(HsmError::TokenTooLarge);
    }
    Ok(token)
}

/// The claim types `tally_core::jose::Claims` requires: `iss`, `sub`, `jti`,
/// `client_id` strings; `aud` a string or an array of strings; `exp`, `nbf`,
/// `iat` integers that fit in `i64`.
fn check_claims(claims: &Map<String, Value>) -> Result<(), &'static str> {
    for (name, err) in [
        ("iss", "iss is not a string"),
        ("sub", "sub is not a string"),
        ("jti", "jti is not a string"),
        ("client_id", "client_id is not a string"),
    ] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(err);
        }
    }
    for (name, err) in [
        ("exp", "exp is not an integer"),
        ("nbf", "nbf is not an integer"),
        ("iat", "iat is not an integer"),
    ] {
        if claims.get(name).is_some_and(|v| v.as_i64().is_none()) {
            return Err(err);
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err("aud is not a string or an array of strings"),
    }
}
