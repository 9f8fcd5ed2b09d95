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
//! The tests below check the error at 10 000, 100 000 and 1 000 000 distinct and the
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

use std::collections::HashMap;
use std::hash::Hash;

use aws_lc_rs::digest::{Context, SHA256};

/// HyperLogLog precision: a hash's top `PRECISION` bits pick one of 2048 registers.
pub const PRECISION: u8 = 11;
/// Number of registers, one byte each.
const REGISTERS: usize = 1 << PRECISION;
/// Bits left after the register index; ranks run from 1 to `RANK_BITS + 1`.
const RANK_BITS: u8 = 64 - PRECISION;
/// Largest register value: the remaining 53 bits were all zero.
const MAX_RANK: u8 = RANK_BITS + 1;
/// `1 / (2 ln 2)`, the limit of the HyperLogLog bias constant for many registers.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Most distinct hashes a [`DistinctSketch`] keeps exactly (and most subjects an actor
/// of [`WindowedDistinct`] keeps as a plain list) before switching to HyperLogLog.
pub const EXACT_LIMIT: usize = 32;
/// Most slices a [`WindowedDistinct`] window is cut into.
pub const MAX_SLICES: usize = 64;
/// Domain separation for [`subject_hash`] (its version 1).
const SUBJECT_DOMAIN: &[u8] = b"tally/sketch/subject/v1\0";

/// The 64-bit hash of a subject identifier that sketches count.
///
/// Defined as the first 8 bytes, big-endian, of
/// `SHA-256("tally/sketch/subject/v1" || 0x00 || subject)`. It is stable across
/// versions, platforms and processes, so sketches built on different nodes merge.
/// Unkeyed: see the module documentation for when that matters.
pub fn subject_hash(subject: &str) -> u64 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(SUBJECT_DOMAIN);
    ctx.update(subject.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// Distinct-count estimator: exact for small sets, HyperLogLog beyond.
///
/// Holds up to [`EXACT_LIMIT`] hashes as a sorted list (at most 256 bytes of heap);
/// the next distinct hash turns it into 2048 one-byte registers for good. See the
/// module documentation for the error.
#[derive(Clone, PartialEq, Eq)]
pub struct DistinctSketch {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// Sorted, without repeats, at most `EXACT_LIMIT` long.
    Exact(Vec<u64>),
    /// Register `i` holds the largest rank of the hashes whose top bits are `i`; every
    /// value is at most `MAX_RANK`.
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for DistinctSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DistinctSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.repr {
            Repr::Exact(v) => write!(f, "DistinctSketch {{ exact: {} }}", v.len()),
            Repr::Dense(_) => write!(f, "DistinctSketch {{ approx: {} }}", self.estimate()),
        }
    }
}

impl DistinctSketch {
    /// An empty sketch; allocates nothing.
    pub fn new() -> Self {
        DistinctSketch {
            repr: Repr::Exact(Vec::new()),
        }
    }

    /// Adds one hash (see [`subject_hash`]); adding it again changes nothing.
    pub fn insert_hash(&mut self, h: u64) {
        self.insert(h);
    }

    /// Adds `h`; true when the sketch changed.
    fn insert(&mut self, h: u64) -> bool {
        match &mut self.repr {
            Repr::Exact(v) => match v.binary_search(&h) {
                Ok(_) => false,
                Err(at) if v.len() < EXACT_LIMIT => {
                    v.insert(at, h);
                    true
                }
                Err(_) => {
                    let mut regs = Box::new([0u8; REGISTERS]);
                    for &x in v.iter() {
                        set_register(&mut regs, x);
                    }
                    set_register(&mut regs, h);
                    self.repr = Repr::Dense(regs);
                    true
                }
            },
            Repr::Dense(regs) => set_register(regs, h),
        }
    }

    /// Estimated number of distinct hashes added: exact while [`Self::is_exact`].
    pub fn estimate(&self) -> u64 {
        match &self.repr {
            Repr::Exact(v) => v.len() as u64,
            Repr::Dense(regs) => estimate_registers(regs),
        }
    }

    /// True while the sketch holds its hashes exactly.
    pub fn is_exact(&self) -> bool {
        matches!(self.repr, Repr::Exact(_))
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        matches!(&self.repr, Repr::Exact(v) if v.is_empty())
    }

    /// Makes `self` the sketch of the union of both sets: the result is the sketch
    /// that inserting every hash of both would have built.
    pub fn merge(&mut self, other: &DistinctSketch) {
        match (&mut self.repr, &other.repr) {
            (_, Repr::Exact(theirs)) => {
                for &h in theirs {
                    self.insert(h);
                }
            }
            (Repr::Dense(mine), Repr::Dense(theirs)) => {
                for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                    *m = (*m).max(*t);
                }
            }
            (Repr::Exact(mine), Repr::Dense(theirs)) => {
                let mut regs = theirs.clone();
                for &h in mine.iter() {
                    set_register(&mut regs, h);
                }
                self.repr = Repr::Dense(regs);
            }
        }
    }

    /// Bytes this sketch owns on the heap (0 when empty, at most 2048).
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Exact(v) => v.capacity() * size_of::<u64>(),
            Repr::Dense(_) => REGISTERS,
        }
    }

    /// Folds this sketch into `regs` (register-wise maximum).
    fn fold_into(&self, regs: &mut [u8; REGISTERS]) {
        match &self.repr {
            Repr::Exact(v) => {
                for &h in v {
                    set_register(regs, h);
                }
            }
            Repr::Dense(theirs) => {
                for (m, t) in regs.iter_mut().zip(theirs.iter()) {
                    *m = (*m).max(*t);
                }
            }
        }
    }
}

/// Register index and rank of a hash: the top `PRECISION` bits pick the register, the
/// rank is one more than the number of leading zeros in the remaining 53 bits.
fn register_of(h: u64) -> (usize, u8) {
    let index = (h >> RANK_BITS) as usize;
    let rest = h << PRECISION;
    // rest != 0 has a one among its top 53 bits, so leading_zeros() <= 52.
    let rank = if rest == 0 {
        MAX_RANK
    } else {
        rest.leading_zeros() as u8 + 1
    };
    (index, rank)
}

/// Raises the register of `h`; true when it changed.
fn set_register(regs: &mut [u8; REGISTERS], h: u64) -> bool {
    let (index, rank) = register_of(h);
    // index < 2^PRECISION = REGISTERS by construction.
    let r = &mut regs[index];
    if rank > *r {
        *r = rank;
        true
    } else {
        false
    }
}

/// Ertl's improved raw estimator (2017, algorithm 6) over a register histogram.
fn estimate_registers(regs: &[u8; REGISTERS]) -> u64 {
    let mut counts = [0u32; MAX_RANK as usize + 1];
    for &r in regs.iter() {
        counts[usize::from(r.min(MAX_RANK))] += 1;
    }
    let m = REGISTERS as f64;
    if counts[0] as usize == REGISTERS {
        return 0;
    }
    let mut z = m * tau(1.0 - f64::from(counts[usize::from(MAX_RANK)]) / m);
    for k in (1..=usize::from(RANK_BITS)).rev() {
        z = 0.5 * (z + f64::from(counts[k]));
    }
    z += m * sigma(f64::from(counts[0]) / m);
    (ALPHA_INF * m * m / z).round() as u64
}

/// `σ(x) = x + Σ_{k≥1} x^(2^k) · 2^(k−1)` for `0 ≤ x < 1`.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// `τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² · 2^−k) / 3` for `0 ≤ x ≤ 1`.
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

/// Distinct count of the union of `parts`: exact when every part is exact.
fn union_estimate<'a, I>(parts: I) -> u64
where
    I: Iterator<Item = &'a DistinctSketch> + Clone,
{
    if parts.clone().all(DistinctSketch::is_exact) {
        let mut all: Vec<u64> = Vec::new();
        for p in parts {
            if let Repr::Exact(v) = &p.repr {
                all.extend_from_slice(v);
            }
        }
        all.sort_unstable();
        all.dedup();
        all.len() as u64
    } else {
        let mut regs = [0u8; REGISTERS];
        for p in parts {
            p.fold_into(&mut regs);
        }
        estimate_registers(&regs)
    }
}

/// "No node" in the recency list.
const NIL: u32 = u32::MAX;

/// Sliding-window distinct counter per actor, bounded memory.
///
/// Actors sit in a hash map pointing into a dense node array threaded by a doubly
/// linked recency list, so lookup, touch, eviction of the least recently observed
/// actor and removal are all O(1). Per actor, what is kept grows with what it did:
/// one subject, a list of up to [`EXACT_LIMIT`] subjects with the slice each was last
/// seen in, or one [`DistinctSketch`] per slice. See the module documentation.
pub struct WindowedDistinct<K: Hash + Eq + Clone, S = std::collections::hash_map::RandomState> {
    slice_secs: i64,
    slices: usize,
    max_actors: usize,
    /// Actor → position in `nodes`.
    index: HashMap<K, u32, S>,
    /// Invariants: `index` maps each node's key to its position and nothing else;
    /// `head`, `tail` and each `prev`/`next` are `NIL` or positions in `nodes`, and
    /// walking `next` from `head` visits every node once, most recent first.
    nodes: Vec<Node<K>>,
    head: u32,
    tail: u32,
}

struct Node<K> {
    key: K,
    prev: u32,
    next: u32,
    /// Slice of the last move to the front (truncated): an actor seen again in
    /// the same slice is not moved again, which keeps the hot path free of
    /// pointer chasing; eviction is least-recently-seen at slice granularity.
    moved: u32,
    track: Track,
}

/// A subject and the newest slice it was seen in.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    hash: u64,
    slice: i64,
}

/// What one actor touched.
enum Track {
    /// The common case: one subject, no allocation.
    One(Seen),
    /// 2..=`EXACT_LIMIT` subjects, distinct hashes, unordered.
    Exact(Vec<Seen>),
    /// More: one sketch per slice.
    Sliced(Box<Ring>),
}

/// One sketch per slice; slice `s` lives in slot `s mod slices`.
struct Ring {
    slots: Box<[Slot]>,
    /// `(floor, estimate)` last computed by `observe`, valid while the floor is the
    /// same and no slot changed since.
    cache: Option<(i64, u64)>,
}

struct Slot {
    slice: i64,
    sketch: DistinctSketch,
}

impl Slot {
    fn empty() -> Self {
        Slot {
            slice: i64::MIN,
            sketch: DistinctSketch::new(),
        }
    }

    fn is_live(&self, floor: i64) -> bool {
        self.slice >= floor && !self.sketch.is_empty()
    }
}

impl Ring {
    fn new(slices: usize) -> Self {
        Ring {
            slots: (0..slices).map(|_| Slot::empty()).collect(),
            cache: None,
        }
    }

    /// Adds `seen` to its slice's slot; true when a sketch changed. A slot holding an
    /// older slice is recycled (that slice left the window); an observation older
    /// than the slot's slice is a full window late and is dropped.
    fn insert(&mut self, seen: Seen) -> bool {
        let n = self.slots.len() as i64;
        // rem_euclid(n) is in 0..n and slots.len() == n.
        let slot = &mut self.slots[seen.slice.rem_euclid(n) as usize];
        if slot.slice == seen.slice {
            slot.sketch.insert(seen.hash)
        } else if slot.slice < seen.slice {
            slot.slice = seen.slice;
            slot.sketch = DistinctSketch::new();
            slot.sketch.insert(seen.hash)
        } else {
            false
        }
    }

    fn live(&self, floor: i64) -> impl Iterator<Item = &DistinctSketch> + Clone {
        self.slots
            .iter()
            .filter(move |s| s.is_live(floor))
            .map(|s| &s.sketch)
    }

    fn estimate(&self, floor: i64) -> u64 {
        match self.cache {
            Some((f, est)) if f == floor => est,
            _ => union_estimate(self.live(floor)),
        }
    }
}

impl Track {
    /// Records `seen` (whose slice is the current one, `>= floor`) and returns the
    /// distinct count over the live slices (with `want` false, a large set
    /// skips computing it and returns 0).
    fn observe(&mut self, seen: Seen, floor: i64, slices: usize, want: bool) -> u64 {
        match self {
            Track::One(old) => {
                if old.slice < floor {
                    *old = seen;
                    1
                } else if old.hash == seen.hash {
                    old.slice = old.slice.max(seen.slice);
                    1
                } else {
                    let old = *old;
                    *self = Track::Exact(vec![old, seen]);
                    2
                }
            }
            Track::Exact(list) => {
                // One read-only pass finds the subject and any stale entry;
                // the list is rewritten only when something expired.
                let mut found = None;
                let mut stale = false;
                for (i, e) in list.iter().enumerate() {
                    stale |= e.slice < floor;
                    if e.hash == seen.hash {
                        found = Some(i);
                    }
                }
                if let Some(i) = found
                    && !stale
                {
                    let e = &mut list[i];
                    e.slice = e.slice.max(seen.slice);
                    return list.len() as u64;
                }
                if stale {
                    list.retain(|e| e.slice >= floor);
                    if let Some(e) = list.iter_mut().find(|e| e.hash == seen.hash) {
                        e.slice = e.slice.max(seen.slice);
                        return list.len() as u64;
                    }
                }
                if list.is_empty() {
                    *self = Track::One(seen);
                    return 1;
                }
                if list.len() < EXACT_LIMIT {
                    list.push(seen);
                    return list.len() as u64;
                }
                let mut ring = Ring::new(slices);
                for e in list.iter() {
                    ring.insert(*e);
                }
                ring.insert(seen);
                let est = union_estimate(ring.live(floor));
                ring.cache = Some((floor, est));
                *self = Track::Sliced(Box::new(ring));
                est
            }
            Track::Sliced(ring) => {
                if !ring.slots.iter().any(|s| s.is_live(floor)) {
                    *self = Track::One(seen);
                    return 1;
                }
                let changed = ring.insert(seen);
                if !want {
                    if changed {
                        ring.cache = None;
                    }
                    return 0;
                }
                match ring.cache {
                    Some((f, est)) if f == floor && !changed => est,
                    _ => {
                        let est = union_estimate(ring.live(floor));
                        ring.cache = Some((floor, est));
                        est
                    }
                }
            }
        }
    }

    fn estimate(&self, floor: i64) -> u64 {
        match self {
            Track::One(s) => u64::from(s.slice >= floor),
            Track::Exact(list) => list.iter().filter(|e| e.slice >= floor).count() as u64,
            Track::Sliced(ring) => ring.estimate(floor),
        }
    }

    fn sketch(&self, floor: i64) -> DistinctSketch {
        let mut out = DistinctSketch::new();
        match self {
            Track::One(s) => {
                if s.slice >= floor {
                    out.insert(s.hash);
                }
            }
            Track::Exact(list) => {
                for e in list.iter().filter(|e| e.slice >= floor) {
                    out.insert(e.hash);
                }
            }
            Track::Sliced(ring) => {
                for s in ring.live(floor) {
                    out.merge(s);
                }
            }
        }
        out
    }

    /// Forgets what left the window and shrinks to the smallest form that holds the
    /// rest; false when nothing is left.
    fn prune(&mut self, floor: i64) -> bool {
        match self {
            Track::One(s) => s.slice >= floor,
            Track::Exact(list) => {
                list.retain(|e| e.slice >= floor);
                match list.len() {
                    0 => false,
                    1 => {
                        *self = Track::One(list[0]);
                        true
                    }
                    n => {
                        if list.capacity() >= 2 * n {
                            list.shrink_to_fit();
                        }
                        true
                    }
                }
            }
            Track::Sliced(ring) => {
                ring.cache = None;
                for slot in ring.slots.iter_mut() {
                    if !slot.is_live(floor) {
                        *slot = Slot::empty();
                    }
                }
                let mut seen: Vec<Seen> = Vec::new();
                for slot in ring.slots.iter() {
                    match &slot.sketch.repr {
                        Repr::Exact(v) => {
                            seen.extend(v.iter().map(|&hash| Seen {
                                hash,
                                slice: slot.slice,
                            }));
                        }
                        // Hashes are gone: stay sliced.
                        Repr::Dense(_) => return true,
                    }
                }
                // Newest slice first within each hash, then keep that one.
                seen.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then(b.slice.cmp(&a.slice)));
                seen.dedup_by_key(|e| e.hash);
                match seen.len() {
                    0 => false,
                    1 => {
                        *self = Track::One(seen[0]);
                        true
                    }
                    n if n <= EXACT_LIMIT => {
                        seen.shrink_to_fit();
                        *self = Track::Exact(seen);
                        true
                    }
                    _ => true,
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Track::One(_) => 0,
            Track::Exact(list) => list.capacity() * size_of::<Seen>(),
            Track::Sliced(ring) => {
                size_of::<Ring>()
                    + ring.slots.len() * size_of::<Slot>()
                    + ring
                        .slots
                        .iter()
                        .map(|s| s.sketch.heap_bytes())
                        .sum::<usize>()
            }
        }
    }
}

impl<K: Hash + Eq + Clone> WindowedDistinct<K> {
    /// A counter with the standard (randomly keyed) hasher; see [`Self::with_hasher`].
    pub fn new(window_secs: i64, slices: usize, max_actors: usize) -> Self {
        Self::with_hasher(window_secs, slices, max_actors)
    }
}

/// How a window of `window_secs` is cut into (at most) `slices` slices:
/// the slice length and the number of slices, clamped as
/// [`WindowedDistinct::with_hasher`] documents. Anything else that counts
/// over the same windows (the fleet's shared counts) cuts them alike.
pub fn slicing(window_secs: i64, slices: usize) -> (i64, usize) {
    let window = window_secs.max(1);
    let slices = slices
        .clamp(1, MAX_SLICES)
        .min(usize::try_from(window).unwrap_or(MAX_SLICES));
    (window / slices as i64, slices)
}

impl<K: Hash + Eq + Clone, S: std::hash::BuildHasher + Default> WindowedDistinct<K, S> {
    /// A counter over windows of `window_secs` seconds cut into `slices` slices,
    /// tracking at most `max_actors` actors.
    ///
    /// Out-of-range arguments are clamped: the window to at least 1 s, `slices` to
    /// `1..=min(MAX_SLICES, window_secs)`, `max_actors` to `1..u32::MAX`. The slice
    /// length is `window_secs / slices` rounded down, so the effective window
    /// ([`Self::window_secs`]) may be a little shorter than asked.
    pub fn with_hasher(window_secs: i64, slices: usize, max_actors: usize) -> Self {
        let (slice_secs, slices) = slicing(window_secs, slices);
        WindowedDistinct {
            slice_secs,
            slices,
            max_actors: max_actors.clamp(1, NIL as usize - 1),
            index: HashMap::with_hasher(S::default()),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// The effective window length in seconds (slice length × slices).
    pub fn window_secs(&self) -> i64 {
        self.slice_secs * self.slices as i64
    }

    /// Number of slices the window is cut into.
    pub fn slices(&self) -> usize {
        self.slices
    }

    /// Most actors tracked at once.
    pub fn max_actors(&self) -> usize {
        self.max_actors
    }

    /// The oldest slice still inside the window ending at `now`.
    fn floor(&self, now: i64) -> i64 {
        now.div_euclid(self.slice_secs)
            .saturating_sub(self.slices as i64 - 1)
    }

    /// Records that `actor` touched `subject_hash` at `now`; returns the actor's distinct
    /// estimate over the window ending at `now` (after the insert).
    ///
    /// A new actor arriving when [`Self::max_actors`] are tracked evicts the least
    /// recently observed one, whose count is forgotten.
    pub fn observe(&mut self, actor: &K, subject_hash: u64, now: i64) -> u64 {
        self.observe_with(actor, subject_hash, now, true)
    }

    /// [`Self::observe`] that may skip the estimate: with `want_estimate`
    /// false, an actor with many subjects is recorded without recomputing its
    /// HyperLogLog union, and 0 is returned (small sets still return their
    /// exact count). For callers that already know what they need to know
    /// about the actor, e.g. that it crossed a threshold in this window.
    pub fn observe_with(
        &mut self,
        actor: &K,
        subject_hash: u64,
        now: i64,
        want_estimate: bool,
    ) -> u64 {
        let floor = self.floor(now);
        let seen = Seen {
            hash: subject_hash,
            slice: now.div_euclid(self.slice_secs),
        };
        if let Some(&i) = self.index.get(actor) {
            let slice = seen.slice as u32;
            if self.nodes[i as usize].moved != slice {
                self.nodes[i as usize].moved = slice;
                self.touch(i);
            }
            return self.nodes[i as usize]
                .track
                .observe(seen, floor, self.slices, want_estimate);
        }
        if self.nodes.len() >= self.max_actors && self.tail != NIL {
            self.remove_at(self.tail);
        }
        if self.nodes.len() == self.nodes.capacity() {
            // Grow by doubling, but never past max_actors.
            let extra = self
                .nodes
                .capacity()
                .max(4)
                .min(self.max_actors - self.nodes.len());
            self.nodes.reserve_exact(extra);
        }
        // len < max_actors < NIL, so the position fits and is not NIL.
        let i = self.nodes.len() as u32;
        self.nodes.push(Node {
            key: actor.clone(),
            prev: NIL,
            next: NIL,
            moved: seen.slice as u32,
            track: Track::One(seen),
        });
        self.index.insert(actor.clone(), i);
        self.push_front(i);
        1
    }

    /// The actor's distinct estimate over the window ending at `now` (0 when unknown).
    /// Does not count as observing it.
    pub fn estimate(&self, actor: &K, now: i64) -> u64 {
        match self.index.get(actor) {
            Some(&i) => self.nodes[i as usize].track.estimate(self.floor(now)),
            None => 0,
        }
    }

    /// The actor's subjects inside the window ending at `now` as one mergeable sketch,
    /// for combining counts across nodes; `None` when the actor is not tracked.
    pub fn sketch(&self, actor: &K, now: i64) -> Option<DistinctSketch> {
        let &i = self.index.get(actor)?;
        Some(self.nodes[i as usize].track.sketch(self.floor(now)))
    }

    /// Actors tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no actor is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Approximate heap bytes owned: the hash table (buckets estimated from its
    /// capacity as the standard library lays it out), the node array's capacity and
    /// every actor's own allocations. Heap owned by the keys themselves (a `String`'s
    /// bytes, say) is not counted. Walks every actor.
    pub fn heap_bytes(&self) -> usize {
        hash_map_bytes::<K, u32>(self.index.capacity())
            + self.nodes.capacity() * size_of::<Node<K>>()
            + self
                .nodes
                .iter()
                .map(|n| n.track.heap_bytes())
                .sum::<usize>()
    }

    /// Drops actors with nothing inside the window ending at `now` and shrinks the
    /// rest to what they still need; returns how many actors were dropped. Call it
    /// periodically: it walks every actor.
    pub fn expire(&mut self, now: i64) -> usize {
        let floor = self.floor(now);
        let mut dropped = 0;
        // Backwards, so swap_remove only moves already-visited nodes.
        let mut i = self.nodes.len();
        while i > 0 {
            i -= 1;
            if !self.nodes[i].track.prune(floor) {
                self.remove_at(i as u32);
                dropped += 1;
            }
        }
        let len = self.nodes.len();
        if self.nodes.capacity() / 4 > len {
            self.nodes.shrink_to(len * 2);
        }
        if self.index.capacity() / 4 > len {
            self.index.shrink_to(len * 2);
        }
        dropped
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.nodes[old as usize].prev = i;
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes the node at `i` from the list, the array and the index.
    fn remove_at(&mut self, i: u32) {
        self.unlink(i);
        let node = self.nodes.swap_remove(i as usize);
        self.index.remove(&node.key);
        if (i as usize) < self.nodes.len() {
            // The former last node now sits at `i`: repoint its neighbours and index.
            let (prev, next) = {
                let n = &self.nodes[i as usize];
                (n.prev, n.next)
            };
            if prev == NIL {
                self.head = i;
            } else {
                self.nodes[prev as usize].next = i;
            }
            if next == NIL {
                self.tail = i;
            } else {
                self.nodes[next as usize].prev = i;
            }
            if let Some(pos) = self.index.get_mut(&self.nodes[i as usize].key) {
                *pos = i;
            }
        }
    }
}

/// A hasher for keys that are already uniformly distributed 64-bit hashes
/// (such as [`subject_hash`] values or keyed actor hashes): it passes the
/// value through, saving a second round of hashing on the hot path. Only for
/// `u64` keys whose values an outsider cannot choose.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in, order-sensitively.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// [`std::hash::BuildHasher`] for [`PreHashed`].
pub type BuildPreHashed = std::hash::BuildHasherDefault<PreHashed>;

/// Heap bytes of a std `HashMap<K, V>` of the given capacity: a power-of-two number of
/// buckets, kept at most 7/8 full, each holding one `(K, V)` and one control byte,
/// plus one group (16 bytes) of trailing control bytes.
fn hash_map_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a fast, well-mixed stand-in for subject hashes in bulk tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn sketch_of(hashes: impl IntoIterator<Item = u64>) -> DistinctSketch {
        let mut s = DistinctSketch::new();
        for h in hashes {
            s.insert_hash(h);
        }
        s
    }

    fn rel_err(est: u64, n: u64) -> f64 {
        (est as f64 - n as f64) / n as f64
    }

    fn registers(s: &DistinctSketch) -> &[u8; REGISTERS] {
        match &s.repr {
            Repr::Dense(r) => r,
            Repr::Exact(_) => panic!("expected a dense sketch"),
        }
    }

    /// Linear counting: the textbook small-range estimate.
    fn linear_counting(regs: &[u8; REGISTERS]) -> f64 {
        let m = REGISTERS as f64;
        let zeros = regs.iter().filter(|&&r| r == 0).count() as f64;
        m * (m / zeros).ln()
    }

    /// The textbook HyperLogLog raw estimate, `α_m m² / Σ 2^−M[j]`.
    fn classic_raw(regs: &[u8; REGISTERS]) -> f64 {
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = regs.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        alpha * m * m / sum
    }

    #[test]
    fn subject_hash_known_answer() {
        // First 8 bytes of `printf 'tally/sketch/subject/v1\0acct-1' | sha256sum`.
        assert_eq!(subject_hash("acct-1"), 0x33c3_fa93_1e5c_da69);
        // `printf 'tally/sketch/subject/v1\0' | sha256sum`.
        assert_eq!(subject_hash(""), 0x5c2b_bbd6_c500_4d16);
        assert_ne!(subject_hash("acct-1"), subject_hash("acct-2"));
    }

    #[test]
    fn register_ranks() {
        assert_eq!(register_of(0), (0, MAX_RANK));
        assert_eq!(register_of(u64::MAX), (REGISTERS - 1, 1));
        assert_eq!(register_of(1), (0, RANK_BITS));
        assert_eq!(register_of(1 << RANK_BITS), (1, MAX_RANK));
        assert_eq!(register_of((1 << RANK_BITS) - 1), (0, 1));
    }

    #[test]
    fn exact_below_the_limit() {
        let mut s = DistinctSketch::new();
        assert_eq!(s.estimate(), 0);
        assert!(s.is_empty());
        assert_eq!(s.heap_bytes(), 0);
        for i in 1..=EXACT_LIMIT as u64 {
            s.insert_hash(subject_hash(&format!("acct-{i}")));
            s.insert_hash(subject_hash(&format!("acct-{i}")));
            s.insert_hash(subject_hash("acct-1"));
            assert_eq!(s.estimate(), i);
            assert!(s.is_exact());
        }
        assert!(s.heap_bytes() <= EXACT_LIMIT * 8);
        s.insert_hash(subject_hash("acct-33"));
        assert!(!s.is_exact());
        assert_eq!(s.heap_bytes(), 2048);
        assert!(s.estimate().abs_diff(33) <= 1, "got {}", s.estimate());
    }

    #[test]
    fn duplicates_are_not_counted() {
        let mut seed = 7;
        let hashes: Vec<u64> = (0..20_000).map(|_| splitmix(&mut seed)).collect();
        let mut s = sketch_of(hashes.iter().copied());
        let once = s.clone();
        for &h in hashes.iter().rev() {
            s.insert_hash(h);
        }
        assert_eq!(s, once);
    }

    #[test]
    fn hll_within_5_percent_at_10k_100k_1m() {
        // 1M debug-build inserts take well under a second: the hash dominates.
        let mut s = DistinctSketch::new();
        let mut next = 0u64;
        for n in [10_000u64, 100_000, 1_000_000] {
            while next < n {
                s.insert_hash(subject_hash(&format!("acct-{next}")));
                next += 1;
            }
            let err = rel_err(s.estimate(), n);
            assert!(
                err.abs() < 0.05,
                "n={n} estimate={} err={err}",
                s.estimate()
            );
        }
    }

    #[test]
    fn hll_error_and_bias_match_theory_over_a_sweep() {
        // 16 independent streams, checked at cardinalities across the exact limit, the
        // linear-counting range and the classic estimator's switch-over (~5120).
        const TRIALS: usize = 16;
        let checkpoints = [
            40u64, 100, 300, 1_000, 2_000, 4_000, 5_000, 6_000, 8_000, 12_000, 20_000, 50_000,
        ];
        let mut errs = vec![Vec::new(); checkpoints.len()];
        for trial in 0..TRIALS {
            let mut seed = 1_000 + trial as u64;
            let mut s = DistinctSketch::new();
            let mut n = 0;
            for (c, &target) in checkpoints.iter().enumerate() {
                while n < target {
                    s.insert_hash(splitmix(&mut seed));
                    n += 1;
                }
                errs[c].push(rel_err(s.estimate(), n));
            }
        }
        // Standard error 1.04/sqrt(2048) = 2.3 %; the mean of 16 has 0.58 %.
        for (c, e) in errs.iter().enumerate() {
            let mean = e.iter().sum::<f64>() / TRIALS as f64;
            let rms = (e.iter().map(|x| x * x).sum::<f64>() / TRIALS as f64).sqrt();
            let n = checkpoints[c];
            assert!(mean.abs() < 0.02, "bias {mean} at {n}");
            assert!(rms < 0.035, "rms error {rms} at {n}");
        }
    }

    #[test]
    fn estimator_agrees_with_linear_counting_and_classic_hll() {
        let mut seed = 99;
        let mut s = DistinctSketch::new();
        let mut n = 0;
        for target in [100u64, 500, 1_000, 30_000, 100_000] {
            while n < target {
                s.insert_hash(splitmix(&mut seed));
                n += 1;
            }
            let regs = registers(&s);
            let reference = if n <= 1_000 {
                linear_counting(regs)
            } else {
                classic_raw(regs)
            };
            let ours = s.estimate() as f64;
            assert!(
                (ours - reference).abs() / reference < 0.01,
                "n={n}: ours {ours}, reference {reference}"
            );
        }
    }

    #[test]
    fn merge_equals_union() {
        let mut seed = 5;
        let pool: Vec<u64> = (0..30_000).map(|_| splitmix(&mut seed)).collect();
        // (a-range, b-range) pairs: small+small under and over the limit, small+dense,
        // dense+small, dense+dense, overlapping and not.
        let cases: [((usize, usize), (usize, usize)); 7] = [
            ((0, 10), (5, 20)),
            ((0, 20), (20, 40)),
            ((0, 5), (0, 5)),
            ((0, 10), (10, 5_000)),
            ((0, 5_000), (4_990, 5_010)),
            ((0, 20_000), (10_000, 30_000)),
            ((0, 0), (0, 3_000)),
        ];
        for ((a0, a1), (b0, b1)) in cases {
            let a = sketch_of(pool[a0..a1].iter().copied());
            let b = sketch_of(pool[b0..b1].iter().copied());
            let union = sketch_of(pool[a0.min(b0)..a1.max(b1)].iter().copied());
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            assert_eq!(ab, union, "a={a0}..{a1} b={b0}..{b1}");
            assert_eq!(ba, union, "b={b0}..{b1} a={a0}..{a1}");
        }
        let mut a = sketch_of([1, 2, 3]);
        a.merge(&DistinctSketch::new());
        assert_eq!(a, sketch_of([3, 2, 1]));
        assert_eq!(a.estimate(), 3);
    }

    #[test]
    fn window_counts_expire_at_slice_boundaries() {
        // 60 s window in six 10 s slices.
        let mut w = WindowedDistinct::new(60, 6, 100);
        assert_eq!((w.window_secs(), w.slices()), (60, 6));
        assert_eq!(w.observe(&"ip", 1, 0), 1);
        assert_eq!(w.observe(&"ip", 1, 5), 1, "repeat");
        assert_eq!(w.observe(&"ip", 2, 25), 2);
        assert_eq!(w.estimate(&"ip", 59), 2);
        assert_eq!(w.estimate(&"ip", 60), 1, "slice 0 left at t=60");
        assert_eq!(w.estimate(&"ip", 79), 1);
        assert_eq!(w.estimate(&"ip", 80), 0, "slice 2 left at t=80");
        assert_eq!(w.estimate(&"other", 0), 0);
        // A subject seen again moves to the newer slice.
        assert_eq!(w.observe(&"ip", 1, 55), 2);
        assert_eq!(w.estimate(&"ip", 80), 1);
        assert_eq!(w.estimate(&"ip", 109), 1);
        assert_eq!(w.estimate(&"ip", 110), 0);
        assert_eq!(w.expire(109), 0);
        assert_eq!(w.expire(110), 1);
        assert!(w.is_empty());
        // Negative times slice by floor division.
        assert_eq!(w.observe(&"ip", 1, -1), 1);
        assert_eq!(w.estimate(&"ip", 49), 1);
        assert_eq!(w.estimate(&"ip", 50), 0);
    }

    #[test]
    fn heavy_actor_slides_out_slice_by_slice() {
        let mut w = WindowedDistinct::new(60, 6, 100);
        let mut seed = 3;
        for _ in 0..3_000 {
            w.observe(&"bot", splitmix(&mut seed), 1_000);
        }
        for _ in 0..2_000 {
            w.observe(&"bot", splitmix(&mut seed), 1_030);
        }
        let at = |t| w.estimate(&"bot", t);
        assert!(rel_err(at(1_059), 5_000).abs() < 0.05, "{}", at(1_059));
        assert!(rel_err(at(1_060), 2_000).abs() < 0.05, "{}", at(1_060));
        assert!(rel_err(at(1_089), 2_000).abs() < 0.05, "{}", at(1_089));
        assert_eq!(at(1_090), 0);
        let heavy = w.heap_bytes();
        // Dense in two slices: about 2 × 2 KiB for this actor.
        assert!(heavy > 4_096 && heavy < 6_000, "{heavy}");
        // Back to one subject, no per-slice sketches, once the window has passed.
        assert_eq!(w.observe(&"bot", 1, 1_090), 1);
        assert!(w.heap_bytes() < 500, "{}", w.heap_bytes());
        assert_eq!(w.sketch(&"bot", 1_090), Some(sketch_of([1])));
    }

    #[test]
    fn sliced_actor_stays_exact_while_slices_are_small() {
        let mut w = WindowedDistinct::new(60, 6, 10);
        let h = |s: u64| subject_hash(&format!("acct-{s}"));
        // 60 subjects, 10 per slice: beyond the per-actor list, within per-slice sets.
        for s in 0..60u64 {
            assert_eq!(w.observe(&1u8, h(s), (s / 10 * 10) as i64), s + 1);
        }
        assert_eq!(w.estimate(&1u8, 59), 60);
        assert_eq!(w.estimate(&1u8, 60), 50);
        // One merged sketch of 50 hashes is past the exact limit.
        let merged = w.sketch(&1u8, 60).expect("tracked");
        assert!(!merged.is_exact() && merged.estimate().abs_diff(50) <= 2);
        // At t=90 slices 4 and 5 remain: expire turns them back into a list.
        let before = w.heap_bytes();
        assert_eq!(w.expire(90), 0);
        assert_eq!(w.estimate(&1u8, 90), 20);
        assert!(w.heap_bytes() < before);
        assert_eq!(w.observe(&1u8, h(100), 90), 21);
        assert_eq!(w.expire(109), 0);
        assert_eq!(w.estimate(&1u8, 109), 11);
    }

    #[test]
    fn late_observations_count_inside_the_window() {
        let mut w = WindowedDistinct::new(60, 6, 10);
        w.observe(&"a", 1, 100);
        assert_eq!(w.observe(&"a", 2, 95), 2, "a few seconds late still counts");
        assert_eq!(
            w.observe(&"a", 3, 20),
            3,
            "far in the past: counted at its own time"
        );
        assert_eq!(w.estimate(&"a", 100), 2);
    }

    #[test]
    fn eviction_keeps_the_most_recently_seen() {
        // Recency counts per slice (600 s here): each step is a new slice.
        let mut w = WindowedDistinct::new(3600, 6, 3);
        w.observe(&"a", 1, 0);
        w.observe(&"b", 1, 0);
        w.observe(&"c", 1, 0);
        w.observe(&"a", 2, 600);
        w.observe(&"d", 1, 1200);
        assert_eq!(w.len(), 3);
        assert_eq!(w.estimate(&"b", 1200), 0, "b was least recently seen");
        assert_eq!(w.estimate(&"a", 1200), 2);
        assert_eq!(w.estimate(&"c", 1200), 1);
        w.observe(&"e", 1, 1800);
        assert_eq!(w.estimate(&"c", 1800), 0);
        assert_eq!(w.estimate(&"a", 1800), 2);
        w.observe(&"f", 1, 2400);
        assert_eq!(w.estimate(&"a", 2400), 0);
        assert_eq!(w.estimate(&"d", 2400), 1);
        // Evicted actors start again from nothing.
        assert_eq!(w.observe(&"a", 9, 3000), 1);
        assert_eq!(w.len(), 3);
    }

    /// The obviously correct version: every actor's subjects with their newest slice.
    struct Reference {
        slice: i64,
        slices: i64,
        seen: HashMap<u32, HashMap<u64, i64>>,
    }

    impl Reference {
        fn observe(&mut self, actor: u32, h: u64, now: i64) {
            let s = now.div_euclid(self.slice);
            let e = self.seen.entry(actor).or_default().entry(h).or_insert(s);
            *e = (*e).max(s);
        }

        fn estimate(&self, actor: u32, now: i64) -> u64 {
            let floor = now.div_euclid(self.slice) - self.slices + 1;
            self.seen
                .get(&actor)
                .map_or(0, |m| m.values().filter(|&&s| s >= floor).count() as u64)
        }
    }

    #[test]
    fn matches_reference_on_a_random_stream() {
        // Per slice (10 s) at most ~10 observations, so no slice ever goes dense and
        // every count must be exact, through One, list, sliced and back.
        let mut w = WindowedDistinct::new(60, 6, 1_000);
        let mut r = Reference {
            slice: 10,
            slices: 6,
            seen: HashMap::new(),
        };
        let mut seed = 42;
        let mut now = 1_000i64;
        let mut high = now;
        let mut forms = [0usize; 3];
        for step in 0..20_000u32 {
            let x = splitmix(&mut seed);
            // At least 1 s every other step: at most 20 observations per 10 s slice.
            now += (step % 2) as i64 + (x % 2) as i64;
            if x.is_multiple_of(17) {
                now -= 4; // a slightly late caller
            }
            high = high.max(now);
            let actor = [0, 0, 1, 2, 3][(x >> 8) as usize % 5];
            // Actor 0 roams 200 subjects, actor 1 60, actor 2 three, actor 3 one.
            let pool = [200, 60, 3, 1][actor as usize];
            let h = subject_hash(&format!("acct-{}", (x >> 20) % pool));
            let got = w.observe(&actor, h, now);
            r.observe(actor, h, now);
            if now == high {
                assert_eq!(got, r.estimate(actor, now), "step {step}");
            }
            for a in 0..5 {
                assert_eq!(
                    w.estimate(&a, high),
                    r.estimate(a, high),
                    "step {step} actor {a}"
                );
            }
            if step.is_multiple_of(500) {
                w.expire(high);
            }
            for n in &w.nodes {
                match &n.track {
                    Track::One(_) => forms[0] += 1,
                    Track::Exact(_) => forms[1] += 1,
                    Track::Sliced(ring) => {
                        assert!(ring.slots.iter().all(|s| s.sketch.is_exact()));
                        forms[2] += 1;
                    }
                }
            }
        }
        assert!(
            forms.iter().all(|&f| f > 1_000),
            "every form exercised: {forms:?}"
        );
    }

    #[test]
    fn memory_per_single_subject_actor() {
        // Measured: u64 keys 74.7 bytes per actor (a 40-byte node and a 17-byte hash
        // table bucket, plus growth slack); IpAddr keys 106.2 bytes (56 + 25 + slack).
        const ACTORS: u64 = 100_000;
        let mut w = WindowedDistinct::new(3600, 6, 1_000_000);
        for a in 0..ACTORS {
            w.observe(
                &a,
                subject_hash(&format!("acct-{a}")),
                1_700_000_000 + a as i64 % 600,
            );
        }
        for a in 0..ACTORS {
            w.observe(&a, subject_hash(&format!("acct-{a}")), 1_700_000_700);
        }
        let per_actor = w.heap_bytes() as f64 / ACTORS as f64;
        assert!(per_actor < 100.0, "{per_actor} bytes per actor");

        let mut ips = WindowedDistinct::new(3600, 6, 1_000_000);
        for a in 0..ACTORS as u32 {
            let ip = std::net::IpAddr::from(a.to_be_bytes());
            ips.observe(&ip, u64::from(a), 1_700_000_000);
        }
        let per_ip = ips.heap_bytes() as f64 / ACTORS as f64;
        assert!(per_ip < 128.0, "{per_ip} bytes per IP actor");

        // Everything leaves the window; the table shrinks back.
        assert_eq!(w.expire(1_700_010_000), ACTORS as usize);
        assert!(w.heap_bytes() < 1_000, "{}", w.heap_bytes());
    }

    #[test]
    fn arguments_are_clamped() {
        let w = WindowedDistinct::<u8>::new(0, 0, 0);
        assert_eq!((w.window_secs(), w.slices(), w.max_actors()), (1, 1, 1));
        let w = WindowedDistinct::<u8>::new(10, 1_000, 5);
        assert_eq!((w.window_secs(), w.slices()), (10, 10));
        let w = WindowedDistinct::<u8>::new(100, 6, 5);
        assert_eq!(w.window_secs(), 96, "slices of 16 s");
        let mut w = WindowedDistinct::new(60, 6, 1);
        w.observe(&1u8, 1, i64::MIN);
        w.observe(&1u8, 2, i64::MAX);
        w.observe(&2u8, 2, i64::MAX);
        assert_eq!(w.len(), 1);
        assert_eq!(w.estimate(&2u8, i64::MAX), 1);
        w.expire(i64::MIN);
        w.expire(i64::MAX);
    }
}
