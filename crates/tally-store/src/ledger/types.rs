//! What the ledger answers with, whichever the backend: its failures
//! ([`LedgerError`], with stable codes), inclusion proofs and located
//! records. Nothing here touches storage, so both the embedded ledger and a
//! fleet node, and the [`crate::store::LedgerStore`] trait over them, share
//! these types without depending on each other.

use tally_core::merkle::Hash;
use tally_core::record::IssuanceRecord;

/// Ledger failures. [`LedgerError::code`] gives stable codes.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The stored ledger does not match what was signed or written.
    #[error("ledger tampered at index {index}: {reason}")]
    Tampered {
        /// First index known to be bad.
        index: u64,
        /// What was found.
        reason: String,
    },
    /// A record with this token id is already in the ledger.
    #[error("token id already recorded")]
    DuplicateTokenId,
    /// The record is not valid (field limits).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A requested index or size is out of range.
    #[error("{0}")]
    OutOfRange(String),
    /// The store failed (disk, I/O, database).
    #[error("ledger store error: {0}")]
    Store(String),
    /// The writer has stopped (shutdown).
    #[error("ledger writer is not running")]
    Closed,
    /// The ledger file was written by a newer version of tally.
    #[error("the ledger has schema version {found}, this tally knows up to {known}: upgrade tally")]
    NewerSchema {
        /// Version in the file.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
}

impl LedgerError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Tampered { .. } => "ledger_tampered",
            LedgerError::DuplicateTokenId => "duplicate_token_id",
            LedgerError::InvalidRecord(_) => "invalid_record",
            LedgerError::OutOfRange(_) => "out_of_range",
            LedgerError::Store(_) => "store_unavailable",
            LedgerError::Closed => "store_unavailable",
            LedgerError::NewerSchema { .. } => "schema_too_new",
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Store(e.to_string())
    }
}

/// A proof that an entry is in the tree of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Index of the entry.
    pub leaf_index: u64,
    /// Tree size the proof is for.
    pub tree_size: u64,
    /// Audit path, leaf to root.
    pub hashes: Vec<Hash>,
}

/// A located, verified record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedRecord {
    /// Leaf index.
    pub index: u64,
    /// The record.
    pub record: IssuanceRecord,
}
