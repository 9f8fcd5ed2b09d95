//! Strict unpadded base64url (RFC 7515 section 2 / RFC 4648 section 5).
//!
//! Accepted input is exactly what `encode` produces: only `A-Z a-z 0-9 - _`,
//! no padding, no whitespace, a length that is not 1 modulo 4, and zero
//! unused trailing bits. Every byte string therefore has exactly one
//! accepted encoding.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// The one engine used for JOSE base64url, configured explicitly rather than
/// relying on the defaults of `URL_SAFE_NO_PAD`.
const URL_STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Encodes `bytes` as unpadded base64url.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_STRICT.encode(bytes)
}

/// Decodes strict unpadded base64url, explaining the first problem found.
pub(crate) fn decode(input: &[u8]) -> Result<Vec<u8>, &'static str> {
    for &c in input {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'=' => return Err("base64url padding is not allowed"),
            b'+' | b'/' => return Err("standard base64 alphabet is not allowed"),
            b' ' | b'\t' | b'\r' | b'\n' => return Err("whitespace is not allowed"),
            _ => return Err("invalid base64url character"),
        }
    }
    if input.len() % 4 == 1 {
        return Err("impossible base64url length");
    }
    // With the alphabet and length already checked, the remaining failure is
    // non-zero unused trailing bits (a non-canonical encoding).
    URL_STRICT
        .decode(input)
        .map_err(|_| "non-canonical base64url")
}

/// Decodes strict base64url that must be exactly `N` bytes long.
pub(crate) fn decode_array<const N: usize>(input: &[u8]) -> Result<[u8; N], &'static str> {
    let bytes = decode(input)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| "unexpected decoded length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_lengths() {
        for len in 0..70u8 {
            let data: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect();
            let enc = encode(&data);
            assert!(!enc.contains('='));
            assert_eq!(decode(enc.as_bytes()).unwrap(), data);
        }
    }

    #[test]
    fn rejects_everything_non_canonical() {
        // "QQ" is the canonical encoding of "A"; "QR".."QZ" differ only in
        // unused trailing bits.
        assert_eq!(decode(b"QQ").unwrap(), b"A");
        for bad in [&b"QR"[..], b"QZ", b"QX"] {
            assert_eq!(decode(bad), Err("non-canonical base64url"), "{bad:?}");
        }
        assert_eq!(decode(b"QQ=="), Err("base64url padding is not allowed"));
        assert_eq!(decode(b"QQ="), Err("base64url padding is not allowed"));
        assert_eq!(
            decode(b"+/8"),
            Err("standard base64 alphabet is not allowed")
        );
        assert_eq!(decode(b"QQ "), Err("whitespace is not allowed"));
        assert_eq!(decode(b"Q\nQ"), Err("whitespace is not allowed"));
        assert_eq!(decode(b"Q.Q"), Err("invalid base64url character"));
        assert_eq!(
            decode("QQ\u{e9}".as_bytes()),
            Err("invalid base64url character")
        );
        assert_eq!(decode(b"QUJDR"), Err("impossible base64url length"));
        assert_eq!(decode(b""), Ok(Vec::new()));
    }

    #[test]
    fn fixed_length() {
        assert_eq!(decode_array::<1>(b"QQ"), Ok([b'A']));
        assert!(decode_array::<2>(b"QQ").is_err());
    }
}
