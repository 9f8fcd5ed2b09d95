//! Row seals: a MAC on each state row that grants access, under a key the
//! database never sees.
//!
//! A user's password hash, role and TOTP secret, an API client's secret hash,
//! a session and each of its refresh tokens are what a login, an admin call
//! or a refresh trusts. Whoever can write to the state database, a
//! PostgreSQL administrator of a fleet for one, could otherwise give himself
//! a password, the admin role or a refresh token for someone else's session,
//! and obtain genuine, recorded tokens. Each of these rows carries
//! `mac = HMAC-SHA256(key, table ‖ fields)` under a key derived from the
//! master key; a row whose MAC does not verify is refused
//! ([`crate::StateError::Tampered`]), never used.
//!
//! A MAC proves a row was written by tally; it cannot tell an old row from
//! the current one, nor see a row deleted. The columns that change in normal
//! use (a refresh token's `used_at`, a session's `revoked_at`, the last TOTP
//! step) are outside the MAC: rolling them back is not forging a credential.

use aws_lc_rs::hmac;

/// One column's value, as the MAC reads it.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
    /// An integer.
    Int(i64),
    /// SQL `NULL`.
    Null,
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Field<'a> {
        Field::Text(s)
    }
}

impl<'a> From<&'a String> for Field<'a> {
    fn from(s: &'a String) -> Field<'a> {
        Field::Text(s)
    }
}

impl<'a> From<&'a [u8]> for Field<'a> {
    fn from(b: &'a [u8]) -> Field<'a> {
        Field::Bytes(b)
    }
}

impl From<i64> for Field<'_> {
    fn from(v: i64) -> Self {
        Field::Int(v)
    }
}

impl<'a, T: Into<Field<'a>>> From<Option<T>> for Field<'a> {
    fn from(v: Option<T>) -> Field<'a> {
        v.map_or(Field::Null, Into::into)
    }
}

/// The key that seals state rows.
pub struct RowMac(hmac::Key);

impl std::fmt::Debug for RowMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowMac(<redacted>)")
    }
}

impl RowMac {
    /// The purpose string under which the key is derived from the master key.
    pub const PURPOSE: &'static str = "state/row-mac/v1";

    /// A MAC keyed by `key` (32 bytes derived from the master key).
    pub fn new(key: &[u8; 32]) -> RowMac {
        RowMac(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The tag of a row of `table`.
    pub fn tag(&self, table: &str, fields: &[Field<'_>]) -> Vec<u8> {
        hmac::sign(&self.0, &encode(table, fields))
            .as_ref()
            .to_vec()
    }

    /// Whether `tag` is this key's tag of the row (constant time). A missing
    /// tag never verifies.
    pub fn verify(&self, table: &str, fields: &[Field<'_>], tag: Option<&[u8]>) -> bool {
        tag.is_some_and(|t| hmac::verify(&self.0, &encode(table, fields), t).is_ok())
    }
}

/// `table`, then each field as a kind byte and, but for `NULL`, a length
/// and the bytes: no two different rows encode alike.
fn encode(table: &str, fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"tally/state-row/v1\0");
    fn put(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    put(&mut out, b't', table.as_bytes());
    for f in fields {
        match f {
            Field::Text(s) => put(&mut out, b's', s.as_bytes()),
            Field::Bytes(b) => put(&mut out, b'b', b),
            Field::Int(v) => put(&mut out, b'i', &v.to_be_bytes()),
            Field::Null => out.push(b'n'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_its_place_count() {
        let m = RowMac::new(&[7; 32]);
        let row = [
            Field::Text("alice"),
            Field::Text("$argon2id$h"),
            Field::Null,
        ];
        let tag = m.tag("users", &row);
        assert!(m.verify("users", &row, Some(&tag)));
        assert!(!m.verify("users", &row, None), "no tag, no row");
        assert!(!m.verify("clients", &row, Some(&tag)), "bound to its table");
        for other in [
            [
                Field::Text("alice"),
                Field::Text("$argon2id$x"),
                Field::Null,
            ],
            [
                Field::Text("alicE"),
                Field::Text("$argon2id$h"),
                Field::Null,
            ],
            [
                Field::Text("alice"),
                Field::Text("$argon2id$h"),
                Field::Text(""),
            ],
            [
                Field::Text("alice"),
                Field::Bytes(b"$argon2id$h"),
                Field::Null,
            ],
            // The same bytes, split differently.
            [
                Field::Text("alice$"),
                Field::Text("argon2id$h"),
                Field::Null,
            ],
        ] {
            assert!(!m.verify("users", &other, Some(&tag)), "{other:?}");
        }
        assert!(
            !RowMac::new(&[8; 32]).verify("users", &row, Some(&tag)),
            "another key"
        );
        let mut bent = tag.clone();
        bent[0] ^= 1;
        assert!(!m.verify("users", &row, Some(&bent)));
        assert!(!m.verify("users", &row, Some(&tag[..16])), "a cut tag");
    }
}
