//! The three JWS signature algorithms this verifier understands.
//!
//! [`Algorithm`] is closed: its variants are the only `alg` values a token is
//! ever verified under and the only ones a key is bound to. Names are matched
//! exactly and case-sensitively, so no spelling of `none` (or of anything
//! else) maps to an algorithm.

/// A JWS signature algorithm this module understands.
///
/// The variant names are the JOSE `alg` names (RFC 7518, RFC 8037).
#[allow(clippy::upper_case_acronyms)] // the names are the registered JOSE spellings
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `EdDSA` with the Ed25519 curve (RFC 8037).
    EdDSA,
    /// `ES256`: ECDSA on P-256 with SHA-256, signature `r || s` (64 bytes).
    ES256,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256, modulus at least 2048 bits.
    RS256,
}

impl Algorithm {
    /// The registered JOSE name (`"EdDSA"`, `"ES256"`, `"RS256"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// Parses a JOSE `alg` name. Matching is exact and case-sensitive, so
    /// `"eddsa"` or `"EdDSA "` are not algorithms.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

impl core::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
