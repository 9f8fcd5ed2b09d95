//! The ledger's Merkle tree as C2SP `tlog-tiles`: fixed-height hash tiles
//! and entry bundles that can be stored, served and cached as immutable
//! files, so that nobody (not the node, not an auditor) needs the whole tree
//! in memory.
//!
//! * `id`: which tile is which ([`TileId`]): level, index, width, and the
//!   C2SP paths (`tile/<L>/x001/x234/067[.p/<W>]`, `tile/entries/<N>…`);
//! * `bundle`: entry bundles (each entry a big-endian `u16` length and its
//!   bytes);
//! * `edge`: [`TileEdge`], what an appender keeps (the rightmost partial
//!   tile of each level and the partial bundle, at most 255 hashes a level):
//!   it takes entries, hands out every tile they complete, and gives the
//!   root without reading anything;
//! * `read`: roots and RFC 6962 proofs of any published size, read from
//!   stored tiles through a [`TileReader`] (the algorithms are
//!   [`crate::merkle`]'s, over its [`crate::merkle::Subtrees`]).
//!
//! A tile at level `L`, index `N` holds the hashes of the tree's nodes at
//! height `8·L`, indices `N·256 … N·256+W−1`, as `W` raw 32-byte hashes;
//! level 0 holds the leaf hashes. A partial tile (`W < 256`) is a prefix of
//! the full tile it will become and is never hashed into the level above.
//! Pure: no I/O, no clock.

mod bundle;
mod edge;
mod error;
mod id;
mod node;
mod read;

pub use bundle::{BundleError, MAX_ENTRY_BYTES, decode_bundle, encode_entry};
pub use edge::TileEdge;
pub use error::TileError;
pub use id::{HEIGHT, PathError, Tile, TileId, TileKind, WIDTH, rightmost_tiles};
pub use read::{TileReader, TileSubtrees};
