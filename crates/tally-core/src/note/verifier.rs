//! [`NoteVerifier`]: an Ed25519 public key with its name, from a verifier key
//! string or a raw key, and the opening of signed notes into
//! [`VerifiedNote`]s.
//!
//! A verifier's key hash always matches its name and public key. Opening
//! checks the size limit and control characters before anything is parsed;
//! every signature line naming this key must verify, and lines by other keys
//! are kept unverified, without repeats.

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::NoteError;
use super::format::{
    ALG_ED25519, ED25519_KEY_LEN, ED25519_SIG_LEN, KEY_HASH_LEN, MAX_NOTE_BYTES, MAX_SIGNATURES,
    SIG_PREFIX, ed25519_key_hash, format_verifier_key, has_control_character, is_valid_name,
    key_hash_of, parse_hash_hex,
};

/// Verifies notes signed by one Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_hash: u32,
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// Parses a verifier key string, `<name>+<hash>+<base64(0x01 || public key)>`
    /// (the format of Go's `note.NewVerifier`). The hash may be in either case.
    /// Surrounding whitespace is not trimmed.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedVerifierKey`], [`NoteError::InvalidKeyName`],
    /// [`NoteError::KeyHashMismatch`] or [`NoteError::UnsupportedAlgorithm`].
    pub fn from_verifier_key(vkey: &str) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::MalformedVerifierKey { reason };
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(malformed("expected <name>+<hash>+<keydata>"))?;
        let (hash_hex, key_b64) = rest
            .split_once('+')
            .ok_or(malformed("expected <name>+<hash>+<keydata>"))?;
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let claimed =
            parse_hash_hex(hash_hex).ok_or(malformed("key hash must be 8 hexadecimal digits"))?;
        let key = STANDARD
            .decode(key_b64)
            .map_err(|_| malformed("key data is not canonical base64"))?;
        let Some((&algorithm, public_key)) = key.split_first() else {
            return Err(malformed("key data is empty"));
        };
        // As in Go, the hash covers the encoded key whatever its algorithm.
        let computed = key_hash_of(name, &key);
        if claimed != computed {
            return Err(NoteError::KeyHashMismatch { claimed, computed });
        }
        if algorithm != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm { algorithm });
        }
        let public_key: [u8; ED25519_KEY_LEN] = public_key
            .try_into()
            .map_err(|_| malformed("Ed25519 public key must be 32 bytes"))?;
        Ok(Self {
            name: name.to_owned(),
            key_hash: computed,
            public_key,
        })
    }

    /// A verifier from parts already known to belong together: `name` is a
    /// valid key name and `key_hash` is the key hash of `name` and
    /// `public_key`, as for a [`NoteSigner`](super::NoteSigner)'s own key.
    pub(super) fn from_parts(name: String, key_hash: u32, public_key: [u8; 32]) -> Self {
        Self {
            name,
            key_hash,
            public_key,
        }
    }

    /// Creates a verifier for key `name` from a raw 32-byte Ed25519 public key
    /// (like Go's `note.NewEd25519VerifierKey`).
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`] if `name` is not a valid key name.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_hash: ed25519_key_hash(name, public_key),
            public_key: *public_key,
        })
    }

    /// The verifier key string, `<name>+<hash>+<base64(0x01 || public key)>`.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        format_verifier_key(&self.name, self.key_hash, &self.public_key)
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash (key ID).
    #[must_use]
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    /// The raw Ed25519 public key.
    #[must_use]
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Parses a signed note and checks that it carries a valid signature by this key.
    /// Signatures by other keys are ignored (kept as unverified), as the spec allows;
    /// a line claiming this key's name+hash with an invalid signature is an error.
    ///
    /// Another key is one whose name or hash differs from this key's (even if
    /// the other matches). Repeated identical lines by other keys are kept
    /// once. Every line naming this key must verify; repeats are accepted.
    ///
    /// # Errors
    ///
    /// [`NoteError::TooLarge`] over [`MAX_NOTE_BYTES`];
    /// [`NoteError::ControlCharacter`]; [`NoteError::MalformedNote`] for a
    /// grammar violation; [`NoteError::TooManySignatures`] over
    /// [`MAX_SIGNATURES`] lines; [`NoteError::InvalidSignature`] if a line
    /// naming this key fails to verify; [`NoteError::NoVerifiableSignature`]
    /// if no line names this key.
    pub fn open(&self, note: &str) -> Result<VerifiedNote, NoteError> {
        let malformed = |reason| NoteError::MalformedNote { reason };
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: note.len(),
                limit: MAX_NOTE_BYTES,
            });
        }
        if has_control_character(note) {
            return Err(NoteError::ControlCharacter);
        }
        // The text is separated from the signatures by the last blank line.
        let split = note
            .rfind("\n\n")
            .ok_or(malformed("missing blank line before the signatures"))?;
        // `split` indexes an ASCII newline, so both cuts are on char boundaries.
        let text = note.get(..=split).ok_or(malformed("bad split"))?;
        let sig_block = note.get(split + 2..).ok_or(malformed("bad split"))?;
        if sig_block.is_empty() {
            return Err(malformed("no signature lines"));
        }
        let sig_block = sig_block
            .strip_suffix('\n')
            .ok_or(malformed("signature lines must end with a newline"))?;

        let mut verified = false;
        let mut unverified: Vec<UnverifiedSignature> = Vec::new();
        for (count, line) in sig_block.split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    limit: MAX_SIGNATURES,
                });
            }
            let parsed = parse_signature_line(line)?;
            if parsed.name == self.name && parsed.key_hash == self.key_hash {
                if !self.verify_signature(text, &parsed.signature) {
                    return Err(NoteError::InvalidSignature {
                        name: self.name.clone(),
                        key_hash: self.key_hash,
                    });
                }
                verified = true;
            } else if !unverified
                .iter()
                .any(|u| u.name == parsed.name && u.base64 == parsed.base64)
            {
                unverified.push(UnverifiedSignature {
                    name: parsed.name.to_owned(),
                    key_hash: parsed.key_hash,
                    base64: parsed.base64.to_owned(),
                });
            }
        }
        if !verified {
            return Err(NoteError::NoVerifiableSignature {
                name: self.name.clone(),
                key_hash: self.key_hash,
            });
        }
        Ok(VerifiedNote {
            text: text.to_owned(),
            key_name: self.name.clone(),
            key_hash: self.key_hash,
            unverified,
        })
    }

    /// Verifies a raw Ed25519 signature (without the key-hash prefix) on `text`.
    fn verify_signature(&self, text: &str, signature: &[u8]) -> bool {
        signature.len() == ED25519_SIG_LEN
            && UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(text.as_bytes(), signature)
                .is_ok()
    }
}

/// A decoded signature line: name, key hash, the base64 field as written and
/// the raw signature bytes after the key hash.
struct ParsedLine<'a> {
    name: &'a str,
    key_hash: u32,
    base64: &'a str,
    signature: Vec<u8>,
}

/// Parses `— <name> <base64>` (without the newline), as Go's `note.Open` does:
/// the name runs to the first space, the rest must be canonical base64 of at
/// least five bytes (a 4-byte key hash and a non-empty signature).
fn parse_signature_line(line: &str) -> Result<ParsedLine<'_>, NoteError> {
    let malformed = |reason| NoteError::MalformedNote { reason };
    let rest = line.strip_prefix(SIG_PREFIX).ok_or(malformed(
        "signature line must start with an em dash and a space",
    ))?;
    let (name, base64) = rest.split_once(' ').ok_or(malformed(
        "signature line must be: em dash, space, name, space, signature",
    ))?;
    if !is_valid_name(name) {
        return Err(malformed("invalid key name in signature line"));
    }
    let blob = STANDARD
        .decode(base64)
        .map_err(|_| malformed("signature is not canonical base64"))?;
    let Some((hash, signature)) = blob.split_first_chunk::<KEY_HASH_LEN>() else {
        return Err(malformed("signature is too short"));
    };
    if signature.is_empty() {
        return Err(malformed("signature is too short"));
    }
    Ok(ParsedLine {
        name,
        key_hash: u32::from_be_bytes(*hash),
        base64,
        signature: signature.to_vec(),
    })
}

/// A signature line by a key other than the verifier's, kept as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedSignature {
    name: String,
    key_hash: u32,
    base64: String,
}

impl UnverifiedSignature {
    /// The key name on the line.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash in the signature's first four bytes.
    #[must_use]
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    /// The base64 signature field, key hash included, as it appeared.
    #[must_use]
    pub fn signature_base64(&self) -> &str {
        &self.base64
    }
}

/// The text of a note whose signature by a known key has been verified.
///
/// Only [`NoteVerifier::open`] creates values of this type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    text: String,
    key_name: String,
    key_hash: u32,
    unverified: Vec<UnverifiedSignature>,
}

impl VerifiedNote {
    /// The note text, including its final newline.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The name of the key whose signature was verified.
    #[must_use]
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The hash of the key whose signature was verified.
    #[must_use]
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    /// Signatures by other keys, unverified, in order, without repeats.
    #[must_use]
    pub fn unverified_signatures(&self) -> &[UnverifiedSignature] {
        &self.unverified
    }
}
