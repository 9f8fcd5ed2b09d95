//! Checking what the sequencer stored: [`verify`] rebuilds the whole tree
//! from the queued records (leaves contiguous from 0, each the hash of an
//! authentic record) and checks every checkpoint's signature and root, on
//! one snapshot. [`check_leaf`] is the per-leaf check a node's follower
//! also runs as it extends its copy of the tree.

use postgres::Client;
use tally_core::merkle::{self, MerkleTree};
use tally_core::note::{NoteVerifier, SignedCheckpoint};

use super::error::FleetError;
use super::record::{RecordMac, authentic};
use super::schema::check_schema;

/// The latest signed checkpoint note in `schema`.
pub fn latest_checkpoint(client: &mut Client, schema: &str) -> Result<Option<String>, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query_opt(
            &format!("SELECT note FROM {schema}.checkpoints ORDER BY size DESC LIMIT 1"),
            &[],
        )?
        .map(|r| r.get(0)))
}

/// The columns [`check_leaf`] reads, from `leaves l` joined with `queue q`.
pub(crate) const LEAF_COLUMNS: &str = "l.idx, l.leaf_hash, q.record, q.mac, q.seq";

/// Leaf `at` of a tree being rebuilt from a row of [`LEAF_COLUMNS`]: its
/// index must be the next one, its record must hash to the stored leaf, and
/// the record must carry a valid MAC and decode. Returns the leaf hash.
pub(crate) fn check_leaf(
    mac: &RecordMac,
    at: u64,
    r: &postgres::Row,
) -> Result<merkle::Hash, FleetError> {
    let idx: i64 = r.get(0);
    if idx != at as i64 {
        return Err(FleetError::Tampered {
            index: at,
            reason: format!("leaf {at} is missing (next stored index is {idx})"),
        });
    }
    let stored: Vec<u8> = r.get(1);
    let record: Vec<u8> = r.get(2);
    let h = merkle::leaf_hash(&record);
    if stored.as_slice() != h.as_slice() {
        return Err(FleetError::Tampered {
            index: at,
            reason: "the stored record does not hash to the stored leaf".into(),
        });
    }
    let tag: Vec<u8> = r.get(3);
    match authentic(mac, r.get(4), &record, &tag, None, String::new()) {
        Ok(_) => Ok(h),
        Err(FleetError::Tampered { reason, .. }) => Err(FleetError::Tampered { index: at, reason }),
        Err(e) => Err(e),
    }
}

/// What [`verify`] found.
pub struct FleetReport {
    /// The verified tree.
    pub tree: MerkleTree,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The latest checkpoint, which covers exactly the verified tree.
    pub latest: Option<SignedCheckpoint>,
}

/// Verifies the whole fleet ledger: leaves contiguous from 0, each leaf hash
/// the hash of its queued record, each record's MAC, every checkpoint signed
/// by `verifier` and equal to the tree's root at its size.
pub fn verify(
    client: &mut Client,
    schema: &str,
    verifier: &NoteVerifier,
    mac: &RecordMac,
) -> Result<FleetReport, FleetError> {
    check_schema(schema)?;
    // One snapshot for leaves and checkpoints: a sequencer committing in
    // between must not look like a checkpoint beyond the stored leaves.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let rows = tx.query(
        &format!(
            "SELECT {LEAF_COLUMNS} FROM {schema}.leaves l
             JOIN {schema}.queue q ON q.seq = l.seq ORDER BY l.idx"
        ),
        &[],
    )?;
    let mut tree = MerkleTree::new();
    for r in rows {
        tree.push(check_leaf(mac, tree.len(), &r)?);
    }
    let notes = tx.query(
        &format!("SELECT size, note FROM {schema}.checkpoints ORDER BY size"),
        &[],
    )?;
    tx.commit()?;
    let mut checkpoints = 0;
    let mut latest = None;
    for r in notes {
        let size: i64 = r.get(0);
        let note: String = r.get(1);
        let cp = SignedCheckpoint::verify(&note, verifier).map_err(|e| FleetError::Tampered {
            index: size.max(0) as u64,
            reason: format!("checkpoint does not verify: {e}"),
        })?;
        let c = cp.checkpoint();
        let root = tree.root_at(c.size).map_err(|_| FleetError::Tampered {
            index: c.size,
            reason: "checkpoint beyond the stored leaves".into(),
        })?;
        if c.size != size.max(0) as u64 || root != c.root_hash {
            return Err(FleetError::Tampered {
                index: c.size,
                reason: "checkpoint root differs from the stored leaves".into(),
            });
        }
        checkpoints += 1;
        latest = Some(cp);
    }
    let covered = latest.as_ref().map_or(0, |c| c.checkpoint().size);
    if covered != tree.len() {
        // The sequencer writes leaves and their checkpoint in one transaction.
        return Err(FleetError::Tampered {
            index: covered,
            reason: format!(
                "{} leaves, but the latest signed checkpoint covers {covered}: a checkpoint is missing",
                tree.len()
            ),
        });
    }
    Ok(FleetReport {
        tree,
        checkpoints,
        latest,
    })
}
