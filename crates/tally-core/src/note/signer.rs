//! [`NoteSigner`]: an Ed25519 signing key with its name, from a seed, from a
//! Go-format signer key or freshly generated, and the signing of note texts.
//!
//! The private key lives only inside the crypto library's key object; every
//! copy of the seed made on the way there is zeroized, and neither `Debug`
//! nor any error shows key material. A signer's key hash always matches its
//! name and public key.

use std::fmt;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::error::NoteError;
use super::format::{
    ALG_ED25519, ED25519_KEY_LEN, ED25519_SIG_LEN, KEY_HASH_LEN, MAX_NOTE_BYTES, SIG_PREFIX,
    check_note_text, ed25519_key_hash, format_verifier_key, is_valid_name, parse_hash_hex,
};
use super::verifier::NoteVerifier;

/// Prefix of Go-format signer keys.
const SIGNER_KEY_PREFIX: &str = "PRIVATE+KEY+";

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
        NoteVerifier::from_parts(self.name.clone(), self.key_hash, self.public_key)
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
