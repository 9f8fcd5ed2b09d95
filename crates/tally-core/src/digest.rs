//! SHA-256 digests of exact token bytes.

use aws_lc_rs::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

/// SHA-256 of the exact compact token bytes a client presents or was given.
///
/// Tokens are tallied by these bytes, never by signature bytes: ECDSA signatures
/// are malleable, so `(r, n - s)` is a different token with a valid signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Digest of `token`.
    pub fn of(token: &[u8]) -> Self {
        let d = digest(&SHA256, token);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenDigest(out)
    }

    /// Wraps 32 bytes already known to be a digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenDigest(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 128 bits, the registry's key (see [`crate::registry`]).
    pub fn prefix(&self) -> [u8; 16] {
        let mut p = [0u8; 16];
        p.copy_from_slice(&self.0[..16]);
        p
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 appendix B.1: SHA-256("abc").
        assert_eq!(
            TokenDigest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ct_eq_matches_eq() {
        let a = TokenDigest::of(b"a");
        let b = TokenDigest::of(b"b");
        assert!(a.ct_eq(&a));
        assert!(!a.ct_eq(&b));
        assert_eq!(&a.prefix()[..], &a.as_bytes()[..16]);
    }
}
