//! What an appender keeps of the tree: the rightmost partial tile of every
//! level and the partial entry bundle (at most 255 hashes a level, whatever
//! the size), from which it hands out every tile its entries complete and
//! computes the root without reading anything.

use crate::merkle::{Hash, Subtrees, leaf_hash, root_in};

use super::bundle::{BundleError, encode_entry};
use super::error::TileError;
use super::id::{HEIGHT, Tile, TileId, TileKind, WIDTH};
use super::node::{hashes_of, perfect_root};
use super::read::TileReader;

/// The right edge of a tiled tree (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileEdge {
    size: u64,
    /// `levels[L]`: the hashes of the rightmost partial tile at level `L`
    /// (fewer than [`WIDTH`]).
    levels: Vec<Vec<Hash>>,
    /// The partial entry bundle (as many entries as `levels[0]` has hashes).
    bundle: Vec<u8>,
}

impl TileEdge {
    /// The edge of the empty tree.
    pub fn new() -> TileEdge {
        TileEdge::default()
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one entry and returns its leaf hash; every full tile and
    /// bundle it completes is pushed onto `done`. An entry too long for a
    /// bundle is refused and changes nothing.
    pub fn append(&mut self, entry: &[u8], done: &mut Vec<Tile>) -> Result<Hash, BundleError> {
        encode_entry(&mut self.bundle, entry)?;
        let leaf = leaf_hash(entry);
        self.size += 1;
        self.push(0, leaf, done);
        if self.size.is_multiple_of(u64::from(WIDTH)) {
            done.push(Tile {
                id: TileId {
                    kind: TileKind::Entries,
                    index: self.size / u64::from(WIDTH) - 1,
                    width: WIDTH,
                },
                data: std::mem::take(&mut self.bundle),
            });
        }
        Ok(leaf)
    }

    fn push(&mut self, level: usize, hash: Hash, done: &mut Vec<Tile>) {
        if self.levels.len() == level {
            self.levels.push(Vec::with_capacity(usize::from(WIDTH)));
        }
        self.levels[level].push(hash);
        if self.levels[level].len() < usize::from(WIDTH) {
            return;
        }
        let hashes = std::mem::take(&mut self.levels[level]);
        // `level` is at most 8 (64 bits of size, 8 a level), so it fits.
        let stored = self.size >> (HEIGHT as usize * level);
        done.push(Tile {
            id: TileId {
                kind: TileKind::Hashes(level as u8),
                index: stored / u64::from(WIDTH) - 1,
                width: WIDTH,
            },
            data: hashes.concat(),
        });
        self.push(level + 1, perfect_root(&hashes), done);
    }

    /// The partial tiles and bundle of the current size: with the full
    /// tiles handed out so far, everything a checkpoint of this size needs.
    pub fn partials(&self) -> Vec<Tile> {
        let mut out: Vec<Tile> = self
            .levels
            .iter()
            .enumerate()
            .filter(|(_, hashes)| !hashes.is_empty())
            .filter_map(|(level, hashes)| {
                let stored = self.size >> (HEIGHT as usize * level);
                Some(Tile {
                    id: TileId::of_hashes(level as u8, stored / u64::from(WIDTH), self.size)?,
                    data: hashes.concat(),
                })
            })
            .collect();
        if !self.bundle.is_empty() {
            out.extend(
                TileId::of_entries(self.size / u64::from(WIDTH), self.size).map(|id| Tile {
                    id,
                    data: self.bundle.clone(),
                }),
            );
        }
        out
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        // Every subtree of the root's border lies in a rightmost partial
        // tile, which the edge holds: this cannot fail.
        root_in(&mut &*self, self.size).unwrap_or_else(|_| crate::merkle::empty_root())
    }

    /// The edge of a stored tree of `size` leaves, from its rightmost
    /// partial tiles and bundle.
    pub fn resume(size: u64, reader: &mut impl TileReader) -> Result<TileEdge, TileError> {
        let mut edge = TileEdge {
            size,
            ..TileEdge::default()
        };
        let mut level = 0usize;
        while let Some(stored) = size.checked_shr(HEIGHT * level as u32).filter(|s| *s > 0) {
            let width = stored % u64::from(WIDTH);
            let mut hashes = Vec::with_capacity(usize::from(WIDTH));
            if width > 0 {
                let id = TileId::of_hashes(level as u8, stored / u64::from(WIDTH), size)
                    .ok_or_else(|| TileError::Store(format!("no tile at level {level}")))?;
                hashes.extend(hashes_of(id, &reader.read_tile(id)?)?);
            }
            edge.levels.push(hashes);
            level += 1;
        }
        if let Some(id) = TileId::of_entries(size / u64::from(WIDTH), size).filter(|t| !t.is_full())
        {
            let data = reader.read_tile(id)?;
            let entries = super::bundle::decode_bundle(&data, WIDTH)
                .map_err(|e| TileError::Store(format!("{}: {e}", id.path())))?;
            if entries.len() < usize::from(id.width) {
                return Err(TileError::Length {
                    path: id.path(),
                    len: data.len(),
                });
            }
            // A wider bundle than this size's: keep this size's entries,
            // and check each against its leaf hash.
            let mut bundle = Vec::new();
            for (i, e) in entries.iter().take(usize::from(id.width)).enumerate() {
                if edge.levels.first().and_then(|l| l.get(i)) != Some(&leaf_hash(e)) {
                    return Err(TileError::Store(format!(
                        "{}: entry {i} does not hash to its leaf",
                        id.path()
                    )));
                }
                encode_entry(&mut bundle, e).map_err(|e| TileError::Store(e.to_string()))?;
            }
            edge.bundle = bundle;
        }
        Ok(edge)
    }
}

/// The subtrees of the edge: those of the rightmost partial tiles.
impl Subtrees for &TileEdge {
    type Error = TileError;

    fn subtree(&mut self, level: u32, start: u64) -> Result<Hash, TileError> {
        let tile_level = level / HEIGHT;
        let span = 1usize << (level % HEIGHT);
        let first = start >> (HEIGHT * tile_level);
        let stored = self.size >> (HEIGHT * tile_level);
        let on_edge = first / u64::from(WIDTH) == stored / u64::from(WIDTH);
        let slot = (first % u64::from(WIDTH)) as usize;
        match self.levels.get(tile_level as usize) {
            Some(hashes) if on_edge && slot + span <= hashes.len() => {
                Ok(perfect_root(&hashes[slot..slot + span]))
            }
            _ => Err(TileError::NotOnEdge { level, start }),
        }
    }
}
