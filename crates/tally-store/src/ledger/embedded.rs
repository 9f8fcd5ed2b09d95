//! The embedded ledger, [`Ledger`]: one process, one SQLite file. Opening
//! it verifies the whole file and the head witness, then starts the writer
//! thread; appends are answered once durable. Reads that feed decisions (a
//! token-id lookup, entries handed to outsiders) are checked against the
//! writer's verified tree, never trusted raw. Its [`LedgerStore`] impl is
//! here too, beside the backend it describes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use tally_core::merkle::{self, Hash};
use tally_core::note::{NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use super::db::{LEDGER, data_version, ledger_error, open_conn, store_head};
use super::tree::{check_entries, consistency_in, inclusion_in, root_in, sign_head};
use super::types::{InclusionProof, LedgerError, LocatedRecord};
use super::verify::verify_ledger;
use super::witness::{check_witness, witness_path, write_witness};
use super::writer::{Command, Shared};
use crate::store::{AuditPending, LedgerStore, Pending};

/// The ledger: append (group commit), read, prove.
pub struct Ledger {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, verifies all of it, and
    /// starts the writer. `on_record` sees every verified record (registry rebuild).
    pub fn open(
        path: &Path,
        signer: NoteSigner,
        progress: &mut dyn FnMut(u64, u64),
        on_record: &mut dyn FnMut(u64, &IssuanceRecord),
    ) -> Result<Ledger, LedgerError> {
        let mut conn = open_conn(path, false)?;
        LEDGER.apply_sqlite(&mut conn).map_err(ledger_error)?;
        let verifier = signer.verifier();
        let (tree, report) = verify_ledger(&conn, &verifier, progress, on_record)?;
        check_witness(&witness_path(path), &tree, &verifier)?;
        let head = if report.checkpoints == 0 {
            // A new ledger: commit to the empty tree at once.
            let signed = sign_head(&signer, &tree)?;
            store_head(&conn, &signed)?;
            signed
        } else {
            let note: String = conn.query_row(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )?;
            SignedCheckpoint::verify(&note, &verifier).map_err(|e| LedgerError::Tampered {
                index: report.size,
                reason: e.to_string(),
            })?
        };
        write_witness(&witness_path(path), &head)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            committed: AtomicU64::new(tree.len()),
            tree: RwLock::new(tree),
            head: RwLock::new(head),
            tampered: Mutex::new(None),
            failed: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            verifier,
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let version = data_version(&conn)?;
        let handle = super::writer::spawn(writer_shared, conn, signer, version, rx)
            .map_err(|e| LedgerError::Store(e.to_string()))?;
        Ok(Ledger {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Appends a record; resolves once it is durable, with its leaf index.
    pub async fn append(&self, record: IssuanceRecord) -> Result<u64, LedgerError> {
        let rx = self.submit(record)?;
        rx.await.unwrap_or(Err(LedgerError::Closed))
    }

    /// Blocking form of [`Ledger::append`] (not for async contexts).
    pub fn append_blocking(&self, record: IssuanceRecord) -> Result<u64, LedgerError> {
        let rx = self.submit(record)?;
        rx.blocking_recv().unwrap_or(Err(LedgerError::Closed))
    }

    /// Queues `record` for the writer; the receiver answers once it is
    /// durable (with its leaf index).
    pub fn submit(&self, record: IssuanceRecord) -> Result<Pending, LedgerError> {
        if let Some(t) = self.tampered() {
            return Err(t);
        }
        record
            .validate()
            .map_err(|e| LedgerError::InvalidRecord(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(LedgerError::Closed)?;
        tx.send(Command::Append(record, reply))
            .map_err(|_| LedgerError::Closed)?;
        Ok(rx)
    }

    /// Asks the writer to check, now, that no other connection changed the
    /// ledger file (cheap when nothing did), answered through the returned
    /// receiver. Servers ask every second ([`crate::store::audit`]) so
    /// tampering is reported even while no token is being issued.
    pub fn submit_audit(&self) -> Result<AuditPending, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(LedgerError::Closed)?;
        tx.send(Command::Audit(reply))
            .map_err(|_| LedgerError::Closed)?;
        Ok(rx)
    }

    /// The tamper finding, if the writer has refused to go on.
    pub fn tampered(&self) -> Option<LedgerError> {
        self.shared
            .tampered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True while the writer can accept appends.
    pub fn is_healthy(&self) -> bool {
        self.tampered().is_none() && !self.shared.failed.load(Ordering::SeqCst)
    }

    /// Number of committed entries.
    pub fn size(&self) -> u64 {
        self.shared.committed.load(Ordering::SeqCst)
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.shared
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key that verifies this ledger's checkpoints.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.shared.verifier
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let conn = {
            let mut pool = self
                .shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.shared.path, true)?,
        };
        let out = f(&conn);
        let mut pool = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    /// Finds the record for `token_id`, checked against the verified tree.
    /// A row that does not match the tree is reported as tampering.
    pub fn lookup(&self, token_id: &str) -> Result<Option<LocatedRecord>, LedgerError> {
        let row: Option<(i64, Vec<u8>)> = self.with_reader(|c| {
            Ok(c.query_row(
                "SELECT idx, record FROM ledger WHERE token_id = ?1",
                params![token_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })?;
        let Some((idx, bytes)) = row else {
            return Ok(None);
        };
        let index = idx.max(0) as u64;
        let committed = self.size();
        if index >= committed {
            // Committed by SQLite but not yet published by the writer (a batch in
            // flight, whose tokens no client holds yet), or a row the writer never
            // wrote, which it will report at its next append. Neither is trusted:
            // the gate refuses the token as not issued.
            return Ok(None);
        }
        let trusted = {
            let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
            tree.leaf(index) == Some(merkle::leaf_hash(&bytes))
        };
        let record = IssuanceRecord::decode(&bytes)
            .ok()
            .filter(|r| r.token_id == token_id);
        match (trusted, record) {
            (true, Some(record)) => Ok(Some(LocatedRecord { index, record })),
            _ => {
                let err = LedgerError::Tampered {
                    index,
                    reason: "a row read for a decision does not match the verified tree".into(),
                };
                *self
                    .shared
                    .tampered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Encoded records `start..end` (end exclusive, at most 1000), for outsiders
    /// to recompute leaf hashes.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        check_entries(start, end, self.size())?;
        self.with_reader(|c| {
            let mut stmt =
                c.prepare("SELECT record FROM ledger WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
            let rows = stmt.query_map(params![start as i64, end as i64], |r| r.get(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok(out)
        })
    }

    /// Inclusion proof for `token_id` in the tree of `size` (None: current size).
    pub fn inclusion_proof(
        &self,
        token_id: &str,
        size: Option<u64>,
    ) -> Result<Option<InclusionProof>, LedgerError> {
        let Some(found) = self.lookup(token_id)? else {
            return Ok(None);
        };
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        inclusion_in(&tree, self.size(), found.index, size).map(Some)
    }

    /// Consistency proof between two committed sizes.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        consistency_in(&tree, self.size(), from, to)
    }

    /// Root hash at a committed size.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        root_in(&tree, self.size(), size)
    }

    /// Stops the writer after it has committed everything already submitted.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
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
