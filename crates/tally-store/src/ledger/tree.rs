//! Answers drawn from a verified Merkle tree, the same for every backend:
//! the signed head of the tree (the one checkpoint shape every ledger
//! signs), inclusion and consistency proofs, roots, and the bounds of an
//! entry range. Each takes the tree and the size published so far, and
//! refuses (`out_of_range`) anything beyond what is published.

use tally_core::merkle::{Hash, MerkleTree};
use tally_core::note::{Checkpoint, NoteSigner, SignedCheckpoint};

use super::types::{InclusionProof, LedgerError};

/// Signs the head of `tree` under `signer`'s origin (the one checkpoint
/// shape every ledger signs, embedded or fleet).
pub(crate) fn sign_head(
    signer: &NoteSigner,
    tree: &MerkleTree,
) -> Result<SignedCheckpoint, LedgerError> {
    let cp = Checkpoint {
        origin: signer.name().to_string(),
        size: tree.len(),
        root_hash: tree.root(),
        extensions: Vec::new(),
    };
    SignedCheckpoint::sign(cp, signer).map_err(|e| LedgerError::Store(e.to_string()))
}
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
