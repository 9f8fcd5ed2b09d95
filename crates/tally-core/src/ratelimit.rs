//! Per-client token buckets for expensive work: each registry miss costs a
//! signature verification, so a flood of forged or garbage tokens from one
//! client must not starve everyone else.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Token buckets keyed by client, refilled at `rate` per second up to `burst`.
pub struct RateLimiter<K> {
    rate_per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, (f64, i64)>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `rate_per_sec` on average and `burst` at once per
    /// key, remembering at most `max_keys` keys.
    pub fn new(rate_per_sec: f64, burst: f64, max_keys: usize) -> Self {
        RateLimiter {
            rate_per_sec: rate_per_sec.max(0.0),
            burst: burst.max(1.0),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now_ms`; false when its bucket is empty.
    pub fn allow(&self, key: &K, now_ms: i64) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !b.contains_key(key) && b.len() >= self.max_keys {
            // Forget keys whose buckets refilled: they owe nothing.
            let (rate, burst) = (self.rate_per_sec, self.burst);
            b.retain(|_, (tokens, last)| {
                let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
                *tokens + elapsed * rate < burst
            });
            if b.len() >= self.max_keys {
                // Still full of active clients: fail closed for newcomers.
                return false;
            }
        }
        let (tokens, last) = b.entry(key.clone()).or_insert((self.burst, now_ms));
        let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * self.rate_per_sec).min(self.burst);
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_per_key() {
        let l = RateLimiter::new(10.0, 5.0, 100);
        for _ in 0..5 {
            assert!(l.allow(&"a", 0));
        }
        assert!(!l.allow(&"a", 0));
        assert!(l.allow(&"b", 0), "another client is not affected");
        assert!(!l.allow(&"a", 50));
        assert!(l.allow(&"a", 100), "one token back after 100 ms at 10/s");
        assert!(!l.allow(&"a", 100));
        for _ in 0..5 {
            assert!(l.allow(&"a", 10_000));
        }
    }

    #[test]
    fn memory_is_bounded_and_fails_closed_when_full() {
        let l = RateLimiter::new(1.0, 2.0, 3);
        for k in 0..3 {
            assert!(l.allow(&k, 0));
        }
        assert!(!l.allow(&99, 0), "full of active clients");
        assert_eq!(l.len(), 3);
        // Once their buckets refill they are forgotten and room is made.
        assert!(l.allow(&99, 10_000));
        assert!(l.len() <= 3);
    }
}
