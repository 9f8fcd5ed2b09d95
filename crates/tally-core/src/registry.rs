//! The registry: the hot, in-memory index of every live (unexpired) issued token.
//!
//! Keyed by the first 128 bits of the SHA-256 of the exact token bytes
//! ([`TokenDigest::prefix`]). Each entry holds the expiry (unix seconds as `u32`,
//! good until 2106) and the token's [`TokenState`]: 21 bytes of payload per entry,
//! which keeps the index under 64 bytes per live token even right after the hash
//! table doubles (see BENCHMARKS.md).
//!
//! **Why 128 bits is enough.** An attacker who wants a forged token to hit an
//! entry must find token bytes whose SHA-256 begins with one of `N` live prefixes:
//! a second-preimage search costing about `2^128 / N` hashes (`2^108` for a
//! million live tokens). Collisions among legitimately issued tokens do not help
//! an attacker, and the registry is only ever filled from verified ledger records.
//!
//! The registry is sharded; every method takes `&self` and is safe to call from
//! many threads. It knows nothing about the clock: callers pass `now`.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::RwLock;

use crate::digest::TokenDigest;

const SHARDS: usize = 16;

/// The state of a live token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Issued and not revoked.
    Live,
    /// Revoked: refused with `revoked` until it expires.
    Revoked,
}

/// What the registry knows about one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `exp`, unix seconds (saturated to the `u32` range).
    pub expires_at: i64,
    /// Live or revoked.
    pub state: TokenState,
}

/// Packed entry: 4 bytes of big-endian expiry, 1 byte of state.
#[derive(Clone, Copy)]
struct Slot([u8; 5]);

impl Slot {
    fn new(expires_at: i64, state: TokenState) -> Slot {
        let exp = expires_at.clamp(0, u32::MAX as i64) as u32;
        let e = exp.to_be_bytes();
        let s = match state {
            TokenState::Live => 0,
            TokenState::Revoked => 1,
        };
        Slot([e[0], e[1], e[2], e[3], s])
    }

    fn expires_at(self) -> i64 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as i64
    }

    fn entry(self) -> RegistryEntry {
        RegistryEntry {
            expires_at: self.expires_at(),
            state: if self.0[4] == 0 {
                TokenState::Live
            } else {
                TokenState::Revoked
            },
        }
    }
}

type Shard = HashMap<[u8; 16], Slot, RandomState>;

/// The in-memory index of live tokens.
pub struct Registry {
    shards: Vec<RwLock<Shard>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(RandomState::new())))
                .collect(),
        }
    }

    fn shard(&self, key: &[u8; 16]) -> &RwLock<Shard> {
        // The key is a SHA-256 prefix; its last byte picks the shard (the map's
        // own hasher is keyed, so bucket choice inside a shard stays secret).
        &self.shards[(key[15] as usize) % SHARDS]
    }

    /// Adds a live token, or refreshes its expiry. A revoked token stays revoked.
    pub fn insert(&self, digest: &TokenDigest, expires_at: i64) {
        let key = digest.prefix();
        let mut shard = write(self.shard(&key));
        let state = match shard.get(&key) {
            Some(s) => s.entry().state,
            None => TokenState::Live,
        };
        shard.insert(key, Slot::new(expires_at, state));
    }

    /// Looks a token up by the digest of its exact bytes.
    pub fn lookup(&self, digest: &TokenDigest) -> Option<RegistryEntry> {
        let key = digest.prefix();
        read(self.shard(&key)).get(&key).map(|s| s.entry())
    }

    /// Marks a token revoked, remembering the revocation even if the token is
    /// not in the registry yet (in a fleet, a revocation can arrive before the
    /// record it revokes): a later [`Registry::insert`] keeps it revoked.
    /// Returns whether the token was already in the registry (a live token
    /// it now refuses); one write lock, no lookup before it.
    pub fn revoke_until(&self, digest: &TokenDigest, expires_at: i64) -> bool {
        let key = digest.prefix();
        let mut shard = write(self.shard(&key));
        let known = shard.get(&key).map(|s| s.expires_at());
        shard.insert(
            key,
            Slot::new(known.unwrap_or(expires_at), TokenState::Revoked),
        );
        known.is_some()
    }

    /// Removes every entry whose expiry is at or before `cutoff` (callers pass
    /// `now - leeway`). Returns how many were removed.
    pub fn evict_expired(&self, cutoff: i64) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = write(shard);
            let before = shard.len();
            shard.retain(|_, slot| slot.expires_at() > cutoff);
            removed += before - shard.len();
            if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
                shard.shrink_to_fit();
            }
        }
        removed
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// True when no token is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the tables, computed from their capacities and the
    /// hash table's layout (one control byte plus one slot per bucket).
    pub fn heap_bytes(&self) -> usize {
        const SLOT: usize = std::mem::size_of::<([u8; 16], Slot)>();
        self.shards
            .iter()
            .map(|s| {
                let cap = read(s).capacity();
                if cap == 0 {
                    return 0;
                }
                // hashbrown keeps load <= 7/8 over a power-of-two bucket count.
                let buckets = if cap < 8 {
                    (cap + 1).next_power_of_two()
                } else {
                    (cap * 8 / 7).next_power_of_two()
                };
                buckets * (SLOT + 1) + 16
            })
            .sum()
    }
}

// A poisoned lock means a thread panicked while holding it; the maps hold plain
// data with no invariant spanning an operation, so the data is still usable.
fn read(l: &RwLock<Shard>) -> std::sync::RwLockReadGuard<'_, Shard> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write(l: &RwLock<Shard>) -> std::sync::RwLockWriteGuard<'_, Shard> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_that_arrives_first_wins() {
        let r = Registry::new();
        let d = TokenDigest::of(b"issued on another node");
        r.revoke_until(&d, 2_000);
        r.insert(&d, 2_000);
        assert_eq!(r.lookup(&d).unwrap().state, TokenState::Revoked);
        let e = TokenDigest::of(b"already here");
        r.insert(&e, 3_000);
        r.revoke_until(&e, 9_999);
        let entry = r.lookup(&e).unwrap();
        assert_eq!(entry.state, TokenState::Revoked);
        assert_eq!(entry.expires_at, 3_000);
        assert_eq!(r.evict_expired(2_000), 1);
    }

    #[test]
    fn insert_lookup_revoke_evict() {
        let r = Registry::new();
        let a = TokenDigest::of(b"a");
        let b = TokenDigest::of(b"b");
        assert_eq!(r.lookup(&a), None);
        r.insert(&a, 100);
        r.insert(&b, 200);
        assert_eq!(
            r.lookup(&a),
            Some(RegistryEntry {
                expires_at: 100,
                state: TokenState::Live
            })
        );
        assert!(
            r.revoke_until(&a, 999),
            "a was known (and keeps its expiry)"
        );
        assert_eq!(r.lookup(&a).unwrap().expires_at, 100);
        let c = TokenDigest::of(b"c");
        assert!(!r.revoke_until(&c, 120), "c was not known yet");
        assert_eq!(r.lookup(&c).unwrap().state, TokenState::Revoked);
        assert_eq!(r.lookup(&a).unwrap().state, TokenState::Revoked);
        // Re-inserting (e.g. a rebuild) never un-revokes.
        r.insert(&a, 150);
        assert_eq!(r.lookup(&a).unwrap().state, TokenState::Revoked);
        assert_eq!(r.lookup(&a).unwrap().expires_at, 150);
        assert_eq!(r.len(), 3);
        assert_eq!(r.evict_expired(150), 2, "a and c");
        assert_eq!(r.lookup(&a), None);
        assert!(r.lookup(&b).is_some());
        assert_eq!(r.evict_expired(200), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn expiry_saturates() {
        let r = Registry::new();
        let a = TokenDigest::of(b"a");
        r.insert(&a, -5);
        assert_eq!(r.lookup(&a).unwrap().expires_at, 0);
        r.insert(&a, i64::MAX);
        assert_eq!(r.lookup(&a).unwrap().expires_at, u32::MAX as i64);
    }

    #[test]
    fn slot_is_packed() {
        assert_eq!(std::mem::size_of::<([u8; 16], Slot)>(), 21);
    }

    #[test]
    fn many_entries_spread_over_shards() {
        let r = Registry::new();
        for i in 0u32..10_000 {
            r.insert(&TokenDigest::of(&i.to_be_bytes()), 10);
        }
        assert_eq!(r.len(), 10_000);
        for i in 0u32..10_000 {
            assert!(r.lookup(&TokenDigest::of(&i.to_be_bytes())).is_some());
        }
        assert!(r.heap_bytes() >= 10_000 * 22);
    }
}
