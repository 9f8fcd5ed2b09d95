//! The embedded ledger's writer thread: group commit. It takes every append
//! waiting (up to [`MAX_BATCH`]) and, in one `IMMEDIATE` transaction, inserts
//! the rows and a checkpoint signed over the new head, then commits; only
//! then are the callers answered and the head published (to [`Shared`] and
//! to the witness). Before extending the tree it checks that no other
//! connection committed to the file, and re-verifies everything if one did.
//! [`Shared`] is what the writer and the [`super::Ledger`] handle share: the
//! writer alone changes the tree, the committed size and the head.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use super::db::{data_version, store_head};
use super::tree::sign_head;
use super::types::LedgerError;
use super::verify::verify_ledger;
use super::witness::Witness;

/// Most appends committed in one transaction.
pub const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<u64, LedgerError>>;

/// What the writer thread is asked to do.
pub(super) enum Command {
    /// Append a record; answer with its leaf index once durable.
    Append(IssuanceRecord, Reply),
    /// Check now that nobody else changed the ledger file; answer with the finding.
    Audit(oneshot::Sender<Result<(), LedgerError>>),
}

/// What the handle and the writer share.
pub(super) struct Shared {
    /// The ledger file.
    pub(super) path: PathBuf,
    /// The verified tree, extended by the writer as it commits.
    pub(super) tree: RwLock<MerkleTree>,
    /// Entries committed and published (the tree may run ahead mid-batch).
    pub(super) committed: AtomicU64,
    /// The latest signed checkpoint.
    pub(super) head: RwLock<SignedCheckpoint>,
    /// The tamper finding, once there is one: nothing is appended after it.
    pub(super) tampered: Mutex<Option<LedgerError>>,
    /// Whether the last commit failed (the file is re-verified before the next).
    pub(super) failed: AtomicBool,
    /// Read-only connections kept for lookups.
    pub(super) readers: Mutex<Vec<Connection>>,
    /// The key that verifies the checkpoints.
    pub(super) verifier: NoteVerifier,
}

/// Starts the writer thread (`tally-ledger-writer`) over `conn`, answering
/// the commands sent on `rx`. It runs the witness thread beside it and, once
/// `rx` closes, waits until every head it published has reached the witness.
pub(super) fn spawn(
    shared: Arc<Shared>,
    conn: Connection,
    signer: NoteSigner,
    data_version: i64,
    rx: mpsc::Receiver<Command>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tally-ledger-writer".into())
        .spawn(move || {
            let (witness, witness_thread) = Witness::spawn(shared.path.clone());
            Writer {
                shared,
                conn,
                signer,
                data_version,
                witness: witness.clone(),
            }
            .run(rx);
            // Every head published so far reaches the file before close returns.
            witness.close();
            if let Some(t) = witness_thread {
                let _ = t.join();
            }
        })
}

struct Writer {
    witness: Arc<Witness>,
    shared: Arc<Shared>,
    conn: Connection,
    signer: NoteSigner,
    data_version: i64,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut batch = Vec::new();
            let mut audits = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(record, reply) => batch.push((record, reply)),
                    Command::Audit(reply) => audits.push(reply),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !audits.is_empty() {
                let finding = self.check_untouched();
                for reply in audits {
                    let _ = reply.send(finding.clone());
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
        }
    }

    fn refuse_all(batch: Vec<(IssuanceRecord, Reply)>, err: &LedgerError) {
        for (_, reply) in batch {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn check_untouched(&mut self) -> Result<(), LedgerError> {
        if let Some(t) = self
            .shared
            .tampered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(t);
        }
        let v = data_version(&self.conn)?;
        if v == self.data_version && !self.shared.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Someone else committed to the ledger file (or our last commit failed):
        // re-verify everything against what we hold before extending it.
        let (tree, _report) = verify_ledger(
            &self.conn,
            &self.shared.verifier,
            &mut |_, _| {},
            &mut |_, _| {},
        )
        .inspect_err(|e| {
            if matches!(e, LedgerError::Tampered { .. }) {
                *self
                    .shared
                    .tampered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            }
        })?;
        let ours = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        let committed = self.shared.committed.load(Ordering::SeqCst);
        let same = tree.len() == committed && ours.root_at(committed).ok() == Some(tree.root());
        drop(ours);
        if !same {
            let err = LedgerError::Tampered {
                index: tree.len().min(committed),
                reason: format!(
                    "the stored ledger ({} entries) is not the one this writer committed ({committed} entries)",
                    tree.len()
                ),
            };
            *self
                .shared
                .tampered
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(err.clone());
            return Err(err);
        }
        self.data_version = data_version(&self.conn)?;
        self.shared.failed.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn commit_batch(&mut self, batch: Vec<(IssuanceRecord, Reply)>) {
        if let Err(e) = self.check_untouched() {
            Self::refuse_all(batch, &e);
            return;
        }
        match self.try_commit(&batch) {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                // Nothing of this batch is committed; roll the tree back to disk.
                self.shared.failed.store(true, Ordering::SeqCst);
                let committed = self.shared.committed.load(Ordering::SeqCst);
                let mut tree = self.shared.tree.write().unwrap_or_else(|p| p.into_inner());
                let leaves: Vec<Hash> = (0..committed).filter_map(|i| tree.leaf(i)).collect();
                *tree = MerkleTree::from_leaf_hashes(leaves);
                drop(tree);
                Self::refuse_all(batch, &e);
            }
        }
    }

    fn try_commit(
        &mut self,
        batch: &[(IssuanceRecord, Reply)],
    ) -> Result<Vec<Result<u64, LedgerError>>, LedgerError> {
        // IMMEDIATE: take the write lock up front, so that `busy_timeout` applies.
        // A deferred transaction that has already read (the duplicate check)
        // cannot wait for the lock: its upgrade fails at once with SQLITE_BUSY.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut new_leaves = Vec::with_capacity(batch.len());
        let mut next = self.shared.committed.load(Ordering::SeqCst);
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM ledger WHERE token_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO ledger (idx, token_id, record, leaf_hash, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (record, _) in batch {
                let bytes = match record.encode() {
                    Ok(b) => b,
                    Err(e) => {
                        outcomes.push(Err(LedgerError::InvalidRecord(e.to_string())));
                        continue;
                    }
                };
                // Also sees rows inserted earlier in this same transaction.
                if exists.exists(params![record.token_id])? {
                    outcomes.push(Err(LedgerError::DuplicateTokenId));
                    continue;
                }
                let leaf = merkle::leaf_hash(&bytes);
                insert.execute(params![
                    next as i64,
                    record.token_id,
                    bytes,
                    leaf.as_slice(),
                    record.expires_at
                ])?;
                new_leaves.push(leaf);
                outcomes.push(Ok(next));
                next += 1;
            }
        }
        if new_leaves.is_empty() {
            tx.rollback()?;
            return Ok(outcomes);
        }
        let signed = {
            let mut tree = self.shared.tree.write().unwrap_or_else(|p| p.into_inner());
            for leaf in &new_leaves {
                tree.push(*leaf);
            }
            sign_head(&self.signer, &tree)?
        };
        store_head(&tx, &signed)?;
        tx.commit()?;
        self.shared.committed.store(next, Ordering::SeqCst);
        // After the commit, never before: the witness may lag the ledger after a
        // crash, but is never ahead of it. It is written off this thread so the
        // file system's work does not compete with the next commit's fsync.
        self.witness.publish(signed.clone());
        *self.shared.head.write().unwrap_or_else(|p| p.into_inner()) = signed;
        Ok(outcomes)
    }
}
