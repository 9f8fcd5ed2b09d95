//! Issuance records: what the ledger remembers about every token it tallied.
//!
//! # Encoding (version 1)
//!
//! An [`IssuanceRecord`] is encoded deterministically, so that anyone holding the
//! bytes served by `/v1/ledger/entries` can recompute the RFC 6962 leaf hash
//! `SHA-256(0x00 || bytes)` and check it against a signed checkpoint:
//!
//! ```text
//! u8      version            = 0x01
//! str     token_id           (the JWT `jti`)
//! [32]u8  token_sha256       SHA-256 of the exact compact token bytes
//! str     subject            (`sub`)
//! str     kid                signing key id
//! str     issuer             (`iss`)
//! i64     issued_at          unix seconds, big-endian two's complement
//! i64     expires_at         unix seconds, big-endian two's complement
//! str     auth_context       how the principal proved who it is ("pwd", "pwd+otp", "external:<idp>")
//! ```
//!
//! where `str` is a big-endian `u16` byte length followed by that many bytes of
//! UTF-8 (at most [`MAX_FIELD_LEN`] bytes, no NUL). Nothing may follow the last
//! field. Decoding is strict: a record decodes only if re-encoding it gives the
//! same bytes.

use crate::digest::TokenDigest;

/// Encoding version written by this code.
pub const RECORD_VERSION: u8 = 1;
/// Longest accepted string field, in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// One issued token, as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuanceRecord {
    /// The token's `jti`.
    pub token_id: String,
    /// SHA-256 of the exact bytes handed to the client.
    pub token_sha256: TokenDigest,
    /// The token's `sub`.
    pub subject: String,
    /// Id of the key that signed it.
    pub kid: String,
    /// The token's `iss`.
    pub issuer: String,
    /// `iat`, unix seconds.
    pub issued_at: i64,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// How the principal authenticated (e.g. `pwd`).
    pub auth_context: String,
}

/// Why bytes are not a valid encoded record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The input ended inside a field.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// The version byte is not one this code understands.
    #[error("unsupported record version {0}")]
    Version(u8),
    /// A string field is too long, contains NUL, or is not UTF-8.
    #[error("invalid field {0}")]
    Field(&'static str),
    /// Bytes follow the last field.
    #[error("trailing bytes after record")]
    Trailing,
}

impl IssuanceRecord {
    /// Checks field limits; every record must pass before it is encoded.
    pub fn validate(&self) -> Result<(), RecordError> {
        for (name, value) in [
            ("token_id", &self.token_id),
            ("subject", &self.subject),
            ("kid", &self.kid),
            ("issuer", &self.issuer),
            ("auth_context", &self.auth_context),
        ] {
            if value.len() > MAX_FIELD_LEN || value.contains('\0') {
                return Err(RecordError::Field(name));
            }
        }
        if self.token_id.is_empty() {
            return Err(RecordError::Field("token_id"));
        }
        Ok(())
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        self.validate()?;
        let mut out = Vec::with_capacity(
            1 + 32
                + 16
                + 5 * 2
                + self.token_id.len()
                + self.subject.len()
                + self.kid.len()
                + self.issuer.len()
                + self.auth_context.len(),
        );
        out.push(RECORD_VERSION);
        put_str(&mut out, &self.token_id);
        out.extend_from_slice(self.token_sha256.as_bytes());
        put_str(&mut out, &self.subject);
        put_str(&mut out, &self.kid);
        put_str(&mut out, &self.issuer);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        put_str(&mut out, &self.auth_context);
        Ok(out)
    }

    /// Strict decoding of [`IssuanceRecord::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader { rest: bytes };
        let version = r.take(1, "version")?[0];
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let token_id = r.string("token_id")?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(r.take(32, "token_sha256")?);
        let subject = r.string("subject")?;
        let kid = r.string("kid")?;
        let issuer = r.string("issuer")?;
        let issued_at = r.i64("issued_at")?;
        let expires_at = r.i64("expires_at")?;
        let auth_context = r.string("auth_context")?;
        if !r.rest.is_empty() {
            return Err(RecordError::Trailing);
        }
        let record = IssuanceRecord {
            token_id,
            token_sha256: TokenDigest::from_bytes(digest),
            subject,
            kid,
            issuer,
            issued_at,
            expires_at,
            auth_context,
        };
        record.validate()?;
        Ok(record)
    }

    /// RFC 6962 leaf hash of the encoded record.
    pub fn leaf_hash(&self) -> Result<crate::merkle::Hash, RecordError> {
        Ok(crate::merkle::leaf_hash(&self.encode()?))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // validate() bounds every field at MAX_FIELD_LEN (< u16::MAX), so the cast is exact.
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        let len = self.take(2, what)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len > MAX_FIELD_LEN {
            return Err(RecordError::Field(what));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Field(what))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IssuanceRecord {
        IssuanceRecord {
            token_id: "0f3c9a".into(),
            token_sha256: TokenDigest::of(b"header.payload.sig"),
            subject: "alice".into(),
            kid: "kid-1".into(),
            issuer: "https://tally.example".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_900,
            auth_context: "pwd".into(),
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(IssuanceRecord::decode(&bytes).unwrap(), r);
        assert_eq!(
            IssuanceRecord::decode(&bytes).unwrap().encode().unwrap(),
            bytes
        );
    }

    #[test]
    fn known_encoding() {
        // Pins the documented layout byte for byte.
        let r = IssuanceRecord {
            token_id: "t".into(),
            token_sha256: TokenDigest::from_bytes([0xAA; 32]),
            subject: "s".into(),
            kid: "k".into(),
            issuer: "i".into(),
            issued_at: 1,
            expires_at: -1,
            auth_context: "".into(),
        };
        let mut want = vec![1u8, 0, 1, b't'];
        want.extend_from_slice(&[0xAA; 32]);
        want.extend_from_slice(&[0, 1, b's', 0, 1, b'k', 0, 1, b'i']);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xFF; 8]);
        want.extend_from_slice(&[0, 0]);
        assert_eq!(r.encode().unwrap(), want);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(IssuanceRecord::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(IssuanceRecord::decode(&longer), Err(RecordError::Trailing));
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(IssuanceRecord::decode(&v2), Err(RecordError::Version(2)));
    }

    #[test]
    fn limits_are_enforced() {
        let mut r = sample();
        r.subject = "x".repeat(MAX_FIELD_LEN + 1);
        assert_eq!(r.encode(), Err(RecordError::Field("subject")));
        r.subject = "a\0b".into();
        assert_eq!(r.encode(), Err(RecordError::Field("subject")));
        r = sample();
        r.token_id.clear();
        assert_eq!(r.encode(), Err(RecordError::Field("token_id")));
    }

    #[test]
    fn bad_utf8_is_refused() {
        let mut bytes = sample().encode().unwrap();
        bytes[3] = 0xFF; // inside token_id
        assert_eq!(
            IssuanceRecord::decode(&bytes),
            Err(RecordError::Field("token_id"))
        );
    }
}
