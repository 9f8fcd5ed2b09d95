//! Checkpoints ([C2SP tlog-checkpoint]): the [`Checkpoint`] body and the
//! [`SignedCheckpoint`] that binds it to a log's signed note.
//!
//! Parsing is strict, so any body [`Checkpoint::parse`] accepts is exactly
//! what [`Checkpoint::to_text`] produces for the result. A signed checkpoint's
//! origin always equals the key name it was signed or verified with.
//!
//! [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::NoteError;
use super::format::{MAX_NOTE_BYTES, has_control_character};
use super::signer::NoteSigner;
use super::verifier::NoteVerifier;

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
