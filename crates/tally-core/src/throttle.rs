//! Login throttling with exponential backoff: pure, clock-free, bounded memory.
//!
//! A [`Throttle`] counts failed logins per key (for example `"user:alice"` and
//! `"ip:203.0.113.7"`). The first [`ThrottlePolicy::free_failures`] failures cost
//! nothing; each further one locks the key for a delay that doubles, from
//! [`ThrottlePolicy::base_delay_secs`] up to [`ThrottlePolicy::max_delay_secs`]. A key
//! that stays quiet for [`ThrottlePolicy::forget_after_secs`] (and is no longer locked)
//! is forgotten. The caller passes the time (unix seconds) to every call.
//!
//! ```text
//! if let Err(retry_after) = throttle.check(&[user_key, ip_key], now) { 429 + Retry-After }
//! check the password
//! on failure: throttle.failure(&[user_key, ip_key], now)
//! on success: throttle.success(user_key)      // never the IP key
//! ```
//!
//! **Memory bound.** At most [`ThrottlePolicy::max_keys`] keys are held. Keys longer
//! than 64 bytes are stored as their SHA-256, so one entry costs a few hundred bytes at
//! most. When the table is full, forgotten entries are dropped first, then the entry
//! that would be forgotten soonest (in practice: the least recently failed). This is
//! the unavoidable trade-off of a bounded table: an attacker able to produce
//! `max_keys` fresh failing keys faster than a victim key fails can push that victim
//! key out and reset its backoff. Every such failure costs the attacker a full password
//! check, and a key under active attack keeps failing and so stays recent.
//!
//! Every method takes `&self`; one mutex guards the table (login rates are bounded by
//! password hashing, so contention is not a concern).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use aws_lc_rs::digest;

/// Keys up to this many bytes are stored as given; longer ones as their SHA-256.
const MAX_PLAIN_KEY_LEN: usize = 64;

/// Throttling parameters. [`ThrottlePolicy::default`]: 5 free failures, then 1 s, 2 s,
/// 4 s, … up to 15 minutes; forgotten after an hour of quiet; at most 100 000 keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThrottlePolicy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Lock after the first failure beyond the free ones, in seconds; doubles with
    /// every further failure. `0` disables locking.
    pub base_delay_secs: u64,
    /// Longest lock, in seconds.
    pub max_delay_secs: u64,
    /// A key with no failure for this long, and no longer locked, starts from zero
    /// again. `0` forgets every failure at once (no backoff ever builds up).
    pub forget_after_secs: u64,
    /// Most keys held at once; `0` is treated as `1`.
    pub max_keys: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 5,
            base_delay_secs: 1,
            max_delay_secs: 900,
            forget_after_secs: 3600,
            max_keys: 100_000,
        }
    }
}

impl ThrottlePolicy {
    /// The lock that follows the `failures`-th consecutive failure, in seconds:
    /// `0` up to `free_failures`, then `base · 2^(failures − free_failures − 1)`,
    /// capped at `max_delay_secs`.
    pub fn delay_after(&self, failures: u32) -> u64 {
        let Some(beyond) = failures.checked_sub(self.free_failures) else {
            return 0;
        };
        let Some(exponent) = beyond.checked_sub(1) else {
            return 0;
        };
        let delay = match 1u64.checked_shl(exponent) {
            Some(factor) => self.base_delay_secs.saturating_mul(factor),
            // 2^exponent does not fit in 64 bits: saturate (unless there is no delay).
            None if self.base_delay_secs == 0 => 0,
            None => u64::MAX,
        };
        delay.min(self.max_delay_secs)
    }
}

/// A key as stored: short keys verbatim, long keys by digest (the two never collide).
#[derive(Clone, PartialEq, Eq, Hash)]
enum StoredKey {
    Plain(Box<str>),
    Hashed([u8; 32]),
}

impl StoredKey {
    fn new(key: &str) -> StoredKey {
        if key.len() <= MAX_PLAIN_KEY_LEN {
            return StoredKey::Plain(key.into());
        }
        let d = digest::digest(&digest::SHA256, key.as_bytes());
        let mut out = [0u8; 32];
        // SHA-256 output is 32 bytes; `zip` keeps this panic-free regardless.
        for (o, b) in out.iter_mut().zip(d.as_ref()) {
            *o = *b;
        }
        StoredKey::Hashed(out)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Consecutive failures since the key was last forgotten or cleared.
    failures: u32,
    /// Refuse attempts while `now < locked_until`.
    locked_until: u64,
    /// Forget the entry once `now >= forget_at` (at or after both the lock's end and
    /// `forget_after_secs` past the last failure).
    forget_at: u64,
    /// Tie-breaker in the eviction order.
    seq: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<StoredKey, Entry>,
    /// Eviction order: `(forget_at, seq)` of every entry, soonest first.
    order: BTreeMap<(u64, u64), StoredKey>,
    next_seq: u64,
}

impl Table {
    fn remove(&mut self, key: &StoredKey) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&(e.forget_at, e.seq));
        }
    }

    /// Drops every entry forgotten at `now`; returns how many.
    fn forget_stale(&mut self, now: u64) -> usize {
        let mut dropped = 0;
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
            dropped += 1;
        }
        dropped
    }

    /// Drops the entry that would be forgotten soonest.
    fn evict_one(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, key)) => {
                self.entries.remove(&key);
                true
            }
            None => false,
        }
    }

    fn record_failure(&mut self, key: StoredKey, now: u64, policy: &ThrottlePolicy, cap: usize) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let previous = match self.entries.get(&key) {
            Some(e) => {
                let e = *e;
                self.order.remove(&(e.forget_at, e.seq));
                Some(e)
            }
            None => {
                while self.entries.len() >= cap {
                    if !self.evict_one() {
                        break;
                    }
                }
                None
            }
        };
        let (failures, locked_until, forget_at) = match previous {
            // A forgotten entry not yet dropped starts from zero.
            Some(e) if now < e.forget_at => (e.failures, e.locked_until, e.forget_at),
            _ => (0, 0, 0),
        };
        let failures = failures.saturating_add(1);
        let delay = policy.delay_after(failures);
        let locked_until = if delay > 0 {
            locked_until.max(now.saturating_add(delay))
        } else {
            locked_until
        };
        let forget_at = forget_at
            .max(now.saturating_add(policy.forget_after_secs))
            .max(locked_until);
        self.entries.insert(
            key.clone(),
            Entry {
                failures,
                locked_until,
                forget_at,
                seq,
            },
        );
        self.order.insert((forget_at, seq), key);
    }
}

/// Per-key failure counting with exponential backoff; see the [module docs](self).
pub struct Throttle {
    policy: ThrottlePolicy,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are user names and addresses: never printed.
        f.debug_struct("Throttle")
            .field("policy", &self.policy)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// An empty throttle.
    pub fn new(policy: ThrottlePolicy) -> Throttle {
        Throttle {
            policy,
            table: Mutex::new(Table::default()),
        }
    }

    /// The policy this throttle applies.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Before checking a password: `Err(retry_after_secs)` (at least 1) if any of
    /// `keys` is locked at `now`, with the longest remaining lock.
    pub fn check(&self, keys: &[&str], now: u64) -> Result<(), u64> {
        let table = self.lock();
        let mut retry_after = 0;
        for key in keys {
            if let Some(e) = table.entries.get(&StoredKey::new(key)) {
                retry_after = retry_after.max(e.locked_until.saturating_sub(now));
            }
        }
        if retry_after > 0 {
            Err(retry_after)
        } else {
            Ok(())
        }
    }

    /// After a failure: records it once for every distinct key in `keys`; the lock
    /// doubles per failure beyond the free ones, capped at `max_delay_secs`. A lock
    /// never shortens an existing one.
    pub fn failure(&self, keys: &[&str], now: u64) {
        let cap = self.policy.max_keys.max(1);
        let mut stored: Vec<StoredKey> = Vec::with_capacity(keys.len());
        for key in keys {
            let key = StoredKey::new(key);
            if !stored.contains(&key) {
                stored.push(key);
            }
        }
        let mut table = self.lock();
        table.forget_stale(now);
        for key in stored {
            table.record_failure(key, now, &self.policy, cap);
        }
    }

    /// After a success: forgets `key`. Pass the user key only, never a shared key such
    /// as the client address, which an attacker might share with the real user.
    pub fn success(&self, key: &str) {
        self.lock().remove(&StoredKey::new(key));
    }

    /// Drops every entry forgotten at `now`; returns how many. Optional: entries are
    /// also dropped as new failures arrive.
    pub fn forget_stale(&self, now: u64) -> usize {
        self.lock().forget_stale(now)
    }

    /// Keys currently held (including forgotten ones not yet dropped).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned mutex means a thread panicked while holding it. No code here panics
    // with the lock held, and the table holds plain counters, so the data stays usable:
    // failing closed (refusing every login) would turn a bug into an outage.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy::default()
    }

    #[test]
    fn delay_schedule() {
        let p = policy();
        let delays: Vec<u64> = (0..=16).map(|n| p.delay_after(n)).collect();
        assert_eq!(
            delays,
            [0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900]
        );
        assert_eq!(p.delay_after(70), 900);
        assert_eq!(p.delay_after(u32::MAX), 900);
        let no_cap = ThrottlePolicy {
            max_delay_secs: u64::MAX,
            base_delay_secs: 3,
            free_failures: 0,
            ..p
        };
        assert_eq!(no_cap.delay_after(1), 3);
        assert_eq!(no_cap.delay_after(2), 6);
        assert_eq!(no_cap.delay_after(64), u64::MAX);
        assert_eq!(no_cap.delay_after(u32::MAX), u64::MAX);
        let off = ThrottlePolicy {
            base_delay_secs: 0,
            ..no_cap
        };
        assert_eq!(off.delay_after(1), 0);
        assert_eq!(off.delay_after(u32::MAX), 0);
    }

    #[test]
    fn backoff_sequence() {
        let t = Throttle::new(policy());
        let keys = ["user:alice", "ip:203.0.113.7"];
        let mut now = 1_000;
        for _ in 0..5 {
            assert_eq!(t.check(&keys, now), Ok(()));
            t.failure(&keys, now);
        }
        // Each failure lands when the previous lock has just expired.
        for expected in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900] {
            assert_eq!(t.check(&keys, now), Ok(()));
            t.failure(&keys, now);
            assert_eq!(t.check(&keys, now), Err(expected));
            assert_eq!(t.check(&["user:alice"], now), Err(expected));
            assert_eq!(t.check(&["ip:203.0.113.7"], now), Err(expected));
            assert_eq!(t.check(&["user:bob"], now), Ok(()));
            assert_eq!(t.check(&keys, now + expected - 1), Err(1));
            now += expected;
        }
        assert_eq!(t.check(&keys, now), Ok(()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn retry_after_is_the_longest_lock() {
        let t = Throttle::new(ThrottlePolicy {
            free_failures: 0,
            ..policy()
        });
        t.failure(&["ip:a"], 0); // 1 s
        t.failure(&["ip:a", "user:x"], 0); // ip: 2 s, user: 1 s
        t.failure(&["ip:a"], 0); // 4 s
        assert_eq!(t.check(&["user:x"], 0), Err(1));
        assert_eq!(t.check(&["user:x", "ip:a"], 0), Err(4));
        assert_eq!(t.check(&["user:x", "ip:a"], 2), Err(2));
        assert_eq!(t.check(&[], 0), Ok(()));
        // Duplicate keys in one call count once.
        t.failure(&["user:y", "user:y", "user:y"], 0);
        assert_eq!(t.check(&["user:y"], 0), Err(1));
    }

    #[test]
    fn lock_never_shortens() {
        let t = Throttle::new(ThrottlePolicy {
            free_failures: 0,
            ..policy()
        });
        for _ in 0..11 {
            t.failure(&["user:a"], 100);
        }
        assert_eq!(t.check(&["user:a"], 100), Err(900));
        // A failure reported with an earlier clock (another thread) does not shorten it.
        t.failure(&["user:a"], 50);
        assert_eq!(t.check(&["user:a"], 100), Err(900));
        t.failure(&["user:a"], 200);
        assert_eq!(t.check(&["user:a"], 100), Err(1000));
    }

    #[test]
    fn forgets_after_quiet_time() {
        let p = policy();
        let t = Throttle::new(p);
        for _ in 0..7 {
            t.failure(&["user:a"], 0);
        }
        assert_eq!(t.check(&["user:a"], 0), Err(2));
        // Still remembered just before the quiet time ends: the next failure doubles.
        t.failure(&["user:a"], 3599);
        assert_eq!(t.check(&["user:a"], 3599), Err(4));
        // Quiet for an hour after the last failure: the count restarts from zero.
        let later = 3599 + 3600;
        assert_eq!(t.len(), 1);
        for _ in 0..5 {
            t.failure(&["user:a"], later);
        }
        assert_eq!(t.check(&["user:a"], later), Ok(()));
        t.failure(&["user:a"], later);
        assert_eq!(t.check(&["user:a"], later), Err(1));

        // forget_stale drops exactly the entries that are due.
        t.failure(&["ip:b"], later + 10);
        assert_eq!(t.len(), 2);
        assert_eq!(t.forget_stale(later + 3599), 0);
        assert_eq!(t.forget_stale(later + 3600), 1);
        assert_eq!(t.forget_stale(later + 3610), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn never_forgotten_while_locked() {
        // Quiet time shorter than the lock: the lock still runs out in full.
        let t = Throttle::new(ThrottlePolicy {
            free_failures: 0,
            base_delay_secs: 100,
            max_delay_secs: 1000,
            forget_after_secs: 10,
            max_keys: 10,
        });
        t.failure(&["user:a"], 0);
        t.failure(&["user:a"], 0);
        assert_eq!(t.check(&["user:a"], 0), Err(200));
        assert_eq!(t.forget_stale(150), 0);
        t.failure(&["user:a"], 150); // still counted: third failure
        assert_eq!(t.check(&["user:a"], 150), Err(400));
        assert_eq!(t.forget_stale(549), 0);
        assert_eq!(t.forget_stale(550), 1);
        assert_eq!(t.check(&["user:a"], 550), Ok(()));
    }

    #[test]
    fn success_clears_only_the_given_key() {
        let t = Throttle::new(policy());
        let keys = ["user:alice", "ip:198.51.100.1"];
        for _ in 0..6 {
            t.failure(&keys, 0);
        }
        assert_eq!(t.check(&keys, 0), Err(1));
        t.success("user:alice");
        assert_eq!(t.check(&["user:alice"], 0), Ok(()));
        assert_eq!(t.check(&keys, 0), Err(1)); // the IP key is still locked
        assert_eq!(t.len(), 1);
        // Alice starts from zero: five free failures again.
        for _ in 0..5 {
            t.failure(&["user:alice"], 10);
        }
        assert_eq!(t.check(&["user:alice"], 10), Ok(()));
        t.success("user:nobody");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn long_keys_are_hashed_and_distinct() {
        let t = Throttle::new(ThrottlePolicy {
            free_failures: 0,
            ..policy()
        });
        let long_a = format!("user:{}", "a".repeat(10_000));
        let long_b = format!("user:{}b", "a".repeat(9_999));
        t.failure(&[&long_a], 0);
        assert_eq!(t.check(&[&long_a], 0), Err(1));
        assert_eq!(t.check(&[&long_b], 0), Ok(()));
        let exact = "k".repeat(MAX_PLAIN_KEY_LEN);
        let over = "k".repeat(MAX_PLAIN_KEY_LEN + 1);
        t.failure(&[&exact], 0);
        assert_eq!(t.check(&[&over], 0), Ok(()));
        assert_eq!(t.check(&[&exact], 0), Err(1));
        t.success(&long_a);
        assert_eq!(t.check(&[&long_a], 0), Ok(()));
        assert_eq!(t.check(&[""], 0), Ok(()));
    }

    /// A flood of failures from random addresses never holds more than `max_keys`
    /// entries, and a key that keeps failing stays locked throughout.
    #[test]
    fn memory_is_bounded_under_a_flood() {
        let max_keys = 1_000;
        let t = Throttle::new(ThrottlePolicy {
            max_keys,
            ..policy()
        });
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            // xorshift64: deterministic, good enough to spray addresses.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..50_000u64 {
            let r = next();
            let ip = format!(
                "ip:{}.{}.{}.{}",
                r >> 56,
                (r >> 48) & 255,
                (r >> 40) & 255,
                r & 255
            );
            let now = 1_000 + i / 100;
            t.failure(&["user:victim", &ip], now);
            assert!(t.len() <= max_keys);
            if i >= 5 {
                assert!(
                    t.check(&["user:victim"], now).is_err(),
                    "victim unlocked at {i}"
                );
            }
        }
        assert_eq!(t.len(), max_keys);
        // Random keys of every length, including long ones that are hashed.
        for i in 0..5_000usize {
            let key = "z".repeat(next() as usize % 200) + &i.to_string();
            t.failure(&[&key], 2_000);
            assert!(t.len() <= max_keys);
        }
        // Once everything is quiet, everything is forgotten.
        assert_eq!(t.forget_stale(2_000 + 3_600), max_keys);
        assert!(t.is_empty());

        // A zero bound still keeps (and throttles) the most recent key.
        let tiny = Throttle::new(ThrottlePolicy {
            max_keys: 0,
            free_failures: 0,
            ..policy()
        });
        tiny.failure(&["user:a"], 0);
        tiny.failure(&["user:b"], 0);
        assert_eq!(tiny.len(), 1);
        assert_eq!(tiny.check(&["user:b"], 0), Err(1));
    }

    #[test]
    fn eviction_prefers_stale_then_oldest() {
        let t = Throttle::new(ThrottlePolicy {
            max_keys: 3,
            free_failures: 0,
            ..policy()
        });
        t.failure(&["k1"], 0);
        t.failure(&["k2"], 10);
        t.failure(&["k3"], 20);
        t.failure(&["k1"], 30); // k1 is now the most recent
        t.failure(&["k4"], 40); // evicts k2, the least recently failed
        assert_eq!(t.len(), 3);
        assert_eq!(t.check(&["k1"], 30), Err(2));
        let mut keys: Vec<&str> = ["k1", "k2", "k3", "k4"]
            .into_iter()
            .filter(|k| t.lock().entries.contains_key(&StoredKey::new(k)))
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["k1", "k3", "k4"]);
    }

    #[test]
    fn concurrent_smoke() {
        let t = Arc::new(Throttle::new(ThrottlePolicy {
            free_failures: 1_000_000,
            max_keys: 100_000,
            ..policy()
        }));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        let own = format!("ip:{n}-{i}");
                        t.failure(&["user:shared", &own], 100 + i % 7);
                        assert_eq!(t.check(&["user:shared", &own], 100), Ok(()));
                        if i % 10 == 0 {
                            t.success(&own);
                        }
                        assert!(t.len() <= 100_000);
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        let shared = t
            .lock()
            .entries
            .get(&StoredKey::new("user:shared"))
            .copied();
        assert_eq!(shared.map(|e| e.failures), Some(8 * 2_000));
        assert_eq!(t.len(), 1 + 8 * 2_000 - 8 * 200);
        let table = t.lock();
        assert_eq!(table.order.len(), table.entries.len());
    }

    #[test]
    fn poisoned_lock_is_recovered() {
        let t = Arc::new(Throttle::new(ThrottlePolicy {
            free_failures: 0,
            ..policy()
        }));
        t.failure(&["user:a"], 0);
        let t2 = Arc::clone(&t);
        let _ = std::thread::spawn(move || {
            let _guard = t2.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(t.table.is_poisoned());
        assert_eq!(t.check(&["user:a"], 0), Err(1));
        t.failure(&["user:a"], 0);
        assert_eq!(t.check(&["user:a"], 0), Err(2));
        assert!(!format!("{t:?}").contains("user:a"));
    }
}
