//! The request path's threads: the **writer** drains appends into one
//! transaction per batch (group commit, at most [`WRITE_BATCH`]) and answers
//! each caller once its record is durable, or with an error if the outcome
//! is unknown (nothing may be handed out then); **readers** run lookups sent
//! to them as jobs, each on its own connection.

use std::sync::{Arc, Mutex, mpsc};

use postgres::Client;
use tally_core::record::IssuanceRecord;
use tokio::sync::oneshot;

use super::client::with_client_again;
use super::shared::{Shared, now_secs, store_err};
use crate::ledger::LedgerError;

/// A read, run on a reader thread's connection slot.
pub(super) type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// An append waiting for the writer.
pub(super) struct Append {
    pub(super) record: IssuanceRecord,
    pub(super) reply: oneshot::Sender<Result<u64, LedgerError>>,
}

/// Most records queued in one transaction.
const WRITE_BATCH: usize = 512;

/// The writer thread's loop, until every sender is gone.
pub(super) fn writer(shared: Arc<Shared>, rx: mpsc::Receiver<Append>) {
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
            crate::fleet::enqueue(
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

/// A reader thread's loop, until the job queue closes.
pub(super) fn reader(rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
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
