//! [`WindowedDistinct`]: a distinct count per actor over a sliding time
//! window, for at most `max_actors` actors, the least recently observed
//! evicted first.
//!
//! Invariants: the node array, the index and the recency list always agree
//! (see [`WindowedDistinct`]); what an actor keeps grows with what it did
//! (one subject, a list of up to [`EXACT_LIMIT`], then a sketch per slice)
//! and shrinks back as its subjects leave the window.

use std::collections::HashMap;
use std::hash::Hash;

use super::distinct::{DistinctSketch, EXACT_LIMIT, Repr, union_estimate};

/// Most slices a [`WindowedDistinct`] window is cut into.
pub const MAX_SLICES: usize = 64;

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
    use crate::sketch::subject_hash;
    use crate::sketch::tests::splitmix;

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
}
