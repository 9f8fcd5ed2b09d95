//! The ledger store: what the server needs of a ledger, whether embedded
//! (one process, SQLite, [`Ledger`](crate::Ledger)) or shared by a fleet
//! (PostgreSQL, [`FleetLedger`](crate::fleet::node::FleetLedger)). Both keep
//! the same promise: [`LedgerStore::submit`] answers `Ok` only once the
//! record is durable, and nothing the store cannot vouch for is ever returned
//! as issued.
//!
//! This module holds the trait alone, with the functions callers drive it
//! through ([`append`], [`audit`], [`append_blocking`]); each backend's impl
//! lives beside the backend, and the types they answer with are the
//! ledger's ([`crate::ledger`]).

use tally_core::merkle::Hash;
use tally_core::note::{NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

// One item per line: this trait depends on the ledger's types, not on
// the ledger's face (which re-exports the embedded backend that implements it).
use crate::ledger::InclusionProof;
use crate::ledger::LedgerError;

/// The answer to an append: the record's position once durable.
pub type Pending = oneshot::Receiver<Result<u64, LedgerError>>;

/// The answer to an audit request.
pub type AuditPending = oneshot::Receiver<Result<(), LedgerError>>;

/// A ledger of issuance records.
pub trait LedgerStore: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// Queues `record`; the receiver answers once it is durable.
    fn submit(&self, record: IssuanceRecord) -> Result<Pending, LedgerError>;
    /// The durable, authentic record of `token_id`, if any.
    fn record_of(&self, token_id: &str) -> Result<Option<IssuanceRecord>, LedgerError>;
    /// Entries covered by the latest verified checkpoint.
    fn size(&self) -> u64;
    /// The latest verified checkpoint.
    fn checkpoint(&self) -> SignedCheckpoint;
    /// The key that verifies checkpoints.
    fn verifier(&self) -> &NoteVerifier;
    /// Encoded records `start..end` (at most 1000).
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError>;
    /// Inclusion proof of `token_id` in the tree of `size` (None: current).
    fn inclusion_proof(
        &self,
        token_id: &str,
        size: Option<u64>,
    ) -> Result<Option<InclusionProof>, LedgerError>;
    /// Consistency proof between two checkpointed sizes.
    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError>;
    /// Root hash at a checkpointed size.
    fn root_at(&self, size: u64) -> Result<Hash, LedgerError>;
    /// The tamper finding, if any (issuance has stopped).
    fn tampered(&self) -> Option<LedgerError>;
    /// Whether an append now could be made durable.
    fn is_healthy(&self) -> bool;
    /// Whether the store answered its last round trip.
    fn is_reachable(&self) -> bool;
    /// Whether this process sequences the ledger (always, when embedded).
    fn is_sequencer(&self) -> bool;
    /// Asks for a tamper check now.
    fn submit_audit(&self) -> Result<AuditPending, LedgerError>;
    /// Stops after everything submitted has been answered.
    fn close(&self);
}

/// How long an append may wait for durability before the caller gives up
/// (and hands nothing out): a stalled store must not hold issuance forever.
pub const APPEND_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Appends `record`; resolves once it is durable, or fails after
/// [`APPEND_WAIT`] (the record may still become durable later: its token was
/// never handed out, which is safe).
pub async fn append(store: &dyn LedgerStore, record: IssuanceRecord) -> Result<u64, LedgerError> {
    let pending = store.submit(record)?;
    match tokio::time::timeout(APPEND_WAIT, pending).await {
        Ok(answer) => answer.unwrap_or(Err(LedgerError::Closed)),
        Err(_) => Err(LedgerError::Store(
            "the ledger store did not confirm the record in time".into(),
        )),
    }
}

/// Checks the store for tampering now.
pub async fn audit(store: &dyn LedgerStore) -> Result<(), LedgerError> {
    store
        .submit_audit()?
        .await
        .unwrap_or(Err(LedgerError::Closed))
}

/// [`append`] for threads that are not on an async runtime.
pub fn append_blocking(
    store: &dyn LedgerStore,
    record: IssuanceRecord,
) -> Result<u64, LedgerError> {
    store
        .submit(record)?
        .blocking_recv()
        .unwrap_or(Err(LedgerError::Closed))
}
