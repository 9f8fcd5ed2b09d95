//! Compact JWS parsing and verification ([`tally_core::jose::verify`]), the
//! claims policy, and JWK parsing.
//!
//! Input modes, by first byte:
//! * `s` then `header\npayload`: the harness signs `header` and `payload`
//!   (taken as they are, not as JSON) with its key, so the fuzzer explores
//!   header and claims parsing behind a valid signature;
//! * `k` then JSON: a JWK (and a JWK set) to load;
//! * anything else: the whole input is a token to verify.

use aws_lc_rs::digest::{SHA256, digest};
use tally_core::jose::{
    Algorithm, ClaimsPolicy, KeySet, MAX_TOKEN_BYTES, VerifiedToken, VerifyingKey, verify,
};

use crate::keys;

/// A fixed "now" for the claims policy (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000;

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    if let Some(token) = crate::signed(data) {
        if let Ok(verified) = verified(token.as_bytes()) {
            resign_round_trip(&verified);
        }
        return;
    }
    match data.split_first() {
        Some((b'k', rest)) => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(key) = VerifyingKey::from_jwk(&value) {
                    // A loaded key exports a JWK that loads to the same key.
                    let again = VerifyingKey::from_jwk(&key.to_jwk()).expect("exported JWK loads");
                    assert_eq!(again.thumbprint(), key.thumbprint());
                }
                if let Ok(set) = KeySet::from_jwks(&value) {
                    let again = KeySet::from_jwks(&set.to_jwks()).expect("exported JWKS loads");
                    assert_eq!(again.len(), set.len());
                }
            }
        }
        _ => {
            let _ = verified(data);
        }
    }
}

/// Verifies `token` and checks what every accepted token must satisfy.
fn verified(token: &[u8]) -> Result<VerifiedToken, tally_core::jose::Rejection> {
    let verified = verify(token, keys::key_set())?;
    assert!(
        token.len() <= MAX_TOKEN_BYTES,
        "an oversized token was accepted"
    );
    assert_eq!(verified.header().kid, keys::KID);
    assert_eq!(verified.header().alg, Algorithm::EdDSA);
    assert_eq!(
        verified.token_digest().as_slice(),
        digest(&SHA256, token).as_ref(),
        "the digest is not SHA-256 of the exact token bytes"
    );
    let _ = ClaimsPolicy::new("https://issuer.example", "tally").check(verified.claims(), NOW);
    Ok(verified)
}

/// The claims, written out again and signed again, verify to equal claims.
fn resign_round_trip(first: &VerifiedToken) {
    let header = serde_json::json!({"alg": "EdDSA", "kid": keys::KID});
    let header = serde_json::to_vec(&header).expect("header serialises");
    let payload = serde_json::to_vec(&first.claims().to_map()).expect("claims serialise");
    let token = keys::compact(&header, &payload);
    if token.len() > MAX_TOKEN_BYTES {
        return;
    }
    let second = verify(token.as_bytes(), keys::key_set()).expect("re-serialised claims verify");
    assert_eq!(second.claims(), first.claims());
}
