//! The ledger store: what the server needs of a ledger, whether embedded
//! (one process, SQLite, [`Ledger`]) or shared by a fleet (PostgreSQL,
//! [`FleetLedger`]). Both keep the same promise: [`LedgerStore::submit`]
//! answers `Ok` only once the record is durable, and nothing the store cannot
//! vouch for is ever returned as issued.

use tally_core::merkle::{Hash, MerkleTree};
use tally_core::note::{NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use crate::fleet::node::FleetLedger;
use crate::ledger::{InclusionProof, Ledger, LedgerError};

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

/// `start..end` may be read from a ledger of `size` entries: non-empty, within
/// it, and at most 1000 at a time.
pub(crate) fn check_entries(start: u64, end: u64, size: u64) -> Result<(), LedgerError> {
    if start >= end || end > size || end - start > 1000 {
        return Err(LedgerError::OutOfRange(format!(
            "need start < end <= {size} and at most 1000 entries"
        )));
    }
    Ok(())
}

/// The proof that leaf `index` is in the tree of `size` (None: `committed`),
/// from a verified `tree` of which `committed` entries are published.
pub(crate) fn inclusion_in(
    tree: &MerkleTree,
    committed: u64,
    index: u64,
    size: Option<u64>,
) -> Result<InclusionProof, LedgerError> {
    let size = size.unwrap_or(committed);
    if size > committed || index >= size {
        return Err(LedgerError::OutOfRange(format!(
            "entry {index} is not in a tree of size {size} (committed size {committed})"
        )));
    }
    let hashes = tree
        .inclusion_proof(index, size)
        .map_err(|e| LedgerError::OutOfRange(e.to_string()))?;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: size,
        hashes,
    })
}

/// The consistency proof between two published sizes of a verified `tree`.
pub(crate) fn consistency_in(
    tree: &MerkleTree,
    committed: u64,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if from == 0 || from > to || to > committed {
        return Err(LedgerError::OutOfRange(format!(
            "need 0 < from <= to <= {committed}"
        )));
    }
    tree.consistency_proof(from, to)
        .map_err(|e| LedgerError::OutOfRange(e.to_string()))
}

/// The root of a verified `tree` at a published size.
pub(crate) fn root_in(tree: &MerkleTree, committed: u64, size: u64) -> Result<Hash, LedgerError> {
    if size > committed {
        return Err(LedgerError::OutOfRange(format!(
            "size {size} is not committed"
        )));
    }
    tree.root_at(size)
        .map_err(|e| LedgerError::OutOfRange(e.to_string()))
}

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

impl LedgerStore for Ledger {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn submit(&self, record: IssuanceRecord) -> Result<Pending, LedgerError> {
        Ledger::submit(self, record)
    }
    fn record_of(&self, token_id: &str) -> Result<Option<IssuanceRecord>, LedgerError> {
        Ok(self.lookup(token_id)?.map(|l| l.record))
    }
    fn size(&self) -> u64 {
        Ledger::size(self)
    }
    fn checkpoint(&self) -> SignedCheckpoint {
        Ledger::checkpoint(self)
    }
    fn verifier(&self) -> &NoteVerifier {
        Ledger::verifier(self)
    }
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        Ledger::entries(self, start, end)
    }
    fn inclusion_proof(
        &self,
        token_id: &str,
        size: Option<u64>,
    ) -> Result<Option<InclusionProof>, LedgerError> {
        Ledger::inclusion_proof(self, token_id, size)
    }
    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        Ledger::consistency_proof(self, from, to)
    }
    fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        Ledger::root_at(self, size)
    }
    fn tampered(&self) -> Option<LedgerError> {
        Ledger::tampered(self)
    }
    fn is_healthy(&self) -> bool {
        Ledger::is_healthy(self)
    }
    fn is_reachable(&self) -> bool {
        true
    }
    fn is_sequencer(&self) -> bool {
        true
    }
    fn submit_audit(&self) -> Result<AuditPending, LedgerError> {
        Ledger::submit_audit(self)
    }
    fn close(&self) {
        Ledger::close(self)
    }
}

impl LedgerStore for FleetLedger {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    fn submit(&self, record: IssuanceRecord) -> Result<Pending, LedgerError> {
        FleetLedger::submit(self, record)
    }
    fn record_of(&self, token_id: &str) -> Result<Option<IssuanceRecord>, LedgerError> {
        Ok(self.lookup(token_id)?.map(|q| q.record))
    }
    fn size(&self) -> u64 {
        FleetLedger::size(self)
    }
    fn checkpoint(&self) -> SignedCheckpoint {
        FleetLedger::checkpoint(self)
    }
    fn verifier(&self) -> &NoteVerifier {
        FleetLedger::verifier(self)
    }
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        FleetLedger::entries(self, start, end)
    }
    fn inclusion_proof(
        &self,
        token_id: &str,
        size: Option<u64>,
    ) -> Result<Option<InclusionProof>, LedgerError> {
        FleetLedger::inclusion_proof(self, token_id, size)
    }
    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        FleetLedger::consistency_proof(self, from, to)
    }
    fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        FleetLedger::root_at(self, size)
    }
    fn tampered(&self) -> Option<LedgerError> {
        FleetLedger::tampered(self)
    }
    fn is_healthy(&self) -> bool {
        FleetLedger::is_healthy(self)
    }
    fn is_reachable(&self) -> bool {
        FleetLedger::is_reachable(self)
    }
    fn is_sequencer(&self) -> bool {
        FleetLedger::is_sequencer(self)
    }
    fn submit_audit(&self) -> Result<AuditPending, LedgerError> {
        // The follower checks every new leaf and checkpoint as it arrives.
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(match self.tampered() {
            Some(t) => Err(t),
            None => Ok(()),
        });
        Ok(rx)
    }
    fn close(&self) {
        FleetLedger::close(self)
    }
}
