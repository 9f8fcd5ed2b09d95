//! A hash tile's nodes: read from its bytes, and hashed together.

use crate::merkle::{HASH_LEN, Hash, node_hash};

use super::error::TileError;
use super::id::{TileId, WIDTH};

/// The `id.width` hashes of tile `id` from `data`, its bytes or those of a
/// wider version of it (a partial tile is a prefix of the full one);
/// anything else is an error.
pub(super) fn hashes_of(id: TileId, data: &[u8]) -> Result<Vec<Hash>, TileError> {
    let want = usize::from(id.width) * HASH_LEN;
    if data.len() < want
        || data.len() > usize::from(WIDTH) * HASH_LEN
        || !data.len().is_multiple_of(HASH_LEN)
    {
        return Err(TileError::Length {
            path: id.path(),
            len: data.len(),
        });
    }
    Ok(data[..want]
        .chunks_exact(HASH_LEN)
        .map(|c| {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

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
