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

mod checkpoint;
mod error;
mod format;
mod signer;
mod verifier;

#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use error::NoteError;
pub use format::{MAX_NOTE_BYTES, MAX_SIGNATURES};
pub use signer::NoteSigner;
pub use verifier::{NoteVerifier, UnverifiedSignature, VerifiedNote};
