//! Signed notes ([C2SP signed-note]) and checkpoints ([C2SP tlog-checkpoint])
//! with Ed25519 keys.
//!
//! A signed note is a UTF-8 text ending in a newline, a blank line, and one or
//! more signature lines:
//!
//! ```text
//! <text, ending in "\n">
//!
//! — <key name> <base64(4-byte big-endian key hash || signature)>
//! ```
//!
//! The signed message is the text including its final newline (but not the
//! blank separator line). The key hash is the first four bytes of
//! `SHA-256(name || "\n" || 0x01 || 32-byte Ed25519 public key)`.
//!
//! Keys use the string encodings of Go's `golang.org/x/mod/sumdb/note`, the
//! reference implementation this module interoperates with:
//!
//! * verifier key: `<name>+<8 hex digits of key hash>+<base64(0x01 || public key)>`
//! * signer key: `PRIVATE+KEY+<name>+<hash>+<base64(0x01 || 32-byte seed)>`
//!
//! A checkpoint is a signed note whose text is a log origin, a tree size and a
//! root hash, optionally followed by extension lines. By the tlog-checkpoint
//! convention the log's key name equals the origin, and [`SignedCheckpoint`]
//! enforces that.
//!
//! # Differences from Go's `note.Open`
//!
//! Parsing mirrors Go (same size limits, same line grammar, duplicate lines
//! from one key are collapsed, signatures from other keys are kept as
//! unverified), with two deliberate tightenings:
//!
//! * base64 must be canonical: padding is required and unused trailing bits
//!   must be zero (Go tolerates non-zero trailing bits). Every conforming
//!   encoder, Go's included, produces canonical base64.
//! * every line that claims the verifier's name and key hash is verified, not
//!   only the first one; a single bad one rejects the note (Go silently skips
//!   repeated lines for a key it has already seen).
//!
//! [C2SP signed-note]: https://c2sp.org/signed-note
//! [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Largest signed note (or checkpoint body) accepted or produced, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Largest number of signature lines accepted in one note (as in Go's
/// `note.Open`; the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Signature type identifier byte for Ed25519 (C2SP signed-note).
const ALG_ED25519: u8 = 0x01;
/// Em dash (U+2014) and space: the start of every signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Prefix of Go-format signer keys.
const SIGNER_KEY_PREFIX: &str = "PRIVATE+KEY+";
/// Length of an Ed25519 public key or seed.
const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
const ED25519_SIG_LEN: usize = 64;
/// Length of the key-hash prefix of a signature.
const KEY_HASH_LEN: usize = 4;

/// Errors from parsing, signing and verifying notes and checkpoints.
///
/// Messages are stable and safe to show to operators: they never contain key
/// material, and text taken from an untrusted note appears in them only when it
/// equals a trusted key name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key name is empty or contains whitespace, `+` or a control character.
    #[error(
        "invalid key name: must be non-empty and contain no whitespace, '+' or control characters"
    )]
    InvalidKeyName,
    /// A verifier key string is not of the form `<name>+<hash>+<keydata>`.
    #[error("malformed verifier key: {reason}")]
    MalformedVerifierKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signer key string is not of the form `PRIVATE+KEY+<name>+<hash>+<keydata>`.
    #[error("malformed signer key: {reason}")]
    MalformedSignerKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key uses a signature algorithm other than Ed25519 (0x01).
    #[error("unsupported key algorithm {algorithm:#04x}: only Ed25519 (0x01) is supported")]
    UnsupportedAlgorithm {
        /// The algorithm identifier byte found.
        algorithm: u8,
    },
    /// The key hash in a key string does not match its name and public key.
    #[error("key hash {claimed:08x} does not match the key name and public key ({computed:08x})")]
    KeyHashMismatch {
        /// The hash written in the key string.
        claimed: u32,
        /// The hash computed from the name and key.
        computed: u32,
    },
    /// The Ed25519 private key was rejected by the crypto library.
    #[error("Ed25519 private key rejected")]
    KeyRejected,
    /// Random key generation failed.
    #[error("Ed25519 key generation failed")]
    KeyGeneration,
    /// The Ed25519 signing operation failed.
    #[error("Ed25519 signing failed")]
    SigningFailed,
    /// Text to be signed is not a valid note text.
    #[error("invalid note text: {reason}")]
    InvalidText {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The input is longer than [`MAX_NOTE_BYTES`].
    #[error("input is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Length of the input, in bytes.
        len: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The input contains an ASCII control character other than newline
    /// (this includes carriage return and tab).
    #[error("input contains an ASCII control character other than newline")]
    ControlCharacter,
    /// The signed note does not follow the signed-note grammar.
    #[error("malformed note: {reason}")]
    MalformedNote {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {limit} signature lines")]
    TooManySignatures {
        /// The limit.
        limit: usize,
    },
    /// A signature line names the verifier's key but its signature is invalid.
    #[error("invalid signature for key {name}+{key_hash:08x}")]
    InvalidSignature {
        /// The verifier's key name.
        name: String,
        /// The verifier's key hash.
        key_hash: u32,
    },
    /// No signature line names the verifier's key.
    #[error("note has no signature by key {name}+{key_hash:08x}")]
    NoVerifiableSignature {
        /// The verifier's key name.
        name: String,
        /// The verifier's key hash.
        key_hash: u32,
    },
    /// The checkpoint body does not follow the tlog-checkpoint grammar.
    #[error("malformed checkpoint: {reason}")]
    MalformedCheckpoint {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The checkpoint origin differs from the signing or verifying key name.
    #[error("checkpoint origin does not match key name {key_name}")]
    OriginMismatch {
        /// The key name the origin had to equal.
        key_name: String,
    },
}

/// Reports whether `name` is a valid key name: non-empty, with no Unicode
/// whitespace, no `+` and no ASCII control character.
///
/// Go's rule is the same minus the control-character clause; a name with a
/// control character could not appear in a signed note anyway.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < '\u{20}')
}

/// Reports whether `s` contains an ASCII control character other than newline.
fn has_control_character(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// Computes the key hash of `name` and an encoded key (algorithm byte followed
/// by the public key): the first four bytes, big-endian, of
/// `SHA-256(name || "\n" || encoded_key)`.
fn key_hash_of(name: &str, encoded_key: &[u8]) -> u32 {
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
fn ed25519_key_hash(name: &str, public_key: &[u8; ED25519_KEY_LEN]) -> u32 {
    let mut encoded = [0u8; 1 + ED25519_KEY_LEN];
    encoded[0] = ALG_ED25519;
    encoded[1..].copy_from_slice(public_key);
    key_hash_of(name, &encoded)
}

/// Parses exactly eight hexadecimal digits (either case).
fn parse_hash_hex(hex: &str) -> Option<u32> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Encodes an Ed25519 public key as a verifier key string.
fn format_verifier_key(name: &str, key_hash: u32, public_key: &[u8; ED25519_KEY_LEN]) -> String {
    let mut encoded = [0u8; 1 + ED25519_KEY_LEN];
    encoded[0] = ALG_ED25519;
    encoded[1..].copy_from_slice(public_key);
    format!("{name}+{key_hash:08x}+{}", STANDARD.encode(encoded))
}

/// Checks that `text` can be signed: it ends in a newline, contains no control
/// characters besides newline, and is within the size limit.
fn check_note_text(text: &str) -> Result<(), NoteError> {
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

/// Signs note texts with an Ed25519 key.
///
/// The private key lives inside the crypto library's key object; copies of the
/// seed made while constructing a signer are zeroized. `Debug` shows only the
/// key name and hash.
pub struct NoteSigner {
    name: String,
    key_hash: u32,
    public_key: [u8; ED25519_KEY_LEN],
    key_pair: Ed25519KeyPair,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Creates a signer for key `name` from a 32-byte Ed25519 seed (the RFC 8032
    /// private key).
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`] if `name` is not a valid key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let key_pair =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteError::KeyRejected)?;
        let public_key: [u8; ED25519_KEY_LEN] = key_pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::KeyRejected)?;
        Ok(Self {
            name: name.to_owned(),
            key_hash: ed25519_key_hash(name, &public_key),
            public_key,
            key_pair,
        })
    }

    /// Generates a fresh key named `name` and returns the signer together with
    /// its seed, which the caller must store securely to recreate the signer
    /// with [`NoteSigner::from_seed`].
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`] for an invalid name;
    /// [`NoteError::KeyGeneration`] if the system random source fails.
    pub fn generate(name: &str) -> Result<(Self, Zeroizing<[u8; 32]>), NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let mut seed = Zeroizing::new([0u8; ED25519_KEY_LEN]);
        aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| NoteError::KeyGeneration)?;
        let signer = Self::from_seed(name, &seed)?;
        Ok((signer, seed))
    }

    /// Creates a signer from a Go-format signer key,
    /// `PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>`, as produced by Go's
    /// `note.GenerateKey`. Surrounding whitespace is not trimmed.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedSignerKey`], [`NoteError::InvalidKeyName`],
    /// [`NoteError::UnsupportedAlgorithm`] or [`NoteError::KeyHashMismatch`].
    /// Errors never include key material.
    pub fn from_signer_key(skey: &str) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::MalformedSignerKey { reason };
        let rest = skey
            .strip_prefix(SIGNER_KEY_PREFIX)
            .ok_or(malformed("missing PRIVATE+KEY+ prefix"))?;
        let (name, rest) = rest
            .split_once('+')
            .ok_or(malformed("expected PRIVATE+KEY+<name>+<hash>+<keydata>"))?;
        let (hash_hex, key_b64) = rest
            .split_once('+')
            .ok_or(malformed("expected PRIVATE+KEY+<name>+<hash>+<keydata>"))?;
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let claimed =
            parse_hash_hex(hash_hex).ok_or(malformed("key hash must be 8 hexadecimal digits"))?;
        let mut raw = Zeroizing::new([0u8; 1 + ED25519_KEY_LEN]);
        let len = STANDARD
            .decode_slice(key_b64, raw.as_mut())
            .map_err(|_| malformed("key data is not canonical base64 of 33 bytes"))?;
        let decoded = raw.get(..len).unwrap_or_default();
        let Some((&algorithm, seed)) = decoded.split_first() else {
            return Err(malformed("key data is empty"));
        };
        if algorithm != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm { algorithm });
        }
        // Borrowed from `raw`, which is zeroized on drop: no further copy.
        let seed: &[u8; ED25519_KEY_LEN] = seed
            .try_into()
            .map_err(|_| malformed("Ed25519 seed must be 32 bytes"))?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_hash != claimed {
            return Err(NoteError::KeyHashMismatch {
                claimed,
                computed: signer.key_hash,
            });
        }
        Ok(signer)
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash (key ID) that prefixes this key's signatures.
    #[must_use]
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    /// The matching verifier.
    #[must_use]
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            public_key: self.public_key,
        }
    }

    /// The verifier key string, `<name>+<hash>+<base64(0x01 || public key)>`,
    /// as accepted by Go's `note.NewVerifier`.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        format_verifier_key(&self.name, self.key_hash, &self.public_key)
    }

    /// Signs `text` and returns the complete signed note: the text, a blank
    /// line, and one signature line by this key.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidText`] if `text` does not end with a newline,
    /// [`NoteError::ControlCharacter`] if it contains a control character other
    /// than newline, [`NoteError::TooLarge`] if the signed note would exceed
    /// [`MAX_NOTE_BYTES`], or [`NoteError::SigningFailed`].
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_note_text(text)?;
        let line = self.signature_line(text)?;
        let len = text.len() + 1 + line.len();
        if len > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len,
                limit: MAX_NOTE_BYTES,
            });
        }
        let mut note = String::with_capacity(len);
        note.push_str(text);
        note.push('\n');
        note.push_str(&line);
        Ok(note)
    }

    /// Produces `— <name> <base64(hash || signature)>\n` for `text`.
    fn signature_line(&self, text: &str) -> Result<String, NoteError> {
        let signature = self
            .key_pair
            .try_sign(text.as_bytes())
            .map_err(|_| NoteError::SigningFailed)?;
        let mut blob = Vec::with_capacity(KEY_HASH_LEN + ED25519_SIG_LEN);
        blob.extend_from_slice(&self.key_hash.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        Ok(format!(
            "{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(&blob)
        ))
    }
}

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

/// A checkpoint body ([C2SP tlog-checkpoint]).
///
/// [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line; non-empty, by convention equal to the log's key name.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 6962 Merkle tree root hash at `size`.
    pub root_hash: [u8; 32],
    /// Opaque extension lines, each non-empty (use is discouraged by the spec).
    pub extensions: Vec<String>,
}

/// Checks one origin or extension line for [`Checkpoint::to_text`].
fn check_checkpoint_line(
    line: &str,
    empty: &'static str,
    newline: &'static str,
) -> Result<(), NoteError> {
    if line.is_empty() {
        return Err(NoteError::MalformedCheckpoint { reason: empty });
    }
    if line.contains('\n') {
        return Err(NoteError::MalformedCheckpoint { reason: newline });
    }
    if has_control_character(line) {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

impl Checkpoint {
    /// Formats the checkpoint body: origin, size, base64 root hash and the
    /// extension lines, each terminated by a newline.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedCheckpoint`] for an empty origin or extension
    /// line, or one containing a newline; [`NoteError::ControlCharacter`];
    /// [`NoteError::TooLarge`] if the body exceeds [`MAX_NOTE_BYTES`].
    pub fn to_text(&self) -> Result<String, NoteError> {
        check_checkpoint_line(&self.origin, "origin is empty", "origin contains a newline")?;
        for ext in &self.extensions {
            check_checkpoint_line(
                ext,
                "extension line is empty",
                "extension line contains a newline",
            )?;
        }
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root_hash)
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: text.len(),
                limit: MAX_NOTE_BYTES,
            });
        }
        Ok(text)
    }

    /// Parses a checkpoint body strictly: at least three lines, every line
    /// non-empty and newline-terminated; a decimal tree size without sign or
    /// leading zeros that fits in `u64`; a root hash that is canonical base64
    /// of exactly 32 bytes. The origin must be non-empty; as the spec only
    /// recommends a space-free origin, that is left to
    /// [`SignedCheckpoint::verify`], which requires origin == key name.
    ///
    /// Any text accepted here is exactly what [`Checkpoint::to_text`] produces
    /// for the result.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedCheckpoint`], [`NoteError::ControlCharacter`]
    /// (including carriage returns) or [`NoteError::TooLarge`].
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::MalformedCheckpoint { reason };
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: text.len(),
                limit: MAX_NOTE_BYTES,
            });
        }
        if has_control_character(text) {
            return Err(NoteError::ControlCharacter);
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("checkpoint must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(malformed("origin is empty"));
        }
        let size = parse_tree_size(lines.next().ok_or(malformed("missing tree size line"))?)?;
        let root_hash = parse_root_hash(lines.next().ok_or(malformed("missing root hash line"))?)?;
        let mut extensions = Vec::new();
        for ext in lines {
            if ext.is_empty() {
                return Err(malformed("empty line after the root hash"));
            }
            extensions.push(ext.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root_hash,
            extensions,
        })
    }
}

/// Parses a tree size: ASCII decimal, no sign, no leading zeros, fits in `u64`.
fn parse_tree_size(line: &str) -> Result<u64, NoteError> {
    let malformed = |reason| NoteError::MalformedCheckpoint { reason };
    if line.is_empty() {
        return Err(malformed("tree size is empty"));
    }
    if !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("tree size must be decimal digits only"));
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(malformed("tree size has a leading zero"));
    }
    line.parse::<u64>()
        .map_err(|_| malformed("tree size does not fit in 64 bits"))
}

/// Parses a root hash: canonical standard base64 of exactly 32 bytes.
fn parse_root_hash(line: &str) -> Result<[u8; 32], NoteError> {
    let malformed = |reason| NoteError::MalformedCheckpoint { reason };
    let bytes = STANDARD
        .decode(line)
        .map_err(|_| malformed("root hash is not canonical base64"))?;
    bytes
        .try_into()
        .map_err(|_| malformed("root hash must be 32 bytes"))
}

/// A checkpoint together with its signed note, either freshly signed or
/// verified. Only [`SignedCheckpoint::sign`] and [`SignedCheckpoint::verify`]
/// create values of this type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: String,
}

impl SignedCheckpoint {
    /// Signs `cp` with `signer`.
    ///
    /// Following the tlog-checkpoint convention the checkpoint origin must
    /// equal the signer's key name, so that [`SignedCheckpoint::verify`]
    /// accepts the result.
    ///
    /// # Errors
    ///
    /// [`NoteError::OriginMismatch`], or any error of [`Checkpoint::to_text`]
    /// and [`NoteSigner::sign`].
    pub fn sign(cp: Checkpoint, signer: &NoteSigner) -> Result<Self, NoteError> {
        if cp.origin != signer.name() {
            return Err(NoteError::OriginMismatch {
                key_name: signer.name().to_owned(),
            });
        }
        let text = cp.to_text()?;
        let note = signer.sign(&text)?;
        Ok(Self {
            checkpoint: cp,
            note,
        })
    }

    /// Opens `note` with `verifier` (see [`NoteVerifier::open`]), parses its
    /// text as a checkpoint (see [`Checkpoint::parse`]), and requires the
    /// checkpoint origin to equal the verifier's key name, the
    /// tlog-checkpoint convention for a log's own key.
    ///
    /// Signatures by other keys (e.g. witness cosignatures) are not verified
    /// and are kept in [`SignedCheckpoint::note`].
    ///
    /// # Errors
    ///
    /// Any error of [`NoteVerifier::open`] or [`Checkpoint::parse`], or
    /// [`NoteError::OriginMismatch`].
    pub fn verify(note: &str, verifier: &NoteVerifier) -> Result<Self, NoteError> {
        let opened = verifier.open(note)?;
        let checkpoint = Checkpoint::parse(opened.text())?;
        if checkpoint.origin != verifier.name() {
            return Err(NoteError::OriginMismatch {
                key_name: verifier.name().to_owned(),
            });
        }
        Ok(Self {
            checkpoint,
            note: note.to_owned(),
        })
    }

    /// The checkpoint.
    #[must_use]
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The full signed note, to be served as `text/plain`.
    #[must_use]
    pub fn note(&self) -> &str {
        &self.note
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    // Test vectors from golang.org/x/mod/sumdb/note: note_test.go (TestNewSigner,
    // TestNewVerifier, TestSign, TestOpen) and example_test.go (ExampleSign,
    // ExampleOpen, ExampleSign_add_signatures, whose EnochRoot key comes from
    // GenerateKey over an all-zero random source, i.e. an all-zero seed).
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter_seed() -> [u8; 32] {
        let raw = STANDARD
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        raw[1..].try_into().unwrap()
    }

    fn peter() -> NoteVerifier {
        NoteVerifier::from_verifier_key(PETER_VKEY).unwrap()
    }

    fn enoch() -> NoteVerifier {
        NoteVerifier::from_verifier_key(ENOCH_VKEY).unwrap()
    }

    fn sample_checkpoint(origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: 20_852_163,
            root_hash: core::array::from_fn(|i| i as u8),
            extensions: vec![],
        }
    }

    // ---- Known answers from Go --------------------------------------------

    #[test]
    fn go_kat_peter_neumann_key_and_signature() {
        let signer = NoteSigner::from_seed("PeterNeumann", &peter_seed()).unwrap();
        assert_eq!(signer.name(), "PeterNeumann");
        assert_eq!(signer.key_hash(), 0xc74f_20a3);
        assert_eq!(signer.verifier_key(), PETER_VKEY);
        assert_eq!(signer.verifier(), peter());
        // Ed25519 is deterministic, so the signed note is byte-for-byte Go's
        // ExampleSign / TestSign output.
        assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));

        let from_skey = NoteSigner::from_signer_key(PETER_SKEY).unwrap();
        assert_eq!(from_skey.verifier_key(), PETER_VKEY);
        assert_eq!(
            from_skey.sign(TEXT).unwrap(),
            format!("{TEXT}\n{PETER_SIG}")
        );
    }

    #[test]
    fn go_kat_enoch_root_zero_seed() {
        let signer = NoteSigner::from_seed("EnochRoot", &[0u8; 32]).unwrap();
        assert_eq!(signer.verifier_key(), ENOCH_VKEY);
        assert_eq!(signer.key_hash(), 0xaf0c_fe78);
        assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{ENOCH_SIG}"));
    }

    #[test]
    fn go_example_open() {
        let note = format!("{TEXT}\n{PETER_SIG}");
        let opened = peter().open(&note).unwrap();
        assert_eq!(opened.text(), TEXT);
        assert_eq!(opened.key_name(), "PeterNeumann");
        assert_eq!(opened.key_hash(), 0xc74f_20a3);
        assert!(opened.unverified_signatures().is_empty());
    }

    #[test]
    fn go_test_open_vectors() {
        // One verified, one unverified.
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let opened = peter().open(&both).unwrap();
        assert_eq!(opened.text(), TEXT);
        let unverified = opened.unverified_signatures();
        assert_eq!(unverified.len(), 1);
        assert_eq!(unverified[0].name(), "EnochRoot");
        assert_eq!(unverified[0].key_hash(), 0xaf0c_fe78);
        assert_eq!(
            unverified[0].signature_base64(),
            "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
        );
        // The other key verifies the same note.
        let opened = enoch().open(&both).unwrap();
        assert_eq!(opened.unverified_signatures()[0].name(), "PeterNeumann");

        // Not signed by the verifier's key.
        let only_enoch = format!("{TEXT}\n{ENOCH_SIG}");
        assert_eq!(
            peter().open(&only_enoch).unwrap_err(),
            NoteError::NoVerifiableSignature {
                name: "PeterNeumann".into(),
                key_hash: 0xc74f_20a3
            }
        );

        // Too many signatures (101), and exactly the limit (100).
        let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            peter().open(&many).unwrap_err(),
            NoteError::TooManySignatures {
                limit: MAX_SIGNATURES
            }
        );
        assert!(matches!(
            enoch().open(&many).unwrap_err(),
            NoteError::TooManySignatures { .. }
        ));
        let limit = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
        assert_eq!(peter().open(&limit).unwrap().text(), TEXT);

        // Invalid signature (valid base64, wrong bytes).
        let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert_eq!(
            peter().open(&bad).unwrap_err(),
            NoteError::InvalidSignature {
                name: "PeterNeumann".into(),
                key_hash: 0xc74f_20a3
            }
        );
        assert_eq!(
            peter().open(&bad).unwrap_err().to_string(),
            "invalid signature for key PeterNeumann+c74f20a3"
        );

        // Duplicated verified and unverified signatures: repeats are dropped.
        let enoch_abcd = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
        let dups = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{enoch_abcd}");
        let opened = peter().open(&dups).unwrap();
        let names: Vec<_> = opened
            .unverified_signatures()
            .iter()
            .map(|u| u.signature_base64().to_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                ENOCH_SIG["— EnochRoot ".len()..ENOCH_SIG.len() - 1].to_owned(),
                enoch_abcd["— EnochRoot ".len()..enoch_abcd.len() - 1].to_owned(),
            ]
        );

        // Go's "invalid encoded message syntax" list (minus the non-UTF-8 one,
        // which a &str cannot hold).
        let bad_msgs = [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!(
                "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ];
        for msg in &bad_msgs {
            let err = peter().open(msg).unwrap_err();
            assert!(
                matches!(
                    err,
                    NoteError::MalformedNote { .. } | NoteError::ControlCharacter
                ),
                "{msg:?}: {err:?}"
            );
        }

        // A signature by the right name but a different key hash, and by the
        // right hash under a different name, are other keys: ignored.
        let wrong_hash = format!("{TEXT}\n{}", PETER_SIG.replace("x08g", "xxxx"));
        assert!(matches!(
            peter().open(&wrong_hash).unwrap_err(),
            NoteError::NoVerifiableSignature { .. }
        ));
        let misnamed = format!(
            "{TEXT}\n{}",
            PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
        );
        let err = peter().open(&misnamed).unwrap_err();
        assert!(matches!(err, NoteError::NoVerifiableSignature { .. }));
    }

    #[test]
    fn go_test_new_verifier_manglings() {
        assert!(NoteVerifier::from_verifier_key(PETER_VKEY).is_ok());
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i == 0 && j == b.len() {
                    continue;
                }
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(NoteVerifier::from_verifier_key(s).is_err(), "{s:?}");
            }
        }
        let mut m = b.to_vec();
        for i in 0..m.len() {
            m[i] += 1;
            let s = std::str::from_utf8(&m).unwrap();
            assert!(NoteVerifier::from_verifier_key(s).is_err(), "{s:?}");
            m[i] -= 1;
        }
        // Wrong length key and unknown algorithm, each with an adjusted hash.
        assert!(matches!(
            NoteVerifier::from_verifier_key(
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
            ),
            Err(NoteError::MalformedVerifierKey { .. })
        ));
        assert_eq!(
            NoteVerifier::from_verifier_key(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::UnsupportedAlgorithm { algorithm: 0x65 })
        );
        // Upper-case hash digits are accepted, as in Go; output is lower-case.
        let upper =
            NoteVerifier::from_verifier_key(&PETER_VKEY.replace("c74f20a3", "C74F20A3")).unwrap();
        assert_eq!(upper.verifier_key(), PETER_VKEY);
        // Sign prefixes that u32::from_str_radix would accept are not.
        assert!(
            NoteVerifier::from_verifier_key(&PETER_VKEY.replace("c74f20a3", "+74f20a3")).is_err()
        );
        // Whitespace is not trimmed.
        assert!(NoteVerifier::from_verifier_key(&format!("{PETER_VKEY}\n")).is_err());
        assert!(NoteVerifier::from_verifier_key(&format!(" {PETER_VKEY}")).is_err());
    }

    #[test]
    fn go_test_new_signer_manglings() {
        assert!(NoteSigner::from_signer_key(PETER_SKEY).is_ok());
        let b = PETER_SKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i == 0 && j == b.len() {
                    continue;
                }
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(NoteSigner::from_signer_key(s).is_err(), "{s:?}");
            }
        }
        let mut m = b.to_vec();
        for i in 0..m.len() {
            m[i] += 1;
            let s = std::str::from_utf8(&m).unwrap();
            assert!(NoteSigner::from_signer_key(s).is_err(), "{s:?}");
            m[i] -= 1;
        }
        assert!(matches!(
            NoteSigner::from_signer_key(
                "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
            ),
            Err(NoteError::KeyHashMismatch {
                claimed: 0xc74f_20a4,
                computed: 0xc74f_20a3
            })
        ));
    }

    #[test]
    fn key_errors_do_not_leak_key_material() {
        let bad = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF";
        let msg = NoteSigner::from_signer_key(bad).unwrap_err().to_string();
        assert!(!msg.contains("AYEKF"), "{msg}");
        let signer = NoteSigner::from_signer_key(PETER_SKEY).unwrap();
        let dbg = format!("{signer:?}");
        assert!(
            dbg.contains("PeterNeumann") && dbg.contains("c74f20a3"),
            "{dbg}"
        );
        assert!(!dbg.contains("AYEKF") && !dbg.contains("810a14"), "{dbg}");
    }

    // ---- Keys ---------------------------------------------------------------

    #[test]
    fn key_names_are_validated() {
        for bad in [
            "",
            "a b",
            "a+b",
            "a\tb",
            "a\nb",
            "a\u{a0}b",
            "a\u{2028}b",
            "a\u{1}b",
        ] {
            assert_eq!(
                NoteSigner::from_seed(bad, &[7; 32]).unwrap_err(),
                NoteError::InvalidKeyName,
                "{bad:?}"
            );
            assert!(NoteSigner::generate(bad).is_err());
            assert!(NoteVerifier::from_public_key(bad, &[7; 32]).is_err());
        }
        for good in [
            "example.com/log",
            "tally.example/ledger-2026",
            "ключ",
            "a/b?c=d",
        ] {
            let signer = NoteSigner::from_seed(good, &[7; 32]).unwrap();
            let vkey = signer.verifier_key();
            let verifier = NoteVerifier::from_verifier_key(&vkey).unwrap();
            assert_eq!(verifier.name(), good);
            assert_eq!(verifier, signer.verifier());
            assert_eq!(
                NoteVerifier::from_public_key(good, verifier.public_key()).unwrap(),
                verifier
            );
        }
    }

    #[test]
    fn generate_round_trip() {
        let (signer, seed) = NoteSigner::generate("tally.example/log").unwrap();
        let (other, other_seed) = NoteSigner::generate("tally.example/log").unwrap();
        assert_ne!(*seed, *other_seed);
        assert_ne!(signer.verifier_key(), other.verifier_key());
        let again = NoteSigner::from_seed("tally.example/log", &seed).unwrap();
        assert_eq!(again.verifier_key(), signer.verifier_key());
        let note = signer.sign("hello\n").unwrap();
        assert_eq!(again.sign("hello\n").unwrap(), note);
        assert_eq!(signer.verifier().open(&note).unwrap().text(), "hello\n");
        assert!(matches!(
            other.verifier().open(&note).unwrap_err(),
            NoteError::NoVerifiableSignature { .. }
        ));
    }

    // ---- Signing ------------------------------------------------------------

    #[test]
    fn sign_rejects_bad_text() {
        let signer = NoteSigner::from_seed("k", &[1; 32]).unwrap();
        assert!(matches!(
            signer.sign(""),
            Err(NoteError::InvalidText { .. })
        ));
        assert!(matches!(
            signer.sign("no newline"),
            Err(NoteError::InvalidText { .. })
        ));
        for bad in ["a\r\n", "a\tb\n", "\0\n", "esc\x1b[0m\n"] {
            assert_eq!(
                signer.sign(bad),
                Err(NoteError::ControlCharacter),
                "{bad:?}"
            );
        }
        let huge = "a".repeat(MAX_NOTE_BYTES - 10) + "\n";
        assert!(matches!(
            signer.sign(&huge),
            Err(NoteError::TooLarge { .. })
        ));
        // Text with empty lines, a lone newline, and lines that look like
        // signatures all round-trip.
        for text in [
            "\n",
            "a\n\nb\n",
            "a\n\n",
            "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n",
            "— k AAAA\n",
        ] {
            let note = signer.sign(text).unwrap();
            assert_eq!(signer.verifier().open(&note).unwrap().text(), text);
        }
    }

    // ---- Hostile notes --------------------------------------------------------

    #[test]
    fn hostile_notes_are_rejected() {
        let signer = NoteSigner::from_seed("tally.example/log", &[9; 32]).unwrap();
        let v = signer.verifier();
        let good = signer.sign("origin\n1\n").unwrap();
        assert!(v.open(&good).is_ok());
        let (text, sig_line) = good.split_once("\n\n").unwrap();
        let text = format!("{text}\n");
        let b64 = sig_line
            .trim_end_matches('\n')
            .rsplit_once(' ')
            .unwrap()
            .1
            .to_owned();
        let blob = STANDARD.decode(&b64).unwrap();
        let malformed = |note: &str| {
            let err = v.open(note).unwrap_err();
            assert!(
                matches!(err, NoteError::MalformedNote { .. }),
                "{note:?}: {err:?}"
            );
        };

        // Structure.
        malformed("");
        malformed("origin\n1\n");
        malformed(&good.replacen("\n\n", "\n", 1)); // no blank line
        malformed(&format!("{good}\n")); // trailing blank line
        malformed(&good[..good.len() - 1]); // no final newline
        malformed(&good.replace('—', "-")); // hyphen, not em dash
        malformed(&good.replace('—', "–")); // en dash
        malformed(&good.replace("— ", "—")); // no space after the dash
        malformed(&good.replace("— ", "—  ")); // empty name
        malformed(&good.replace(" tally", "  tally"));
        malformed(&good.replace("tally.example/log", "tally example/log"));
        malformed(&good.replace("tally.example/log", "tally+example/log"));
        malformed(&format!("{text}\n— tally.example/log\n")); // no signature
        malformed(&format!("{text}\n— tally.example/log \n")); // empty signature
        malformed(&format!("{text}\n{} \n", sig_line.trim_end())); // trailing space

        // Base64.
        malformed(&format!("{text}\n— tally.example/log {}\n", &b64[1..]));
        malformed(&format!(
            "{text}\n— tally.example/log {}\n",
            b64.trim_end_matches('=')
        ));
        malformed(&format!("{text}\n— tally.example/log {b64}=\n"));
        malformed(&format!("{text}\n— tally.example/log !{}\n", &b64[1..]));
        // Non-canonical base64 (non-zero unused trailing bits): Go accepts
        // this, we do not.
        let last = b64.len() - 2; // 68 bytes: one '=' of padding
        let mut nc = b64.clone().into_bytes();
        let canon = nc[last];
        nc[last] = match canon {
            b'A'..=b'Y' | b'a'..=b'y' | b'0'..=b'8' => canon + 1,
            _ => b'A' + 1,
        };
        let nc = String::from_utf8(nc).unwrap();
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        assert_eq!(lenient.decode(&nc).unwrap(), blob);
        malformed(&format!("{text}\n— tally.example/log {nc}\n"));

        // Too-short signature: just a key hash.
        malformed(&format!(
            "{text}\n— tally.example/log {}\n",
            STANDARD.encode(&blob[..4])
        ));

        // Truncated signature with the right key hash: invalid.
        let truncated = STANDARD.encode(&blob[..4 + 32]);
        assert!(matches!(
            v.open(&format!("{text}\n— tally.example/log {truncated}\n")),
            Err(NoteError::InvalidSignature { .. })
        ));
        // Extended signature: invalid too.
        let mut long = blob.clone();
        long.push(0);
        assert!(matches!(
            v.open(&format!(
                "{text}\n— tally.example/log {}\n",
                STANDARD.encode(&long)
            )),
            Err(NoteError::InvalidSignature { .. })
        ));

        // Wrong key hash: another key, so no verifiable signature.
        let mut other_hash = blob.clone();
        other_hash[0] ^= 1;
        assert!(matches!(
            v.open(&format!(
                "{text}\n— tally.example/log {}\n",
                STANDARD.encode(&other_hash)
            )),
            Err(NoteError::NoVerifiableSignature { .. })
        ));

        // Duplicated good lines are accepted (as Go does); a second line by
        // this key with a bad signature is not (Go would skip it unverified).
        assert!(v.open(&format!("{good}{sig_line}")).is_ok());
        let mut bad_sig = blob.clone();
        bad_sig[10] ^= 1;
        let bad_line = format!("— tally.example/log {}\n", STANDARD.encode(&bad_sig));
        assert!(matches!(
            v.open(&format!("{good}{bad_line}")),
            Err(NoteError::InvalidSignature { .. })
        ));
        assert!(matches!(
            v.open(&format!("{text}\n{bad_line}{sig_line}")),
            Err(NoteError::InvalidSignature { .. })
        ));

        // Control characters anywhere.
        for bad in [
            good.replacen("origin", "ori\rgin", 1),
            good.replacen("origin", "ori\tgin", 1),
            good.replacen("origin", "ori\0gin", 1),
            good.replace('\n', "\r\n"),
            format!("{good}\x1b"),
        ] {
            assert_eq!(v.open(&bad), Err(NoteError::ControlCharacter), "{bad:?}");
        }

        // Over-long note.
        let huge = format!("{}\n{good}", "a".repeat(MAX_NOTE_BYTES));
        assert!(matches!(v.open(&huge), Err(NoteError::TooLarge { .. })));
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let signer = NoteSigner::from_seed("log.example", &[3; 32]).unwrap();
        let v = signer.verifier();
        let good = signer.sign("log.example\n42\nAAAA\n").unwrap();
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'0', b'\n', b' ', b'+', b'=', b'/', b'a'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut m = bytes.to_vec();
                m[i] = replacement;
                if let Ok(s) = std::str::from_utf8(&m) {
                    assert!(v.open(s).is_err(), "accepted mutation at {i}: {s:?}");
                }
            }
        }
        for end in 0..bytes.len() {
            if let Ok(s) = std::str::from_utf8(&bytes[..end]) {
                assert!(v.open(s).is_err(), "accepted truncation to {end}");
            }
        }
    }

    // ---- Checkpoints ----------------------------------------------------------

    #[test]
    fn checkpoint_spec_example_parses() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse(text).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20_852_163);
        assert_eq!(cp.root_hash[..3], [0x0a, 0xc5, 0x18]);
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_text().unwrap(), text);
    }

    #[test]
    fn checkpoint_round_trip() {
        let mut cps = vec![
            sample_checkpoint("tally.example/log"),
            Checkpoint {
                origin: "o".into(),
                size: 0,
                root_hash: [0; 32],
                extensions: vec![],
            },
            Checkpoint {
                origin: "o".into(),
                size: u64::MAX,
                root_hash: [0xff; 32],
                extensions: vec!["ext one".into(), "— looks like a sig".into(), "x".into()],
            },
        ];
        cps[0].extensions.push("Timestamp: 1700000000".into());
        for cp in cps {
            let text = cp.to_text().unwrap();
            assert!(text.ends_with('\n'));
            assert_eq!(text.lines().count(), 3 + cp.extensions.len());
            assert_eq!(Checkpoint::parse(&text).unwrap(), cp);
        }
        assert_eq!(
            Checkpoint::parse(
                "o\n18446744073709551615\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
            )
            .unwrap()
            .size,
            u64::MAX
        );
    }

    #[test]
    fn checkpoint_parse_is_strict() {
        let root = STANDARD.encode([7u8; 32]);
        let ok = format!("o\n5\n{root}\n");
        assert!(Checkpoint::parse(&ok).is_ok());
        let cases: Vec<String> = vec![
            String::new(),
            "\n".into(),
            format!("o\n5\n{root}"),     // no trailing newline
            format!("\n5\n{root}\n"),    // empty origin
            "o\n5\n".into(),             // no root
            "o\n".into(),                // no size
            format!("o\n05\n{root}\n"),  // leading zero
            format!("o\n00\n{root}\n"),  // leading zero
            format!("o\n+5\n{root}\n"),  // sign
            format!("o\n-5\n{root}\n"),  // sign
            format!("o\n5a\n{root}\n"),  // non-digit
            format!("o\n 5\n{root}\n"),  // space
            format!("o\n5 \n{root}\n"),  // space
            format!("o\n0x5\n{root}\n"), // hex
            format!("o\n١\n{root}\n"),   // non-ASCII digit
            format!("o\n\n{root}\n"),    // empty size
            format!("o\n18446744073709551616\n{root}\n"), // overflow
            format!("o\n99999999999999999999999\n{root}\n"), // overflow
            format!("o\n5\n{}\n", STANDARD.encode([7u8; 31])), // 31 bytes
            format!("o\n5\n{}\n", STANDARD.encode([7u8; 33])), // 33 bytes
            format!("o\n5\n{}\n", root.trim_end_matches('=')), // unpadded
            format!("o\n5\n{}\n", root.replace('B', "-")), // URL-safe alphabet
            format!("o\n5\n{root} \n"),  // trailing space
            "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n".into(), // non-canonical
            format!("o\n5\n\n{root}\n"), // extra blank line
            format!("o\n5\n{root}\n\n"), // trailing blank line
            format!("o\n5\n{root}\n\next\n"), // empty extension line
            format!("o\n5\n{root}\next"), // extension without newline
        ];
        for case in &cases {
            let err = Checkpoint::parse(case).unwrap_err();
            assert!(
                matches!(err, NoteError::MalformedCheckpoint { .. }),
                "{case:?}: {err:?}"
            );
        }
        for case in [
            format!("o\r\n5\n{root}\n"),
            format!("o\n5\r\n{root}\n"),
            format!("o\n5\n{root}\r\n"),
            format!("o\n5\n{root}\nex\tt\n"),
        ] {
            assert_eq!(
                Checkpoint::parse(&case),
                Err(NoteError::ControlCharacter),
                "{case:?}"
            );
        }
        let huge = format!("o\n5\n{root}\n{}\n", "e".repeat(MAX_NOTE_BYTES));
        assert!(matches!(
            Checkpoint::parse(&huge),
            Err(NoteError::TooLarge { .. })
        ));
    }

    #[test]
    fn checkpoint_to_text_rejects_unrepresentable() {
        let mut cp = sample_checkpoint("");
        assert!(matches!(
            cp.to_text(),
            Err(NoteError::MalformedCheckpoint { .. })
        ));
        cp.origin = "a\nb".into();
        assert!(matches!(
            cp.to_text(),
            Err(NoteError::MalformedCheckpoint { .. })
        ));
        cp.origin = "a\rb".into();
        assert_eq!(cp.to_text(), Err(NoteError::ControlCharacter));
        cp.origin = "o".into();
        cp.extensions = vec![String::new()];
        assert!(matches!(
            cp.to_text(),
            Err(NoteError::MalformedCheckpoint { .. })
        ));
        cp.extensions = vec!["a\nb".into()];
        assert!(matches!(
            cp.to_text(),
            Err(NoteError::MalformedCheckpoint { .. })
        ));
        cp.extensions = vec!["a\u{7}".into()];
        assert_eq!(cp.to_text(), Err(NoteError::ControlCharacter));
        cp.extensions = vec!["e".repeat(MAX_NOTE_BYTES)];
        assert!(matches!(cp.to_text(), Err(NoteError::TooLarge { .. })));
    }

    #[test]
    fn signed_checkpoint_sign_and_verify() {
        let (signer, _) = NoteSigner::generate("tally.example/log").unwrap();
        let verifier = NoteVerifier::from_verifier_key(&signer.verifier_key()).unwrap();
        let cp = sample_checkpoint("tally.example/log");
        let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();
        assert_eq!(signed.checkpoint(), &cp);
        assert!(signed.note().starts_with(&cp.to_text().unwrap()));
        let verified = SignedCheckpoint::verify(signed.note(), &verifier).unwrap();
        assert_eq!(verified, signed);

        // A witness cosignature by another key is kept, unverified.
        let (witness, _) = NoteSigner::generate("witness.example").unwrap();
        let wnote = witness.sign(&cp.to_text().unwrap()).unwrap();
        let wline = wnote.split_once("\n\n").unwrap().1;
        let cosigned = format!("{}{wline}", signed.note());
        let verified = SignedCheckpoint::verify(&cosigned, &verifier).unwrap();
        assert_eq!(verified.checkpoint(), &cp);
        assert_eq!(verified.note(), cosigned);
        // ... but the witness alone is not the log.
        assert!(matches!(
            SignedCheckpoint::verify(&wnote, &verifier),
            Err(NoteError::NoVerifiableSignature { .. })
        ));

        // Origin must equal the key name, when signing and when verifying.
        assert_eq!(
            SignedCheckpoint::sign(sample_checkpoint("other.example/log"), &signer),
            Err(NoteError::OriginMismatch {
                key_name: "tally.example/log".into()
            })
        );
        let foreign = signer
            .sign(&sample_checkpoint("other.example/log").to_text().unwrap())
            .unwrap();
        assert_eq!(
            SignedCheckpoint::verify(&foreign, &verifier),
            Err(NoteError::OriginMismatch {
                key_name: "tally.example/log".into()
            })
        );

        // A validly signed note whose text is not a checkpoint.
        let not_cp = signer.sign("tally.example/log\n007\nAAAA\n").unwrap();
        assert!(matches!(
            SignedCheckpoint::verify(&not_cp, &verifier),
            Err(NoteError::MalformedCheckpoint { .. })
        ));

        // Tampering with the size.
        let tampered = signed.note().replacen("20852163", "20852164", 1);
        assert!(matches!(
            SignedCheckpoint::verify(&tampered, &verifier),
            Err(NoteError::InvalidSignature { .. })
        ));

        // Bad checkpoint bodies are refused before signing.
        assert!(
            SignedCheckpoint::sign(
                Checkpoint {
                    extensions: vec![String::new()],
                    ..sample_checkpoint("tally.example/log")
                },
                &signer
            )
            .is_err()
        );
    }

    #[test]
    fn error_messages_are_stable() {
        assert_eq!(
            NoteError::ControlCharacter.to_string(),
            "input contains an ASCII control character other than newline"
        );
        assert_eq!(
            NoteError::NoVerifiableSignature {
                name: "log".into(),
                key_hash: 0xab
            }
            .to_string(),
            "note has no signature by key log+000000ab"
        );
        assert_eq!(
            NoteError::UnsupportedAlgorithm { algorithm: 2 }.to_string(),
            "unsupported key algorithm 0x02: only Ed25519 (0x01) is supported"
        );
    }

    // ---- Go interoperability ----------------------------------------------------

    /// Where golang.org/x/mod/sumdb/note is found in GOPATH mode (the Debian
    /// golang-golang-x-mod-dev package); override with TALLY_GOPATH.
    fn gopath() -> PathBuf {
        std::env::var_os("TALLY_GOPATH")
            .map_or_else(|| PathBuf::from("/usr/share/gocode"), PathBuf::from)
    }

    /// Finds tools/notecheck/main.go: $TALLY_NOTECHECK_GO, else relative to
    /// the tally-core crate, else relative to this source file (which works
    /// when the module is compiled from elsewhere via an absolute #[path]).
    fn locate_notecheck() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TALLY_NOTECHECK_GO") {
            return Some(PathBuf::from(p));
        }
        let from_manifest = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/notecheck/main.go"
        ));
        let from_source = Path::new(file!())
            .parent()
            .map(|src| src.join("../../../tools/notecheck/main.go"));
        std::iter::once(from_manifest)
            .chain(from_source)
            .find(|p| p.is_file())
    }

    fn go_command(gocache: &Path) -> Command {
        let mut cmd = Command::new("go");
        cmd.env("GO111MODULE", "off")
            .env("GOPATH", gopath())
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0");
        if std::env::var_os("GOCACHE").is_none() {
            cmd.env("GOCACHE", gocache);
        }
        cmd
    }

    fn run_with_stdin(bin: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn notecheck");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait for notecheck")
    }

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn go_sumdb_note_interop() {
        let required = std::env::var("TALLY_REQUIRE_GO").is_ok_and(|v| v == "1");
        let skip = |why: &str| {
            assert!(!required, "TALLY_REQUIRE_GO=1 but {why}");
            eprintln!("note: skipping go_sumdb_note_interop: {why}");
        };
        let go_ok = Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !go_ok {
            return skip("`go` is not on PATH");
        }
        let xmod = gopath().join("src/golang.org/x/mod/sumdb/note/note.go");
        if !xmod.is_file() {
            return skip(&format!("{} not found (set TALLY_GOPATH)", xmod.display()));
        }
        let Some(src) = locate_notecheck() else {
            return skip("tools/notecheck/main.go not found (set TALLY_NOTECHECK_GO)");
        };

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = TempDir(
            std::env::temp_dir().join(format!("tally-notecheck-{}-{nanos}", std::process::id())),
        );
        std::fs::create_dir_all(&tmp.0).unwrap();
        let bin = tmp.0.join("notecheck");
        let build = go_command(&tmp.0.join("gocache"))
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("run go build");
        assert!(
            build.status.success(),
            "go build {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&build.stderr)
        );

        let name = "tally.example/interop-log";
        let (signer, seed) = NoteSigner::generate(name).unwrap();
        let vkey = signer.verifier_key();
        let cp = Checkpoint {
            origin: name.to_owned(),
            size: 1_234_567,
            root_hash: [0x5a; 32],
            extensions: vec!["tally ext — ünïcode".to_owned()],
        };
        let text = cp.to_text().unwrap();
        let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();

        // Go accepts the Rust-signed note and recovers the identical text.
        let out = run_with_stdin(&bin, &[&vkey], signed.note());
        assert!(
            out.status.success(),
            "Go rejected a Rust note: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), text);

        // Go rejects the note with one byte of text changed.
        let tampered = signed.note().replacen("1234567", "1234568", 1);
        assert_ne!(tampered, signed.note());
        let out = run_with_stdin(&bin, &[&vkey], &tampered);
        assert!(!out.status.success(), "Go accepted a tampered note");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid signature"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Go rejects a note signed by a different key under the same name.
        let (impostor, _) = NoteSigner::generate(name).unwrap();
        assert_ne!(impostor.key_hash(), signer.key_hash());
        let forged = SignedCheckpoint::sign(cp.clone(), &impostor).unwrap();
        let out = run_with_stdin(&bin, &[&vkey], forged.note());
        assert!(!out.status.success(), "Go accepted an impostor note");
        assert!(out.stdout.is_empty());

        // Go signs with a Go-format signer key from the same seed; Rust
        // verifies it, and (Ed25519 being deterministic) the notes are equal.
        let mut raw = Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(seed.as_ref());
        let skey = Zeroizing::new(format!(
            "PRIVATE+KEY+{name}+{:08x}+{}",
            signer.key_hash(),
            STANDARD.encode(raw.as_slice())
        ));
        assert_eq!(
            NoteSigner::from_signer_key(&skey).unwrap().verifier_key(),
            vkey
        );
        let out = run_with_stdin(&bin, &["-sign", &skey], &text);
        assert!(
            out.status.success(),
            "Go -sign failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let go_note = String::from_utf8(out.stdout).unwrap();
        let verified = SignedCheckpoint::verify(&go_note, &signer.verifier()).unwrap();
        assert_eq!(verified.checkpoint(), &cp);
        assert_eq!(go_note, signed.note());

        // Go signs with the Go test-vector key; Rust verifies.
        let out = run_with_stdin(&bin, &["-sign", PETER_SKEY], TEXT);
        assert!(out.status.success());
        let go_note = String::from_utf8(out.stdout).unwrap();
        assert_eq!(peter().open(&go_note).unwrap().text(), TEXT);

        // Go agrees with Rust on a multi-signature, multi-paragraph note.
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let out = run_with_stdin(&bin, &[ENOCH_VKEY], &both);
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), TEXT);
    }
}
