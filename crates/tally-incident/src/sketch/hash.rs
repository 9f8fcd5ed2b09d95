//! Hashing: [`subject_hash`], the stable hash of a subject that sketches
//! count, and [`PreHashed`], a pass-through hasher for keys that already
//! are uniform 64-bit hashes.
//!
//! Invariant: [`subject_hash`] is fixed (domain and algorithm): the same
//! subject hashes the same on every version, platform and process.

use aws_lc_rs::digest::{Context, SHA256};

/// Domain separation for [`subject_hash`] (its version 1).
const SUBJECT_DOMAIN: &[u8] = b"tally/sketch/subject/v1\0";

/// The 64-bit hash of a subject identifier that sketches count.
///
/// Defined as the first 8 bytes, big-endian, of
/// `SHA-256("tally/sketch/subject/v1" || 0x00 || subject)`. It is stable across
/// versions, platforms and processes, so sketches built on different nodes merge.
/// Unkeyed: see the module documentation for when that matters.
pub fn subject_hash(subject: &str) -> u64 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(SUBJECT_DOMAIN);
    ctx.update(subject.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// A hasher for keys that are already uniformly distributed 64-bit hashes
/// (such as [`subject_hash`] values or keyed actor hashes): it passes the
/// value through, saving a second round of hashing on the hot path. Only for
/// `u64` keys whose values an outsider cannot choose.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in, order-sensitively.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// [`std::hash::BuildHasher`] for [`PreHashed`].
pub type BuildPreHashed = std::hash::BuildHasherDefault<PreHashed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_hash_known_answer() {
        // First 8 bytes of `printf 'tally/sketch/subject/v1\0acct-1' | sha256sum`.
        assert_eq!(subject_hash("acct-1"), 0x33c3_fa93_1e5c_da69);
        // `printf 'tally/sketch/subject/v1\0' | sha256sum`.
        assert_eq!(subject_hash(""), 0x5c2b_bbd6_c500_4d16);
        assert_ne!(subject_hash("acct-1"), subject_hash("acct-2"));
    }
}
