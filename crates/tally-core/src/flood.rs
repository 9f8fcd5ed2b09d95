//! Accounting for every refusal under a flood, in bounded memory and disk.
//!
//! A flood of refused requests (no token, garbage tokens, a blocked address
//! hammering the gate) must neither fill the disk with one log row per
//! request nor crowd legitimate decisions out of the log. [`FloodAccount`]
//! decides, for each refusal, whether it is logged in full or only counted:
//!
//! * refusals are keyed by actor and outcome ([`RefusalKey`]: client address,
//!   device, verdict, and the token id when the token was identified); the
//!   first [`FloodPolicy::samples_per_key`] refusals of a key in a second are
//!   logged in full, the rest of that second are counted into one
//!   [`Aggregate`] (one log row with a count);
//! * full refusal rows spend a byte budget (a token bucket,
//!   [`FloodPolicy::bytes_per_sec`] and [`FloodPolicy::burst_bytes`]), and
//!   need room in the writer's queue: when either is short, the refusal is
//!   counted instead (the budget *bites*);
//! * a new key takes a row of its own (its first sample, or its aggregate):
//!   when [`FloodPolicy::max_keys`] keys are tracked in the second, or the
//!   budget is spent, a refusal of a new key is counted per verdict only
//!   ([`Admission::Overflow`]). So the rows a second are bounded by the
//!   budget, however many actors there are.
//!
//! Nothing is dropped: every refusal is a full row, or a count in exactly
//! one aggregate, so the rows and counts always add up to the decisions.
//! Allowed requests never come here: they are always logged in full.
//!
//! Time is a parameter (`now_ms`); the module knows nothing of the clock,
//! the queue or the log.
//!
//! ```
//! use tally_core::flood::{Admission, FloodAccount, FloodPolicy, RefusalKey};
//! let mut account = FloodAccount::new(FloodPolicy { samples_per_key: 2, ..FloodPolicy::default() });
//! let key = RefusalKey {
//!     passed: false,
//!     client_ip: Some("203.0.113.9"),
//!     device: None,
//!     verdict: "missing",
//!     token_id: None,
//!     examined: None,
//! };
//! let got: Vec<Admission> = (0..5)
//!     .map(|_| account.admit(&key, 200, true, 1_000, Default::default))
//!     .collect();
//! assert_eq!(got[..2], [Admission::Full, Admission::Full]);
//! assert!(got[2..].iter().all(|a| *a == Admission::Counted));
//! let closed = account.take_closed(2_000);
//! assert_eq!(closed.len(), 1);
//! assert_eq!(closed[0].count, 3);
//! ```

use std::collections::HashMap;

use crate::gate::Examined;

/// The limits of the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodPolicy {
    /// Refusals of one key logged in full per second (the rest are counted).
    pub samples_per_key: u32,
    /// Bytes of full refusal rows allowed per second, sustained.
    pub bytes_per_sec: u64,
    /// Bytes of full refusal rows allowed at once.
    pub burst_bytes: u64,
    /// Keys tracked per second; beyond, refusals are counted per verdict.
    pub max_keys: usize,
}

impl Default for FloodPolicy {
    fn default() -> Self {
        FloodPolicy {
            samples_per_key: 4,
            bytes_per_sec: 1 << 20,
            burst_bytes: 16 << 20,
            max_keys: 10_000,
        }
    }
}

/// What a refusal is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusalKey<'a> {
    /// Whether the request went on (an allowed one, or a refusal let through
    /// in monitor mode): such decisions come here only when the writer is
    /// overloaded ([`FloodAccount::fold`]).
    pub passed: bool,
    /// Client address.
    pub client_ip: Option<&'a str>,
    /// Device id: only for a request without a client address, since a
    /// client that changes its device id on every request must not escape
    /// aggregation (the first device of an aggregate is kept in its
    /// [`Sample`]).
    pub device: Option<&'a str>,
    /// Verdict code.
    pub verdict: &'static str,
    /// The token's id, when the token was identified (a signature verified):
    /// distinct tokens stay distinct.
    pub token_id: Option<&'a str>,
    /// For a refusal made before its token decided anything (containment):
    /// what the token alone got ([`Examined`]). Refusals whose tokens got
    /// different verdicts are never counted together, even per verdict, so
    /// the log can tell exactly how many carried forged tokens.
    pub examined: Option<Examined>,
}

/// What to do with one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Log it in full.
    Full,
    /// Count it in its key's aggregate for this second.
    Counted,
    /// Count it in its verdict's aggregate for this second (too many keys).
    Overflow,
}

/// Where an aggregate's requests went (the first counted one's; they may
/// differ).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Route.
    pub route: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Subject, if the token was identified.
    pub subject: Option<String>,
    /// Key id, if the token was identified.
    pub kid: Option<String>,
    /// Data categories of the route.
    pub data: Vec<String>,
    /// The device id, when the key does not hold it (see [`RefusalKey::device`]).
    pub device: Option<String>,
}

/// Refusals counted instead of logged: one log row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// Client address (`None` for a per-verdict overflow aggregate).
    pub client_ip: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Verdict code.
    pub verdict: &'static str,
    /// Token id.
    pub token_id: Option<String>,
    /// What their tokens alone got (see [`RefusalKey::examined`]).
    pub examined: Option<Examined>,
    /// Whether these requests went on (see [`RefusalKey::passed`]).
    pub passed: bool,
    /// How many refusals it stands for.
    pub count: u64,
    /// First and last of them, Unix milliseconds.
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
    /// What the first of them asked for (empty for an overflow aggregate).
    pub sample: Sample,
    /// Counted per verdict only: the key table was full.
    pub overflow: bool,
}

#[derive(Debug)]
struct Entry {
    full: u32,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    sample: Option<Sample>,
}

type OwnedKey = (
    bool,
    Option<String>,
    Option<String>,
    &'static str,
    Option<String>,
    Option<Examined>,
);

/// The key of a per-verdict (overflow) aggregate.
type VerdictKey = (bool, &'static str, Option<Examined>);

/// Why the budget bit (see [`FloodAccount::bites`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bites {
    /// Refusals counted because the byte bucket was empty.
    pub bytes: u64,
    /// Refusals counted because the writer's queue had no room.
    pub queue: u64,
    /// Refusals counted per verdict because the key table was full.
    pub keys: u64,
}

/// The account of refusals (see the module documentation).
#[derive(Debug)]
pub struct FloodAccount {
    policy: FloodPolicy,
    second: i64,
    keys: HashMap<OwnedKey, Entry>,
    overflow: HashMap<VerdictKey, Entry>,
    closed: Vec<Aggregate>,
    bucket: u64,
    refilled_ms: i64,
    bites: Bites,
}

impl FloodAccount {
    /// An empty account with a full byte bucket.
    pub fn new(policy: FloodPolicy) -> FloodAccount {
        FloodAccount {
            policy,
            second: i64::MIN,
            keys: HashMap::new(),
            overflow: HashMap::new(),
            closed: Vec::new(),
            bucket: policy.burst_bytes,
            refilled_ms: i64::MIN,
            bites: Bites::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &FloodPolicy {
        &self.policy
    }

    /// How often the budget has bitten so far.
    pub fn bites(&self) -> Bites {
        self.bites
    }

    /// Keys tracked in the current second.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    fn refill(&mut self, now_ms: i64) {
        if self.refilled_ms == i64::MIN || now_ms < self.refilled_ms {
            self.refilled_ms = now_ms;
            return;
        }
        let elapsed = (now_ms - self.refilled_ms) as u64;
        let add = elapsed.saturating_mul(self.policy.bytes_per_sec) / 1000;
        if add > 0 {
            self.bucket = self.bucket.saturating_add(add).min(self.policy.burst_bytes);
            self.refilled_ms = now_ms;
        }
    }

    fn roll(&mut self, now_ms: i64) {
        let s = now_ms.div_euclid(1000);
        if s == self.second {
            return;
        }
        // A clock that steps back keeps the current second: counts are
        // never split or lost, only dated to the later second.
        if s < self.second {
            return;
        }
        self.close_all();
        self.second = s;
    }

    fn close_all(&mut self) {
        for ((passed, ip, device, verdict, token_id, examined), e) in self.keys.drain() {
            if e.count > 0 {
                let device = device.or_else(|| e.sample.as_ref().and_then(|s| s.device.clone()));
                self.closed.push(Aggregate {
                    client_ip: ip,
                    device,
                    verdict,
                    token_id,
                    examined,
                    passed,
                    count: e.count,
                    first_ms: e.first_ms,
                    last_ms: e.last_ms,
                    sample: e.sample.unwrap_or_default(),
                    overflow: false,
                });
            }
        }
        for ((passed, verdict, examined), e) in self.overflow.drain() {
            self.closed.push(Aggregate {
                client_ip: None,
                device: None,
                verdict,
                token_id: None,
                examined,
                passed,
                count: e.count,
                first_ms: e.first_ms,
                last_ms: e.last_ms,
                sample: Sample::default(),
                overflow: true,
            });
        }
    }

    /// Decides on one refusal of `bytes` (its row's size), given whether the
    /// writer's queue has room for it, at `now_ms`. A refusal admitted
    /// [`Admission::Full`] has spent its bytes. `sample` describes the
    /// request; it is called only for the first refusal counted under its
    /// key in a second.
    pub fn admit(
        &mut self,
        key: &RefusalKey<'_>,
        bytes: u64,
        queue_has_room: bool,
        now_ms: i64,
        sample: impl FnOnce() -> Sample,
    ) -> Admission {
        self.roll(now_ms);
        self.refill(now_ms);
        let owned = (
            key.passed,
            key.client_ip.map(str::to_string),
            key.device.map(str::to_string),
            key.verdict,
            key.token_id.map(str::to_string),
            key.examined,
        );
        let samples = self.policy.samples_per_key;
        let fresh = Entry {
            full: 0,
            count: 0,
            first_ms: now_ms,
            last_ms: now_ms,
            sample: None,
        };
        if !self.keys.contains_key(&owned) {
            // A new key costs a row of its own either way (its sample, or
            // its aggregate): when the table or the budget is spent, it is
            // counted per verdict instead.
            let why = if self.keys.len() >= self.policy.max_keys {
                Some(&mut self.bites.keys)
            } else if samples > 0 && !queue_has_room {
                Some(&mut self.bites.queue)
            } else if samples > 0 && self.bucket < bytes {
                Some(&mut self.bites.bytes)
            } else {
                None
            };
            if let Some(bite) = why {
                *bite += 1;
                let e = self
                    .overflow
                    .entry((key.passed, key.verdict, key.examined))
                    .or_insert(fresh);
                e.count += 1;
                e.last_ms = e.last_ms.max(now_ms);
                return Admission::Overflow;
            }
            self.keys.insert(owned.clone(), fresh);
        }
        let Some(e) = self.keys.get_mut(&owned) else {
            return Admission::Overflow;
        };
        if e.full < samples {
            if !queue_has_room {
                self.bites.queue += 1;
            } else if self.bucket < bytes {
                self.bites.bytes += 1;
            } else {
                self.bucket -= bytes;
                e.full += 1;
                return Admission::Full;
            }
        }
        if e.count == 0 {
            e.first_ms = now_ms;
            e.sample = Some(sample());
        }
        e.count += 1;
        e.last_ms = e.last_ms.max(now_ms);
        Admission::Counted
    }

    /// Counts a decision that would be written in full, but the writer is
    /// overloaded: it joins its key's aggregate for this second (the token
    /// and subject kept), or, beyond [`FloodPolicy::max_keys`], its verdict's.
    pub fn fold(
        &mut self,
        key: &RefusalKey<'_>,
        now_ms: i64,
        sample: impl FnOnce() -> Sample,
    ) -> Admission {
        let policy = self.policy;
        self.policy.samples_per_key = 0;
        let a = self.admit(key, 0, false, now_ms, sample);
        self.policy = policy;
        a
    }

    /// The aggregates of every second before the one of `now_ms`.
    pub fn take_closed(&mut self, now_ms: i64) -> Vec<Aggregate> {
        self.roll(now_ms);
        std::mem::take(&mut self.closed)
    }

    /// Every aggregate, the current second's included (at shutdown, or when
    /// a reader must see everything counted so far).
    pub fn take_all(&mut self) -> Vec<Aggregate> {
        self.close_all();
        std::mem::take(&mut self.closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(ip: &'a str, verdict: &'static str) -> RefusalKey<'a> {
        RefusalKey {
            passed: false,
            client_ip: Some(ip),
            device: None,
            verdict,
            token_id: None,
            examined: None,
        }
    }

    /// Rows plus counts: what the log accounts for.
    fn accounted(full: u64, aggregates: &[Aggregate]) -> u64 {
        full + aggregates.iter().map(|a| a.count).sum::<u64>()
    }

    #[test]
    fn one_actor_flooding_is_a_few_rows_and_one_count_per_second() {
        let mut a = FloodAccount::new(FloodPolicy::default());
        let mut full = 0;
        let mut aggs = Vec::new();
        for i in 0..100_000i64 {
            let now = 10_000 + i / 20; // 20 a millisecond: 5 seconds
            if a.admit(
                &key("203.0.113.9", "missing"),
                300,
                true,
                now,
                Sample::default,
            ) == Admission::Full
            {
                full += 1;
            }
            aggs.extend(a.take_closed(now));
        }
        aggs.extend(a.take_all());
        assert_eq!(full, 5 * 4, "4 samples in each of 5 seconds");
        assert_eq!(aggs.len(), 5);
        assert_eq!(accounted(full, &aggs), 100_000);
    }

    #[test]
    fn refusals_whose_tokens_got_different_verdicts_are_never_counted_together() {
        use crate::gate::Examined;
        use crate::verdict::Verdict;
        // A key table of one: every refusal after the first overflows into
        // per-verdict aggregates, which must still tell forged tokens from
        // the rest.
        let mut a = FloodAccount::new(FloodPolicy {
            max_keys: 1,
            ..FloodPolicy::default()
        });
        let forged = Examined {
            verdict: Verdict::NotIssued,
            detail: None,
        };
        let issued = Examined {
            verdict: Verdict::Ok,
            detail: None,
        };
        let mut full = 0;
        for i in 0..300u32 {
            let ip = format!("203.0.113.{}", i % 200);
            let k = RefusalKey {
                examined: Some(if i % 3 == 0 { issued } else { forged }),
                ..key(&ip, "blocked_actor")
            };
            if a.admit(&k, 100, true, 7_000, Sample::default) == Admission::Full {
                full += 1;
            }
        }
        let aggs = a.take_all();
        assert_eq!(accounted(full, &aggs), 300);
        let count = |e: Examined| {
            aggs.iter()
                .filter(|g| g.examined == Some(e))
                .map(|g| g.count)
                .sum::<u64>()
        };
        assert_eq!(full, 1, "the first refusal (an issued token) is a row");
        assert_eq!(count(issued), 99);
        assert_eq!(count(forged), 200);
        assert!(aggs.iter().all(|g| g.overflow));
    }

    #[test]
    fn every_refusal_is_accounted_for_whatever_the_mix() {
        let policy = FloodPolicy {
            samples_per_key: 3,
            bytes_per_sec: 10_000,
            burst_bytes: 20_000,
            max_keys: 50,
        };
        let mut a = FloodAccount::new(policy);
        let verdicts = ["missing", "malformed", "not_issued", "blocked_actor"];
        let mut full = 0u64;
        let mut aggs = Vec::new();
        let mut n = 0u64;
        // A deterministic pseudo-random mix of actors, verdicts and times.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ip = format!("10.0.{}.{}", (x >> 8) % 4, x % 200);
            let tid = x.is_multiple_of(3).then(|| format!("t{}", x % 17));
            let k = RefusalKey {
                passed: false,
                client_ip: Some(&ip),
                device: None,
                verdict: verdicts[(x >> 20) as usize % 4],
                token_id: tid.as_deref(),
                examined: None,
            };
            let now = 1_000_000 + i / 7;
            if a.admit(
                &k,
                150 + x % 400,
                !x.is_multiple_of(11),
                now,
                Sample::default,
            ) == Admission::Full
            {
                full += 1;
            }
            n += 1;
            aggs.extend(a.take_closed(now));
        }
        aggs.extend(a.take_all());
        assert_eq!(accounted(full, &aggs), n);
        let b = a.bites();
        assert!(b.bytes > 0 && b.queue > 0 && b.keys > 0, "{b:?}");
        assert!(aggs.iter().any(|g| g.overflow));
        // The byte budget holds: what was written in full fits the bucket.
        let seconds = 200_000 / 7 / 1000 + 1;
        assert!(full * 150 <= 20_000 + 10_000 * seconds as u64);
    }

    #[test]
    fn distinct_tokens_stay_distinct() {
        let mut a = FloodAccount::new(FloodPolicy {
            samples_per_key: 1,
            ..FloodPolicy::default()
        });
        for t in ["t1", "t2", "t3"] {
            let k = RefusalKey {
                token_id: Some(t),
                ..key("198.51.100.1", "not_issued")
            };
            assert_eq!(
                a.admit(&k, 100, true, 5_000, Sample::default),
                Admission::Full
            );
            assert_eq!(
                a.admit(&k, 100, true, 5_001, Sample::default),
                Admission::Counted
            );
        }
        let aggs = a.take_all();
        assert_eq!(aggs.len(), 3);
        assert!(aggs.iter().all(|g| g.count == 1 && g.token_id.is_some()));
    }

    #[test]
    fn an_overloaded_writer_folds_allowed_requests_keeping_their_token() {
        let mut a = FloodAccount::new(FloodPolicy::default());
        let k = RefusalKey {
            passed: true,
            client_ip: Some("198.51.100.7"),
            device: None,
            verdict: "ok",
            token_id: Some("t-alice"),
            examined: None,
        };
        for now in 1_000..1_010 {
            let sample = || Sample {
                subject: Some("alice".into()),
                data: vec!["orders".into()],
                ..Sample::default()
            };
            assert_eq!(a.fold(&k, now, sample), Admission::Counted);
        }
        // Refusals still get their samples afterwards.
        let r = key("198.51.100.7", "missing");
        assert_eq!(
            a.admit(&r, 10, true, 1_011, Sample::default),
            Admission::Full
        );
        let aggs = a.take_all();
        assert_eq!(aggs.len(), 1);
        let g = &aggs[0];
        assert!(g.passed && g.count == 10 && g.token_id.as_deref() == Some("t-alice"));
        assert_eq!(g.sample.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn a_clock_stepping_back_loses_nothing() {
        let mut a = FloodAccount::new(FloodPolicy {
            samples_per_key: 0,
            ..FloodPolicy::default()
        });
        let k = key("192.0.2.1", "missing");
        for now in [9_500, 7_000, 9_900] {
            a.admit(&k, 10, true, now, Sample::default);
        }
        let aggs = a.take_all();
        assert_eq!(aggs.iter().map(|g| g.count).sum::<u64>(), 3);
    }

    #[test]
    fn samples_describe_the_first_counted_request() {
        let mut a = FloodAccount::new(FloodPolicy {
            samples_per_key: 0,
            ..FloodPolicy::default()
        });
        let k = key("192.0.2.1", "missing");
        for p in ["/a", "/b"] {
            let sample = || Sample {
                path: p.into(),
                ..Sample::default()
            };
            assert_eq!(a.admit(&k, 10, true, 1_000, sample), Admission::Counted);
        }
        let aggs = a.take_all();
        assert_eq!(aggs[0].sample.path, "/a");
        assert_eq!(aggs[0].count, 2);
    }
}
