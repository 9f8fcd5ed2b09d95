//! [`FleetLedger`], a node's handle on the fleet ledger. Opening it
//! connects, migrates, verifies the whole sequenced ledger and the node's
//! witness, hands every queued record to the registry, and starts the
//! node's threads. Appends go to the writer, reads to the readers; what a
//! read returns is checked against the verified tree. Its [`LedgerStore`]
//! impl is here too, beside the backend it describes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use super::client::with_client_again;
use super::config::{FleetConfig, OnRecord, OnTamper};
use super::follower::{Follow, follower};
use super::sequencer::sequencer;
use super::shared::{Shared, guarded, now_secs, store_err};
use super::workers::{Append, Job, reader, writer};
use crate::fleet::{FleetError, QueuedRecord, RecordMac};
use crate::ledger::{InclusionProof, LedgerError, check_witness, write_witness};
use crate::store::{AuditPending, LedgerStore, Pending};

/// A node's handle on the fleet ledger.
pub struct FleetLedger {
    shared: Arc<Shared>,
    appends: Mutex<Option<mpsc::SyncSender<Append>>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
        let mut client = crate::fleet::connect_to(&target, None, None).map_err(store_err)?;
        crate::fleet::migrate(&mut client, &cfg.schema).map_err(store_err)?;
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
        let report =
            crate::fleet::verify(&mut client, &schema, &verifier, &mac).map_err(store_err)?;
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
            let batch = crate::fleet::since(
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
        self.run(move |c, s| crate::fleet::lookup(c, &s.cfg.schema, &s.mac, &t))
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
            let Some(q) = crate::fleet::lookup(c, &s.cfg.schema, &s.mac, &t)? else {
                return Ok((None, None));
            };
            let idx = crate::fleet::leaf_index(c, &s.cfg.schema, q.seq)?;
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
