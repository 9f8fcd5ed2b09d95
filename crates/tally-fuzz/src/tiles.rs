//! Ledger tiles ([`tally_core::tiles`]): tile paths, entry bundles, and an
//! appender's edge resumed from stored tiles, all of which may come from
//! outside (a request path, a remote log's tiles, a database someone
//! edited).
//!
//! Input: a mode byte, then its data.
//! * `p` + a path: a path parses only from its one canonical spelling.
//! * `b` + width byte (0 meaning 256) + bytes: a bundle decodes to at most
//!   `width` entries, which encode back to exactly those bytes.
//! * `r` + 8 bytes of size (big-endian, cut to 2^24) + bytes: an edge
//!   resumed from those bytes (served for every tile it asks for) either
//!   fails cleanly or has that size, and its root and partial tiles can be
//!   taken without panicking.

use tally_core::tiles::{TileEdge, TileError, TileId, decode_bundle, encode_entry};

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        b'p' => {
            let Ok(path) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(id) = TileId::parse(path) {
                assert_eq!(id.path(), path, "a tile parsed from a non-canonical path");
                assert_eq!(TileId::parse(&id.path()), Ok(id));
                assert!(id.width >= 1 && id.width <= 256);
            }
        }
        b'b' => {
            let Some((w, bytes)) = rest.split_first() else {
                return;
            };
            let width = if *w == 0 { 256 } else { u16::from(*w) };
            if let Ok(entries) = decode_bundle(bytes, width) {
                assert!(entries.len() <= usize::from(width));
                let mut again = Vec::new();
                for e in &entries {
                    encode_entry(&mut again, e).expect("a decoded entry encodes");
                }
                assert_eq!(again, bytes, "a bundle decoded from other bytes");
            }
        }
        b'r' => {
            let Some((size, bytes)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let size = u64::from_be_bytes(*size) % (1 << 24);
            let mut read = |_: TileId| -> Result<Vec<u8>, TileError> { Ok(bytes.to_vec()) };
            if let Ok(edge) = TileEdge::resume(size, &mut read) {
                assert_eq!(edge.size(), size);
                let _ = edge.root();
                for t in edge.partials() {
                    assert!(!t.id.is_full(), "a partial tile that is full: {}", t.id);
                }
            }
        }
        _ => {}
    }
}
