//! Time-based one-time passwords: RFC 6238 TOTP on top of RFC 4226 HOTP.
//!
//! * [`TotpSecret`]: the shared secret (16 to 64 bytes, 20 by default), zeroized on drop,
//!   never printed; exchanged as RFC 4648 base32 (what authenticator apps expect).
//! * [`Totp`]: the parameters (digits, period, HMAC algorithm, accepted clock skew) with
//!   [`Totp::code_at`], [`Totp::verify`] and [`Totp::otpauth_uri`].
//!
//! Like the rest of `tally-core` this module has no clock: the caller passes unix seconds.
//!
//! [`Totp::verify`] refuses a code whose time step is not strictly after the last step
//! that was accepted for the same secret (RFC 6238 §5.2: a verifier must not accept the
//! same OTP twice). The caller persists the step it returns and passes it back next time.
//!
//! ```
//! use tally_core::totp::{Totp, TotpSecret};
//! let secret = TotpSecret::from_bytes(b"12345678901234567890").unwrap();
//! let totp = Totp::default();
//! let code = totp.code_at(&secret, 1_111_111_111);
//! let step = totp.verify(&secret, &code, 1_111_111_111, None).unwrap();
//! assert!(totp.verify(&secret, &code, 1_111_111_111, Some(step)).is_err()); // replay
//! ```

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

/// Length of a freshly generated secret in bytes (160 bits, RFC 4226 §4 recommends this).
pub const DEFAULT_SECRET_LEN: usize = 20;
/// Shortest secret accepted, in bytes (RFC 4226 §4: at least 128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes (the HMAC-SHA-512 block size).
pub const MAX_SECRET_LEN: usize = 64;
/// Largest accepted [`Totp::skew_steps`]; bounds the work one [`Totp::verify`] call does.
pub const MAX_SKEW_STEPS: u64 = 10;

/// Fewest digits in a code (RFC 4226 §5.3: at least 6).
const MIN_DIGITS: u32 = 6;
/// Most digits in a code (RFC 4226 §5.3 mentions 7 and 8; more adds no entropy beyond 31 bits).
const MAX_DIGITS: u32 = 8;
/// Longest base32 text [`TotpSecret::from_base32`] looks at (64 bytes are 103 characters,
/// plus grouping spaces and padding); longer input is refused before any allocation.
const MAX_BASE32_INPUT: usize = 512;

/// Why a TOTP operation failed. Messages never include secret material or codes.
///
/// At an API edge, [`TotpError::Mismatch`], [`TotpError::Replay`] and
/// [`TotpError::MalformedCode`] should all produce the same answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// A secret must be 16 to 64 bytes.
    #[error("TOTP secret must be 16 to 64 bytes")]
    SecretLength,
    /// The text is not RFC 4648 base32 (bad character, length, padding or trailing bits).
    #[error("TOTP secret is not valid base32")]
    Base32,
    /// The system random source failed.
    #[error("random source failed")]
    Random,
    /// The [`Totp`] parameters are out of range (see [`Totp::validate`]).
    #[error("TOTP parameters out of range (digits 6..=8, period > 0, skew_steps <= 10)")]
    InvalidConfig,
    /// The code is not exactly `digits` ASCII digits.
    #[error("one-time code is malformed")]
    MalformedCode,
    /// The code matches no time step in the window.
    #[error("one-time code does not match")]
    Mismatch,
    /// The code matches only a time step that was already used (or an earlier one).
    #[error("one-time code was already used")]
    Replay,
}

/// A TOTP shared secret. Zeroized on drop; its `Debug` output is redacted and it has no
/// `Display`: the only ways out are [`TotpSecret::as_bytes`] and [`TotpSecret::to_base32`].
pub struct TotpSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A fresh random secret of [`DEFAULT_SECRET_LEN`] bytes.
    pub fn generate() -> Result<TotpSecret, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; DEFAULT_SECRET_LEN]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| TotpError::Random)?;
        Ok(TotpSecret { bytes })
    }

    /// A secret from raw bytes; refuses fewer than 16 or more than 64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TotpSecret, TotpError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(TotpError::SecretLength);
        }
        Ok(TotpSecret {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// RFC 4648 base32: upper case, no padding (the form authenticator apps expect).
    pub fn to_base32(&self) -> Zeroizing<String> {
        base32_encode(&self.bytes)
    }

    /// Parses RFC 4648 base32. Accepts lower case, ASCII whitespace anywhere (for
    /// grouped display such as `"JBSW Y3DP …"`) and optional correct `=` padding.
    /// Refuses other characters, impossible lengths and non-zero trailing bits (so
    /// every secret has exactly one accepted spelling up to case, spaces and padding),
    /// then applies the length rule of [`TotpSecret::from_bytes`].
    pub fn from_base32(text: &str) -> Result<TotpSecret, TotpError> {
        let bytes = base32_decode(text)?;
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(TotpError::SecretLength);
        }
        Ok(TotpSecret { bytes })
    }
}

/// The HMAC function under HOTP (RFC 6238 §1.2 allows SHA-1, SHA-256 and SHA-512).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1: what nearly every authenticator app supports. HMAC-SHA-1 is not
    /// affected by SHA-1 collision attacks.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth://` URIs: `SHA1`, `SHA256` or `SHA512`.
    pub fn name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            TotpAlgorithm::Sha256 => hmac::HMAC_SHA256,
            TotpAlgorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// TOTP parameters. [`Totp::default`] is 6 digits, 30-second steps, HMAC-SHA-1 and one
/// step of accepted clock skew each way (RFC 6238 §5.2), i.e. the usual authenticator
/// app settings. Time steps count from the unix epoch (`T0 = 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Totp {
    /// Code length: 6 to 8 digits.
    pub digits: u32,
    /// Length of a time step in seconds (`X` in RFC 6238); must be positive.
    pub period: u64,
    /// The HMAC function.
    pub algorithm: TotpAlgorithm,
    /// Steps accepted before and after the current one; at most [`MAX_SKEW_STEPS`].
    pub skew_steps: u64,
}

impl Default for Totp {
    fn default() -> Totp {
        Totp {
            digits: 6,
            period: 30,
            algorithm: TotpAlgorithm::Sha1,
            skew_steps: 1,
        }
    }
}

impl Totp {
    /// Checks the parameters: `digits` in 6..=8, `period > 0`, `skew_steps <= 10`.
    pub fn validate(&self) -> Result<(), TotpError> {
        if (MIN_DIGITS..=MAX_DIGITS).contains(&self.digits)
            && self.period > 0
            && self.skew_steps <= MAX_SKEW_STEPS
        {
            Ok(())
        } else {
            Err(TotpError::InvalidConfig)
        }
    }

    /// The time step holding `unix_time` (`T` in RFC 6238 §4.2), or `None` if the
    /// parameters are invalid.
    pub fn step_at(&self, unix_time: u64) -> Option<u64> {
        self.validate().ok()?;
        unix_time.checked_div(self.period)
    }

    /// The code for `unix_time`, zero-padded to `digits` characters.
    ///
    /// Returns an empty string (which never verifies) if the parameters are invalid
    /// (see [`Totp::validate`]).
    pub fn code_at(&self, secret: &TotpSecret, unix_time: u64) -> String {
        let Some(step) = self.step_at(unix_time) else {
            return String::new();
        };
        let key = hmac::Key::new(self.algorithm.hmac(), secret.as_bytes());
        let mut buf = format_code(hotp_value(&key, step), self.digits);
        let code = code_digits(&buf, self.digits)
            .iter()
            .map(|&b| char::from(b))
            .collect();
        buf.zeroize();
        code
    }

    /// Checks `code` at `now` against every step within ±`skew_steps` of the current
    /// one; refuses a step `<= last_used_step` (replay); returns the matched step,
    /// which the caller must persist and pass as `last_used_step` next time.
    ///
    /// Every step of the window is computed and compared in constant time whatever the
    /// input; only the final outcome is branched on. If the code matches several fresh
    /// steps (a 6-digit collision), the latest is returned so that the same code can
    /// never be accepted twice.
    ///
    /// Errors: [`TotpError::InvalidConfig`], [`TotpError::MalformedCode`] (not exactly
    /// `digits` ASCII digits), [`TotpError::Replay`] (matches only used steps),
    /// [`TotpError::Mismatch`].
    pub fn verify(
        &self,
        secret: &TotpSecret,
        code: &str,
        now: u64,
        last_used_step: Option<u64>,
    ) -> Result<u64, TotpError> {
        let current = self.step_at(now).ok_or(TotpError::InvalidConfig)?;
        let code = code.as_bytes();
        // `digits` is at most 8 after validation, so the cast is lossless.
        if code.len() != self.digits as usize || !code.iter().all(u8::is_ascii_digit) {
            return Err(TotpError::MalformedCode);
        }
        let key = hmac::Key::new(self.algorithm.hmac(), secret.as_bytes());
        let first = current.saturating_sub(self.skew_steps);
        let last = current.saturating_add(self.skew_steps);
        let mut accepted = Choice::from(0);
        let mut replayed = Choice::from(0);
        let mut matched = 0u64;
        for step in first..=last {
            let mut buf = format_code(hotp_value(&key, step), self.digits);
            let equal = code_digits(&buf, self.digits).ct_eq(code);
            buf.zeroize();
            // `last_used_step` is not secret: it is fine to compute freshness openly.
            let fresh = Choice::from(u8::from(last_used_step.is_none_or(|used| step > used)));
            let hit = equal & fresh;
            matched.conditional_assign(&step, hit);
            accepted |= hit;
            replayed |= equal & !fresh;
        }
        if bool::from(accepted) {
            Ok(matched)
        } else if bool::from(replayed) {
            Err(TotpError::Replay)
        } else {
            Err(TotpError::Mismatch)
        }
    }

    /// The `otpauth://totp/` URI for enrolling an authenticator app (usually shown as a
    /// QR code): `otpauth://totp/Issuer:account?secret=…&issuer=Issuer&algorithm=SHA1&digits=6&period=30`.
    ///
    /// `issuer` and `account` are percent-encoded (everything but RFC 3986 unreserved
    /// characters, so a `:` inside either is `%3A` and a space is `%20`). An empty
    /// `issuer` leaves out both the label prefix and the `issuer` parameter. The URI
    /// contains the secret, so it is returned in a [`Zeroizing`] string.
    pub fn otpauth_uri(
        &self,
        secret: &TotpSecret,
        issuer: &str,
        account: &str,
    ) -> Zeroizing<String> {
        let b32 = secret.to_base32();
        // Reserve everything up front so the buffer holding the secret never reallocates
        // (a reallocation would leave an unzeroized copy behind).
        let capacity = 128 + 6 * issuer.len() + 3 * account.len() + b32.len();
        let mut uri = Zeroizing::new(String::with_capacity(capacity));
        uri.push_str("otpauth://totp/");
        if !issuer.is_empty() {
            percent_encode_into(&mut uri, issuer);
            uri.push(':');
        }
        percent_encode_into(&mut uri, account);
        uri.push_str("?secret=");
        uri.push_str(&b32);
        if !issuer.is_empty() {
            uri.push_str("&issuer=");
            percent_encode_into(&mut uri, issuer);
        }
        uri.push_str("&algorithm=");
        uri.push_str(self.algorithm.name());
        uri.push_str("&digits=");
        uri.push_str(&self.digits.to_string());
        uri.push_str("&period=");
        uri.push_str(&self.period.to_string());
        uri
    }
}

/// RFC 4226 §5.3: HMAC over the 8-byte big-endian counter, then dynamic truncation to
/// a 31-bit integer.
fn hotp_value(key: &hmac::Key, counter: u64) -> u32 {
    let tag = hmac::sign(key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // The MAC is at least 20 bytes, so the offset (at most 15) leaves 4 bytes; the
    // fallbacks are unreachable and only keep this function panic-free.
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let mut word = [0u8; 4];
    if let Some(bytes) = mac.get(offset..offset + 4) {
        word.copy_from_slice(bytes);
    }
    let value = u32::from_be_bytes(word) & 0x7fff_ffff;
    word.zeroize();
    value
}

/// `value mod 10^digits` as zero-padded ASCII digits, right-aligned in 8 bytes.
fn format_code(value: u32, digits: u32) -> [u8; MAX_DIGITS as usize] {
    let mut buf = [b'0'; MAX_DIGITS as usize];
    let mut rest = value;
    for (i, out) in buf.iter_mut().rev().enumerate() {
        if i as u32 >= digits {
            break;
        }
        // `rest % 10` is below 10, so the cast is lossless.
        *out = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buf
}

/// The last `digits` bytes of a [`format_code`] buffer.
fn code_digits(buf: &[u8; MAX_DIGITS as usize], digits: u32) -> &[u8] {
    let start = buf.len().saturating_sub(digits as usize);
    buf.get(start..).unwrap_or(&buf[..])
}

/// Appends `text` percent-encoded: RFC 3986 unreserved characters stay, every other
/// byte of the UTF-8 encoding becomes `%XX` (upper-case hex).
fn percent_encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            // Both indices are below 16: the lookups cannot fail.
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// `0xff` if `lo <= c <= hi`, else `0`, without branching on `c`.
fn ct_in_range(c: u8, lo: u8, hi: u8) -> u8 {
    let c = i16::from(c);
    // Both differences are negative exactly when c is inside the range; the shift
    // smears the sign bit of their AND over the low byte.
    let both = (i16::from(lo) - 1 - c) & (c - i16::from(hi) - 1);
    (both >> 8) as u8
}

/// The base32 character for a 5-bit value, without table lookups indexed by secret data.
fn base32_char(v: u8) -> char {
    let v = v & 0x1f;
    // 'A'..='Z' for 0..=25, then '2'..='7' for 26..=31: '2' - 26 = 'A' - 41.
    let shift = ct_in_range(v, 26, 31) & 41;
    char::from((b'A' + v).wrapping_sub(shift))
}

/// The 5-bit value of a base32 character (either case) and whether it is one.
fn base32_value(c: u8) -> (u8, bool) {
    let upper = ct_in_range(c, b'A', b'Z');
    let lower = ct_in_range(c, b'a', b'z');
    let digit = ct_in_range(c, b'2', b'7');
    let value = (upper & c.wrapping_sub(b'A'))
        | (lower & c.wrapping_sub(b'a'))
        | (digit & c.wrapping_sub(b'2').wrapping_add(26));
    (value, (upper | lower | digit) != 0)
}

fn base32_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(5) * 8));
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            // Masked to 5 bits, so the cast is lossless.
            out.push(base32_char(((acc >> bits) & 0x1f) as u8));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(base32_char(((acc << (5 - bits)) & 0x1f) as u8));
    }
    acc.zeroize();
    out
}

fn base32_decode(text: &str) -> Result<Zeroizing<Vec<u8>>, TotpError> {
    if text.len() > MAX_BASE32_INPUT {
        return Err(TotpError::Base32);
    }
    let mut chars = Zeroizing::new(Vec::with_capacity(text.len()));
    for b in text.bytes() {
        if !b.is_ascii_whitespace() {
            chars.push(b);
        }
    }
    let data_len = chars.len() - chars.iter().rev().take_while(|&&c| c == b'=').count();
    let padding = chars.len() - data_len;
    // Padding, when present, must complete the last 8-character group (at most 6 `=`).
    if padding > 0 && (padding > 6 || chars.len() % 8 != 0) {
        return Err(TotpError::Base32);
    }
    // 1, 3 or 6 characters in the last group cannot encode whole bytes.
    if matches!(data_len % 8, 1 | 3 | 6) {
        return Err(TotpError::Base32);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(data_len * 5 / 8));
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut valid = true;
    for &c in chars.iter().take(data_len) {
        let (value, ok) = base32_value(c);
        valid &= ok;
        acc = (acc << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            // Shifted down to at most 8 significant bits, so the cast is lossless.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // The unused trailing bits must be zero: one spelling per byte string.
    let canonical = acc == 0;
    acc.zeroize();
    if valid && canonical {
        Ok(out)
    } else {
        Err(TotpError::Base32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn secret(bytes: &[u8]) -> TotpSecret {
        TotpSecret::from_bytes(bytes).unwrap()
    }

    fn eight(algorithm: TotpAlgorithm) -> Totp {
        Totp {
            digits: 8,
            algorithm,
            ..Totp::default()
        }
    }

    /// RFC 4226 Appendix D: HOTP-SHA-1, secret "12345678901234567890", counters 0..=9,
    /// with the truncated 31-bit values (Table 2) and the 6-digit codes.
    #[test]
    fn rfc4226_appendix_d() {
        let table: [(u32, &str); 10] = [
            (1284755224, "755224"),
            (1094287082, "287082"),
            (137359152, "359152"),
            (1726969429, "969429"),
            (1640338314, "338314"),
            (868254676, "254676"),
            (1918287922, "287922"),
            (82162583, "162583"),
            (673399871, "399871"),
            (645520489, "520489"),
        ];
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SEED_SHA1);
        let totp = Totp {
            period: 1,
            ..Totp::default()
        };
        let s = secret(SEED_SHA1);
        for (counter, (truncated, code)) in (0u64..).zip(table) {
            assert_eq!(hotp_value(&key, counter), truncated, "counter {counter}");
            // With a 1-second period the step equals the time: HOTP at that counter.
            assert_eq!(totp.code_at(&s, counter), code, "counter {counter}");
        }
    }

    /// RFC 6238 Appendix B: 8 digits, 30-second steps, T0 = 0, one seed per algorithm
    /// (the ASCII digits repeated to 20, 32 and 64 bytes, as in the reference code).
    #[test]
    fn rfc6238_appendix_b() {
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        let cases = [
            (TotpAlgorithm::Sha1, SEED_SHA1),
            (TotpAlgorithm::Sha256, SEED_SHA256),
            (TotpAlgorithm::Sha512, SEED_SHA512),
        ];
        for (time, c1, c256, c512) in table {
            for ((algorithm, seed), expected) in cases.into_iter().zip([c1, c256, c512]) {
                let totp = eight(algorithm);
                let s = secret(seed);
                assert_eq!(totp.code_at(&s, time), expected, "{algorithm:?} at {time}");
                assert_eq!(totp.verify(&s, expected, time, None), Ok(time / 30));
            }
        }
        // The "Value of T (Hex)" column.
        let totp = Totp::default();
        assert_eq!(totp.step_at(1111111109), Some(0x23523EC));
        assert_eq!(totp.step_at(20000000000), Some(0x27BC86AA));
    }

    #[test]
    fn six_and_seven_digits_are_suffixes_of_eight() {
        let s = secret(SEED_SHA1);
        let t6 = Totp::default();
        let t7 = Totp {
            digits: 7,
            ..Totp::default()
        };
        assert_eq!(t6.code_at(&s, 59), "287082");
        assert_eq!(t7.code_at(&s, 59), "4287082");
        // Zero padding: 07081804 at 1111111109 → 081804 with 6 digits.
        assert_eq!(t6.code_at(&s, 1111111109), "081804");
    }

    /// RFC 4648 §10 test vectors.
    #[test]
    fn rfc4648_base32_vectors() {
        let vectors: [(&[u8], &str, &str); 7] = [
            (b"", "", ""),
            (b"f", "MY", "MY======"),
            (b"fo", "MZXQ", "MZXQ===="),
            (b"foo", "MZXW6", "MZXW6==="),
            (b"foob", "MZXW6YQ", "MZXW6YQ="),
            (b"fooba", "MZXW6YTB", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI", "MZXW6YTBOI======"),
        ];
        for (plain, bare, padded) in vectors {
            assert_eq!(base32_encode(plain).as_str(), bare);
            assert_eq!(&base32_decode(bare).unwrap()[..], plain, "{bare}");
            assert_eq!(&base32_decode(padded).unwrap()[..], plain, "{padded}");
            let lower = padded.to_ascii_lowercase();
            assert_eq!(&base32_decode(&lower).unwrap()[..], plain, "{lower}");
        }
    }

    #[test]
    fn base32_alphabet_and_every_length() {
        let all: Vec<u8> = (0u8..=255).collect();
        for len in 0..=all.len() {
            let text = base32_encode(&all[..len]);
            assert!(
                text.bytes()
                    .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
            );
            assert_eq!(&base32_decode(&text).unwrap()[..], &all[..len], "len {len}");
        }
        // The branch-free character mapping agrees with the RFC 4648 table.
        for v in 0u8..32 {
            let c = base32_char(v);
            assert_eq!(
                c,
                char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[usize::from(v)])
            );
            let (back, ok) = base32_value(c as u8);
            assert!(ok);
            assert_eq!(back, v);
        }
        for c in 0u8..=255 {
            let expected = c.is_ascii_alphabetic() || (b'2'..=b'7').contains(&c);
            assert_eq!(base32_value(c).1, expected, "byte {c}");
        }
    }

    #[test]
    fn base32_refusals() {
        for bad in [
            "M",                // 1 character: not a whole byte
            "MZX",              // 3 characters
            "MZXW6Y",           // 6 characters
            "MZ",               // non-zero trailing bits ("MY" is the spelling of "f")
            "MY=",              // padding that does not complete the group
            "MY=======",        // too much padding
            "MZXW6YTB========", // padding after a full group
            "M=Y=====",         // padding in the middle
            "========",         // padding only
            "M0======",         // '0', '1', '8', '9' are not in the alphabet
            "M1======",
            "M8======",
            "M9======",
            "MZXW6YT!",
            "MZXW6Y\u{dd}", // non-ASCII (two bytes)
            "MZXW6YT\0",
        ] {
            assert_eq!(
                base32_decode(bad).unwrap_err(),
                TotpError::Base32,
                "{bad:?}"
            );
        }
        assert_eq!(
            base32_decode(&"A".repeat(MAX_BASE32_INPUT + 8)).unwrap_err(),
            TotpError::Base32
        );
    }

    #[test]
    fn secret_round_trips_and_lengths() {
        let s = TotpSecret::generate().unwrap();
        assert_eq!(s.as_bytes().len(), DEFAULT_SECRET_LEN);
        let b32 = s.to_base32();
        assert_eq!(b32.len(), 32);
        let again = TotpSecret::from_base32(&b32).unwrap();
        assert_eq!(again.as_bytes(), s.as_bytes());
        assert_ne!(TotpSecret::generate().unwrap().as_bytes(), s.as_bytes());

        // Grouped, lower case, padded: the RFC 6238 SHA-1 seed.
        let seed = TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(seed.as_bytes(), SEED_SHA1);
        assert_eq!(
            seed.to_base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let padded = TotpSecret::from_base32(&base32_encode(&[7u8; 17])).unwrap();
        assert_eq!(padded.as_bytes(), &[7u8; 17]);
        let mut text = base32_encode(&[7u8; 17]).to_string();
        text.push_str("====");
        assert_eq!(
            TotpSecret::from_base32(&text).unwrap().as_bytes(),
            &[7u8; 17]
        );

        for len in [0, 1, 15, 65, 200] {
            let bytes = vec![1u8; len];
            assert_eq!(
                TotpSecret::from_bytes(&bytes).unwrap_err(),
                TotpError::SecretLength
            );
            assert_eq!(
                TotpSecret::from_base32(&base32_encode(&bytes)).unwrap_err(),
                TotpError::SecretLength
            );
        }
        for len in [16, 20, 32, 64] {
            let bytes = vec![9u8; len];
            let s = TotpSecret::from_base32(&base32_encode(&bytes)).unwrap();
            assert_eq!(s.as_bytes(), &bytes[..]);
        }
        assert_eq!(format!("{s:?}"), "TotpSecret(<redacted>)");
    }

    #[test]
    fn verify_window_edges() {
        let s = secret(SEED_SHA1);
        let totp = Totp::default();
        let now = 1_000_000_020; // step 33333334, 20 s into it
        let step = now / 30;
        for (offset, ok) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = (step as i64 + offset) as u64 * 30;
            let code = totp.code_at(&s, at);
            let got = totp.verify(&s, &code, now, None);
            if ok {
                assert_eq!(got, Ok(at / 30), "offset {offset}");
            } else {
                assert_eq!(got, Err(TotpError::Mismatch), "offset {offset}");
            }
        }
        // The first and last second of a step belong to it.
        let code = totp.code_at(&s, step * 30);
        assert_eq!(totp.code_at(&s, step * 30 + 29), code);
        // No skew: only the current step.
        let strict = Totp {
            skew_steps: 0,
            ..totp
        };
        assert_eq!(strict.verify(&s, &code, step * 30 + 29, None), Ok(step));
        assert_eq!(
            strict.verify(&s, &code, step * 30 + 30, None),
            Err(TotpError::Mismatch)
        );
        // Wider skew.
        let wide = Totp {
            skew_steps: 3,
            ..totp
        };
        let old = totp.code_at(&s, (step - 3) * 30);
        assert_eq!(wide.verify(&s, &old, now, None), Ok(step - 3));
        // Near time 0 and near the end of time the window is clipped, not wrapped.
        let zero = totp.code_at(&s, 0);
        assert_eq!(totp.verify(&s, &zero, 0, None), Ok(0));
        assert_eq!(totp.verify(&s, &zero, 59, None), Ok(0));
        let one_sec = Totp { period: 1, ..totp };
        let end = one_sec.code_at(&s, u64::MAX);
        assert_eq!(one_sec.verify(&s, &end, u64::MAX, None), Ok(u64::MAX));
        assert_eq!(one_sec.verify(&s, &end, u64::MAX - 1, None), Ok(u64::MAX));
    }

    #[test]
    fn replay_is_refused() {
        let s = secret(SEED_SHA1);
        let totp = Totp::default();
        let now = 1_700_000_000;
        let code = totp.code_at(&s, now);
        let step = totp.verify(&s, &code, now, None).unwrap();
        assert_eq!(step, now / 30);
        // Same code, same step: refused, even later within the window.
        assert_eq!(
            totp.verify(&s, &code, now, Some(step)),
            Err(TotpError::Replay)
        );
        assert_eq!(
            totp.verify(&s, &code, now + 30, Some(step)),
            Err(TotpError::Replay)
        );
        // An older code still in the window is refused once a later step was used.
        let previous = totp.code_at(&s, now - 30);
        assert_eq!(
            totp.verify(&s, &previous, now, Some(step)),
            Err(TotpError::Replay)
        );
        // The next step's code is fine.
        let next = totp.code_at(&s, now + 30);
        assert_eq!(totp.verify(&s, &next, now, Some(step)), Ok(step + 1));
        // A wrong code after a use is a mismatch, not a replay.
        let window = [previous, code, next];
        let wrong = ["000000", "000001", "000002", "000003"]
            .into_iter()
            .find(|w| !window.iter().any(|c| c == w))
            .unwrap();
        assert_eq!(
            totp.verify(&s, wrong, now, Some(step)),
            Err(TotpError::Mismatch)
        );
    }

    #[test]
    fn collision_returns_the_latest_fresh_step() {
        // Find two steps within one window whose 6-digit codes coincide by searching a
        // 1-step-period, wide-skew configuration over many times; then check that the
        // later step is returned and the code cannot be used twice.
        let s = secret(SEED_SHA1);
        let totp = Totp {
            period: 1,
            skew_steps: MAX_SKEW_STEPS,
            ..Totp::default()
        };
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SEED_SHA1);
        let values: Vec<u32> = (0u64..300_000)
            .map(|t| hotp_value(&key, t) % 1_000_000)
            .collect();
        let span = usize::try_from(2 * MAX_SKEW_STEPS).unwrap();
        let (early, late) = values
            .iter()
            .enumerate()
            .find_map(|(i, v)| {
                let later = values.get(i + 1..=i + span)?;
                let d = later.iter().position(|w| w == v)?;
                Some((i as u64, (i + 1 + d) as u64))
            })
            .expect("about four collisions are expected among these 300 000 steps");
        let code = totp.code_at(&s, early);
        assert_eq!(totp.code_at(&s, late), code);
        let now = early + (late - early) / 2;
        assert_eq!(totp.verify(&s, &code, now, None), Ok(late));
        assert_eq!(
            totp.verify(&s, &code, now, Some(late)),
            Err(TotpError::Replay)
        );
        assert_eq!(totp.verify(&s, &code, now, Some(early)), Ok(late));
    }

    #[test]
    fn garbage_codes_are_errors() {
        let s = secret(SEED_SHA1);
        let totp = Totp::default();
        let now = 59;
        for bad in [
            "",
            "1",
            "28708",
            "2870820",
            "287 082",
            " 287082",
            "287082 ",
            "28708a",
            "-87082",
            "+87082",
            "２８７０８２", // full-width digits
            "٢٨٧٠٨٢",       // Arabic-Indic digits
            "28708\u{0662}",
            "28708\0",
            "\u{1F600}",
        ] {
            assert_eq!(
                totp.verify(&s, bad, now, None),
                Err(TotpError::MalformedCode),
                "{bad:?}"
            );
        }
        let long = "9".repeat(100_000);
        assert_eq!(
            totp.verify(&s, &long, now, None),
            Err(TotpError::MalformedCode)
        );
        assert_eq!(totp.verify(&s, "287082", now, None), Ok(1));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let s = secret(SEED_SHA1);
        let totp = Totp::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcxyz0189 =\t\n!é٢２\u{0}";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 120) as usize;
            let text: String = (0..len)
                .map(|i| chars[((x >> (i % 50)) as usize + i) % chars.len()])
                .collect();
            if let Ok(decoded) = TotpSecret::from_base32(&text) {
                let again = TotpSecret::from_base32(&decoded.to_base32()).unwrap();
                assert_eq!(again.as_bytes(), decoded.as_bytes());
            }
            let code: String = text.chars().take(6).collect();
            let _ = totp.verify(&s, &code, x, Some(x % 1_000));
            let _ = totp.code_at(&s, x);
        }
    }

    #[test]
    fn invalid_parameters_never_panic() {
        let s = secret(SEED_SHA1);
        for bad in [
            Totp {
                period: 0,
                ..Totp::default()
            },
            Totp {
                digits: 5,
                ..Totp::default()
            },
            Totp {
                digits: 9,
                ..Totp::default()
            },
            Totp {
                digits: u32::MAX,
                ..Totp::default()
            },
            Totp {
                skew_steps: MAX_SKEW_STEPS + 1,
                ..Totp::default()
            },
            Totp {
                skew_steps: u64::MAX,
                ..Totp::default()
            },
        ] {
            assert_eq!(bad.validate(), Err(TotpError::InvalidConfig));
            assert_eq!(bad.code_at(&s, 59), "");
            assert_eq!(bad.step_at(59), None);
            assert_eq!(
                bad.verify(&s, "287082", 59, None),
                Err(TotpError::InvalidConfig)
            );
            let _ = bad.otpauth_uri(&s, "x", "y");
        }
        assert_eq!(Totp::default().validate(), Ok(()));
    }

    #[test]
    fn otpauth_uri_format() {
        let s = secret(SEED_SHA1);
        let uri = Totp::default().otpauth_uri(&s, "Tally", "alice@example.com");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Tally:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Tally&algorithm=SHA1&digits=6&period=30"
        );
        let totp = Totp {
            digits: 8,
            period: 60,
            algorithm: TotpAlgorithm::Sha512,
            skew_steps: 0,
        };
        let uri = totp.otpauth_uri(&s, "Acme Co: Ops", "bob smith/ü?&=#");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Acme%20Co%3A%20Ops:bob%20smith%2F%C3%BC%3F%26%3D%23\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Co%3A%20Ops\
             &algorithm=SHA512&digits=8&period=60"
        );
        let uri = Totp::default().otpauth_uri(&s, "", "carol");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/carol?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(TotpAlgorithm::Sha256.name(), "SHA256");
    }
}
