//! [`NoteError`], the one error type of signed notes and checkpoints.
//!
//! Every message is stable and safe to show to operators: none carries key
//! material, and text from an untrusted note appears only when it equals a
//! trusted key name.

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
    /// The input is longer than [`MAX_NOTE_BYTES`](super::MAX_NOTE_BYTES).
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
    /// The note has more than [`MAX_SIGNATURES`](super::MAX_SIGNATURES) signature lines.
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
