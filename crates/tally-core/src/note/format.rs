//! The signed-note wire format that signing, opening and checkpoints share:
//! size limits, the signature-line marker, the Ed25519 encoding lengths,
//! key-name and note-text rules, key hashes and the verifier key string.
//!
//! A key hash is always the first four bytes, big-endian, of
//! `SHA-256(name || "\n" || encoded key)`, where the encoded key is the
//! algorithm byte followed by the public key, so a name and a key determine it.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::NoteError;

/// Largest signed note (or checkpoint body) accepted or produced, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Largest number of signature lines accepted in one note (as in Go's
/// `note.Open`; the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Signature type identifier byte for Ed25519 (C2SP signed-note).
pub(super) const ALG_ED25519: u8 = 0x01;
/// Em dash (U+2014) and space: the start of every signature line.
pub(super) const SIG_PREFIX: &str = "\u{2014} ";
/// Length of an Ed25519 public key or seed.
pub(super) const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub(super) const ED25519_SIG_LEN: usize = 64;
/// Length of the key-hash prefix of a signature.
pub(super) const KEY_HASH_LEN: usize = 4;

/// Reports whether `name` is a valid key name: non-empty, with no Unicode
/// whitespace, no `+` and no ASCII control character.
///
/// Go's rule is the same minus the control-character clause; a name with a
/// control character could not appear in a signed note anyway.
pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < '\u{20}')
}

/// Reports whether `s` contains an ASCII control character other than newline.
pub(super) fn has_control_character(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// Computes the key hash of `name` and an encoded key (algorithm byte followed
/// by the public key): the first four bytes, big-endian, of
/// `SHA-256(name || "\n" || encoded_key)`.
pub(super) fn key_hash_of(name: &str, encoded_key: &[u8]) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(encoded_key);
    let sum = ctx.finish();
    // A SHA-256 digest is always 32 bytes, so the first chunk always exists.
    sum.as_ref()
        .first_chunk::<KEY_HASH_LEN>()
        .map_or(0, |b| u32::from_be_bytes(*b))
}

/// Computes the key hash of an Ed25519 public key.
pub(super) fn ed25519_key_hash(name: &str, public_key: &[u8; ED25519_KEY_LEN]) -> u32 {
    let mut encoded = [0u8; 1 + ED25519_KEY_LEN];
    encoded[0] = ALG_ED25519;
    encoded[1..].copy_from_slice(public_key);
    key_hash_of(name, &encoded)
}

/// Parses exactly eight hexadecimal digits (either case).
pub(super) fn parse_hash_hex(hex: &str) -> Option<u32> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Encodes an Ed25519 public key as a verifier key string.
pub(super) fn format_verifier_key(
    name: &str,
    key_hash: u32,
    public_key: &[u8; ED25519_KEY_LEN],
) -> String {
    let mut encoded = [0u8; 1 + ED25519_KEY_LEN];
    encoded[0] = ALG_ED25519;
    encoded[1..].copy_from_slice(public_key);
    format!("{name}+{key_hash:08x}+{}", STANDARD.encode(encoded))
}

/// Checks that `text` can be signed: it ends in a newline, contains no control
/// characters besides newline, and is within the size limit.
pub(super) fn check_note_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge {
            len: text.len(),
            limit: MAX_NOTE_BYTES,
        });
    }
    if !text.ends_with('\n') {
        return Err(NoteError::InvalidText {
            reason: "text must be non-empty and end with a newline",
        });
    }
    if has_control_character(text) {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}
