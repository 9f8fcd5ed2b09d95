//! Distinct counting with bounded memory: how many different subjects (customer
//! accounts) has one actor (client IP, device, token, signing key) touched lately?
//!
//! * [`subject_hash`] maps a subject identifier to a stable 64-bit hash;
//! * [`DistinctSketch`] counts distinct hashes: exactly up to [`EXACT_LIMIT`], then as a
//!   HyperLogLog of 2^[`PRECISION`] one-byte registers (2 KiB). Sketches merge (the
//!   merge of two sketches is the sketch of the union);
//! * [`WindowedDistinct`] keeps one count per actor over a sliding time window, for at
//!   most `max_actors` actors, evicting the least recently observed one when full.
//!
//! ```
//! use tally_incident::sketch::{WindowedDistinct, subject_hash};
//! // One hour in six 10-minute slices, at most a million actors.
//! let mut w = WindowedDistinct::new(3600, 6, 1_000_000);
//! let now = 1_700_000_000;
//! for account in 0..100 {
//!     w.observe(&"203.0.113.7", subject_hash(&format!("acct-{account}")), now);
//! }
//! assert_eq!(w.observe(&"203.0.113.7", subject_hash("acct-5"), now + 60), 100);
//! assert_eq!(w.estimate(&"203.0.113.7", now + 3600), 0, "all of it slid out of the window");
//! ```
//!
//! **Accuracy.** Up to [`EXACT_LIMIT`] (32) distinct hashes, counts are exact. Beyond,
//! the relative standard error is `1.04 / sqrt(2048) ≈ 2.3 %` at every cardinality
//! (about 95 % of estimates within ±4.6 %, 99.7 % within ±7 %). Registers are read
//! with Ertl's improved estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017, algorithm 6): it agrees with linear counting where
//! few registers are set and with the classic HyperLogLog estimate where many are,
//! without the bias bump of the classic switch-over around `2.5 × 2048` and without
//! empirical bias tables. With 64-bit hashes no large-range correction is needed.
//! The tests check the error at 10 000, 100 000 and 1 000 000 distinct and the
//! bias over a sweep, and cross-check against linear counting and classic
//! HyperLogLog.
//!
//! **Window.** Time (unix seconds) is always a parameter. The window is cut into
//! `slices` slices of `window_secs / slices` seconds, numbered `now.div_euclid(slice)`.
//! A subject touched at `t` counts at `now` while its slice is one of the `slices`
//! most recent, that is for at least `window − window/slices` and at most `window`
//! seconds. Observations stamped later than `now` (clock skew between callers) count.
//!
//! **Memory.** An actor that has touched one subject costs one `(hash, slice)` pair
//! inline and no allocation of its own; up to 32 subjects are a list of such pairs;
//! only beyond that does the actor get one [`DistinctSketch`] per slice (each exact
//! until it holds 32 hashes, then 2 KiB). A heavy actor therefore costs at most about
//! `slices × 2 KiB`. Measured by [`WindowedDistinct::heap_bytes`], hash table and
//! growth slack included, 100 000 single-subject actors cost 74.7 bytes each with
//! `u64` actor keys (77.6 bytes at a million) and 106 bytes with `std::net::IpAddr`
//! keys: each key is stored twice, so a fixed 8-byte key (say, a keyed hash of the
//! actor identity) is the cheapest.
//!
//! **Adversaries.** [`subject_hash`] is unkeyed (SHA-256), so anyone can compute which
//! register a subject lands in. That does not matter when subjects are existing
//! account identifiers an attacker reads but cannot choose. If a deployment counts
//! attacker-chosen strings, an attacker could pick strings that share registers and
//! be undercounted; such strings need a keyed hash. Actor keys go through the
//! standard library's randomly keyed `HashMap`. The table is bounded: an attacker who
//! makes `max_actors` fresh actors faster than a victim actor is observed pushes the
//! victim out and resets its count, while an actor that keeps reading stays recent.
//!
//! # Inside
//!
//! `hash` (subject hashes, the pass-through hasher), `hll` (HyperLogLog
//! registers and their estimate), `distinct` (the sketch: an exact set,
//! then registers) and `window` (the per-actor sliding window).

mod distinct;
mod hash;
mod hll;
mod window;

#[cfg(test)]
mod tests;

pub use distinct::{DistinctSketch, EXACT_LIMIT};
pub use hash::{BuildPreHashed, PreHashed, subject_hash};
pub use hll::PRECISION;
pub use window::{MAX_SLICES, WindowedDistinct, slicing};
