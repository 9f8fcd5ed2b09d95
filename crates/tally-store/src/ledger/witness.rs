//! The head witness: the latest signed checkpoint, kept in a file outside
//! the ledger's database (`ledger.head` beside `ledger.db`, or a file of a
//! fleet node's own), so that rolling the database back is noticed when the
//! ledger opens. The witness is written after a commit, never before: it may
//! lag the ledger after a crash, but is never ahead of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tally_core::merkle::MerkleTree;
use tally_core::note::{NoteVerifier, SignedCheckpoint};

use super::types::LedgerError;

/// Where the head witness of the ledger at `ledger_path` lives (`ledger.head`).
pub fn witness_path(ledger_path: &Path) -> PathBuf {
    ledger_path.with_extension("head")
}

/// Replaces the head witness at `path`: the latest signed checkpoint, kept
/// outside the ledger's database so that rolling the database back
/// (deleting its newest rows together with their checkpoints) is noticed
/// when the ledger is opened. The embedded ledger writes it after each commit
/// (`ledger.head`, see [`witness_path`]), a fleet node after each checkpoint
/// it verifies (in its own directory). Rename over, no fsync: it may lag the
/// ledger after a crash, but is never ahead of it.
pub fn write_witness(path: &Path, head: &SignedCheckpoint) -> Result<(), LedgerError> {
    let tmp = path.with_extension("head.tmp");
    std::fs::write(&tmp, head.note())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| LedgerError::Store(format!("cannot write {}: {e}", path.display())))
}

/// Checks a ledger against the head witness at `path`: the witness must
/// verify, and the ledger must hold at least as many entries with the same
/// root at the witness's size. A missing witness is accepted (a new or
/// pre-witness data directory, a new node); it is written on open.
pub fn check_witness(
    path: &Path,
    tree: &MerkleTree,
    verifier: &NoteVerifier,
) -> Result<(), LedgerError> {
    let note = match std::fs::read_to_string(path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LedgerError::Store(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let witness = SignedCheckpoint::verify(&note, verifier).map_err(|e| LedgerError::Tampered {
        index: tree.len(),
        reason: format!("the head witness {} does not verify: {e}", path.display()),
    })?;
    let cp = witness.checkpoint();
    if cp.size > tree.len() {
        return Err(LedgerError::Tampered {
            index: tree.len(),
            reason: format!(
                "the ledger was rolled back: a checkpoint was signed over {} entries, the ledger now holds {}",
                cp.size,
                tree.len()
            ),
        });
    }
    match tree.root_at(cp.size) {
        Ok(root) if root == cp.root_hash => Ok(()),
        _ => Err(LedgerError::Tampered {
            index: 0,
            reason: format!(
                "the ledger's first {} entries differ from the checkpoint signed over them",
                cp.size
            ),
        }),
    }
}

/// Writes the latest published head to `ledger.head` on its own thread; heads
/// published while a write is in progress collapse into one write.
pub(super) struct Witness {
    path: PathBuf,
    slot: Mutex<(Option<SignedCheckpoint>, bool)>,
    wake: std::sync::Condvar,
}

impl Witness {
    pub(super) fn spawn(ledger_path: PathBuf) -> (Arc<Witness>, Option<JoinHandle<()>>) {
        let w = Arc::new(Witness {
            path: ledger_path,
            slot: Mutex::new((None, false)),
            wake: std::sync::Condvar::new(),
        });
        let w2 = w.clone();
        let t = std::thread::Builder::new()
            .name("tally-ledger-witness".into())
            .spawn(move || w2.run())
            .ok();
        (w, t)
    }

    pub(super) fn publish(&self, head: SignedCheckpoint) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(head);
        self.wake.notify_one();
    }

    pub(super) fn close(&self) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let (head, closed) = {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                while slot.0.is_none() && !slot.1 {
                    slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                }
                (slot.0.take(), slot.1)
            };
            if let Some(head) = head {
                // A failed write is not a failed append (the records are
                // durable); the next head rewrites the file.
                let _ = write_witness(&witness_path(&self.path), &head);
            }
            if closed
                && self
                    .slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .is_none()
            {
                return;
            }
        }
    }
}
