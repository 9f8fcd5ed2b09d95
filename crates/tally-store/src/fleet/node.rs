//! One node's view of the fleet ledger: [`FleetLedger`].
//!
//! A node runs four kinds of threads, each with its own PostgreSQL
//! connection (the sync client must never run on an async runtime's worker):
//!
//! * the **writer** drains appends into one transaction per batch (group
//!   commit) and answers each caller once its record is durable;
//! * **readers** answer lookups (a registry miss asks PostgreSQL before a
//!   token is called forged);
//! * the **follower** LISTENs for new rows, catches up by queue sequence
//!   number (and re-asks for numbers it saw skipped, which a transaction
//!   committing late leaves behind), hands every authentic record to the
//!   node's registry, and extends a verified copy of the Merkle tree to the
//!   latest signed checkpoint;
//! * the **sequencer** competes for the advisory lock; the leader sequences.
//!
//! Reachability is tracked from every round trip: [`FleetLedger::is_reachable`]
//! turns false at the first failure and true again at the next success, with
//! no restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Client;
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use crate::ledger::{check_witness, write_witness};

use super::{FleetError, QueuedRecord, RecordMac, Sequencer, Step};
use crate::ledger::{InclusionProof, LedgerError};
use crate::store::{AuditPending, LedgerStore, Pending};

/// How a fleet node connects and behaves.
#[derive(Clone)]
pub struct FleetConfig {
    /// `postgres://…`
    pub url: String,
    /// Schema holding the fleet's tables.
    pub schema: String,
    /// This node's name (recorded with each queued record).
    pub node: String,
    /// Reader connections for lookups.
    pub readers: usize,
    /// Whether this node competes to sequence.
    pub sequence: bool,
    /// Where this node keeps the latest checkpoint it verified (a file in its
    /// own directory): at the next start, the shared ledger must extend it,
    /// so a rollback or rewrite of the database is detected.
    pub witness: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("FleetConfig")
            .field("schema", &self.schema)
            .field("node", &self.node)
            .field("readers", &self.readers)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl FleetConfig {
    /// Defaults for `url` and `schema`: two readers, sequencing on.
    pub fn new(url: &str, schema: &str, node: &str) -> FleetConfig {
        FleetConfig {
            url: url.to_string(),
            schema: schema.to_string(),
            node: node.to_string(),
            readers: 2,
            sequence: true,
            witness: None,
        }
    }
}

/// Called with every authentic record the node learns of (at start and
/// while following), exactly once per record.
pub type OnRecord = Arc<dyn Fn(&QueuedRecord) + Send + Sync>;

/// Called when the follower or sequencer finds evidence of tampering.
pub type OnTamper = Arc<dyn Fn(&FleetError) + Send + Sync>;

fn store_err(e: FleetError) -> LedgerError {
    match e {
        FleetError::Tampered { index, reason } => LedgerError::Tampered { index, reason },
        FleetError::Duplicate => LedgerError::DuplicateTokenId,
        FleetError::Record(r) => LedgerError::InvalidRecord(r),
        FleetError::Closed => LedgerError::Closed,
        other => LedgerError::Store(other.to_string()),
    }
}

struct Shared {
    cfg: FleetConfig,
    /// The URL, parsed once: every reconnection uses it.
    target: crate::pg::Target,
    mac: RecordMac,
    verifier: NoteVerifier,
    /// Verified tree up to the published checkpoint.
    tree: RwLock<MerkleTree>,
    head: RwLock<SignedCheckpoint>,
    published: AtomicU64,
    tampered: Mutex<Option<LedgerError>>,
    reachable: AtomicBool,
    leader: AtomicBool,
    stop: AtomicBool,
    on_record: OnRecord,
    on_tamper: OnTamper,
}

impl Shared {
    fn ok(&self) {
        self.reachable.store(true, Ordering::SeqCst);
    }

    fn failed(&self, e: &FleetError) {
        // A refused statement is not an outage; a lost connection, a timed
        // out statement or a server shutting down is.
        if super::is_unavailable(e) {
            self.reachable.store(false, Ordering::SeqCst);
        }
    }

    fn tamper(&self, e: FleetError) {
        let err = match &e {
            FleetError::Tampered { index, reason } => LedgerError::Tampered {
                index: *index,
                reason: reason.clone(),
            },
            other => LedgerError::Tampered {
                index: 0,
                reason: other.to_string(),
            },
        };
        let first = {
            let mut t = self.tampered.lock().unwrap_or_else(|p| p.into_inner());
            let first = t.is_none();
            if first {
                *t = Some(err);
            }
            first
        };
        if first {
            (self.on_tamper)(&e);
        }
    }

    /// Reports tampering found at `index` and answers with the node's
    /// tampering error (the first one found), as every read refuses then.
    fn refuse(&self, index: u64, reason: &str) -> LedgerError {
        self.tamper(FleetError::Tampered {
            index,
            reason: reason.into(),
        });
        self.tampered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(LedgerError::Closed)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

struct Append {
    record: IssuanceRecord,
    reply: oneshot::Sender<Result<u64, LedgerError>>,
}

/// A node's handle on the fleet ledger.
pub struct FleetLedger {
    shared: Arc<Shared>,
    appends: Mutex<Option<mpsc::SyncSender<Append>>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Connects (or reconnects) the client in `slot`.
fn ensure<'a>(
    slot: &'a mut Option<Client>,
    target: &crate::pg::Target,
) -> Result<&'a mut Client, FleetError> {
    if slot.as_ref().is_none_or(|c| c.is_closed()) {
        *slot = None;
        *slot = Some(super::connect_to(
            target,
            Some(super::REQUEST_PATH_TIMEOUT),
            None,
        )?);
    }
    slot.as_mut().ok_or(FleetError::Closed)
}

/// Runs `f` on the client in `slot`, dropping the client if the connection
/// broke so that the next call reconnects.
fn with_client<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    f: impl FnOnce(&mut Client) -> Result<T, FleetError>,
) -> Result<T, FleetError> {
    let result = ensure(slot, &shared.target).and_then(f);
    settle(slot, shared, result)
}

/// [`with_client`], once more on a new connection if the one in `slot` had
/// died unnoticed (the first use after the database came back). Only for
/// work that is safe to repeat: reads, and queueing (whose second attempt
/// finds an already committed record as a duplicate, and hands nothing out).
fn with_client_again<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    mut f: impl FnMut(&mut Client) -> Result<T, FleetError>,
) -> Result<T, FleetError> {
    let had_client = slot.is_some();
    let first = ensure(slot, &shared.target).and_then(&mut f);
    if had_client && first.as_ref().is_err_and(is_connection_error) {
        *slot = None;
        let second = ensure(slot, &shared.target).and_then(&mut f);
        return settle(slot, shared, second);
    }
    settle(slot, shared, first)
}

fn settle<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    result: Result<T, FleetError>,
) -> Result<T, FleetError> {
    match &result {
        Ok(_) => shared.ok(),
        Err(e @ FleetError::Db(_)) => {
            if slot.as_ref().is_none_or(|c| c.is_closed()) || is_connection_error(e) {
                *slot = None;
            }
            shared.failed(e);
        }
        Err(_) => {}
    }
    result
}

fn is_connection_error(e: &FleetError) -> bool {
    match e {
        FleetError::Db(db) => db.is_closed() || db.code().is_none(),
        _ => false,
    }
}

/// How long a caller waits for a reader's answer before failing closed.
const READ_WAIT: Duration = Duration::from_secs(15);

/// Appends waiting for the writer at most; beyond, issuance answers 503.
const APPEND_QUEUE: usize = 16_384;

impl FleetLedger {
    /// Connects, migrates, verifies the whole sequenced ledger, hands every
    /// authentic queued record to `on_record` (`progress(done, total)` as it
    /// goes), and starts the node's threads.
    pub fn open(
        cfg: FleetConfig,
        signer: NoteSigner,
        mac: RecordMac,
        progress: &mut dyn FnMut(u64, u64),
        on_record: OnRecord,
        on_tamper: OnTamper,
    ) -> Result<FleetLedger, LedgerError> {
        // Whole-ledger verification has no statement limit; the follower that
        // inherits this connection then gets one.
        let target = crate::pg::parse(&cfg.url).map_err(|e| store_err(FleetError::Config(e)))?;
        let mut client = super::connect_to(&target, None, None).map_err(store_err)?;
        super::migrate(&mut client, &cfg.schema).map_err(store_err)?;
        let verifier = signer.verifier();
        let schema = cfg.schema.clone();
        // A new fleet ledger commits to the empty tree at once, like an
        // embedded one.
        let empty = crate::ledger::sign_head(&signer, &MerkleTree::new())?;
        client
            .execute(
                &format!(
                    "INSERT INTO {schema}.checkpoints (size, note, signed_at) VALUES (0, $1, $2)
                     ON CONFLICT (size) DO NOTHING"
                ),
                &[&empty.note(), &now_secs()],
            )
            .map_err(|e| store_err(e.into()))?;
        let report = super::verify(&mut client, &schema, &verifier, &mac).map_err(store_err)?;
        let head = report
            .latest
            .clone()
            .ok_or_else(|| LedgerError::Store("no checkpoint".into()))?;
        if let Some(path) = &cfg.witness {
            check_witness(path, &report.tree, &verifier)?;
            write_witness(path, &head)?;
        }
        let published = head.checkpoint().size;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            target,
            mac,
            verifier,
            tree: RwLock::new(report.tree),
            head: RwLock::new(head),
            published: AtomicU64::new(published),
            tampered: Mutex::new(None),
            reachable: AtomicBool::new(true),
            leader: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            on_record,
            on_tamper,
        });
        // Every queued record, sequenced or not, reaches the registry.
        let total: i64 = client
            .query_one(&format!("SELECT count(*) FROM {schema}.queue"), &[])
            .map_err(|e| store_err(e.into()))?
            .get(0);
        let mut follow = Follow::default();
        let mut done = 0u64;
        loop {
            let batch = super::since(
                &mut client,
                &schema,
                &shared.mac,
                follow.max_seen,
                &[],
                5000,
            )
            .map_err(store_err)?;
            if batch.is_empty() {
                break;
            }
            done += batch.len() as u64;
            follow.absorb(&shared, batch);
            progress(done, total.max(0) as u64);
        }
        // The follower inherits this connection: its statements are bounded.
        client
            .batch_execute("SET statement_timeout = 30000")
            .map_err(|e| store_err(e.into()))?;
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| LedgerError::Store(e.to_string()))
        };
        let (append_tx, append_rx) = mpsc::sync_channel::<Append>(APPEND_QUEUE);
        let s = shared.clone();
        threads.push(spawn(
            "tally-fleet-writer",
            Box::new(move || writer(s, append_rx)),
        )?);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..cfg.readers.max(1) {
            let rx = job_rx.clone();
            threads.push(spawn(
                &format!("tally-fleet-reader-{i}"),
                Box::new(move || reader(rx)),
            )?);
        }
        let s = shared.clone();
        threads.push(spawn(
            "tally-fleet-follower",
            Box::new(move || guarded(s, "follower", |s| follower(s, client, follow))),
        )?);
        if cfg.sequence {
            let s = shared.clone();
            threads.push(spawn(
                "tally-fleet-sequencer",
                Box::new(move || guarded(s, "sequencer", |s| sequencer(s, signer))),
            )?);
        }
        Ok(FleetLedger {
            shared,
            appends: Mutex::new(Some(append_tx)),
            jobs: Mutex::new(Some(job_tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues `record`; the receiver answers once it is durable (with its
    /// queue sequence number) or not recorded (an error: hand nothing out).
    pub fn submit(
        &self,
        record: IssuanceRecord,
    ) -> Result<oneshot::Receiver<Result<u64, LedgerError>>, LedgerError> {
        if let Some(t) = self.tampered() {
            return Err(t);
        }
        record
            .validate()
            .map_err(|e| LedgerError::InvalidRecord(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        let guard = self.appends.lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(LedgerError::Closed)?;
        tx.try_send(Append { record, reply }).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => LedgerError::Store(
                "the fleet store is not keeping up: issuance refused rather than queued".into(),
            ),
            mpsc::TrySendError::Disconnected(_) => LedgerError::Closed,
        })?;
        Ok(rx)
    }

    /// Runs the read `f` on a reader thread.
    fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Client, &Shared) -> Result<T, FleetError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, rx) = mpsc::channel();
        let shared = self.shared.clone();
        let job: Job = Box::new(move |slot| {
            let out = with_client_again(slot, &shared, |c| f(c, &shared));
            // Whatever a read finds tampered is reported, where it was found.
            if let Err(FleetError::Tampered { index, reason }) = &out {
                shared.tamper(FleetError::Tampered {
                    index: *index,
                    reason: reason.clone(),
                });
            }
            let _ = reply.send(out);
        });
        {
            let guard = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let tx = guard.as_ref().ok_or(LedgerError::Closed)?;
            tx.send(job).map_err(|_| LedgerError::Closed)?;
        }
        match rx.recv_timeout(READ_WAIT) {
            Ok(out) => out.map_err(store_err),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(LedgerError::Store(
                "the fleet store did not answer in time".into(),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(LedgerError::Closed),
        }
    }

    /// The durable record for `token_id` (sequenced or not), checked against
    /// its MAC. A row that fails the check is reported as tampering.
    pub fn lookup(&self, token_id: &str) -> Result<Option<QueuedRecord>, LedgerError> {
        let t = token_id.to_string();
        self.run(move |c, s| super::lookup(c, &s.cfg.schema, &s.mac, &t))
    }

    /// Whether the last round trip to PostgreSQL succeeded.
    pub fn is_reachable(&self) -> bool {
        self.shared.reachable.load(Ordering::SeqCst)
    }

    /// Whether this node holds the sequencer lock.
    pub fn is_sequencer(&self) -> bool {
        self.shared.leader.load(Ordering::SeqCst)
    }

    /// The tamper finding, if any.
    pub fn tampered(&self) -> Option<LedgerError> {
        self.shared
            .tampered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True while appends can be made durable.
    pub fn is_healthy(&self) -> bool {
        self.tampered().is_none() && self.is_reachable()
    }

    /// Entries in the latest verified checkpoint.
    pub fn size(&self) -> u64 {
        self.shared.published.load(Ordering::SeqCst)
    }

    /// The latest verified checkpoint.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.shared
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key that verifies the checkpoints.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.shared.verifier
    }

    /// Encoded records `start..end` (at most 1000) of the published tree.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        crate::ledger::check_entries(start, end, self.size())?;
        let rows = self.run(move |c, s| {
            let schema = &s.cfg.schema;
            Ok(c.query(
                &format!(
                    "SELECT l.idx, q.record FROM {schema}.leaves l JOIN {schema}.queue q
                     ON q.seq = l.seq WHERE l.idx >= $1 AND l.idx < $2 ORDER BY l.idx"
                ),
                &[&(start as i64), &(end as i64)],
            )?
            .into_iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)))
            .collect::<Vec<_>>())
        })?;
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(rows.len());
        for (i, (idx, bytes)) in rows.into_iter().enumerate() {
            let at = start + i as u64;
            if idx != at as i64 || tree.leaf(at) != Some(merkle::leaf_hash(&bytes)) {
                drop(tree);
                return Err(self.shared.refuse(
                    at,
                    "an entry read for an outsider does not match the verified tree",
                ));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    /// Leaf index of `token_id`, if sequenced and in the published tree.
    fn index_of(&self, token_id: &str) -> Result<Option<u64>, LedgerError> {
        // The record and its leaf index, in one reader job.
        let t = token_id.to_string();
        let (q, idx) = self.run(move |c, s| {
            let Some(q) = super::lookup(c, &s.cfg.schema, &s.mac, &t)? else {
                return Ok((None, None));
            };
            let idx = super::leaf_index(c, &s.cfg.schema, q.seq)?;
            Ok((Some(q), idx))
        })?;
        let Some(q) = q else {
            return Ok(None);
        };
        let Some(idx) = idx else {
            return Err(LedgerError::OutOfRange(
                "the record is durable but not sequenced yet: ask again in a second".into(),
            ));
        };
        let bytes = q
            .record
            .encode()
            .map_err(|e| LedgerError::InvalidRecord(e.to_string()))?;
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        match tree.leaf(idx) {
            Some(h) if h == merkle::leaf_hash(&bytes) => Ok(Some(idx)),
            Some(_) => {
                drop(tree);
                Err(self
                    .shared
                    .refuse(idx, "a record's leaf differs from the verified tree"))
            }
            None => Err(LedgerError::OutOfRange(
                "the record is sequenced but not in a published checkpoint yet".into(),
            )),
        }
    }

    /// Inclusion proof for `token_id` in the tree of `size` (None: current).
    pub fn inclusion_proof(
        &self,
        token_id: &str,
        size: Option<u64>,
    ) -> Result<Option<InclusionProof>, LedgerError> {
        let Some(index) = self.index_of(token_id)? else {
            return Ok(None);
        };
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        crate::ledger::inclusion_in(&tree, self.size(), index, size).map(Some)
    }

    /// Consistency proof between two published sizes.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        crate::ledger::consistency_in(&tree, self.size(), from, to)
    }

    /// Root hash at a published size.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        let tree = self.shared.tree.read().unwrap_or_else(|e| e.into_inner());
        crate::ledger::root_in(&tree, self.size(), size)
    }

    /// Stops the threads after the writer has answered everything submitted;
    /// the sequencer's connection closes, releasing its lock.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.appends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for FleetLedger {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs a background loop; if it ever panics (a stored value of a type it
/// cannot read: a schema changed behind tally's back), the node stops
/// issuing and says why, instead of silently going on without it.
fn guarded(shared: Arc<Shared>, what: &str, f: impl FnOnce(Arc<Shared>)) {
    let s = shared.clone();
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(s))).is_err() {
        shared.tamper(FleetError::Tampered {
            index: 0,
            reason: format!(
                "the fleet {what} stopped on data it could not read: the schema was changed outside tally"
            ),
        });
    }
}

/// Most records queued in one transaction.
const WRITE_BATCH: usize = 512;

fn writer(shared: Arc<Shared>, rx: mpsc::Receiver<Append>) {
    let mut slot: Option<Client> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let records: Vec<IssuanceRecord> = batch.iter().map(|a| a.record.clone()).collect();
        let out = with_client_again(&mut slot, &shared, |c| {
            super::enqueue(
                c,
                &shared.cfg.schema,
                &shared.mac,
                &shared.cfg.node,
                &records,
                now_secs(),
            )
        });
        match out {
            Ok(results) => {
                for (a, r) in batch.into_iter().zip(results) {
                    let _ = a
                        .reply
                        .send(r.map(|seq| seq.max(0) as u64).map_err(store_err));
                }
            }
            Err(e) => {
                // Nothing of this batch may be handed out: a commit whose
                // outcome is unknown leaves at most records of tokens that
                // no client ever received.
                let err = store_err(e);
                for a in batch {
                    let _ = a.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn reader(rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut slot: Option<Client> = None;
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|e| e.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(&mut slot),
            Err(_) => return,
        }
    }
}

/// How long a skipped queue number is asked for again before it is taken
/// for a rolled-back insert.
const GAP_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Follow {
    /// Highest queue number seen.
    max_seen: i64,
    /// Numbers skipped below `max_seen`, and since when.
    gaps: BTreeMap<i64, Instant>,
}

impl Follow {
    fn absorb(&mut self, shared: &Shared, rows: Vec<super::FollowedRow>) {
        for (seq, row) in rows {
            if seq > self.max_seen {
                let now = Instant::now();
                // Cap the bookkeeping: a huge jump is a sequence reset or a
                // bulk rollback, and misses still ask PostgreSQL.
                for missing in (self.max_seen + 1).max(seq - 10_000)..seq {
                    self.gaps.insert(missing, now);
                }
                self.max_seen = seq;
            } else if self.gaps.remove(&seq).is_none() {
                continue;
            }
            match row {
                Ok(q) => (shared.on_record)(&q),
                Err(e) => shared.tamper(e),
            }
        }
        self.gaps.retain(|_, since| since.elapsed() < GAP_PATIENCE);
    }

    fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().take(1000).collect()
    }
}

fn follower(shared: Arc<Shared>, client: Client, mut follow: Follow) {
    let mut slot = Some(client);
    let mut listening = false;
    let mut reported: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            let beat = with_client(&mut slot, &shared, |c| {
                super::heartbeat(
                    c,
                    &shared.cfg.schema,
                    &shared.cfg.node,
                    now_secs(),
                    shared.published.load(Ordering::SeqCst) as i64,
                )
            });
            if beat.is_ok() {
                reported = Some(Instant::now());
            }
        }
        let round = with_client(&mut slot, &shared, |c| {
            if !listening {
                c.batch_execute(&format!("LISTEN {}", super::channel(&shared.cfg.schema)))?;
                listening = true;
            }
            loop {
                let gaps = follow.gaps();
                let rows = super::since(
                    c,
                    &shared.cfg.schema,
                    &shared.mac,
                    follow.max_seen,
                    &gaps,
                    5000,
                )?;
                let full = rows.len() >= 5000;
                follow.absorb(&shared, rows);
                if !full {
                    break;
                }
            }
            extend_tree(c, &shared)
        });
        if round.is_err() {
            listening = false;
            sleep_unless_stopped(&shared, Duration::from_millis(250));
            continue;
        }
        // Wake on NOTIFY, or look again after a short while regardless:
        // catching up by number makes a lost notification harmless.
        if let Some(c) = slot.as_mut() {
            use postgres::fallible_iterator::FallibleIterator;
            let mut n = c.notifications();
            let woke = n.timeout_iter(Duration::from_millis(200)).next();
            match woke {
                Err(_) => listening = false,
                Ok(Some(_)) => {
                    // One catch-up covers every announcement so far.
                    let mut pending = n.iter();
                    while let Ok(Some(_)) = pending.next() {}
                }
                Ok(None) => {}
            }
        }
    }
}

/// Extends the verified tree to the latest checkpoint: every new leaf must
/// hash its authentic record, and the checkpoint must sign the new root.
fn extend_tree(c: &mut Client, shared: &Shared) -> Result<(), FleetError> {
    let schema = &shared.cfg.schema;
    let Some(note) = super::latest_checkpoint(c, schema)? else {
        return Ok(());
    };
    let cp = match SignedCheckpoint::verify(&note, &shared.verifier) {
        Ok(cp) => cp,
        Err(e) => {
            shared.tamper(FleetError::Tampered {
                index: 0,
                reason: format!("the latest checkpoint does not verify: {e}"),
            });
            return Ok(());
        }
    };
    let target = cp.checkpoint().size;
    let mut tree = shared
        .tree
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if target < tree.len() {
        shared.tamper(FleetError::Tampered {
            index: target,
            reason: format!(
                "the latest checkpoint has {target} entries, fewer than the {} already verified",
                tree.len()
            ),
        });
        return Ok(());
    }
    if target == tree.len() && target == shared.published.load(Ordering::SeqCst) {
        return Ok(());
    }
    let rows = c.query(
        &format!(
            "SELECT {} FROM {schema}.leaves l
             JOIN {schema}.queue q ON q.seq = l.seq
             WHERE l.idx >= $1 AND l.idx < $2 ORDER BY l.idx",
            super::LEAF_COLUMNS
        ),
        &[&(tree.len() as i64), &(target as i64)],
    )?;
    for r in rows {
        match super::check_leaf(&shared.mac, tree.len(), &r) {
            Ok(h) => tree.push(h),
            Err(e) => {
                shared.tamper(e);
                return Ok(());
            }
        }
    }
    if tree.len() != target {
        shared.tamper(FleetError::Tampered {
            index: tree.len(),
            reason: format!(
                "checkpoint of {target} entries, but only {} leaves",
                tree.len()
            ),
        });
        return Ok(());
    }
    if tree.root() != cp.checkpoint().root_hash {
        shared.tamper(FleetError::Tampered {
            index: target,
            reason: "the latest checkpoint's root differs from the stored leaves: a fork".into(),
        });
        return Ok(());
    }
    if let Some(path) = &shared.cfg.witness {
        // As the embedded ledger: a witness that lags is checked again at
        // the next checkpoint; it is never ahead.
        let _ = write_witness(path, &cp);
    }
    *shared.tree.write().unwrap_or_else(|e| e.into_inner()) = tree;
    *shared.head.write().unwrap_or_else(|e| e.into_inner()) = cp;
    shared.published.store(target, Ordering::SeqCst);
    Ok(())
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// How often a follower asks for the sequencer lock.
pub const LEADER_POLL: Duration = Duration::from_millis(500);

fn sequencer(shared: Arc<Shared>, signer: NoteSigner) {
    enum State {
        Idle(NoteSigner),
        Connected(Box<Sequencer>),
    }
    let mut state = State::Idle(signer);
    while !shared.stop.load(Ordering::SeqCst) {
        state = match state {
            // The schema was migrated when the node opened.
            State::Idle(signer) => match super::connect_to(
                &shared.target,
                None,
                Some(&format!("{}{}", super::SEQUENCER_APP, shared.cfg.node)),
            ) {
                Ok(c) => State::Connected(Box::new(Sequencer::with_client(
                    c,
                    &shared.cfg.schema,
                    signer,
                    shared.mac.clone(),
                ))),
                Err(_) => {
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Idle(signer)
                }
            },
            State::Connected(mut s) => match s.step(1000, now_secs()) {
                Ok(Step::NotLeader) => {
                    shared.leader.store(false, Ordering::SeqCst);
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Connected(s)
                }
                Ok(step) => {
                    shared.leader.store(true, Ordering::SeqCst);
                    for r in s.take_rejected() {
                        shared.tamper(FleetError::Tampered {
                            index: r.seq.max(0) as u64,
                            reason: r.reason,
                        });
                    }
                    if step == Step::Idle {
                        sleep_unless_stopped(&shared, Duration::from_millis(50));
                    }
                    State::Connected(s)
                }
                Err(e) => {
                    // The lock went with the connection (or was never
                    // held): start over as a follower.
                    shared.leader.store(false, Ordering::SeqCst);
                    if matches!(e, FleetError::Tampered { .. }) {
                        shared.tamper(e);
                    }
                    sleep_unless_stopped(&shared, LEADER_POLL);
                    State::Idle(s.into_signer())
                }
            },
        };
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
