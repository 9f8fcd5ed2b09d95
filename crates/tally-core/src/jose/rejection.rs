//! Why a token is refused, and the size bound checked before anything else.
//!
//! Every [`Rejection`] detail is a fixed string chosen by this module, never
//! token content, so a rejection is always safe to log; its
//! [`Rejection::code`] spellings are stable.

/// Largest accepted compact token, in bytes (8 KiB). Longer input is
/// [`Rejection::Malformed`] before any decoding happens.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Why a token was refused.
///
/// The details are fixed strings chosen by this module and never contain
/// token content, so they are safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The token is not a well-formed compact JWS/JWT (see the detail).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header asks for an algorithm or feature this verifier refuses.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlg(&'static str),
    /// The header names no key, or a key that is not in the key set.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify under the named key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (allowing for leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future (allowing for leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is absent or is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
}

impl Rejection {
    /// A stable, machine-readable code: one of `"malformed"`,
    /// `"unsupported_alg"`, `"unknown_key"`, `"bad_signature"`, `"expired"`,
    /// `"not_yet_valid"`, `"wrong_audience"`, `"wrong_issuer"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlg(_) => "unsupported_alg",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
        }
    }

    /// The fixed detail string, for `malformed` and `unsupported_alg`.
    #[must_use]
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Self::Malformed(d) | Self::UnsupportedAlg(d) => Some(d),
            _ => None,
        }
    }
}
