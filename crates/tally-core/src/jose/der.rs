//! The few DER (X.690) reads this module needs: finding the algorithm of a
//! PKCS#8 document (RFC 5208 / RFC 5958) so exactly one parser is tried, and
//! splitting an RFC 8017 `RSAPublicKey` into `n` and `e`.
//!
//! Only definite, minimally encoded lengths and low tag numbers are accepted.
//! Full validation of the key itself is left to AWS-LC.

/// DER tag of INTEGER.
const TAG_INTEGER: u8 = 0x02;
/// DER tag of OBJECT IDENTIFIER.
const TAG_OID: u8 = 0x06;
/// DER tag of a constructed SEQUENCE.
const TAG_SEQUENCE: u8 = 0x30;

/// id-Ed25519, 1.3.101.112 (RFC 8410).
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
/// id-ecPublicKey, 1.2.840.10045.2.1 (RFC 5480).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// secp256r1 / prime256v1, 1.2.840.10045.3.1.7 (RFC 5480).
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017).
const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// The kind of private key a PKCS#8 document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pkcs8Kind {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256.
    P256,
    /// RSA.
    Rsa,
}

/// Why a PKCS#8 document was not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pkcs8Error {
    /// Not DER PKCS#8 at all.
    Malformed(&'static str),
    /// Well-formed, but an algorithm or curve this module does not support.
    Unsupported(&'static str),
}

/// A forward-only DER reader over a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads one TLV and returns its tag and contents.
    fn read_any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        if tag & 0x1F == 0x1F {
            return None; // high-tag-number form: never needed here
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 {
                return None; // indefinite length, or absurdly long
            }
            let len_bytes = rest.get(..count)?;
            let rest = rest.get(count..)?;
            if len_bytes.first() == Some(&0) {
                return None; // non-minimal length
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return None; // long form used for a short length
            }
            (len, rest)
        };
        let value = rest.get(..len)?;
        self.rest = rest.get(len..)?;
        Some((tag, value))
    }

    /// Reads one TLV that must carry `tag`.
    fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.read_any()? {
            (t, value) if t == tag => Some(value),
            _ => None,
        }
    }
}

/// Classifies a PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` by its
/// `privateKeyAlgorithm`.
pub(crate) fn pkcs8_kind(der: &[u8]) -> Result<Pkcs8Kind, Pkcs8Error> {
    const NOT_PKCS8: Pkcs8Error = Pkcs8Error::Malformed("not an unencrypted DER PKCS#8 key");
    let mut outer = Reader::new(der);
    let body = outer.read(TAG_SEQUENCE).ok_or(NOT_PKCS8)?;
    if !outer.is_empty() {
        return Err(Pkcs8Error::Malformed(
            "trailing data after the PKCS#8 structure",
        ));
    }
    let mut body = Reader::new(body);
    match body.read(TAG_INTEGER).ok_or(NOT_PKCS8)? {
        [0 | 1] => {}
        _ => return Err(Pkcs8Error::Malformed("unsupported PKCS#8 version")),
    }
    let mut alg = Reader::new(body.read(TAG_SEQUENCE).ok_or(NOT_PKCS8)?);
    let oid = alg.read(TAG_OID).ok_or(NOT_PKCS8)?;
    if oid == OID_ED25519 {
        if !alg.is_empty() {
            return Err(Pkcs8Error::Malformed(
                "Ed25519 AlgorithmIdentifier must not have parameters",
            ));
        }
        Ok(Pkcs8Kind::Ed25519)
    } else if oid == OID_EC_PUBLIC_KEY {
        match alg.read(TAG_OID) {
            Some(curve) if curve == OID_P256 => Ok(Pkcs8Kind::P256),
            Some(_) => Err(Pkcs8Error::Unsupported("EC curve other than P-256")),
            None => Err(Pkcs8Error::Malformed("EC key without a named curve")),
        }
    } else if oid == OID_RSA {
        Ok(Pkcs8Kind::Rsa)
    } else {
        Err(Pkcs8Error::Unsupported(
            "only Ed25519, P-256 and RSA keys are supported",
        ))
    }
}

/// Splits an RFC 8017 `RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }`
/// into big-endian `n` and `e` without leading zero bytes.
pub(crate) fn rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut outer = Reader::new(der);
    let mut seq = Reader::new(outer.read(TAG_SEQUENCE)?);
    if !outer.is_empty() {
        return None;
    }
    let n = positive_integer(seq.read(TAG_INTEGER)?)?;
    let e = positive_integer(seq.read(TAG_INTEGER)?)?;
    if !seq.is_empty() {
        return None;
    }
    Some((n.to_vec(), e.to_vec()))
}

/// The magnitude of a minimally encoded, strictly positive DER INTEGER.
fn positive_integer(content: &[u8]) -> Option<&[u8]> {
    match content {
        // Empty, negative, zero, or non-minimal (a leading zero byte that
        // is not needed to keep the value positive).
        [] | [0] | [0, 0..=0x7F, ..] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, ..] => content.get(1..),
        _ => Some(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_be_minimal() {
        assert_eq!(
            Reader::new(&[0x04, 0x01, 0xAA]).read_any(),
            Some((0x04, &[0xAA][..]))
        );
        assert_eq!(Reader::new(&[0x04, 0x81, 0x01, 0xAA]).read_any(), None);
        assert_eq!(Reader::new(&[0x04, 0x80]).read_any(), None);
        assert_eq!(Reader::new(&[0x04, 0x82, 0x00, 0x81]).read_any(), None);
        assert_eq!(Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1]).read_any(), None);
        assert_eq!(Reader::new(&[0x04, 0x02, 0xAA]).read_any(), None);
        assert_eq!(Reader::new(&[0x1F, 0x01, 0xAA]).read_any(), None);
        assert_eq!(Reader::new(&[]).read_any(), None);
    }

    #[test]
    fn integers() {
        assert_eq!(positive_integer(&[0x01, 0x00]), Some(&[0x01, 0x00][..]));
        assert_eq!(positive_integer(&[0x00, 0x80]), Some(&[0x80][..]));
        assert_eq!(positive_integer(&[0x00, 0x7F]), None);
        assert_eq!(positive_integer(&[0x80]), None);
        assert_eq!(positive_integer(&[0x00]), None);
        assert_eq!(positive_integer(&[]), None);
    }

    #[test]
    fn garbage_is_not_pkcs8() {
        for der in [
            &[][..],
            &[0x30],
            &[0x30, 0x00],
            &[0x30, 0x03, 0x02, 0x01, 0x02],
            &[0xFF; 40],
        ] {
            assert!(
                matches!(pkcs8_kind(der), Err(Pkcs8Error::Malformed(_))),
                "{der:?}"
            );
        }
    }
}
