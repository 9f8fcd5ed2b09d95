//! Sealing secrets at rest under the master key (AES-256-GCM).
//!
//! A sealed blob is `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! The associated data binds the blob to its purpose and id (for example
//! `"tally/key/<kid>"`), so a blob copied into another row does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

const VERSION: u8 = 1;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The key that seals every other secret. Zeroized on drop; never printed.
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Why sealing or opening failed. Messages never include secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The master key is not 32 bytes of hex.
    #[error("master key must be 64 hex characters (32 bytes)")]
    BadMasterKey,
    /// The blob was not made by this master key for this purpose, or was altered.
    #[error(
        "sealed secret does not open with this master key (wrong master key, or the stored blob was altered)"
    )]
    Open,
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey, SealError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| SealError::Random)?;
        Ok(MasterKey { bytes })
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<MasterKey, SealError> {
        let text = text.trim();
        if text.len() != 2 * MASTER_KEY_LEN || !text.is_ascii() {
            return Err(SealError::BadMasterKey);
        }
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        for (i, out) in bytes.iter_mut().enumerate() {
            let pair = &text[2 * i..2 * i + 2];
            *out = u8::from_str_radix(pair, 16).map_err(|_| SealError::BadMasterKey)?;
        }
        Ok(MasterKey { bytes })
    }

    /// 64 lower-case hex characters, for writing the key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = String::with_capacity(2 * MASTER_KEY_LEN);
        for b in self.bytes.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        Zeroizing::new(s)
    }

    fn key(&self) -> Result<LessSafeKey, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, &self.bytes[..]).map_err(|_| SealError::BadMasterKey)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Seals `secret`, bound to `context`.
    pub fn seal(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.key()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buf = Zeroizing::new(secret.to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut *buf,
        )
        .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// A 32-byte key for one `purpose`, derived from the master key
    /// (HMAC-SHA256 keyed by the master key over `"tally/derive/" || purpose`),
    /// so that no two uses share key material.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.bytes[..]);
        let tag = aws_lc_rs::hmac::sign(&key, format!("tally/derive/{purpose}").as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Opens a blob made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, context: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if blob.len() < 1 + NONCE_LEN + AES_256_GCM.tag_len() || blob[0] != VERSION {
            return Err(SealError::Open);
        }
        let key = self.key()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[1..1 + NONCE_LEN]);
        let mut buf = Zeroizing::new(blob[1 + NONCE_LEN..].to_vec());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf[..],
            )
            .map_err(|_| SealError::Open)?
            .len();
        let mut plain = buf[..plain_len].to_vec();
        buf.zeroize();
        let out = Zeroizing::new(std::mem::take(&mut plain));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_master() {
        let m = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"12".repeat(32)).unwrap();
        assert_eq!(*m.derive("a"), *m.derive("a"));
        assert_ne!(*m.derive("a"), *m.derive("b"));
        assert_ne!(*m.derive("a"), *other.derive("a"));
        assert_ne!(&m.derive("a")[..], &m.bytes[..]);
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let mk = MasterKey::generate().unwrap();
        let blob = mk.seal("tally/key/a", b"secret").unwrap();
        assert_eq!(&mk.open("tally/key/a", &blob).unwrap()[..], b"secret");
        assert_eq!(mk.open("tally/key/b", &blob), Err(SealError::Open));
        let other = MasterKey::generate().unwrap();
        assert_eq!(other.open("tally/key/a", &blob), Err(SealError::Open));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(mk.open("tally/key/a", &bad).is_err(), "flip at {i}");
        }
        assert!(mk.open("tally/key/a", &blob[..blob.len() - 1]).is_err());
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let mk = MasterKey::generate().unwrap();
        let again = MasterKey::from_hex(&format!("  {}\n", mk.to_hex().as_str())).unwrap();
        let blob = mk.seal("c", b"x").unwrap();
        assert_eq!(&again.open("c", &blob).unwrap()[..], b"x");
        assert_eq!(
            MasterKey::from_hex("abc").unwrap_err(),
            SealError::BadMasterKey
        );
        assert_eq!(
            MasterKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            SealError::BadMasterKey
        );
        assert_eq!(format!("{mk:?}"), "MasterKey(<redacted>)");
    }
}
