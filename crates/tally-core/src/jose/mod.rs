//! Strict JOSE: compact JWS (RFC 7515) verification of JWTs (RFC 7519).
//!
//! Exactly three signature algorithms are understood:
//!
//! * `EdDSA` with Ed25519 (RFC 8037),
//! * `ES256`: ECDSA over P-256 with SHA-256, fixed 64-byte `r || s` signatures
//!   (RFC 7518 section 3.4),
//! * `RS256`: RSASSA-PKCS1-v1_5 with SHA-256, modulus 2048..=8192 bits
//!   (RFC 7518 section 3.3).
//!
//! Every key is bound to exactly one algorithm, and a token is checked against
//! the key its `kid` names, never against a key it carries or points to.
//!
//! # Decision order of [`verify`]
//!
//! 1. size: more than [`MAX_TOKEN_BYTES`] bytes is [`Rejection::Malformed`],
//!    checked before anything is decoded;
//! 2. shape: exactly three `.`-separated segments, non-empty, each strict
//!    unpadded base64url with canonical trailing bits ([`Rejection::Malformed`]);
//! 3. the protected header is a UTF-8 JSON object without duplicate members
//!    at any depth ([`Rejection::Malformed`]);
//! 4. header rules ([`Rejection::UnsupportedAlg`]): `alg` must be a string
//!    naming one of the three algorithms (`none` in any spelling is refused),
//!    and none of the members `jwk`, `jku`, `x5u`, `x5c`, `x5t`, `x5t#S256`,
//!    `crit`, `b64`, `zip` may be present. `typ` and `cty`, when present,
//!    must be strings ([`Rejection::Malformed`]);
//! 5. `kid` must be a string naming a key of the [`KeySet`]
//!    ([`Rejection::UnknownKey`]); it is only ever used as a map key;
//! 6. the header `alg` must equal the algorithm the key is bound to
//!    ([`Rejection::UnsupportedAlg`]);
//! 7. the signature must verify, with the exact length the algorithm and key
//!    imply ([`Rejection::BadSignature`]);
//! 8. only then is the payload parsed, strictly, into [`Claims`]
//!    ([`Rejection::Malformed`]).
//!
//! Time-based and audience checks are separate: see [`ClaimsPolicy::check`].
//!
//! # Decisions worth knowing
//!
//! * `x5t` and `x5t#S256` are refused like `x5c`/`x5u`: they only make sense
//!   for a verifier that selects keys through certificates, which this one
//!   never does, so their presence signals a token minted for another verifier.
//! * `crit` is refused whatever its value (even `[]`): no extension is
//!   understood. `b64` (RFC 7797) is refused whatever its value, and so is
//!   `zip` (which belongs to JWE only).
//! * Claims `exp`, `nbf`, `iat` must be JSON integers that fit in `i64`;
//!   floats (`1.5`, `1e9`, `1.0`) and strings are malformed.
//! * ECDSA signatures are malleable: if `(r, s)` verifies, so does `(r, n - s)`.
//!   Both encodings are accepted here, as RFC 7518 requires, so two distinct
//!   token strings can carry the same claims under the same key. Anything that
//!   identifies a token must therefore use [`VerifiedToken::token_digest`]
//!   (a digest over the exact bytes) and must never treat a signature as an
//!   identifier. Ed25519 verification in AWS-LC rejects non-canonical `S`, and
//!   PKCS#1 v1.5 signatures are deterministic.
//! * Tokens are taken as bytes exactly as received: surrounding whitespace or a
//!   trailing newline make a token malformed; trimming belongs to the transport.

mod alg;
pub(crate) mod b64;
mod claims;
mod der;
pub(crate) mod json;
mod jwk;
mod key;
mod pem;
mod rejection;
pub(crate) mod token;

#[cfg(test)]
mod tests;

pub use alg::Algorithm;
pub use claims::{Claims, ClaimsPolicy, DEFAULT_LEEWAY_SECS};
pub use key::{KeyError, KeySet, SigningKey, VerifyingKey};
pub use rejection::{MAX_TOKEN_BYTES, Rejection};
pub use token::{Header, VerifiedToken, verify};
