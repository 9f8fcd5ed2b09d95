//! Forged tokens already refused: a bounded negative cache.
//!
//! A registry miss whose signature verifies is asked of the ledger store
//! before the token is called forged. An attacker replaying one forged token
//! would make every request a database round trip; [`Misses`] remembers the
//! store's "never issued" answer per exact token (by digest) for a while, so
//! repeats are answered from memory. It is safe to remember: a token is
//! handed out only after its record is durable, so a token the store did not
//! know when it was presented was never handed out before that moment.
//!
//! Only `NotFound` answers belong here; `altered` and `unavailable` are never
//! cached. Memory is bounded: the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::digest::TokenDigest;

/// Remembered "never issued" answers.
pub struct Misses {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl_secs: i64,
}

struct Inner {
    /// Digest prefix → when it was learnt.
    at: HashMap<[u8; 16], i64>,
    order: VecDeque<([u8; 16], i64)>,
}

impl Misses {
    /// At most `capacity` tokens, each remembered for `ttl_secs`.
    pub fn new(capacity: usize, ttl_secs: i64) -> Misses {
        Misses {
            inner: Mutex::new(Inner {
                at: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            ttl_secs,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store said `digest` was never issued, within the last
    /// `ttl_secs` before `now`.
    pub fn known_forged(&self, digest: &TokenDigest, now: i64) -> bool {
        self.lock()
            .at
            .get(&digest.prefix())
            .is_some_and(|t| now - *t < self.ttl_secs)
    }

    /// Remembers that the store does not know `digest`.
    pub fn remember(&self, digest: &TokenDigest, now: i64) {
        let key = digest.prefix();
        let mut g = self.lock();
        g.at.insert(key, now);
        g.order.push_back((key, now));
        while g.order.len() > self.capacity
            || g.order
                .front()
                .is_some_and(|(_, t)| now - *t >= self.ttl_secs)
        {
            let Some((k, t)) = g.order.pop_front() else {
                break;
            };
            // A token learnt again later keeps its newer entry.
            if g.at.get(&k) == Some(&t) {
                g.at.remove(&k);
            }
        }
    }

    /// Tokens remembered.
    pub fn len(&self) -> usize {
        self.lock().at.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u32) -> TokenDigest {
        TokenDigest::of(format!("forged-{i}").as_bytes())
    }

    #[test]
    fn remembers_for_a_while_and_within_bounds() {
        let m = Misses::new(100, 60);
        assert!(!m.known_forged(&d(1), 1000));
        m.remember(&d(1), 1000);
        assert!(m.known_forged(&d(1), 1059));
        assert!(!m.known_forged(&d(1), 1060), "expired");
        assert!(!m.known_forged(&d(2), 1000), "only that token");
        for i in 0..1000 {
            m.remember(&d(i), 2000);
        }
        assert!(m.len() <= 100, "bounded: {}", m.len());
        assert!(m.known_forged(&d(999), 2000), "the newest stay");
        assert!(!m.known_forged(&d(0), 2000), "the oldest go");
        // Expired entries are dropped as new ones come in.
        m.remember(&d(5000), 3000);
        assert_eq!(m.len(), 1);
    }
}
