//! Whole-ledger verification: every leaf recomputed from the stored record
//! bytes, every stored checkpoint's signature and root checked against the
//! recomputed tree, and every entry covered by a checkpoint. The writer runs
//! it when the ledger opens and whenever another connection committed to the
//! file; `tally ledger verify` runs it on a read-only connection.

use rusqlite::Connection;
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;

use super::types::LedgerError;

/// Summary of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the ledger.
    pub size: u64,
    /// Stored checkpoints checked.
    pub checkpoints: u64,
    /// Root hash at `size`.
    pub root: Hash,
}

/// Recomputes every leaf and checks every stored checkpoint on `conn`.
///
/// `progress(done, total)` is called every few thousand rows; `on_record` sees
/// each record after its leaf hash checked out (used to rebuild the registry).
pub fn verify_ledger(
    conn: &Connection,
    verifier: &NoteVerifier,
    progress: &mut dyn FnMut(u64, u64),
    on_record: &mut dyn FnMut(u64, &IssuanceRecord),
) -> Result<(MerkleTree, VerifyReport), LedgerError> {
    let total: i64 = conn.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))?;
    let total = total.max(0) as u64;
    let mut tree = MerkleTree::new();
    let mut stmt =
        conn.prepare("SELECT idx, token_id, record, leaf_hash FROM ledger ORDER BY idx")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let i = tree.len();
        let idx: i64 = row.get(0)?;
        if idx < 0 || idx as u64 != i {
            return Err(LedgerError::Tampered {
                index: i,
                reason: format!("entry {i} is missing (next stored index is {idx})"),
            });
        }
        let token_id: String = row.get(1)?;
        let bytes: Vec<u8> = row.get(2)?;
        let stored_leaf: Vec<u8> = row.get(3)?;
        let record = IssuanceRecord::decode(&bytes).map_err(|e| LedgerError::Tampered {
            index: i,
            reason: format!("record does not decode: {e}"),
        })?;
        let leaf = merkle::leaf_hash(&bytes);
        if stored_leaf.as_slice() != leaf.as_slice() {
            return Err(LedgerError::Tampered {
                index: i,
                reason: "record bytes changed: leaf hash differs from the one written".into(),
            });
        }
        if record.token_id != token_id {
            return Err(LedgerError::Tampered {
                index: i,
                reason: "token_id column differs from the record".into(),
            });
        }
        tree.push(leaf);
        on_record(i, &record);
        if (i + 1).is_multiple_of(8192) {
            progress(i + 1, total);
        }
    }
    drop(rows);
    progress(tree.len(), total);

    let mut stmt = conn.prepare("SELECT size, root, note FROM checkpoints ORDER BY size")?;
    let mut rows = stmt.query([])?;
    let mut checked = 0u64;
    let mut prev_good = 0u64;
    let mut head: Option<u64> = None;
    while let Some(row) = rows.next()? {
        let size: i64 = row.get(0)?;
        let root: Vec<u8> = row.get(1)?;
        let note: String = row.get(2)?;
        let size = size.max(0) as u64;
        let signed =
            SignedCheckpoint::verify(&note, verifier).map_err(|e| LedgerError::Tampered {
                index: prev_good,
                reason: format!("checkpoint at size {size} does not verify: {e}"),
            })?;
        let cp = signed.checkpoint();
        if cp.size != size || cp.root_hash.as_slice() != root.as_slice() {
            return Err(LedgerError::Tampered {
                index: prev_good,
                reason: format!("checkpoint row at size {size} differs from its signed note"),
            });
        }
        if size > tree.len() {
            return Err(LedgerError::Tampered {
                index: tree.len(),
                reason: format!(
                    "signed checkpoint covers {size} entries but the ledger holds {} (entries deleted)",
                    tree.len()
                ),
            });
        }
        let recomputed = tree
            .root_at(size)
            .map_err(|e| LedgerError::Store(e.to_string()))?;
        if recomputed != cp.root_hash {
            return Err(LedgerError::Tampered {
                index: prev_good,
                reason: format!(
                    "entries {prev_good}..{size} do not match the checkpoint signed at size {size}"
                ),
            });
        }
        prev_good = size;
        head = Some(size);
        checked += 1;
    }
    let covered = head.unwrap_or(0);
    if tree.len() > covered {
        return Err(LedgerError::Tampered {
            index: covered,
            reason: format!(
                "entry {covered} is not covered by any signed checkpoint (inserted behind the writer's back)"
            ),
        });
    }
    let root = tree.root();
    let size = tree.len();
    Ok((
        tree,
        VerifyReport {
            size,
            checkpoints: checked,
            root,
        },
    ))
}
