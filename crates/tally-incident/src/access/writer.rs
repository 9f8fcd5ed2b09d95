//! Access events: every gate decision becomes one, written in batches to
//! the hash-chained access log (`access.db`) and shown to the detector.
//!
//! Every decision is accounted for, and a flood cannot fill the disk or
//! crowd out the evidence:
//!
//! * allowed requests (and refusals let through in monitor mode) are written
//!   one row each: they are what reached data, and nothing a flood of
//!   refusals changes that. Only if the writer falls [`FOLD_BYTES`] behind
//!   (a disk that cannot keep up with the traffic) are they folded into
//!   per-second aggregates too, keeping their token, subject and data
//!   categories, so that the queue stays bounded;
//! * refusals go through a [`FloodAccount`]: the first few of each client
//!   address, verdict and token in a second are written in full; the rest are counted
//!   into one aggregate row per second (`count`, `last_ms`); full refusal
//!   rows spend a byte budget and need room in the queue, and when either
//!   is short the refusal is counted instead (the budget *bites*: a metric,
//!   a log line and a medium `access_flood` detection say so);
//! * every client-controlled field is cut to [`limits`] before it is queued,
//!   so the queue's bytes are known and bounded for refusals.
//!
//! Recording never blocks or fails a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_core::flood::{Admission, FloodAccount, FloodPolicy, RefusalKey, Sample};

use tally_store::clock::now_ms;

use super::event::{AccessEvent, bounded, limits};
use super::log::AccessLog;
use crate::watch::Watch;

/// What the writer task receives. Nearly every message is an event: boxing
/// it to shrink the rare flush would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// An event to write.
    Event(AccessEvent),
    /// Answer once everything queued and counted before this is written
    /// and observed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The bytes of refusal rows the writer's queue may hold; beyond, refusals
/// are counted instead of queued.
pub const QUEUE_BUDGET_BYTES: u64 = 16 << 20;

/// The bytes of rows the writer's queue may hold before even allowed
/// requests are folded into per-second aggregates (their token, subject and
/// data categories kept, their paths and times cut to the first and last):
/// the queue stays bounded if the disk cannot keep up with the traffic.
pub const FOLD_BYTES: u64 = 64 << 20;

/// The sending side of the access log.
pub struct AccessEvents {
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    watch: Option<Arc<Watch>>,
}

/// What the request side and the writer share.
struct Shared {
    flood: std::sync::Mutex<FloodAccount>,
    /// Bytes of events in the queue.
    queued_bytes: AtomicU64,
    /// Rows written.
    written: AtomicU64,
    /// Decisions in the log: rows, plus the counts of aggregate rows.
    logged: AtomicU64,
    /// Decisions the log failed to take (a write error).
    lost: AtomicU64,
    /// Refusals counted into aggregates instead of written one by one.
    aggregated: AtomicU64,
    /// Bytes of rows written.
    log_bytes: AtomicU64,
    /// When the budget last bit, for the once-a-minute report.
    last_bite_report: AtomicU64,
}

impl AccessEvents {
    /// Starts the writer task over `log`, with refusals accounted under
    /// `policy`. Each batch is shown to `watch` (the detector) once it is
    /// written, so that a detection never names an event the log does not
    /// hold yet.
    pub fn start(
        log: Arc<AccessLog>,
        watch: Option<Arc<Watch>>,
        policy: FloodPolicy,
    ) -> AccessEvents {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
        let shared = Arc::new(Shared {
            flood: std::sync::Mutex::new(FloodAccount::new(policy)),
            queued_bytes: AtomicU64::new(0),
            written: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            aggregated: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            last_bite_report: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let detector = watch.clone();
        tokio::spawn(async move {
            let mut msgs = Vec::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let mut open = true;
                tokio::select! {
                    n = rx.recv_many(&mut msgs, 4096) => open = n > 0,
                    _ = tick.tick() => {}
                }
                let mut batch = Vec::with_capacity(msgs.len());
                let mut flushes = Vec::new();
                for m in msgs.drain(..) {
                    match m {
                        Msg::Event(e) => {
                            sh.queued_bytes
                                .fetch_sub(e.approx_bytes(), Ordering::Relaxed);
                            batch.push(e)
                        }
                        Msg::Flush(done) => flushes.push(done),
                    }
                }
                // The seconds that have closed, or everything counted so far
                // when someone waits for the log to be complete.
                let aggregates = {
                    let mut f = sh.flood.lock().unwrap_or_else(|e| e.into_inner());
                    if flushes.is_empty() && open {
                        f.take_closed(now_ms())
                    } else {
                        f.take_all()
                    }
                };
                batch.extend(aggregates.into_iter().map(AccessEvent::of_aggregate));
                if !batch.is_empty() {
                    write(&sh, &log, &batch).await;
                    // Detection runs even when the write failed: it matters more.
                    if let Some(w) = &watch {
                        w.observe(&batch);
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
                if !open {
                    break;
                }
            }
        });
        AccessEvents {
            tx,
            shared,
            watch: detector,
        }
    }

    /// Records a decision without ever waiting: allowed requests as a row
    /// each, refusals as a row or a count (see the module documentation).
    pub fn record(&self, e: AccessEvent) {
        let bytes = e.approx_bytes();
        let sh = &self.shared;
        let queued = sh.queued_bytes.load(Ordering::Relaxed);
        // Allowed requests get a row each, unless the writer is so far
        // behind that the queue would grow without bound.
        if !e.passed || queued >= FOLD_BYTES {
            // The client address is the actor; a device id (which a client
            // may change at will) only where there is no address.
            let key = RefusalKey {
                passed: e.passed,
                client_ip: e.client_ip.as_deref(),
                device: e.device.as_deref().filter(|_| e.client_ip.is_none()),
                verdict: e.verdict,
                token_id: e.token_id.as_deref(),
                examined: e.examined,
            };
            let sample = || Sample {
                route: e.route.clone(),
                method: e.method.clone(),
                path: bounded(&e.path, limits::FIELD),
                subject: e.subject.clone(),
                kid: e.kid.clone(),
                data: e.data.clone(),
                device: e.device.clone(),
            };
            let room = queued + bytes <= QUEUE_BUDGET_BYTES;
            let (admission, bites) = {
                let mut f = sh.flood.lock().unwrap_or_else(|p| p.into_inner());
                let before = f.bites();
                let a = if e.passed {
                    f.fold(&key, e.at_ms, sample)
                } else {
                    f.admit(&key, bytes, room, e.at_ms, sample)
                };
                (a, e.passed || f.bites() != before)
            };
            if bites {
                self.report_bite();
            }
            if admission != Admission::Full {
                sh.aggregated.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        sh.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.tx.send(Msg::Event(e)).is_err() {
            // The writer has stopped (shutdown): the decision is lost.
            sh.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            sh.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The budget bit: said in the log once a minute, and to the detector.
    fn report_bite(&self) {
        let now = u64::try_from(now_ms() / 60_000).unwrap_or(0);
        let last = self.shared.last_bite_report.load(Ordering::Relaxed);
        if last != now
            && self
                .shared
                .last_bite_report
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let b = self.bites();
            tracing::warn!(
                event = "access_flood",
                counted_for_bytes = b.bytes,
                counted_for_queue = b.queue,
                counted_for_keys = b.keys,
                "refusals arrive faster than the access log's budget: they are counted in aggregate rows, not written one by one"
            );
            if let Some(w) = &self.watch {
                w.signal(crate::detect::Signal::AccessFlood {
                    for_bytes: b.bytes,
                    for_queue: b.queue,
                    for_actors: b.keys,
                });
            }
        }
    }

    /// How often the budget has bitten.
    pub fn bites(&self) -> tally_core::flood::Bites {
        self.shared
            .flood
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bites()
    }

    /// Waits until every decision recorded before this call has been written
    /// (or failed) and shown to the detector, aggregates included, or
    /// `within` has passed; says whether it got there.
    pub async fn settle(&self, within: std::time::Duration) -> bool {
        let (done, answered) = tokio::sync::oneshot::channel();
        tokio::time::timeout(within, async {
            self.tx.send(Msg::Flush(done)).is_ok() && answered.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Decisions the log failed to take (write errors, or recorded after the
    /// writer stopped).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Rows written to the log.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Decisions in the log: rows, plus what aggregate rows count.
    pub fn logged(&self) -> u64 {
        self.shared.logged.load(Ordering::Relaxed)
    }

    /// Refusals counted into aggregate rows.
    pub fn aggregated(&self) -> u64 {
        self.shared.aggregated.load(Ordering::Relaxed)
    }

    /// Bytes of rows written to the log.
    pub fn log_bytes(&self) -> u64 {
        self.shared.log_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of events waiting to be written.
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

/// Writes one batch, keeping the account.
async fn write(sh: &Arc<Shared>, log: &Arc<AccessLog>, batch: &[AccessEvent]) {
    let rows: Vec<(i64, Vec<u8>)> = batch
        .iter()
        .map(|e| (e.at_ms, serde_json::to_vec(e).unwrap_or_default()))
        .collect();
    let n = rows.len() as u64;
    let decisions: u64 = batch.iter().map(AccessEvent::decisions).sum();
    let bytes: u64 = rows.iter().map(|(_, b)| b.len() as u64).sum();
    let log = log.clone();
    match tokio::task::spawn_blocking(move || log.append(&rows)).await {
        Ok(Ok(_)) => {
            sh.written.fetch_add(n, Ordering::Relaxed);
            sh.logged.fetch_add(decisions, Ordering::Relaxed);
            sh.log_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            sh.lost.fetch_add(decisions, Ordering::Relaxed);
            tracing::error!(code = e.code(), error = %e, events = n, "access events not written")
        }
        Err(_) => {
            sh.lost.fetch_add(decisions, Ordering::Relaxed);
            tracing::error!(events = n, "access log writer failed")
        }
    }
}
