//! Roots and proofs of a tiled tree, read from stored tiles: for any
//! published size, by [`crate::merkle`]'s algorithms over
//! [`TileSubtrees`].

use std::collections::HashMap;

use crate::merkle::{
    Hash, ProofError, Subtrees, consistency_proof_in, inclusion_proof_in, root_in,
};

use super::error::TileError;
use super::id::{HEIGHT, TileId, WIDTH};
use super::node::{hashes_of, perfect_root};

/// Reads stored tiles.
pub trait TileReader {
    /// The bytes of `tile`. A wider version of the same tile will do (a
    /// partial tile is a prefix of the full one it becomes).
    fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, TileError>;
}

impl<F: FnMut(TileId) -> Result<Vec<u8>, TileError>> TileReader for F {
    fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, TileError> {
        self(tile)
    }
}

/// The tree of `size` leaves whose tiles `reader` reads: its subtrees, root
/// and proofs. Each tile is read at most once (a proof needs at most two a
/// level).
pub struct TileSubtrees<R> {
    reader: R,
    size: u64,
    read: HashMap<TileId, Vec<Hash>>,
}

impl<R: TileReader> TileSubtrees<R> {
    /// The tree of `size` leaves.
    pub fn new(reader: R, size: u64) -> TileSubtrees<R> {
        TileSubtrees {
            reader,
            size,
            read: HashMap::new(),
        }
    }

    /// Its root.
    pub fn root(&mut self) -> Result<Hash, TileError> {
        root_in(self, self.size)
    }

    /// The inclusion proof of leaf `index` (RFC 6962 `PATH`).
    pub fn inclusion_proof(&mut self, index: u64) -> Result<Vec<Hash>, TileError> {
        if index >= self.size {
            return Err(TileError::Range(ProofError::IndexOutOfRange {
                index,
                size: self.size,
            }));
        }
        inclusion_proof_in(self, index, self.size)
    }

    /// The consistency proof from the tree of `old_size` leaves (RFC 6962
    /// `PROOF`).
    pub fn consistency_proof(&mut self, old_size: u64) -> Result<Vec<Hash>, TileError> {
        if old_size == 0 {
            return Err(TileError::Range(ProofError::EmptyOldTree));
        }
        if old_size > self.size {
            return Err(TileError::Range(ProofError::OldSizeExceedsNewSize {
                old_size,
                new_size: self.size,
            }));
        }
        consistency_proof_in(self, old_size, self.size)
    }

    fn hashes(&mut self, id: TileId) -> Result<&[Hash], TileError> {
        if !self.read.contains_key(&id) {
            let hashes = hashes_of(id, &self.reader.read_tile(id)?)?;
            self.read.insert(id, hashes);
        }
        Ok(self.read.get(&id).map_or(&[][..], Vec::as_slice))
    }
}

impl<R: TileReader> Subtrees for TileSubtrees<R> {
    type Error = TileError;

    fn subtree(&mut self, level: u32, start: u64) -> Result<Hash, TileError> {
        let tile_level = level / HEIGHT;
        let span = 1usize << (level % HEIGHT);
        let first = start >> (HEIGHT * tile_level);
        let index = first / u64::from(WIDTH);
        let slot = (first % u64::from(WIDTH)) as usize;
        let id = u8::try_from(tile_level)
            .ok()
            .and_then(|l| TileId::of_hashes(l, index, self.size))
            .ok_or(TileError::NotOnEdge { level, start })?;
        if slot + span > usize::from(id.width) {
            return Err(TileError::NotOnEdge { level, start });
        }
        let hashes = self.hashes(id)?;
        Ok(perfect_root(&hashes[slot..slot + span]))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::edge::TileEdge;
    use super::super::id::Tile;
    use super::*;
    use crate::merkle::MerkleTree;

    fn sha(b: &[u8]) -> String {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A tile store: every full tile handed out, and the partial tiles of
    /// every size checkpointed.
    #[derive(Default)]
    struct Store(BTreeMap<TileId, Vec<u8>>);

    impl Store {
        fn keep(&mut self, tiles: impl IntoIterator<Item = Tile>) {
            for t in tiles {
                self.0.insert(t.id, t.data);
            }
        }

        fn reader(&self) -> impl FnMut(TileId) -> Result<Vec<u8>, TileError> + '_ {
            |id| {
                self.0
                    .get(&id)
                    .cloned()
                    .ok_or(TileError::Missing(id.path()))
            }
        }
    }

    fn entry(i: u64) -> Vec<u8> {
        format!("entry-{i}").into_bytes()
    }

    #[test]
    fn tiles_give_the_roots_and_proofs_of_the_tree_in_memory() {
        let mut edge = TileEdge::new();
        let mut tree = MerkleTree::new();
        let mut store = Store::default();
        let mut sizes = vec![0u64];
        let mut done = Vec::new();
        // Checkpoints at uneven sizes, across tile and level boundaries.
        let mut next = 1u64;
        for i in 0..70_000u64 {
            tree.push(edge.append(&entry(i), &mut done).unwrap());
            store.keep(done.drain(..));
            if edge.size() == next || edge.size() == 65_536 || edge.size() == 256 {
                store.keep(edge.partials());
                sizes.push(edge.size());
                next = next * 3 / 2 + 1;
            }
            // Every size at first, then the checkpointed ones.
            if i < 3000 || sizes.last() == Some(&edge.size()) {
                assert_eq!(edge.root(), tree.root(), "size {}", edge.size());
            }
        }
        store.keep(edge.partials());
        sizes.push(edge.size());
        for (k, &s) in sizes.iter().enumerate() {
            let mut t = TileSubtrees::new(store.reader(), s);
            assert_eq!(t.root().unwrap(), tree.root_at(s).unwrap(), "root of {s}");
            for index in [0, s / 3, s.saturating_sub(1)] {
                if index < s {
                    assert_eq!(
                        t.inclusion_proof(index).unwrap(),
                        tree.inclusion_proof(index, s).unwrap(),
                        "inclusion of {index} in {s}"
                    );
                }
            }
            for &old in &sizes[1..=k.max(1).min(sizes.len() - 1)] {
                if old <= s && old > 0 {
                    assert_eq!(
                        t.consistency_proof(old).unwrap(),
                        tree.consistency_proof(old, s).unwrap(),
                        "consistency {old} -> {s}"
                    );
                }
            }
        }
        // The edge, resumed from the stored tiles, is the edge.
        let resumed = TileEdge::resume(edge.size(), &mut store.reader()).unwrap();
        assert_eq!(resumed, edge);
    }

    #[test]
    fn tiles_match_vectors_computed_with_gos_sumdb_tlog() {
        // Entries `entry-0` … `entry-299`; the values were computed with
        // golang.org/x/mod/sumdb/tlog (TreeHash, and tile bytes read through
        // TileHashReader) and agree with this implementation.
        let mut edge = TileEdge::new();
        let mut done = Vec::new();
        for i in 0..300 {
            edge.append(&entry(i), &mut done).unwrap();
        }
        assert_eq!(
            hex(&edge.root()),
            "aebb027d5c3dd08871ee52577a61fc83122d0d14352791943639bd4c12d36943"
        );
        let by_path: BTreeMap<String, Vec<u8>> = done
            .into_iter()
            .chain(edge.partials())
            .map(|t| (t.id.path(), t.data))
            .collect();
        assert_eq!(
            by_path.keys().collect::<Vec<_>>(),
            [
                "tile/0/000",
                "tile/0/001.p/44",
                "tile/1/000.p/1",
                "tile/entries/000",
                "tile/entries/001.p/44"
            ]
        );
        assert_eq!(
            sha(&by_path["tile/0/000"]),
            "8921c57d2f65271c82bf0f686c002793863c80c8d1cbbbf5db6046ff59e8b590"
        );
        assert_eq!(by_path["tile/0/001.p/44"].len(), 1408);
        assert_eq!(
            sha(&by_path["tile/0/001.p/44"]),
            "7bac48c6f72db216f103763f08f639e038a4097f2763009eb3cf2bb457280832"
        );
        // The root of size 256 is the one hash of `tile/1/000.p/1`.
        assert_eq!(
            hex(&by_path["tile/1/000.p/1"].as_slice().try_into().unwrap()),
            "f85f4ead34080710b4d1e808301543aaab81aa04deb88599350dc26a4f2f58de"
        );
        let bundle = &by_path["tile/entries/000"];
        assert_eq!(bundle.len(), 2706);
        assert!(bundle.starts_with(b"\x00\x07entry-0"));
        assert_eq!(
            sha(bundle),
            "2e41f76a98595afb6b3a27a02a74792386a99b155db3579513faf3bf67057752"
        );
    }

    #[test]
    fn a_missing_or_short_tile_is_an_error_not_a_wrong_answer() {
        let mut edge = TileEdge::new();
        let mut store = Store::default();
        let mut done = Vec::new();
        for i in 0..600 {
            edge.append(&entry(i), &mut done).unwrap();
        }
        store.keep(done);
        // No partial tiles kept: the root of 600 cannot be read.
        let mut t = TileSubtrees::new(store.reader(), 600);
        assert!(matches!(t.root(), Err(TileError::Missing(_))));
        drop(t);
        store.keep(edge.partials());
        let full = TileId::of_hashes(0, 0, 600).unwrap();
        store.0.get_mut(&full).unwrap().truncate(100);
        let mut t = TileSubtrees::new(store.reader(), 600);
        assert!(matches!(
            t.inclusion_proof(3),
            Err(TileError::Length { .. })
        ));
        assert!(matches!(t.inclusion_proof(600), Err(TileError::Range(_))));
        assert!(matches!(t.consistency_proof(0), Err(TileError::Range(_))));
        // A wider tile serves a narrower one's request.
        let mut store = Store::default();
        let mut edge = TileEdge::new();
        let mut done = Vec::new();
        for i in 0..300 {
            edge.append(&entry(i), &mut done).unwrap();
        }
        store.keep(done);
        store.keep(edge.partials());
        let wide = store.0[&TileId::of_hashes(0, 1, 300).unwrap()].clone();
        let narrow = TileId::of_hashes(0, 1, 290).unwrap();
        store.0.insert(narrow, wide);
        store.0.insert(
            TileId::of_hashes(1, 0, 290).unwrap(),
            store.0[&TileId::of_hashes(1, 0, 300).unwrap()].clone(),
        );
        let mut t = TileSubtrees::new(store.reader(), 290);
        let mut tree = MerkleTree::new();
        for i in 0..290 {
            tree.push(crate::merkle::leaf_hash(&entry(i)));
        }
        assert_eq!(t.root().unwrap(), tree.root());
    }
}
