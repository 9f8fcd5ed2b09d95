//! What a node's handle and its threads share ([`Shared`]): the verified
//! tree and head up to the published checkpoint, reachability (false at the
//! first failed round trip, true again at the next success) and the tamper
//! finding (the first one stays, and is reported once). Also the few helpers
//! every thread uses: the mapping of fleet errors to ledger errors, the
//! clock, a panic guard and an interruptible sleep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tally_core::merkle::MerkleTree;
use tally_core::note::{NoteVerifier, SignedCheckpoint};

use super::config::{FleetConfig, OnRecord, OnTamper};
use crate::fleet::{FleetError, RecordMac};
use crate::ledger::LedgerError;

/// A fleet failure as the ledger store reports it.
pub(super) fn store_err(e: FleetError) -> LedgerError {
    match e {
        FleetError::Tampered { index, reason } => LedgerError::Tampered { index, reason },
        FleetError::Duplicate => LedgerError::DuplicateTokenId,
        FleetError::Record(r) => LedgerError::InvalidRecord(r),
        FleetError::Closed => LedgerError::Closed,
        other => LedgerError::Store(other.to_string()),
    }
}

/// What the handle and the node's threads share.
pub(super) struct Shared {
    pub(super) cfg: FleetConfig,
    /// The URL, parsed once: every reconnection uses it.
    pub(super) target: crate::pg::Target,
    pub(super) mac: RecordMac,
    pub(super) verifier: NoteVerifier,
    /// Verified tree up to the published checkpoint.
    pub(super) tree: RwLock<MerkleTree>,
    pub(super) head: RwLock<SignedCheckpoint>,
    pub(super) published: AtomicU64,
    pub(super) tampered: Mutex<Option<LedgerError>>,
    pub(super) reachable: AtomicBool,
    pub(super) leader: AtomicBool,
    pub(super) stop: AtomicBool,
    pub(super) on_record: OnRecord,
    pub(super) on_tamper: OnTamper,
}

impl Shared {
    pub(super) fn ok(&self) {
        self.reachable.store(true, Ordering::SeqCst);
    }

    pub(super) fn failed(&self, e: &FleetError) {
        // A refused statement is not an outage; a lost connection, a timed
        // out statement or a server shutting down is.
        if crate::fleet::is_unavailable(e) {
            self.reachable.store(false, Ordering::SeqCst);
        }
    }

    pub(super) fn tamper(&self, e: FleetError) {
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
    pub(super) fn refuse(&self, index: u64, reason: &str) -> LedgerError {
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

/// Unix seconds.
pub(super) fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Runs a background loop; if it ever panics (a stored value of a type it
/// cannot read: a schema changed behind tally's back), the node stops
/// issuing and says why, instead of silently going on without it.
pub(super) fn guarded(shared: Arc<Shared>, what: &str, f: impl FnOnce(Arc<Shared>)) {
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

/// Sleeps `d`, or less if the node is stopping.
pub(super) fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}
