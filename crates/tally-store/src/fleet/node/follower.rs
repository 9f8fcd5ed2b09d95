//! The follower thread: it LISTENs for new rows, catches up by queue
//! sequence number (asking again, for a while, for numbers it saw skipped,
//! which a transaction committing late leaves behind), hands every authentic
//! record to the node's registry, reports its heartbeat, and extends the
//! node's verified copy of the tree to the latest signed checkpoint (and the
//! witness with it). Whatever does not check out is reported as tampering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use postgres::Client;
use tally_core::note::SignedCheckpoint;

use super::client::with_client;
use super::shared::{Shared, now_secs, sleep_unless_stopped};
use crate::fleet::FleetError;
use crate::ledger::write_witness;

/// How long a skipped queue number is asked for again before it is taken
/// for a rolled-back insert.
const GAP_PATIENCE: Duration = Duration::from_secs(30);

/// How far the follower has read the queue.
#[derive(Default)]
pub(super) struct Follow {
    /// Highest queue number seen.
    pub(super) max_seen: i64,
    /// Numbers skipped below `max_seen`, and since when.
    gaps: BTreeMap<i64, Instant>,
}

impl Follow {
    pub(super) fn absorb(&mut self, shared: &Shared, rows: Vec<crate::fleet::FollowedRow>) {
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

/// The follower thread's loop, until the node stops.
pub(super) fn follower(shared: Arc<Shared>, client: Client, mut follow: Follow) {
    let mut slot = Some(client);
    let mut listening = false;
    let mut reported: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            let beat = with_client(&mut slot, &shared, |c| {
                crate::fleet::heartbeat(
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
                c.batch_execute(&format!(
                    "LISTEN {}",
                    crate::fleet::channel(&shared.cfg.schema)
                ))?;
                listening = true;
            }
            loop {
                let gaps = follow.gaps();
                let rows = crate::fleet::since(
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
    let Some(note) = crate::fleet::latest_checkpoint(c, schema)? else {
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
            crate::fleet::LEAF_COLUMNS
        ),
        &[&(tree.len() as i64), &(target as i64)],
    )?;
    for r in rows {
        match crate::fleet::check_leaf(&shared.mac, tree.len(), &r) {
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
