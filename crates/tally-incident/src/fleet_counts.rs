//! Distinct counts across the fleet, in Redis HyperLogLogs.
//!
//! Each node's detector counts what that node sees. An attacker who spreads a
//! scrape over many gate nodes stays under every node's threshold, so with
//! `[storage] redis_url` every node also adds its observations to shared
//! HyperLogLogs (`PFADD`) and reads the fleet-wide count (`PFCOUNT` over the
//! window's slices): `mass_access` (distinct subjects per address, device,
//! and untallied token or key) and `token_replay` (distinct places per
//! allowed token) fire on the fleet's numbers. The findings carry the same
//! detection keys as a node's own, so they merge into one detection, and
//! one incident, in the shared incident store. The node that first claims a
//! finding for the window (`SET … NX`) raises it, so alerts and containment
//! are not repeated per node.
//!
//! Which actors count is decided by the detector's own rules
//! ([`crate::detect::mass_access_actors`], [`replay_sources`]).
//! Actor and subject values never reach Redis in the clear: keys and members
//! are HMAC-SHA256 (truncated to 128 bits) under a key derived from the
//! master key, the same on every node and unknown to Redis.
//!
//! Redis is an aid, not a dependency: while it is unreachable, batches are
//! dropped (each node's own detection goes on) and the node retries every
//! second.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::detect::{
    Actor, ActorKind, DetectorConfig, Finding, Observation, mass_access_actors,
    mass_access_finding, replay_sources, token_replay_finding,
};
use aws_lc_rs::hmac;

use crate::redis::{Redis, Reply};

/// Longest actor or subject value kept (a device id is client-chosen): longer
/// ones are cut at a character boundary. Counting by prefix keeps them
/// distinct enough, and a flood of huge headers costs no memory.
const MAX_VALUE: usize = 256;

fn bounded(v: &str) -> String {
    if v.len() <= MAX_VALUE {
        return v.to_string();
    }
    let mut end = MAX_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// One observation, reduced to what the shared counts need.
#[derive(Clone, Debug)]
struct Tick {
    at: i64,
    route: String,
    subject: String,
    mass: Vec<(ActorKind, String)>,
    replay: Option<(String, Vec<(ActorKind, String)>)>,
}

/// The handle a node's watch feeds.
pub struct FleetCounts {
    tx: SyncSender<Vec<Tick>>,
    dropped: std::sync::atomic::AtomicU64,
}

/// Where findings go.
pub type OnFindings = Box<dyn Fn(Vec<Finding>) + Send>;

impl FleetCounts {
    /// Starts the counting thread against `redis`, keys under `namespace`,
    /// hashed with `key` (derived from the master key).
    pub fn start(
        redis: crate::redis::Target,
        namespace: String,
        key: &[u8; 32],
        cfg: DetectorConfig,
        on_findings: OnFindings,
    ) -> FleetCounts {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Tick>>(256);
        let counter = Counter {
            redis,
            namespace,
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            cfg,
            on_findings,
            conn: None,
            retry_at: None,
            raised: HashMap::new(),
        };
        let _ = std::thread::Builder::new()
            .name("tally-fleet-counts".into())
            .spawn(move || counter.run(rx));
        FleetCounts {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Adds a batch of observations (never blocks; a full queue drops it).
    pub fn observe(&self, batch: &[Observation<'_>]) {
        let ticks: Vec<Tick> = batch
            .iter()
            .filter_map(|o| {
                let subject = o.subject.filter(|s| !s.is_empty())?;
                let mass: Vec<(ActorKind, String)> = mass_access_actors(o)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, bounded(v)))
                    .collect();
                let replay = replay_sources(o).map(|(tid, sources)| {
                    (
                        bounded(tid),
                        sources
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k, bounded(v)))
                            .collect(),
                    )
                });
                Some(Tick {
                    at: o.at,
                    route: bounded(o.route),
                    subject: bounded(subject),
                    mass,
                    replay,
                })
            })
            .collect();
        if ticks.is_empty() {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(ticks) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Batches dropped because the counting thread fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Counter {
    redis: crate::redis::Target,
    namespace: String,
    key: hmac::Key,
    cfg: DetectorConfig,
    on_findings: OnFindings,
    conn: Option<Redis>,
    retry_at: Option<Instant>,
    /// Findings this node already raised, and when.
    raised: HashMap<String, i64>,
}

/// One shared counter touched by a batch.
struct Touched {
    /// Its slice keys, newest first (the window).
    window: Vec<Vec<u8>>,
    /// What to say if it crosses its threshold.
    about: About,
    at: i64,
    route: String,
}

enum About {
    Mass(Actor),
    Replay {
        tid: String,
        subject: String,
        actors: Vec<Actor>,
    },
}

impl Counter {
    fn h(&self, tag: &str, value: &str) -> String {
        let t = hmac::sign(&self.key, format!("{tag}\u{1f}{value}").as_bytes());
        t.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn run(mut self, rx: Receiver<Vec<Tick>>) {
        while let Ok(mut batch) = rx.recv() {
            // Coalesce what is already waiting: one pipeline per round.
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
                if batch.len() > 20_000 {
                    break;
                }
            }
            if let Err(e) = self.count(&batch) {
                if self.conn.is_some() {
                    tracing::warn!(error = %e, "fleet counts: Redis failed; counting locally only until it answers");
                }
                self.conn = None;
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn connection(&mut self) -> Result<&mut Redis, crate::redis::RedisError> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(crate::redis::RedisError::Io(std::io::Error::other(
                    "waiting before reconnecting",
                )));
            }
            let c = Redis::open(&self.redis)?;
            if self.retry_at.take().is_some() {
                tracing::info!("fleet counts: Redis reachable again");
            }
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| crate::redis::RedisError::Protocol("no connection".into()))
    }

    fn count(&mut self, batch: &[Tick]) -> Result<(), crate::redis::RedisError> {
        let ns = self.namespace.clone();
        let mass_window = self.cfg.mass_access_window_secs;
        let replay_window = self.cfg.replay_window_secs;
        // key of the newest slice → members; and the counters touched.
        let mut adds: BTreeMap<Vec<u8>, (Vec<Vec<u8>>, i64)> = BTreeMap::new();
        let mut touched: BTreeMap<String, Touched> = BTreeMap::new();
        for t in batch {
            let member = self.h("subject", &t.subject).into_bytes();
            for (kind, value) in &t.mass {
                let base = format!(
                    "tally:{ns}:ma:{}:{}",
                    kind.as_str(),
                    self.h(kind.as_str(), value)
                );
                let window = slice_keys(&base, t.at, mass_window);
                adds.entry(window[0].clone())
                    .or_insert_with(|| (Vec::new(), mass_window))
                    .0
                    .push(member.clone());
                let e = touched.entry(base).or_insert_with(|| Touched {
                    window: window.clone(),
                    about: About::Mass(Actor {
                        kind: *kind,
                        value: value.clone(),
                    }),
                    at: t.at,
                    route: t.route.clone(),
                });
                if t.at >= e.at {
                    e.window = window;
                    e.at = t.at;
                }
            }
            if let Some((tid, sources)) = &t.replay {
                let base = format!("tally:{ns}:rp:{}", self.h("token", tid));
                let window = slice_keys(&base, t.at, replay_window);
                for (kind, value) in sources {
                    adds.entry(window[0].clone())
                        .or_insert_with(|| (Vec::new(), replay_window))
                        .0
                        .push(self.h(kind.as_str(), value).into_bytes());
                }
                let actors = sources
                    .iter()
                    .map(|(kind, value)| Actor {
                        kind: *kind,
                        value: value.clone(),
                    })
                    .chain(std::iter::once(Actor {
                        kind: ActorKind::Token,
                        value: tid.clone(),
                    }))
                    .collect();
                touched.entry(base).or_insert_with(|| Touched {
                    window,
                    about: About::Replay {
                        tid: tid.clone(),
                        subject: t.subject.clone(),
                        actors,
                    },
                    at: t.at,
                    route: t.route.clone(),
                });
            }
        }
        if touched.is_empty() {
            return Ok(());
        }
        // One pipeline: every PFADD with its EXPIRE, then every PFCOUNT.
        let mut cmds = Vec::new();
        for (key, (members, window)) in &adds {
            let mut c = vec![b"PFADD".to_vec(), key.clone()];
            c.extend(members.iter().cloned());
            cmds.push(c);
            cmds.push(vec![
                b"EXPIRE".to_vec(),
                key.clone(),
                // The window and one more slice, with a minute to spare.
                (window + crate::sketch::slicing(*window, crate::detect::SLICES).0 + 60)
                    .to_string()
                    .into_bytes(),
            ]);
        }
        let counted: Vec<&Touched> = touched.values().collect();
        for t in &counted {
            let mut c = vec![b"PFCOUNT".to_vec()];
            c.extend(t.window.iter().cloned());
            cmds.push(c);
        }
        let replies = self.connection()?.pipeline(&cmds)?;
        let counts = &replies[2 * adds.len()..];
        let mut candidates = Vec::new();
        for (t, reply) in counted.iter().zip(counts) {
            let n = match reply {
                Reply::Int(n) => (*n).max(0) as u64,
                Reply::Error(e) => {
                    return Err(crate::redis::RedisError::Protocol(format!("PFCOUNT: {e}")));
                }
                other => {
                    return Err(crate::redis::RedisError::Protocol(format!(
                        "PFCOUNT: {other:?}"
                    )));
                }
            };
            let finding = match &t.about {
                About::Mass(actor) if n > self.cfg.mass_access_threshold => {
                    mass_access_finding(&self.cfg, actor.clone(), n, t.at, &t.route, "fleet")
                }
                About::Replay {
                    tid,
                    subject,
                    actors,
                } if n >= self.cfg.replay_min_sources => {
                    token_replay_finding(&self.cfg, tid, subject, actors.clone(), n, t.at, "fleet")
                }
                _ => continue,
            };
            candidates.push(finding);
        }
        let findings = self.claim(candidates)?;
        if !findings.is_empty() {
            (self.on_findings)(findings);
        }
        Ok(())
    }

    /// Keeps the findings this node is first to raise in their window.
    fn claim(
        &mut self,
        candidates: Vec<Finding>,
    ) -> Result<Vec<Finding>, crate::redis::RedisError> {
        let window = |f: &Finding| match f.rule {
            crate::detect::Rule::TokenReplay => self.cfg.replay_window_secs,
            _ => self.cfg.mass_access_window_secs,
        };
        let fresh: Vec<Finding> = candidates
            .into_iter()
            .filter(|f| {
                self.raised
                    .get(&f.key)
                    .is_none_or(|at| f.at - at >= window(f))
            })
            .collect();
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let ns = self.namespace.clone();
        let cmds: Vec<Vec<Vec<u8>>> = fresh
            .iter()
            .map(|f| {
                vec![
                    b"SET".to_vec(),
                    format!("tally:{ns}:raised:{}", self.h("finding", &f.key)).into_bytes(),
                    b"1".to_vec(),
                    b"NX".to_vec(),
                    b"EX".to_vec(),
                    window(f).to_string().into_bytes(),
                ]
            })
            .collect();
        let replies = self.connection()?.pipeline(&cmds)?;
        let raised = &mut self.raised;
        let mut out = Vec::new();
        for (f, r) in fresh.into_iter().zip(replies) {
            // Whoever claimed it, this node need not ask again this window.
            raised.insert(f.key.clone(), f.at);
            if matches!(r, Reply::Status(_)) {
                out.push(f);
            }
        }
        let now = tally_store::clock::now_unix();
        let keep = self
            .cfg
            .mass_access_window_secs
            .max(self.cfg.replay_window_secs);
        raised.retain(|_, at| now - *at < keep);
        Ok(out)
    }
}

/// The keys of the slices covering the window ending at `at`, newest first,
/// cut exactly as the node's own detector cuts them.
fn slice_keys(base: &str, at: i64, window: i64) -> Vec<Vec<u8>> {
    let (len, slices) = crate::sketch::slicing(window, crate::detect::SLICES);
    let cur = at.div_euclid(len);
    (0..slices as i64)
        .map(|i| format!("{base}:{}", cur - i).into_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::WindowedDistinct;

    /// The fleet's window is the node's: as many slices, as long, for
    /// windows that six divides and windows it does not.
    #[test]
    fn fleet_windows_are_the_detectors() {
        for window in [1, 5, 100, 300, 600, 601] {
            let node = WindowedDistinct::<u64>::new(window, crate::detect::SLICES, 10);
            let keys = slice_keys("k", 10_000, window);
            let (len, _) = crate::sketch::slicing(window, crate::detect::SLICES);
            assert_eq!(
                len * keys.len() as i64,
                node.window_secs(),
                "window {window}"
            );
            // One slice later, the newest key is the next one.
            let later = slice_keys("k", 10_000 + len, window);
            assert_ne!(later[0], keys[0], "window {window}");
            if keys.len() > 1 {
                assert_eq!(later[1], keys[0], "window {window}");
            }
        }
    }
}
