//! DPoP proof parsing and verification ([`tally_core::dpop::verify_proof`]).
//!
//! Input modes, by first byte:
//! * `s` then `header\npayload`: the harness signs both (as they are) with
//!   its key; a seed whose header carries the harness key's `jwk` reaches
//!   the claims checks;
//! * anything else: the whole input is a proof to verify.
//!
//! Each proof is verified four times: for a token request and for a
//! resource request (with `ath`), each without and with a required nonce.

use tally_core::dpop::{DpopPolicy, DpopProof, MAX_JTI_BYTES, verify_proof};

use crate::keys;

/// A fixed "now" (2023-11-14T22:13:20Z).
pub const NOW: i64 = 1_700_000_000;
/// The request the proofs are checked against.
pub const METHOD: &str = "POST";
/// The request URL the proofs are checked against.
pub const URL: &str = "https://tally.example/v1/token";
/// The access token of the resource-request check.
pub const ACCESS_TOKEN: &str = "fuzz-access-token";
/// The nonce of the nonce-required checks.
pub const NONCE: &str = "fuzz-nonce";

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let harness_signed = data.first() == Some(&b's');
    let proof = match crate::signed(data) {
        Some(proof) => proof,
        None => match std::str::from_utf8(data) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        },
    };
    let policy = DpopPolicy::default();
    for access_token in [None, Some(ACCESS_TOKEN)] {
        for nonce in [None, Some(NONCE)] {
            if let Ok(p) = verify_proof(&proof, METHOD, URL, access_token, nonce, NOW, &policy) {
                accepted(&proof, &p, &policy, nonce, harness_signed);
            }
        }
    }
}

/// What every accepted proof satisfies.
fn accepted(
    proof: &str,
    p: &DpopProof,
    policy: &DpopPolicy,
    nonce: Option<&str>,
    harness_signed: bool,
) {
    assert!(proof.len() <= tally_core::dpop::MAX_PROOF_BYTES);
    assert_eq!(p.htm, METHOD);
    assert!(!p.jti.is_empty() && p.jti.len() <= MAX_JTI_BYTES);
    assert!(
        p.iat >= NOW - policy.max_age_secs - policy.leeway_secs
            && p.iat <= NOW + policy.leeway_secs,
        "iat {} outside the accepted window",
        p.iat
    );
    if let Some(n) = nonce {
        assert_eq!(p.nonce.as_deref(), Some(n));
    }
    if harness_signed {
        // Signed by the harness key: no other key may have verified it.
        assert_eq!(p.jkt, keys::thumbprint());
    }
}
