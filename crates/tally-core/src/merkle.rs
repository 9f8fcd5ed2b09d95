//! Merkle tree math for the issuance ledger (RFC 6962 / RFC 9162).
//!
//! # Hashing
//!
//! The ledger is an RFC 6962 Merkle Tree Hash (MTH) over SHA-256 with domain
//! separation between leaves and interior nodes (RFC 9162 section 2.1.1):
//!
//! * empty tree: `MTH({}) = SHA-256("")` ([`empty_root`]);
//! * leaf: `SHA-256(0x00 || data)` ([`leaf_hash`]);
//! * interior node: `SHA-256(0x01 || left || right)` ([`node_hash`]);
//! * a tree of `n > 1` leaves is split at `k`, the largest power of two
//!   strictly smaller than `n`: `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))`.
//!
//! [`MerkleTree`] stores leaf hashes, never leaf data.
//!
//! # Proof formats
//!
//! Proofs are plain lists of 32-byte hashes, byte-for-byte the RFC 6962
//! `PATH` / `PROOF` lists (RFC 9162 sections 2.1.3.1 and 2.1.4.1):
//!
//! * **Inclusion proof** for leaf `index` in a tree of `size` leaves: the
//!   sibling hashes from the leaf up to the root, nearest sibling first.
//!   Verified with the RFC 9162 section 2.1.3.2 algorithm
//!   ([`root_from_inclusion_proof`], [`verify_inclusion`]).
//! * **Consistency proof** from `old_size` to `new_size`: the RFC 6962
//!   `PROOF(m, D[n])` list. Verified with the RFC 9162 section 2.1.4.2
//!   algorithm ([`verify_consistency`]).
//!
//! Both verifiers first check that the proof has exactly the length implied by
//! the sizes, so a truncated proof or one with extra hashes (leading or
//! trailing) is rejected with [`ProofError::WrongProofLength`] rather than
//! being partly ignored.
//!
//! Edge cases, following RFC 9162:
//!
//! * `old_size == new_size` (both non-zero): the consistency proof is empty
//!   and verifies iff the two roots are equal.
//! * `old_size == 0`: consistency with an empty tree is not a valid request in
//!   RFC 9162, so both [`MerkleTree::consistency_proof`] and
//!   [`verify_consistency`] return [`ProofError::EmptyOldTree`].
//! * Inclusion in a tree of size 0 is impossible:
//!   [`ProofError::IndexOutOfRange`].
//!
//! A proof relates hashes to a tree *size*; it does not authenticate the size
//! itself. For some `(index, size)` pairs the same proof also verifies against
//! the same root under a different size (for example the inclusion proof of
//! leaf 4 in a 7-leaf tree also "verifies" for size 8 against the 7-leaf
//! root). Callers must take `size` and `root` together from one authenticated
//! source, such as a signed checkpoint, never from separate places.
//!
//! # Cost
//!
//! [`MerkleTree`] keeps every complete, aligned subtree hash (about `2n`
//! hashes for `n` leaves). [`MerkleTree::push`] does amortised O(1) hashing;
//! roots and proofs for any size up to [`MerkleTree::len`] need O(log n)
//! hashes. The module does no I/O and reads no clock.

use std::fmt;

use aws_lc_rs::digest::{Context, Digest, SHA256, digest};

/// Length in bytes of a [`Hash`](type@Hash) (SHA-256 output).
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node hash, or a tree root.
pub type Hash = [u8; HASH_LEN];

/// Domain-separation prefix for leaf hashes (RFC 6962 section 2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix for interior node hashes (RFC 6962 section 2.1).
const NODE_PREFIX: u8 = 0x01;

fn to_hash(d: &Digest) -> Hash {
    let mut out = [0u8; HASH_LEN];
    // Invariant: the digest is always SHA-256, whose output is exactly
    // HASH_LEN bytes, so the lengths match and this cannot panic.
    out.copy_from_slice(d.as_ref());
    out
}

/// Returns the hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    to_hash(&ctx.finish())
}

/// Returns the hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    to_hash(&ctx.finish())
}

/// Returns the root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    to_hash(&digest(&SHA256, &[]))
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not smaller than the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size the index was checked against.
        size: u64,
    },
    /// A requested tree size is larger than the number of leaves held.
    #[error("tree size {size} exceeds the {len} leaves in the tree")]
    SizeOutOfRange {
        /// The requested tree size.
        size: u64,
        /// The number of leaves in the tree.
        len: u64,
    },
    /// A consistency proof from the empty tree was requested or supplied;
    /// RFC 9162 does not define one.
    #[error("consistency proofs from an empty tree (old size 0) are not defined")]
    EmptyOldTree,
    /// The old tree size of a consistency proof is larger than the new one.
    #[error("old tree size {old_size} exceeds new tree size {new_size}")]
    OldSizeExceedsNewSize {
        /// The old (smaller) tree size.
        old_size: u64,
        /// The new (larger) tree size.
        new_size: u64,
    },
    /// The proof does not have the number of hashes the sizes imply.
    #[error("proof has {got} hashes but {expected} are required")]
    WrongProofLength {
        /// The number of hashes the sizes require.
        expected: usize,
        /// The number of hashes supplied.
        got: usize,
    },
    /// The proof is well formed but does not lead to the supplied root(s).
    #[error("proof does not match the supplied root")]
    RootMismatch,
}

/// Returns a mask of the lowest `bits` bits (all ones for `bits >= 64`).
fn low_mask(bits: u32) -> u64 {
    match 1u64.checked_shl(bits) {
        Some(p) => p - 1,
        None => u64::MAX,
    }
}

/// Largest power of two strictly smaller than `n`; requires `n >= 2`.
fn split_point(n: u64) -> u64 {
    // For n >= 2, (n - 1) >= 1 has at most 63 leading zeros, so the shift
    // amount is in 0..=63.
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Number of significant bits of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

fn usize_to_u64(n: usize) -> u64 {
    // usize is at most 64 bits wide on every supported target.
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Hashes of the right border of a tree of some size `s`: entry `j`
/// (1..=64) is `MTH(D[s & !(2^j - 1) .. s])` when that range is non-empty,
/// so entry 64 is the root of the whole tree.
type Border = [Hash; 65];

/// In-memory Merkle tree over leaf hashes, append-only, storing every
/// complete subtree level so that roots and proofs for any size up to
/// [`len`](MerkleTree::len) cost O(log n) hashes.
#[derive(Clone, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the hash of the complete subtree of `2^h` leaves
    /// starting at leaf `i * 2^h`; `levels[0]` holds the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl MerkleTree {
    /// Creates an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree by appending the given leaf hashes in order.
    pub fn from_leaf_hashes(iter: impl IntoIterator<Item = Hash>) -> Self {
        let iter = iter.into_iter();
        let mut tree = Self::new();
        let (lower, _) = iter.size_hint();
        if lower > 0 {
            tree.levels.push(Vec::with_capacity(lower));
        }
        for h in iter {
            tree.push(h);
        }
        tree
    }

    /// Appends a leaf hash (not leaf data: see [`leaf_hash`]).
    ///
    /// Every subtree completed by this leaf is hashed and stored, which is
    /// amortised one node hash per push.
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut level = 0;
        let mut hash = leaf_hash;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level]; // just ensured to exist
            row.push(hash);
            match row.as_slice() {
                // An even-length row has just completed a pair: carry it up.
                [.., left, right] if row.len().is_multiple_of(2) => {
                    hash = node_hash(left, right);
                    level += 1;
                }
                _ => break,
            }
        }
    }

    /// Number of leaves in the tree.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| usize_to_u64(l.len()))
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the leaf hash at `index`, or `None` if `index >= len()`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// Root of the tree at its current size ([`empty_root`] when empty).
    pub fn root(&self) -> Hash {
        self.prefix_root(self.len())
    }

    /// Root of the tree as it was when it had `size` leaves.
    ///
    /// `root_at(0)` is [`empty_root`]. Fails with
    /// [`ProofError::SizeOutOfRange`] if `size > len()`.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(self.prefix_root(size))
    }

    /// Inclusion proof (RFC 6962 `PATH`) for leaf `index` in the tree of
    /// `size` leaves, nearest sibling first.
    ///
    /// Fails if `size > len()` or `index >= size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        Ok(unfailing(inclusion_proof_in(
            &mut InMemory(self),
            index,
            size,
        )))
    }

    /// Consistency proof (RFC 6962 `PROOF(old_size, D[new_size])`).
    ///
    /// Returns an empty proof when `old_size == new_size`. Fails with
    /// [`ProofError::EmptyOldTree`] if `old_size == 0`,
    /// [`ProofError::OldSizeExceedsNewSize`] if `old_size > new_size`, and
    /// [`ProofError::SizeOutOfRange`] if `new_size > len()`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        if old_size == 0 {
            return Err(ProofError::EmptyOldTree);
        }
        if old_size > new_size {
            return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
        }
        self.check_size(new_size)?;
        Ok(unfailing(consistency_proof_in(
            &mut InMemory(self),
            old_size,
            new_size,
        )))
    }

    /// Approximate number of heap bytes held by the tree.
    pub fn heap_bytes(&self) -> usize {
        let outer = self
            .levels
            .capacity()
            .saturating_mul(size_of::<Vec<Hash>>());
        self.levels.iter().fold(outer, |acc, row| {
            acc.saturating_add(row.capacity().saturating_mul(HASH_LEN))
        })
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let len = self.len();
        if size > len {
            return Err(ProofError::SizeOutOfRange { size, len });
        }
        Ok(())
    }

    /// Hash of the complete subtree of `2^level` leaves starting at `start`.
    fn stored(&self, level: u32, start: u64) -> Hash {
        // Invariant (upheld by every caller): `start` is a multiple of
        // `2^level` and `start + 2^level <= len()`. `push` stores every such
        // subtree, so both indices are in bounds, and the index fits in usize
        // because it is smaller than a Vec length.
        self.levels[level as usize][(start >> level) as usize]
    }

    /// Root of the first `size` leaves; requires `size <= len()`.
    fn prefix_root(&self, size: u64) -> Hash {
        unfailing(root_in(&mut InMemory(self), size))
    }
}

/// Where roots and proofs read the hashes of complete subtrees from: the
/// tree in memory ([`MerkleTree`]), or tiles in storage
/// ([`crate::tiles`]). The algorithms are written once, over this.
pub trait Subtrees {
    /// Why a subtree could not be read.
    type Error;

    /// The hash of the complete subtree of `2^level` leaves starting at
    /// leaf `start`. Callers ask only for aligned subtrees (`start` a
    /// multiple of `2^level`) inside the tree they work on.
    fn subtree(&mut self, level: u32, start: u64) -> Result<Hash, Self::Error>;
}

/// [`MerkleTree`] as a [`Subtrees`] source that cannot fail.
struct InMemory<'a>(&'a MerkleTree);

impl Subtrees for InMemory<'_> {
    type Error = std::convert::Infallible;

    fn subtree(&mut self, level: u32, start: u64) -> Result<Hash, Self::Error> {
        Ok(self.0.stored(level, start))
    }
}

fn unfailing<T>(r: Result<T, std::convert::Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Right-border hashes of the tree of `size` leaves (see [`Border`]): fewer
/// subtree reads than `size` has one bits.
fn border_in<S: Subtrees>(src: &mut S, size: u64) -> Result<Border, S::Error> {
    let mut out = [[0u8; HASH_LEN]; 65];
    let mut acc: Option<Hash> = None;
    for j in 0..u64::BITS {
        if (size >> j) & 1 == 1 {
            // The block for bit j starts after all higher blocks.
            let start = size & !low_mask(j + 1);
            let block = src.subtree(j, start)?;
            acc = Some(match acc {
                None => block,
                Some(right) => node_hash(&block, &right),
            });
        }
        if let Some(h) = acc {
            out[j as usize + 1] = h;
        }
    }
    Ok(out)
}

/// `MTH(D[lo:hi])` for a range produced by the RFC 6962 recursion on the
/// tree whose right border is `border`. Such a range is either a complete
/// aligned subtree, or a suffix `[size & !(2^j - 1), size)` of that tree.
fn range_hash_in<S: Subtrees>(
    src: &mut S,
    lo: u64,
    hi: u64,
    border: &Border,
) -> Result<Hash, S::Error> {
    let n = hi - lo;
    if n.is_power_of_two() {
        src.subtree(n.trailing_zeros(), lo)
    } else {
        Ok(border[bit_len(n) as usize])
    }
}

/// Root of the tree of `size` leaves read from `src` ([`empty_root`] for 0).
pub fn root_in<S: Subtrees>(src: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(border_in(src, size)?[64])
}

/// Inclusion proof (RFC 6962 `PATH`) for leaf `index` in the tree of `size`
/// leaves read from `src`, nearest sibling first. Requires `index < size`.
pub fn inclusion_proof_in<S: Subtrees>(
    src: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let border = border_in(src, size)?;
    let mut proof = Vec::with_capacity(inclusion_proof_len(index, size));
    // Walk down from the root; the recursion of RFC 6962 PATH, unrolled.
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            proof.push(range_hash_in(src, mid, hi, &border)?);
            hi = mid;
        } else {
            proof.push(range_hash_in(src, lo, mid, &border)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Consistency proof (RFC 6962 `PROOF(old_size, D[new_size])`) read from
/// `src`. Requires `0 < old_size <= new_size`; empty when they are equal.
pub fn consistency_proof_in<S: Subtrees>(
    src: &mut S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if old_size == new_size {
        return Ok(Vec::new());
    }
    let border = border_in(src, new_size)?;
    let mut proof = Vec::with_capacity(consistency_proof_len(old_size, new_size));
    // SUBPROOF(m, D[lo:hi], b) with m = old_size - lo, unrolled.
    let (mut lo, mut hi) = (0u64, new_size);
    let mut whole_old_tree = true; // the RFC's flag `b`
    while old_size < hi {
        // Here lo < old_size < hi, so hi - lo >= 2.
        let mid = lo + split_point(hi - lo);
        if old_size <= mid {
            proof.push(range_hash_in(src, mid, hi, &border)?);
            hi = mid;
        } else {
            proof.push(range_hash_in(src, lo, mid, &border)?);
            lo = mid;
            whole_old_tree = false;
        }
    }
    if !whole_old_tree {
        proof.push(range_hash_in(src, lo, hi, &border)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Length of the inclusion proof for `index` in a tree of `size` leaves;
/// requires `index < size`.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // Levels where the path to `index` and the path to the last leaf differ
    // have a complete sibling; above them, one left sibling per one bit.
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Length of the consistency proof from `old_size` to `new_size`;
/// requires `0 < old_size < new_size`.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let inner = bit_len((old_size - 1) ^ (new_size - 1));
    let border = (old_size - 1).checked_shr(inner).unwrap_or(0).count_ones();
    // The lowest `shift` levels lie inside the old tree's last complete
    // subtree, whose hash is one proof element (or the old root itself when
    // old_size is a power of two). inner > shift whenever old < new.
    let shift = old_size.trailing_zeros();
    let seed = usize::from(!old_size.is_power_of_two());
    seed + (inner.saturating_sub(shift) + border) as usize
}

/// Computes the root implied by an inclusion proof (RFC 9162 section
/// 2.1.3.2), used by [`verify_inclusion`].
///
/// Fails with [`ProofError::IndexOutOfRange`] if `index >= size` and with
/// [`ProofError::WrongProofLength`] unless the proof has exactly the length
/// implied by `index` and `size`.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

/// Verifies an inclusion proof for `leaf_hash` at `index` in the tree of
/// `size` leaves whose root is `root` (RFC 9162 section 2.1.3.2).
///
/// `size` and `root` must come from the same authenticated tree head (see
/// the module documentation).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    // Roots are public values, so a variable-time comparison leaks nothing.
    if computed == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies a consistency proof between the tree of `old_size` leaves with
/// root `old_root` and the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 section 2.1.4.2).
///
/// `old_size == new_size` requires an empty proof and equal roots.
/// `old_size == 0` is rejected with [`ProofError::EmptyOldTree`], as RFC 9162
/// defines no such proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old_size == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2: if old_size is a power of two, the path starts with old_root.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(wrong_length),
        }
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_length);
    }
    // Roots are public values, so a variable-time comparison leaks nothing.
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----------------------------------------------------------------------
    // Helpers
    // ----------------------------------------------------------------------

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h32(s: &str) -> Hash {
        unhex(s).try_into().unwrap()
    }

    /// Distinct leaf hashes for synthetic trees.
    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// SplitMix64: a tiny deterministic PRNG for reproducible random cases.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform-ish in `lo..=hi`.
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next_u64() % (hi - lo + 1)
        }
        fn hash(&mut self) -> Hash {
            let mut h = [0u8; HASH_LEN];
            for chunk in h.chunks_mut(8) {
                chunk.copy_from_slice(&self.next_u64().to_le_bytes());
            }
            h
        }
    }

    // ----------------------------------------------------------------------
    // Reference implementation: RFC 6962 section 2.1, transcribed literally
    // (slow, recursive, over a slice of leaf hashes).
    // ----------------------------------------------------------------------

    /// Largest power of two strictly smaller than `n` (n >= 2).
    fn ref_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH over leaf hashes (MTH({d}) = leaf hash of d).
    fn ref_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = ref_k(n);
                node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return Vec::new();
        }
        let k = ref_k(n);
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b).
    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![ref_mth(d)] };
        }
        let k = ref_k(n);
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], b);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]).
    fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        ref_subproof(m, d, true)
    }

    // The same recursions, but returning the leaf range `[lo, hi)` that each
    // proof element is the MTH of. Used to predict which parameter
    // mutations must be rejected (see `Expr`).

    fn ref_path_ranges(m: u64, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let n = hi - lo;
        if n == 1 {
            return Vec::new();
        }
        let k = ref_k(n as usize) as u64;
        if m < k {
            let mut p = ref_path_ranges(m, lo, lo + k);
            p.push((lo + k, hi));
            p
        } else {
            let mut p = ref_path_ranges(m - k, lo + k, hi);
            p.push((lo, lo + k));
            p
        }
    }

    fn ref_subproof_ranges(m: u64, lo: u64, hi: u64, b: bool) -> Vec<(u64, u64)> {
        let n = hi - lo;
        if m == n {
            return if b { Vec::new() } else { vec![(lo, hi)] };
        }
        let k = ref_k(n as usize) as u64;
        if m <= k {
            let mut p = ref_subproof_ranges(m, lo, lo + k, b);
            p.push((lo + k, hi));
            p
        } else {
            let mut p = ref_subproof_ranges(m - k, lo + k, hi, false);
            p.push((lo, lo + k));
            p
        }
    }

    /// What a verifier's input hash stands for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Label {
        Leaf,
        OldRoot,
        Proof(usize),
    }

    /// Formal expression of a root in terms of the verifier's inputs.
    #[derive(Debug, PartialEq, Eq)]
    enum Expr {
        Input(Label),
        Node(Box<Expr>, Box<Expr>),
        Unresolved,
    }

    fn expr(lo: u64, hi: u64, known: &[((u64, u64), Label)]) -> Expr {
        if let Some((_, l)) = known.iter().find(|(r, _)| *r == (lo, hi)) {
            return Expr::Input(*l);
        }
        if hi - lo <= 1 {
            return Expr::Unresolved;
        }
        let mid = lo + ref_k((hi - lo) as usize) as u64;
        Expr::Node(
            Box::new(expr(lo, mid, known)),
            Box::new(expr(mid, hi, known)),
        )
    }

    fn is_resolved(e: &Expr) -> bool {
        match e {
            Expr::Input(_) => true,
            Expr::Node(l, r) => is_resolved(l) && is_resolved(r),
            Expr::Unresolved => false,
        }
    }

    /// How the root of a `size`-leaf tree is formed from the leaf hash and
    /// the inclusion proof elements for `index`.
    fn inclusion_shape(index: u64, size: u64) -> Expr {
        let mut known = vec![((index, index + 1), Label::Leaf)];
        for (j, r) in ref_path_ranges(index, 0, size).into_iter().enumerate() {
            known.push((r, Label::Proof(j)));
        }
        let e = expr(0, size, &known);
        assert!(is_resolved(&e), "inclusion ({index}, {size})");
        e
    }

    /// How the old and new roots are formed from the consistency proof
    /// elements for `(old, new)` (and from the old root, which RFC 9162
    /// prepends when `old` is a power of two). Requires `0 < old < new`.
    fn consistency_shape(old: u64, new: u64) -> (Expr, Expr) {
        let mut known = Vec::new();
        if old.is_power_of_two() {
            known.push(((0, old), Label::OldRoot));
        }
        for (j, r) in ref_subproof_ranges(old, 0, new, true)
            .into_iter()
            .enumerate()
        {
            known.push((r, Label::Proof(j)));
        }
        let shape = (expr(0, old, &known), expr(0, new, &known));
        assert!(
            is_resolved(&shape.0) && is_resolved(&shape.1),
            "({old}, {new})"
        );
        shape
    }

    /// Whether verifying a valid inclusion proof for `(index, size)` must
    /// also succeed (with the same leaf, proof and root) when the verifier
    /// is told `(index2, size2)`: exactly when both compute the root by the
    /// same formula from the same inputs. Anything else would need a SHA-256
    /// collision (all test leaves are distinct).
    fn inclusion_mutant_accepted(index: u64, size: u64, index2: u64, size2: u64) -> bool {
        index2 < size2 && inclusion_shape(index2, size2) == inclusion_shape(index, size)
    }

    /// As [`inclusion_mutant_accepted`], for consistency proofs.
    fn consistency_mutant_accepted(old: u64, new: u64, old2: u64, new2: u64) -> bool {
        if old2 == 0 || old2 > new2 {
            return false;
        }
        if old2 == new2 || old == new {
            // Equal sizes need an empty proof and equal roots: only the
            // unmutated parameters satisfy both.
            return old2 == old && new2 == new;
        }
        consistency_shape(old2, new2) == consistency_shape(old, new)
    }

    // ----------------------------------------------------------------------
    // Mutation helpers
    // ----------------------------------------------------------------------

    /// Structural mutants of a proof list; none is a valid proof for the
    /// same parameters (swaps are only of distinct hashes).
    fn list_mutants(proof: &[Hash]) -> Vec<(String, Vec<Hash>)> {
        let mut out = Vec::new();
        for i in 0..proof.len() {
            for bit in [0usize, 7 * 8 + 3, 255] {
                let mut m = proof.to_vec();
                m[i][bit / 8] ^= 1 << (bit % 8);
                out.push((format!("flip bit {bit} of element {i}"), m));
            }
        }
        if !proof.is_empty() {
            out.push(("drop last".into(), proof[..proof.len() - 1].to_vec()));
            out.push(("drop first".into(), proof[1..].to_vec()));
            let mut dup = proof.to_vec();
            dup.push(proof[proof.len() - 1]);
            out.push(("repeat last".into(), dup));
        }
        for extra in [[0u8; HASH_LEN], [0xa5; HASH_LEN]] {
            let mut m = proof.to_vec();
            m.push(extra);
            out.push(("append extra".into(), m));
            let mut m = vec![extra];
            m.extend_from_slice(proof);
            out.push(("prepend extra".into(), m));
        }
        for i in 1..proof.len() {
            if proof[i - 1] != proof[i] {
                let mut m = proof.to_vec();
                m.swap(i - 1, i);
                out.push((format!("swap {} and {i}", i - 1), m));
            }
        }
        out
    }

    fn flip(h: &Hash) -> Hash {
        let mut m = *h;
        m[HASH_LEN / 2] ^= 0x10;
        m
    }

    /// Checks that `proof` verifies and that every mutant behaves as
    /// predicted. Returns the number of mutants checked.
    fn check_inclusion_mutants(
        leaf: &Hash,
        other_leaf: &Hash,
        index: u64,
        size: u64,
        proof: &[Hash],
        root: &Hash,
    ) -> usize {
        assert_eq!(verify_inclusion(leaf, index, size, proof, root), Ok(()));
        let mut checked = 0;
        for (what, m) in list_mutants(proof) {
            assert!(
                verify_inclusion(leaf, index, size, &m, root).is_err(),
                "inclusion ({index}, {size}): mutant '{what}' verified"
            );
            checked += 1;
        }
        for bad_leaf in [flip(leaf), *other_leaf] {
            assert!(verify_inclusion(&bad_leaf, index, size, proof, root).is_err());
            checked += 1;
        }
        assert_eq!(
            verify_inclusion(leaf, index, size, proof, &flip(root)),
            Err(ProofError::RootMismatch)
        );
        checked += 1;
        let params = [
            (index.wrapping_sub(1), size),
            (index + 1, size),
            (index, size - 1),
            (index, size + 1),
        ];
        for (i2, s2) in params {
            let got = verify_inclusion(leaf, i2, s2, proof, root);
            let expect_ok = inclusion_mutant_accepted(index, size, i2, s2);
            assert_eq!(
                got.is_ok(),
                expect_ok,
                "inclusion ({index}, {size}) verified as ({i2}, {s2}): {got:?}"
            );
            checked += 1;
        }
        checked
    }

    /// As [`check_inclusion_mutants`], for consistency proofs.
    fn check_consistency_mutants(
        old: u64,
        new: u64,
        proof: &[Hash],
        old_root: &Hash,
        new_root: &Hash,
    ) -> usize {
        assert_eq!(
            verify_consistency(old, new, proof, old_root, new_root),
            Ok(())
        );
        let mut checked = 0;
        for (what, m) in list_mutants(proof) {
            assert!(
                verify_consistency(old, new, &m, old_root, new_root).is_err(),
                "consistency ({old}, {new}): mutant '{what}' verified"
            );
            checked += 1;
        }
        for (o, n) in [(flip(old_root), *new_root), (*old_root, flip(new_root))] {
            assert!(verify_consistency(old, new, proof, &o, &n).is_err());
            checked += 1;
        }
        if old != new {
            assert!(verify_consistency(old, new, proof, new_root, old_root).is_err());
            checked += 1;
        }
        let params = [
            (old - 1, new),
            (old + 1, new),
            (old, new - 1),
            (old, new + 1),
        ];
        for (o2, n2) in params {
            let got = verify_consistency(o2, n2, proof, old_root, new_root);
            let expect_ok = consistency_mutant_accepted(old, new, o2, n2);
            assert_eq!(
                got.is_ok(),
                expect_ok,
                "consistency ({old}, {new}) verified as ({o2}, {n2}): {got:?}"
            );
            checked += 1;
        }
        checked
    }

    // ----------------------------------------------------------------------
    // Hash primitives and published vectors
    // ----------------------------------------------------------------------

    /// The eight leaf inputs used by the Certificate Transparency and
    /// transparency-dev/merkle RFC 6962 test data.
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Roots of the first `n` CT_LEAVES, `n = 0..=8`. Published in the
    /// certificate-transparency and transparency-dev/merkle RFC 6962 test
    /// data; independently recomputed with Python hashlib
    /// (SHA-256(0x00||d) / SHA-256(0x01||l||r)) and found identical.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_tree() -> MerkleTree {
        MerkleTree::from_leaf_hashes(CT_LEAVES.iter().map(|l| leaf_hash(&unhex(l))))
    }

    #[test]
    fn hash_primitives() {
        assert_eq!(empty_root(), h32(CT_ROOTS[0]));
        // SHA-256(0x00) is the leaf hash of the empty input.
        assert_eq!(leaf_hash(b""), h32(CT_ROOTS[1]));
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        // Domain separation: a leaf whose data looks like two child hashes
        // does not collide with the interior node over those children.
        let mut concat = Vec::new();
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&b);
        assert_ne!(leaf_hash(&concat), node_hash(&a, &b));
    }

    #[test]
    fn ct_roots_match_published_vectors() {
        let tree = ct_tree();
        assert_eq!(tree.len(), 8);
        for (n, hex) in CT_ROOTS.iter().enumerate() {
            let n = n as u64;
            assert_eq!(tree.root_at(n), Ok(h32(hex)), "root_at({n})");
            let fresh = MerkleTree::from_leaf_hashes(
                CT_LEAVES[..n as usize].iter().map(|l| leaf_hash(&unhex(l))),
            );
            assert_eq!(fresh.root(), h32(hex), "fresh tree of {n}");
        }
        assert_eq!(tree.root(), h32(CT_ROOTS[8]));
        assert_eq!(MerkleTree::new().root(), empty_root());
    }

    /// Every inclusion and consistency proof over the 8 CT leaves, generated
    /// by an independent Python (hashlib) transcription of RFC 6962 section
    /// 2.1 and stored in testdata/merkle/rfc6962_vectors.json.
    #[test]
    fn python_generated_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/merkle/rfc6962_vectors.json")).unwrap();
        let hashes = |val: &serde_json::Value| -> Vec<Hash> {
            val.as_array()
                .unwrap()
                .iter()
                .map(|h| h32(h.as_str().unwrap()))
                .collect()
        };
        let file_leaves: Vec<&str> = v["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(file_leaves, CT_LEAVES);
        let roots = hashes(&v["roots"]);
        let expected_roots: Vec<Hash> = CT_ROOTS.iter().map(|h| h32(h)).collect();
        assert_eq!(roots, expected_roots);

        let tree = ct_tree();
        let mut inclusion_cases = 0;
        for case in v["inclusion"].as_array().unwrap() {
            let index = case["index"].as_u64().unwrap();
            let size = case["size"].as_u64().unwrap();
            let path = hashes(&case["path"]);
            assert_eq!(tree.inclusion_proof(index, size), Ok(path.clone()));
            let leaf = tree.leaf(index).unwrap();
            assert_eq!(
                verify_inclusion(&leaf, index, size, &path, &roots[size as usize]),
                Ok(())
            );
            inclusion_cases += 1;
        }
        assert_eq!(inclusion_cases, 36);
        let mut consistency_cases = 0;
        for case in v["consistency"].as_array().unwrap() {
            let old = case["old_size"].as_u64().unwrap();
            let new = case["new_size"].as_u64().unwrap();
            let proof = hashes(&case["proof"]);
            assert_eq!(tree.consistency_proof(old, new), Ok(proof.clone()));
            assert_eq!(
                verify_consistency(old, new, &proof, &roots[old as usize], &roots[new as usize]),
                Ok(())
            );
            consistency_cases += 1;
        }
        assert_eq!(consistency_cases, 36);
    }

    /// The 7-leaf worked example of RFC 6962 section 2.1.3 / RFC 9162
    /// section 2.1.5, with d0..d6 = the first seven CT test leaves:
    ///
    /// ```text
    ///             hash
    ///            /    \
    ///           k      l
    ///          / \    / \
    ///         g   h  i   j
    ///        / \ / \/ \  |
    ///        a b c d e f d6
    /// ```
    #[test]
    fn rfc9162_worked_example() {
        let lh: Vec<Hash> = CT_LEAVES[..7]
            .iter()
            .map(|l| leaf_hash(&unhex(l)))
            .collect();
        let (a, b, c, d, e, f, j) = (lh[0], lh[1], lh[2], lh[3], lh[4], lh[5], lh[6]);
        let g = node_hash(&a, &b);
        let h = node_hash(&c, &d);
        let i = node_hash(&e, &f);
        let k = node_hash(&g, &h);
        let l = node_hash(&i, &j);
        let root = node_hash(&k, &l);
        let tree = MerkleTree::from_leaf_hashes(lh.iter().copied());
        assert_eq!(tree.root(), root);
        assert_eq!(root, h32(CT_ROOTS[7]));

        // "The inclusion proof for d0 is [b, h, l]", d3 [c, g, l],
        // d4 [f, j, k], d6 [i, k].
        for (index, expected) in [
            (0u64, vec![b, h, l]),
            (3, vec![c, g, l]),
            (4, vec![f, j, k]),
            (6, vec![i, k]),
        ] {
            let proof = tree.inclusion_proof(index, 7).unwrap();
            assert_eq!(proof, expected, "inclusion proof for d{index}");
            assert_eq!(
                verify_inclusion(&lh[index as usize], index, 7, &proof, &root),
                Ok(())
            );
        }

        // hash0 = MTH(D[0:3]), hash1 = MTH(D[0:4]) = k, hash2 = MTH(D[0:6]).
        let hash0 = node_hash(&g, &c);
        let hash1 = k;
        let hash2 = node_hash(&k, &i);
        assert_eq!(tree.root_at(3), Ok(hash0));
        assert_eq!(tree.root_at(4), Ok(hash1));
        assert_eq!(tree.root_at(6), Ok(hash2));
        // PROOF(3, D[7]) = [c, d, g, l], PROOF(4, D[7]) = [l],
        // PROOF(6, D[7]) = [i, j, k].
        for (old, old_root, expected) in [
            (3u64, hash0, vec![c, d, g, l]),
            (4, hash1, vec![l]),
            (6, hash2, vec![i, j, k]),
        ] {
            let proof = tree.consistency_proof(old, 7).unwrap();
            assert_eq!(proof, expected, "consistency proof {old} -> 7");
            assert_eq!(verify_consistency(old, 7, &proof, &old_root, &root), Ok(()));
        }
    }

    // ----------------------------------------------------------------------
    // Cross-checks against the reference implementation
    // ----------------------------------------------------------------------

    #[test]
    fn reference_range_variants_agree_with_hash_variants() {
        let d = leaves(23);
        for n in 1..=23usize {
            for m in 0..n {
                let from_ranges: Vec<Hash> = ref_path_ranges(m as u64, 0, n as u64)
                    .into_iter()
                    .map(|(lo, hi)| ref_mth(&d[lo as usize..hi as usize]))
                    .collect();
                assert_eq!(from_ranges, ref_path(m, &d[..n]));
            }
            for m in 1..=n {
                let from_ranges: Vec<Hash> = ref_subproof_ranges(m as u64, 0, n as u64, true)
                    .into_iter()
                    .map(|(lo, hi)| ref_mth(&d[lo as usize..hi as usize]))
                    .collect();
                assert_eq!(from_ranges, ref_proof(m, &d[..n]));
            }
        }
    }

    #[test]
    fn exhaustive_against_reference_up_to_64() {
        const N: u64 = 64;
        let d = leaves(N);
        let full = MerkleTree::from_leaf_hashes(d.iter().copied());
        let mut incremental = MerkleTree::new();
        assert_eq!(incremental.root(), empty_root());
        for n in 1..=N {
            incremental.push(d[n as usize - 1]);
            let ref_root = ref_mth(&d[..n as usize]);
            assert_eq!(incremental.root(), ref_root, "incremental root {n}");
            assert_eq!(full.root_at(n), Ok(ref_root), "root_at({n})");
            for index in 0..n {
                let proof = full.inclusion_proof(index, n).unwrap();
                assert_eq!(proof, ref_path(index as usize, &d[..n as usize]));
                assert_eq!(proof.len(), inclusion_proof_len(index, n));
                assert_eq!(incremental.inclusion_proof(index, n), Ok(proof.clone()));
                assert_eq!(
                    verify_inclusion(&d[index as usize], index, n, &proof, &ref_root),
                    Ok(())
                );
            }
            for m in 1..=n {
                let proof = full.consistency_proof(m, n).unwrap();
                assert_eq!(proof, ref_proof(m as usize, &d[..n as usize]), "({m}, {n})");
                if m < n {
                    assert_eq!(proof.len(), consistency_proof_len(m, n));
                }
                assert_eq!(
                    verify_consistency(m, n, &proof, &ref_mth(&d[..m as usize]), &ref_root),
                    Ok(())
                );
            }
        }
        assert_eq!(full.root_at(0), Ok(empty_root()));
    }

    #[test]
    fn random_large_sizes_against_reference() {
        const N: u64 = 5000;
        let d = leaves(N);
        let tree = MerkleTree::from_leaf_hashes(d.iter().copied());
        assert_eq!(tree.root(), ref_mth(&d));
        let mut rng = Rng(0x7a11_7e11_5eed_0001);
        for _ in 0..40 {
            let n = rng.range(65, N);
            let ref_root = ref_mth(&d[..n as usize]);
            assert_eq!(tree.root_at(n), Ok(ref_root), "root_at({n})");
            let fresh = MerkleTree::from_leaf_hashes(d[..n as usize].iter().copied());
            assert_eq!(fresh.root(), ref_root);

            let index = rng.range(0, n - 1);
            let proof = tree.inclusion_proof(index, n).unwrap();
            assert_eq!(proof, ref_path(index as usize, &d[..n as usize]));
            assert_eq!(
                verify_inclusion(&d[index as usize], index, n, &proof, &ref_root),
                Ok(())
            );
            // Last leaf and first leaf are the edge paths.
            for index in [0, n - 1] {
                let proof = tree.inclusion_proof(index, n).unwrap();
                assert_eq!(proof, ref_path(index as usize, &d[..n as usize]));
            }

            let m = rng.range(1, n);
            let proof = tree.consistency_proof(m, n).unwrap();
            assert_eq!(proof, ref_proof(m as usize, &d[..n as usize]), "({m}, {n})");
            let old_root = ref_mth(&d[..m as usize]);
            assert_eq!(
                verify_consistency(m, n, &proof, &old_root, &ref_root),
                Ok(())
            );
            // Power-of-two old sizes take the other branch of the verifier.
            let p = split_point(n);
            let proof = tree.consistency_proof(p, n).unwrap();
            assert_eq!(proof, ref_proof(p as usize, &d[..n as usize]));
            assert_eq!(
                verify_consistency(p, n, &proof, &ref_mth(&d[..p as usize]), &ref_root),
                Ok(())
            );
        }
    }

    #[test]
    fn tree_accessors() {
        let d = leaves(100);
        let mut tree = MerkleTree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.leaf(0), None);
        let empty_bytes = tree.heap_bytes();
        for h in &d {
            tree.push(*h);
        }
        assert!(!tree.is_empty());
        assert_eq!(tree.len(), 100);
        for (i, h) in d.iter().enumerate() {
            assert_eq!(tree.leaf(i as u64), Some(*h));
        }
        assert_eq!(tree.leaf(100), None);
        assert_eq!(tree.leaf(u64::MAX), None);
        // At least the leaves and the ~n interior nodes are held.
        // 100 + 50 + 25 + 12 + 6 + 3 + 1 stored hashes.
        assert!(tree.heap_bytes() >= empty_bytes + 197 * HASH_LEN);
        assert!(tree.heap_bytes() < 16 * 100 * HASH_LEN);
        let rebuilt = MerkleTree::from_leaf_hashes(d.iter().copied());
        assert_eq!(rebuilt.root(), tree.root());
        assert_eq!(rebuilt.len(), tree.len());
        assert_eq!(format!("{tree:?}"), "MerkleTree { len: 100, .. }");
    }

    // ----------------------------------------------------------------------
    // Mutations
    // ----------------------------------------------------------------------

    #[test]
    fn mutated_proofs_are_rejected() {
        const N: u64 = 40;
        let d = leaves(N);
        let tree = MerkleTree::from_leaf_hashes(d.iter().copied());
        let mut checked = 0;
        let mut size_mutants_accepted = 0;
        for n in 1..=N {
            let root = tree.root_at(n).unwrap();
            for index in 0..n {
                let proof = tree.inclusion_proof(index, n).unwrap();
                let other = d[((index + 1) % N) as usize];
                checked +=
                    check_inclusion_mutants(&d[index as usize], &other, index, n, &proof, &root);
                if inclusion_mutant_accepted(index, n, index, n + 1) {
                    size_mutants_accepted += 1;
                }
            }
            for m in 1..=n {
                let proof = tree.consistency_proof(m, n).unwrap();
                let old_root = tree.root_at(m).unwrap();
                checked += check_consistency_mutants(m, n, &proof, &old_root, &root);
            }
        }
        // Random larger proofs.
        let big = leaves(3000);
        let big_tree = MerkleTree::from_leaf_hashes(big.iter().copied());
        let mut rng = Rng(0xbad_c0ffee);
        for _ in 0..60 {
            let n = rng.range(2, 3000);
            let root = big_tree.root_at(n).unwrap();
            let index = rng.range(0, n - 1);
            let proof = big_tree.inclusion_proof(index, n).unwrap();
            let other = big[((index + 1) % n) as usize];
            checked +=
                check_inclusion_mutants(&big[index as usize], &other, index, n, &proof, &root);
            let m = rng.range(1, n - 1);
            let proof = big_tree.consistency_proof(m, n).unwrap();
            let old_root = big_tree.root_at(m).unwrap();
            checked += check_consistency_mutants(m, n, &proof, &old_root, &root);
        }
        assert!(checked > 30_000, "only {checked} mutants checked");
        // The prediction is not vacuous: some size mutants really verify.
        assert!(size_mutants_accepted > 0);
    }

    /// Pins the documented limitation: proofs do not authenticate the tree
    /// size, so size and root must come from one signed tree head.
    #[test]
    fn proofs_do_not_bind_tree_size() {
        let d = leaves(8);
        let tree = MerkleTree::from_leaf_hashes(d.iter().copied());
        let root7 = tree.root_at(7).unwrap();
        let proof = tree.inclusion_proof(4, 7).unwrap();
        assert_eq!(verify_inclusion(&d[4], 4, 7, &proof, &root7), Ok(()));
        assert_eq!(verify_inclusion(&d[4], 4, 8, &proof, &root7), Ok(()));
        let root4 = tree.root_at(4).unwrap();
        let proof = tree.consistency_proof(4, 7).unwrap();
        assert_eq!(verify_consistency(4, 8, &proof, &root4, &root7), Ok(()));
        // ...but never against the root actually signed for size 8.
        let root8 = tree.root();
        assert_eq!(
            verify_consistency(4, 8, &proof, &root4, &root8),
            Err(ProofError::RootMismatch)
        );
    }

    // ----------------------------------------------------------------------
    // Hostile inputs
    // ----------------------------------------------------------------------

    #[test]
    fn generation_rejects_bad_parameters() {
        let tree = MerkleTree::from_leaf_hashes(leaves(10));
        assert_eq!(
            tree.root_at(11),
            Err(ProofError::SizeOutOfRange { size: 11, len: 10 })
        );
        assert_eq!(
            tree.root_at(u64::MAX),
            Err(ProofError::SizeOutOfRange {
                size: u64::MAX,
                len: 10
            })
        );
        assert_eq!(
            tree.inclusion_proof(10, 10),
            Err(ProofError::IndexOutOfRange {
                index: 10,
                size: 10
            })
        );
        assert_eq!(
            tree.inclusion_proof(5, 3),
            Err(ProofError::IndexOutOfRange { index: 5, size: 3 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 0),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 11),
            Err(ProofError::SizeOutOfRange { size: 11, len: 10 })
        );
        assert!(tree.inclusion_proof(u64::MAX, u64::MAX).is_err());
        assert!(tree.inclusion_proof(u64::MAX - 1, u64::MAX).is_err());
        assert_eq!(tree.consistency_proof(0, 5), Err(ProofError::EmptyOldTree));
        assert_eq!(tree.consistency_proof(0, 0), Err(ProofError::EmptyOldTree));
        assert_eq!(
            tree.consistency_proof(6, 5),
            Err(ProofError::OldSizeExceedsNewSize {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(
            tree.consistency_proof(3, 11),
            Err(ProofError::SizeOutOfRange { size: 11, len: 10 })
        );
        assert_eq!(
            tree.consistency_proof(11, 11),
            Err(ProofError::SizeOutOfRange { size: 11, len: 10 })
        );
        assert!(tree.consistency_proof(u64::MAX, u64::MAX).is_err());
        assert!(tree.consistency_proof(1, u64::MAX).is_err());
        assert_eq!(tree.consistency_proof(10, 10), Ok(Vec::new()));

        let empty = MerkleTree::new();
        assert_eq!(empty.root_at(0), Ok(empty_root()));
        assert!(empty.root_at(1).is_err());
        assert!(empty.inclusion_proof(0, 0).is_err());
        assert!(empty.consistency_proof(0, 0).is_err());
        assert!(empty.consistency_proof(1, 1).is_err());
    }

    #[test]
    fn verification_rejects_bad_parameters() {
        let x = leaf_hash(b"x");
        let r = empty_root();
        assert_eq!(
            verify_inclusion(&x, 0, 0, &[], &r),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            verify_inclusion(&x, 7, 7, &[], &r),
            Err(ProofError::IndexOutOfRange { index: 7, size: 7 })
        );
        assert_eq!(
            verify_inclusion(&x, u64::MAX, u64::MAX, &[], &r),
            Err(ProofError::IndexOutOfRange {
                index: u64::MAX,
                size: u64::MAX
            })
        );
        // Size 1: the leaf is the root, and the proof is empty.
        assert_eq!(verify_inclusion(&x, 0, 1, &[], &x), Ok(()));
        assert_eq!(
            verify_inclusion(&x, 0, 1, &[x], &x),
            Err(ProofError::WrongProofLength {
                expected: 0,
                got: 1
            })
        );

        assert_eq!(
            verify_consistency(0, 5, &[], &r, &r),
            Err(ProofError::EmptyOldTree)
        );
        assert_eq!(
            verify_consistency(0, 0, &[], &r, &r),
            Err(ProofError::EmptyOldTree)
        );
        assert_eq!(
            verify_consistency(6, 5, &[x], &r, &r),
            Err(ProofError::OldSizeExceedsNewSize {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(
            verify_consistency(u64::MAX, 1, &[], &r, &r),
            Err(ProofError::OldSizeExceedsNewSize {
                old_size: u64::MAX,
                new_size: 1
            })
        );
        // Equal sizes: empty proof, equal roots.
        assert_eq!(verify_consistency(5, 5, &[], &r, &r), Ok(()));
        assert_eq!(
            verify_consistency(5, 5, &[], &r, &x),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, 5, &[r], &r, &r),
            Err(ProofError::WrongProofLength {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(verify_consistency(u64::MAX, u64::MAX, &[], &r, &r), Ok(()));
        // Empty proof for distinct sizes (RFC 9162 2.1.4.2 step 1).
        assert!(matches!(
            verify_consistency(3, 7, &[], &r, &x),
            Err(ProofError::WrongProofLength { got: 0, .. })
        ));
    }

    #[test]
    fn huge_sizes_are_handled_in_bounded_time() {
        let x = leaf_hash(b"x");
        let r = leaf_hash(b"r");
        let mut rng = Rng(42);
        let big: Vec<Hash> = (0..70).map(|_| rng.hash()).collect();
        // (index, size, expected proof length) at the extremes of u64.
        for (index, size, len) in [
            (0u64, u64::MAX, 64usize),
            (u64::MAX - 1, u64::MAX, 63),
            (1 << 63, u64::MAX, 64),
            ((1 << 63) - 1, 1 << 63, 63),
            (0, 1 << 63, 63),
        ] {
            for n in 0..=big.len() {
                let got = root_from_inclusion_proof(&x, index, size, &big[..n]);
                if n == len {
                    assert!(got.is_ok(), "({index}, {size})");
                    assert_eq!(
                        verify_inclusion(&x, index, size, &big[..n], &r),
                        Err(ProofError::RootMismatch)
                    );
                } else {
                    assert_eq!(
                        got,
                        Err(ProofError::WrongProofLength {
                            expected: len,
                            got: n
                        })
                    );
                }
            }
        }
        for (old, new) in [
            (1u64, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (1 << 63, u64::MAX),
            ((1 << 63) - 1, 1 << 63),
            (3, u64::MAX),
        ] {
            let mut lengths_tried = 0;
            for n in 0..=big.len() {
                match verify_consistency(old, new, &big[..n], &x, &r) {
                    Err(ProofError::WrongProofLength { .. }) => {}
                    Err(ProofError::RootMismatch) => lengths_tried += 1,
                    other => panic!("({old}, {new}) with {n} hashes: {other:?}"),
                }
            }
            assert_eq!(lengths_tried, 1, "exactly one length is well formed");
        }
        // A very long proof is rejected on its length, without hashing it.
        let long = vec![x; 100_000];
        assert!(matches!(
            verify_inclusion(&x, 3, 10, &long, &r),
            Err(ProofError::WrongProofLength { got: 100_000, .. })
        ));
        assert!(matches!(
            verify_consistency(3, 10, &long, &x, &r),
            Err(ProofError::WrongProofLength { got: 100_000, .. })
        ));
    }

    #[test]
    fn random_garbage_never_verifies_or_panics() {
        let mut rng = Rng(0x5eed);
        for _ in 0..5000 {
            let size = match rng.next_u64() % 3 {
                0 => rng.range(0, 100),
                1 => rng.next_u64(),
                _ => u64::MAX - rng.range(0, 3),
            };
            let index = match rng.next_u64() % 3 {
                0 => rng.range(0, 100),
                1 => rng.next_u64(),
                _ => size.wrapping_sub(rng.range(0, 2)),
            };
            let n = rng.range(0, 66) as usize;
            let proof: Vec<Hash> = (0..n).map(|_| rng.hash()).collect();
            let leaf = rng.hash();
            let root = rng.hash();
            assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_err());
            let old_root = rng.hash();
            assert!(verify_consistency(index, size, &proof, &old_root, &root).is_err());
        }
    }
}
