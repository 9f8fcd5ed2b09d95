//! Why a tile could not be read or used.

use crate::merkle::ProofError;

/// Why a tile could not be read or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// The store has no such tile.
    #[error("tile {0} is missing")]
    Missing(String),
    /// The tile's bytes are not as many hashes as its width says.
    #[error("tile {path} has {len} bytes, not its width's")]
    Length {
        /// The tile's path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// The store failed.
    #[error("tile store: {0}")]
    Store(String),
    /// A subtree asked of a tree's edge that the edge does not hold.
    #[error("subtree {start}+2^{level} is not on the tree's right edge")]
    NotOnEdge {
        /// Its height.
        level: u32,
        /// Its first leaf.
        start: u64,
    },
    /// The request itself is out of range (a leaf or size beyond the tree).
    #[error("{0}")]
    Range(ProofError),
}
