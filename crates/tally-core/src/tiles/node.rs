//! Hashing a whole tile's worth of nodes.

use crate::merkle::{Hash, node_hash};

/// The root of a perfect tree over `hashes` (a power of two of them).
pub(super) fn perfect_root(hashes: &[Hash]) -> Hash {
    let mut row = hashes.to_vec();
    while row.len() > 1 {
        row = row
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    row.first()
        .copied()
        .unwrap_or_else(crate::merkle::empty_root)
}
