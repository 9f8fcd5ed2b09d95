//! Login throttling with exponential backoff: pure, clock-free, bounded memory.
//!
//! A [`Throttle`] counts failed logins per key (for example `"user:alice"` and
//! `"ip:203.0.113.7"`). The first [`ThrottlePolicy::free_failures`] failures cost
//! nothing; each further one locks the key for a delay that doubles, from
//! [`ThrottlePolicy::base_delay_secs`] up to [`ThrottlePolicy::max_delay_secs`]. A key
//! that stays quiet for [`ThrottlePolicy::forget_after_secs`] (and is no longer locked)
//! is forgotten. The caller passes the time (unix seconds) to every call.
//!
//! A [`Guard`] combines three throttles and the [`KnownAddresses`] of each subject (a
//! user, or an API client) so that guessing is slowed down everywhere while a
//! stranger cannot lock the rightful owner out of a credential (a lock-out must not
//! become a denial of service):
//!
//! * per **(subject, address) pair**: tight (5 free failures): what one guesser at one
//!   address gets, and all a stranger elsewhere can do to the owner's own pair;
//! * per **address**: 50 free failures, since many subjects may share an address;
//! * per **subject**: 20 free failures, against a guesser spread over many addresses;
//!   it does not apply at an address from which the subject recently authenticated
//!   (with every factor), so the owner keeps working from there during such a guess.
//!
//! ```text
//! let attempt = Attempt::new("user:alice", "ip:203.0.113.7");
//! if let Err(retry_after) = guard.check(&attempt, now) { 429 + Retry-After }
//! check the password (the same work for an unknown subject)
//! on failure: guard.failure(&attempt, now)   // counts for all three keys
//! on success: guard.success(&attempt, now)   // clears the pair, remembers the address
//! ```
//!
//! A success clears neither the address key (others may share it) nor the subject
//! key: a success says nothing about a guesser elsewhere, and clearing it would hand
//! a distributed guesser a fresh allowance each time the owner logs in.
//!
//! **Memory bound.** At most [`ThrottlePolicy::max_keys`] keys are held. Keys longer
//! than 64 bytes are stored as their SHA-256, so one entry costs a few hundred bytes at
//! most. When the table is full, forgotten entries are dropped first, then the entry
//! that would be forgotten soonest (in practice: the least recently failed). This is
//! the unavoidable trade-off of a bounded table: an attacker able to produce
//! `max_keys` fresh failing keys faster than a victim key fails can push that victim
//! key out and reset its backoff. Every such failure costs the attacker a full password
//! check, and a key under active attack keeps failing and so stays recent.
//! [`KnownAddresses`] holds at most [`KnownPolicy::max_subjects`] subjects of at most
//! [`KnownPolicy::per_subject`] addresses each; only a successful authentication adds
//! one, so pushing a subject out takes that many other accounts' credentials.
//!
//! Every method takes `&self`; one mutex guards each table (login rates are bounded by
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

/// How the addresses a subject authenticated from are remembered.
/// [`KnownPolicy::default`]: the 4 most recent addresses per subject, each for 30 days
/// after its last success; at most 100 000 subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KnownPolicy {
    /// Addresses kept per subject (the most recent successes); `0` is treated as `1`.
    pub per_subject: usize,
    /// An address stays known this long after the subject's last success from it.
    pub remember_secs: u64,
    /// Most subjects held at once; `0` is treated as `1`.
    pub max_subjects: usize,
}

impl Default for KnownPolicy {
    fn default() -> KnownPolicy {
        KnownPolicy {
            per_subject: 4,
            remember_secs: 30 * 86_400,
            max_subjects: 100_000,
        }
    }
}

struct KnownEntry {
    /// `(address, last success)`, oldest first.
    addresses: Vec<(StoredKey, u64)>,
    /// When the last of them is no longer known.
    forget_at: u64,
    seq: u64,
}

#[derive(Default)]
struct KnownTable {
    subjects: HashMap<StoredKey, KnownEntry>,
    /// Eviction order: `(forget_at, seq)`, soonest first.
    order: BTreeMap<(u64, u64), StoredKey>,
    next_seq: u64,
}

impl KnownTable {
    fn forget_stale(&mut self, now: u64) -> usize {
        let mut dropped = 0;
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.subjects.remove(&key);
            dropped += 1;
        }
        dropped
    }
}

/// The addresses from which each subject recently authenticated; see the
/// [module docs](self).
pub struct KnownAddresses {
    policy: KnownPolicy,
    table: Mutex<KnownTable>,
}

impl std::fmt::Debug for KnownAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Subjects and addresses are never printed.
        f.debug_struct("KnownAddresses")
            .field("policy", &self.policy)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl KnownAddresses {
    /// An empty table.
    pub fn new(policy: KnownPolicy) -> KnownAddresses {
        KnownAddresses {
            policy,
            table: Mutex::new(KnownTable::default()),
        }
    }

    /// The policy this table applies.
    pub fn policy(&self) -> &KnownPolicy {
        &self.policy
    }

    /// After a complete authentication of `subject` from `address` at `now`.
    pub fn remember(&self, subject: &str, address: &str, now: u64) {
        let (subject, address) = (StoredKey::new(subject), StoredKey::new(address));
        let per_subject = self.policy.per_subject.max(1);
        let cap = self.policy.max_subjects.max(1);
        let remember = self.policy.remember_secs;
        let mut t = self.lock();
        t.forget_stale(now);
        let seq = t.next_seq;
        t.next_seq = t.next_seq.wrapping_add(1);
        let mut addresses = match t.subjects.remove(&subject) {
            Some(e) => {
                t.order.remove(&(e.forget_at, e.seq));
                e.addresses
            }
            None => {
                while t.subjects.len() >= cap {
                    match t.order.pop_first() {
                        Some((_, key)) => {
                            t.subjects.remove(&key);
                        }
                        None => break,
                    }
                }
                Vec::with_capacity(1)
            }
        };
        addresses.retain(|(a, at)| *a != address && at.saturating_add(remember) > now);
        let last = addresses.iter().map(|(_, at)| *at).max().unwrap_or(0);
        addresses.push((address, now));
        while addresses.len() > per_subject {
            addresses.remove(0);
        }
        let forget_at = last.max(now).saturating_add(remember);
        t.order.insert((forget_at, seq), subject.clone());
        t.subjects.insert(
            subject,
            KnownEntry {
                addresses,
                forget_at,
                seq,
            },
        );
    }

    /// Whether `subject` authenticated from `address` within the remembered time.
    pub fn is_known(&self, subject: &str, address: &str, now: u64) -> bool {
        let (subject, address) = (StoredKey::new(subject), StoredKey::new(address));
        let remember = self.policy.remember_secs;
        self.lock().subjects.get(&subject).is_some_and(|e| {
            e.addresses
                .iter()
                .any(|(a, at)| *a == address && at.saturating_add(remember) > now)
        })
    }

    /// Drops every subject none of whose addresses is known at `now`; returns how many.
    pub fn forget_stale(&self, now: u64) -> usize {
        self.lock().forget_stale(now)
    }

    /// Subjects currently held.
    pub fn len(&self) -> usize {
        self.lock().subjects.len()
    }

    /// Whether no subject is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // As for `Throttle::lock`: the table stays usable after a panic elsewhere.
    fn lock(&self) -> MutexGuard<'_, KnownTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The policies of a [`Guard`]. [`GuardPolicy::default`]: per pair 5 free failures,
/// per address 50, per subject 20 (each then 1 s doubling up to 15 minutes, forgotten
/// after an hour of quiet); known addresses as [`KnownPolicy::default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuardPolicy {
    /// Per (subject, address) pair.
    pub pair: ThrottlePolicy,
    /// Per address.
    pub address: ThrottlePolicy,
    /// Per subject, except at its known addresses.
    pub subject: ThrottlePolicy,
    /// Which addresses are known.
    pub known: KnownPolicy,
}

impl Default for GuardPolicy {
    fn default() -> GuardPolicy {
        GuardPolicy {
            pair: ThrottlePolicy::default(),
            address: ThrottlePolicy {
                free_failures: 50,
                ..ThrottlePolicy::default()
            },
            subject: ThrottlePolicy {
                free_failures: 20,
                ..ThrottlePolicy::default()
            },
            known: KnownPolicy::default(),
        }
    }
}

impl GuardPolicy {
    /// The longest quiet time after which any of the three keys is forgotten.
    pub fn forget_after_secs(&self) -> u64 {
        self.pair
            .forget_after_secs
            .max(self.address.forget_after_secs)
            .max(self.subject.forget_after_secs)
    }
}

/// One authentication attempt: who it claims to be, from where, and the key of
/// the two together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    subject: String,
    address: String,
    pair: String,
}

impl Attempt {
    /// `subject` names the credential with its kind (`"user:alice"`,
    /// `"client:billing"`), `address` the client address (`"ip:203.0.113.7"`).
    /// Unknown subjects are attempts like any other.
    pub fn new(subject: &str, address: &str) -> Attempt {
        // A subject is whatever a client typed: one longer than any real
        // name is kept as its digest, so the tables' bytes stay bounded.
        let subject = bounded_key(subject);
        let address = bounded_key(address);
        // Length-prefixed: no subject can be chosen to make another's pair key.
        let pair = format!("pair:{}:{subject}{address}", subject.len());
        Attempt {
            subject,
            address,
            pair,
        }
    }

    /// The subject's key.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The address's key.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The key of the (subject, address) pair.
    pub fn pair(&self) -> &str {
        &self.pair
    }
}

/// The longest key kept as it is; a longer one is kept as its SHA-256.
pub const MAX_KEY: usize = 128;

fn bounded_key(key: &str) -> String {
    if key.len() <= MAX_KEY {
        return key.to_string();
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("long:sha256:{hex}")
}

/// Three throttles and the known addresses; see the [module docs](self).
#[derive(Debug)]
pub struct Guard {
    policy: GuardPolicy,
    pair: Throttle,
    address: Throttle,
    subject: Throttle,
    known: KnownAddresses,
}

impl Guard {
    /// An empty guard.
    pub fn new(policy: GuardPolicy) -> Guard {
        Guard {
            policy,
            pair: Throttle::new(policy.pair),
            address: Throttle::new(policy.address),
            subject: Throttle::new(policy.subject),
            known: KnownAddresses::new(policy.known),
        }
    }

    /// The policies this guard applies.
    pub fn policy(&self) -> &GuardPolicy {
        &self.policy
    }

    /// Before checking a credential: `Err(retry_after_secs)` (at least 1) if the pair
    /// or the address is locked, or the subject is locked and `attempt` does not come
    /// from one of its known addresses; the longest remaining lock.
    pub fn check(&self, attempt: &Attempt, now: u64) -> Result<(), u64> {
        let pair = self.pair.check(&[&attempt.pair], now);
        let address = self.address.check(&[&attempt.address], now);
        let subject = if self.is_known(attempt, now) {
            Ok(())
        } else {
            self.subject.check(&[&attempt.subject], now)
        };
        let retry = [pair, address, subject]
            .into_iter()
            .filter_map(Result::err)
            .max();
        match retry {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// Whether the attempt comes from an address its subject is known at.
    pub fn is_known(&self, attempt: &Attempt, now: u64) -> bool {
        self.known.is_known(&attempt.subject, &attempt.address, now)
    }

    /// After a failure: counts it for the pair, the address and the subject (from
    /// a known address too: a guesser may share it).
    pub fn failure(&self, attempt: &Attempt, now: u64) {
        self.pair.failure(&[&attempt.pair], now);
        self.address.failure(&[&attempt.address], now);
        self.subject.failure(&[&attempt.subject], now);
    }

    /// After a complete authentication (every factor): the pair starts from zero and
    /// the address becomes known for the subject.
    pub fn success(&self, attempt: &Attempt, now: u64) {
        self.pair.success(&attempt.pair);
        self.known.remember(&attempt.subject, &attempt.address, now);
    }

    /// Drops everything forgotten at `now`; returns how many entries.
    pub fn forget_stale(&self, now: u64) -> usize {
        self.pair.forget_stale(now)
            + self.address.forget_stale(now)
            + self.subject.forget_stale(now)
            + self.known.forget_stale(now)
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

    fn guard() -> Guard {
        Guard::new(GuardPolicy::default())
    }

    /// Failures until `attempt` is refused at `now`; returns how many were counted.
    fn fail_until_locked(g: &Guard, attempt: &Attempt, now: u64) -> u32 {
        let mut n = 0;
        while g.check(attempt, now).is_ok() {
            g.failure(attempt, now);
            n += 1;
            assert!(n < 1_000, "never locked");
        }
        n
    }

    #[test]
    fn guard_pair_lock_is_all_a_stranger_gets() {
        let g = guard();
        let now = 1_000;
        let home = Attempt::new("user:alice", "ip:198.51.100.4");
        let stranger = Attempt::new("user:alice", "ip:203.0.113.7");
        // Six wrong passwords from elsewhere lock that pair (as the old per-user
        // lock did), not alice at home, even before she ever logged in there.
        assert_eq!(fail_until_locked(&g, &stranger, now), 6);
        assert_eq!(g.check(&stranger, now), Err(1));
        assert_eq!(g.check(&home, now), Ok(()));
        // Another subject from the stranger's address is not locked either.
        assert_eq!(
            g.check(&Attempt::new("user:bob", "ip:203.0.113.7"), now),
            Ok(())
        );
        // The stranger's backoff doubles as before.
        g.failure(&stranger, now + 1);
        assert_eq!(g.check(&stranger, now + 1), Err(2));
    }

    #[test]
    fn guard_address_lock_counts_every_subject() {
        let g = guard();
        let now = 1_000;
        // 50 subjects, one failure each, from one address: the 51st locks it.
        for i in 0..51 {
            let a = Attempt::new(&format!("user:u{i}"), "ip:192.0.2.1");
            assert_eq!(g.check(&a, now), Ok(()), "{i}");
            g.failure(&a, now);
        }
        let fresh = Attempt::new("user:someone-new", "ip:192.0.2.1");
        assert_eq!(g.check(&fresh, now), Err(1));
        assert_eq!(
            g.check(&Attempt::new("user:someone-new", "ip:192.0.2.2"), now),
            Ok(())
        );
    }

    #[test]
    fn guard_distributed_guessing_locks_the_subject_except_at_known_addresses() {
        let g = guard();
        let mut now = 10_000;
        let home = Attempt::new("user:alice", "ip:198.51.100.4");
        g.success(&home, now);
        // One guess from each of many addresses: no pair or address lock builds
        // up, the subject's does after 20 free failures.
        let from = |i: u32| Attempt::new("user:alice", &format!("ip:10.0.{}.{}", i / 256, i % 256));
        for i in 0..20 {
            assert_eq!(g.check(&from(i), now), Ok(()), "{i}");
            g.failure(&from(i), now);
        }
        assert_eq!(g.check(&from(20), now), Ok(()));
        g.failure(&from(20), now);
        assert_eq!(g.check(&from(21), now), Err(1));
        assert_eq!(g.check(&from(0), now), Err(1));
        // Alice at home is not locked out; a new address of hers would be.
        assert_eq!(g.check(&home, now), Ok(()));
        // The subject's backoff doubles with each failure that gets through.
        for expected in [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900] {
            now += 1_000;
            let a = from(1_000 + expected as u32);
            assert_eq!(g.check(&a, now), Ok(()));
            g.failure(&a, now);
            assert_eq!(g.check(&from(5_000), now), Err(expected));
            assert_eq!(g.check(&home, now), Ok(()), "home at {expected}");
        }
        // Alice's own success at home clears neither the subject's count nor its lock.
        g.success(&home, now);
        assert_eq!(g.check(&from(5_000), now), Err(900));
        // Failures from her known address count against the subject too (a
        // guesser may share it), and lock the home pair after five free ones.
        assert_eq!(fail_until_locked(&g, &home, now), 6);
        assert_eq!(g.check(&home, now), Err(1));
    }

    #[test]
    fn guard_success_clears_the_pair_only() {
        let g = guard();
        let now = 1_000;
        let home = Attempt::new("user:alice", "ip:198.51.100.4");
        for _ in 0..5 {
            g.failure(&home, now);
        }
        g.success(&home, now);
        // Five free failures again for the pair…
        for _ in 0..5 {
            assert_eq!(g.check(&home, now), Ok(()));
            g.failure(&home, now);
        }
        assert_eq!(g.check(&home, now), Ok(()));
        // …while the subject has counted all ten: ten more from elsewhere lock it.
        for i in 0..11 {
            g.failure(&Attempt::new("user:alice", &format!("ip:10.1.0.{i}")), now);
        }
        assert_eq!(
            g.check(&Attempt::new("user:alice", "ip:10.9.9.9"), now),
            Err(1)
        );
        assert_eq!(g.check(&home, now), Ok(()));
    }

    #[test]
    fn guard_unknown_subjects_are_throttled_like_known_ones() {
        let g = guard();
        let now = 1_000;
        // Alice exists and logged in somewhere; ghost does not exist. From an
        // address neither ever used, the answers are the same.
        g.success(&Attempt::new("user:alice", "ip:198.51.100.4"), now);
        for (subject, address) in [
            ("user:alice", "ip:203.0.113.7"),
            ("user:ghost", "ip:203.0.113.8"),
        ] {
            let a = Attempt::new(subject, address);
            assert_eq!(fail_until_locked(&g, &a, now), 6, "{subject}");
            assert_eq!(g.check(&a, now), Err(1));
        }
        for (subject, n) in [("user:alice", 0u32), ("user:ghost", 0u32)] {
            let mut locked_after = n;
            for i in 0..40u32 {
                let a = Attempt::new(subject, &format!("ip:10.2.{i}.1"));
                if g.check(&a, now).is_err() {
                    break;
                }
                g.failure(&a, now);
                locked_after += 1;
            }
            // 20 free in all, six of them spent above: fifteen more get through.
            assert_eq!(locked_after, 15, "{subject}");
        }
    }

    #[test]
    fn guard_known_addresses_expire() {
        let g = Guard::new(GuardPolicy {
            known: KnownPolicy {
                remember_secs: 100,
                ..KnownPolicy::default()
            },
            subject: ThrottlePolicy {
                free_failures: 0,
                max_delay_secs: 1_000_000,
                forget_after_secs: 1_000_000,
                ..ThrottlePolicy::default()
            },
            ..GuardPolicy::default()
        });
        let home = Attempt::new("user:alice", "ip:198.51.100.4");
        g.success(&home, 0);
        for i in 0..20u64 {
            g.failure(&Attempt::new("user:alice", &format!("ip:10.3.0.{i}")), 0);
        }
        assert!(
            g.check(&Attempt::new("user:alice", "ip:10.3.1.1"), 0)
                .is_err()
        );
        assert_eq!(g.check(&home, 99), Ok(()));
        assert!(g.is_known(&home, 99));
        // A hundred seconds after her last success the address is a stranger's.
        assert!(!g.is_known(&home, 100));
        assert!(g.check(&home, 100).is_err());
        assert_eq!(g.forget_stale(100), 1, "the known subject");
    }

    #[test]
    fn pair_keys_cannot_be_chosen_to_collide() {
        let a = Attempt::new("user:x", "ip:1");
        let b = Attempt::new("user:xi", "p:1");
        assert_ne!(a.pair(), b.pair());
        assert_eq!(a.subject(), "user:x");
        assert_eq!(a.address(), "ip:1");
        assert_eq!(a, Attempt::new("user:x", "ip:1"));
    }

    #[test]
    fn known_addresses_are_bounded() {
        let k = KnownAddresses::new(KnownPolicy {
            per_subject: 3,
            remember_secs: 1_000,
            max_subjects: 2,
        });
        // The most recent three addresses of a subject are kept.
        for i in 0..5u64 {
            k.remember("user:a", &format!("ip:{i}"), 10 + i);
        }
        let known: Vec<u64> = (0..5)
            .filter(|i| k.is_known("user:a", &format!("ip:{i}"), 20))
            .collect();
        assert_eq!(known, [2, 3, 4]);
        // A success again from an address moves it to the front.
        k.remember("user:a", "ip:2", 30);
        k.remember("user:a", "ip:5", 31);
        assert!(k.is_known("user:a", "ip:2", 31));
        assert!(!k.is_known("user:a", "ip:3", 31));
        // Two subjects at most: the one whose last success is oldest goes.
        k.remember("user:b", "ip:0", 40);
        k.remember("user:c", "ip:0", 50);
        assert_eq!(k.len(), 2);
        assert!(!k.is_known("user:a", "ip:5", 50));
        assert!(k.is_known("user:b", "ip:0", 50));
        assert!(k.is_known("user:c", "ip:0", 50));
        // Not another subject's address, nor a subject's address for another.
        assert!(!k.is_known("user:b", "ip:1", 50));
        assert!(!k.is_known("user:d", "ip:0", 50));
        // Long keys are hashed, and still told apart.
        let long = format!("user:{}", "l".repeat(500));
        k.remember(&long, "ip:9", 60);
        assert!(k.is_known(&long, "ip:9", 60));
        assert!(!k.is_known(&format!("{long}x"), "ip:9", 60));
        // Everything goes once its time is up.
        assert_eq!(k.forget_stale(1_059), 1);
        assert_eq!(k.forget_stale(1_060), 1);
        assert!(k.is_empty());
        // A zero policy still remembers the latest success.
        let tiny = KnownAddresses::new(KnownPolicy {
            per_subject: 0,
            remember_secs: 10,
            max_subjects: 0,
        });
        tiny.remember("user:a", "ip:1", 0);
        tiny.remember("user:a", "ip:2", 0);
        tiny.remember("user:b", "ip:3", 0);
        assert_eq!(tiny.len(), 1);
        assert!(tiny.is_known("user:b", "ip:3", 9));
        assert!(!tiny.is_known("user:a", "ip:2", 9));
        assert!(!format!("{tiny:?}").contains("user:b"));
        assert!(!format!("{:?}", guard()).contains("ip:"));
    }

    /// Many subjects, each with a successful login and a flood of failures from
    /// random addresses: memory stays bounded in every table.
    #[test]
    fn guard_memory_is_bounded() {
        let policy = GuardPolicy {
            pair: ThrottlePolicy {
                max_keys: 500,
                ..ThrottlePolicy::default()
            },
            address: ThrottlePolicy {
                max_keys: 500,
                free_failures: 50,
                ..ThrottlePolicy::default()
            },
            subject: ThrottlePolicy {
                max_keys: 500,
                free_failures: 20,
                ..ThrottlePolicy::default()
            },
            known: KnownPolicy {
                max_subjects: 100,
                per_subject: 2,
                ..KnownPolicy::default()
            },
        };
        let g = Guard::new(policy);
        for i in 0..20_000u64 {
            let a = Attempt::new(&format!("user:u{}", i % 700), &format!("ip:{i}"));
            g.failure(&a, 1_000 + i / 100);
            if i % 3 == 0 {
                g.success(&a, 1_000 + i / 100);
            }
        }
        assert!(g.pair.len() <= 500);
        assert!(g.address.len() <= 500);
        assert!(g.subject.len() <= 500);
        assert!(g.known.len() <= 100);
        g.forget_stale(1_000 + 200 + 31 * 86_400);
        assert!(g.pair.is_empty() && g.address.is_empty() && g.subject.is_empty());
        assert!(g.known.is_empty());
    }

    #[test]
    fn keys_are_bounded_whatever_a_client_types() {
        let long = "x".repeat(100_000);
        let a = Attempt::new(&format!("user:{long}"), "ip:192.0.2.1");
        assert!(a.subject().len() <= MAX_KEY && a.pair().len() < 3 * MAX_KEY);
        let b = Attempt::new(&format!("user:{long}y"), "ip:192.0.2.1");
        assert_ne!(a.subject(), b.subject());
        let short = Attempt::new("user:alice", "ip:192.0.2.1");
        assert_eq!(short.subject(), "user:alice");
    }
}
