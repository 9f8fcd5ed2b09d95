//! [`DistinctSketch`]: a distinct count that is an exact set of hashes up to
//! [`EXACT_LIMIT`], and HyperLogLog registers beyond.
//!
//! Invariants: the exact form is sorted, without repeats, at most
//! [`EXACT_LIMIT`] long; a sketch only ever goes from exact to dense; the
//! sketch of a set does not depend on the order of insertion, and merging
//! two sketches gives the sketch of the union.

use super::hll::{REGISTERS, estimate_registers, set_register};

/// Most distinct hashes a [`DistinctSketch`] keeps exactly (and most subjects an actor
/// of [`WindowedDistinct`](crate::sketch::WindowedDistinct) keeps as a plain list)
/// before switching to HyperLogLog.
pub const EXACT_LIMIT: usize = 32;

/// Distinct-count estimator: exact for small sets, HyperLogLog beyond.
///
/// Holds up to [`EXACT_LIMIT`] hashes as a sorted list (at most 256 bytes of heap);
/// the next distinct hash turns it into 2048 one-byte registers for good. See the
/// module documentation for the error.
#[derive(Clone, PartialEq, Eq)]
pub struct DistinctSketch {
    pub(super) repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) enum Repr {
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

    /// Adds one hash (see [`subject_hash`](crate::sketch::subject_hash)); adding it again changes nothing.
    pub fn insert_hash(&mut self, h: u64) {
        self.insert(h);
    }

    /// Adds `h`; true when the sketch changed.
    pub(super) fn insert(&mut self, h: u64) -> bool {
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

/// Distinct count of the union of `parts`: exact when every part is exact.
pub(super) fn union_estimate<'a, I>(parts: I) -> u64
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
