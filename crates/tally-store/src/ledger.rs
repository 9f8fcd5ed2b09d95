//! The ledger on SQLite: an append-only table of encoded issuance records, the
//! signed checkpoints that commit to it, one writer thread doing group commit,
//! and the verification that both the writer and `tally ledger verify` run.
//!
//! # Durability and checkpoints
//! Appends travel over a channel to one writer thread. It takes every request
//! waiting (up to [`MAX_BATCH`]), and in ONE transaction inserts the rows and a
//! checkpoint signed over the new tree head, then commits (WAL, `synchronous =
//! FULL`: one fsync per batch). Only then are the callers answered. Every row is
//! therefore covered by a signed checkpoint committed with it, a checkpoint is
//! signed whenever entries arrive (far more often than once a second), and the
//! writer signs heads only of the tree it extends, so it never signs two
//! inconsistent checkpoints.
//!
//! # Tamper evidence
//! [`verify_ledger`] recomputes every leaf from the stored record bytes and every
//! stored checkpoint's root and signature. The writer runs it when it opens the
//! ledger and again whenever SQLite's `data_version` shows that another
//! connection committed to the ledger file; on failure it refuses to extend the
//! tree and answers `ledger_tampered`. Reads that feed decisions (a token-id
//! lookup) are checked against the writer's in-memory tree, never trusted raw.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{Checkpoint, NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

/// Most appends committed in one transaction.
pub const MAX_BATCH: usize = 4096;

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
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Store(e.to_string())
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger (
    idx        INTEGER PRIMARY KEY,
    token_id   TEXT    NOT NULL UNIQUE,
    record     BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    signed_at INTEGER NOT NULL
);
";

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, LedgerError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

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

type Reply = oneshot::Sender<Result<u64, LedgerError>>;

/// What the writer thread is asked to do.
enum Command {
    /// Append a record; answer with its leaf index once durable.
    Append(IssuanceRecord, Reply),
    /// Check now that nobody else changed the ledger file; answer with the finding.
    Audit(oneshot::Sender<Result<(), LedgerError>>),
}

struct Shared {
    path: PathBuf,
    tree: RwLock<MerkleTree>,
    committed: AtomicU64,
    head: RwLock<SignedCheckpoint>,
    tampered: Mutex<Option<LedgerError>>,
    failed: AtomicBool,
    readers: Mutex<Vec<Connection>>,
    verifier: NoteVerifier,
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
        let conn = open_conn(path, false)?;
        conn.execute_batch(SCHEMA)?;
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
        let handle = std::thread::Builder::new()
            .name("tally-ledger-writer".into())
            .spawn(move || {
                let (witness, witness_thread) = Witness::spawn(writer_shared.path.clone());
                Writer {
                    shared: writer_shared,
                    conn,
                    signer,
                    data_version: version,
                    witness: witness.clone(),
                }
                .run(rx);
                // Every head published so far reaches the file before close returns.
                witness.close();
                if let Some(t) = witness_thread {
                    let _ = t.join();
                }
            })
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
    pub fn submit(&self, record: IssuanceRecord) -> Result<crate::store::Pending, LedgerError> {
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
    pub fn submit_audit(&self) -> Result<crate::store::AuditPending, LedgerError> {
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
        crate::store::check_entries(start, end, self.size())?;
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
        crate::store::inclusion_in(&tree, self.size(), found.index, size).map(Some)
    }

    /// Consistency proof between two committed sizes.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        crate::store::consistency_in(&tree, self.size(), from, to)
    }

    /// Root hash at a committed size.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        crate::store::root_in(&tree, self.size(), size)
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

fn data_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

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

fn store_head(conn: &Connection, signed: &SignedCheckpoint) -> Result<(), LedgerError> {
    let cp = signed.checkpoint();
    conn.execute(
        "INSERT OR REPLACE INTO checkpoints (size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            cp.size as i64,
            cp.root_hash.as_slice(),
            signed.note(),
            now_secs()
        ],
    )?;
    Ok(())
}

/// Writes the latest published head to `ledger.head` on its own thread; heads
/// published while a write is in progress collapse into one write.
struct Witness {
    path: PathBuf,
    slot: Mutex<(Option<SignedCheckpoint>, bool)>,
    wake: std::sync::Condvar,
}

impl Witness {
    fn spawn(ledger_path: PathBuf) -> (Arc<Witness>, Option<JoinHandle<()>>) {
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

    fn publish(&self, head: SignedCheckpoint) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(head);
        self.wake.notify_one();
    }

    fn close(&self) {
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

/// Opens an existing ledger file read-only (for `tally ledger verify`).
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    if !path.exists() {
        return Err(LedgerError::Store(format!(
            "no ledger at {} (run `tally init` or `tally serve` first)",
            path.display()
        )));
    }
    open_conn(path, true)
}

/// The note of the latest stored checkpoint.
pub fn latest_checkpoint_note(conn: &Connection) -> Result<String, LedgerError> {
    conn.query_row(
        "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| LedgerError::Store("the ledger has no checkpoint yet".into()))
}

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
