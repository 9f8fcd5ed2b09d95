//! Tile coordinates and their C2SP `tlog-tiles` paths.

use std::fmt;

/// Tree levels per tile (fixed by C2SP `tlog-tiles`).
pub const HEIGHT: u32 = 8;

/// Hashes (or entries) in a full tile: `2^HEIGHT`.
pub const WIDTH: u16 = 256;

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// Hashes of tree level `8·L` (`tile/<L>/…`).
    Hashes(u8),
    /// Entries, the leaves' data (`tile/entries/…`).
    Entries,
}

/// One tile: its kind, index and width (1 to [`WIDTH`]; a full tile is
/// [`WIDTH`] wide, a partial one narrower).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Hashes of a level, or entries.
    pub kind: TileKind,
    /// Index `N` among the tiles of its level.
    pub index: u64,
    /// Width `W`.
    pub width: u16,
}

/// A tile and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Which tile.
    pub id: TileId,
    /// Its bytes: `32·W` of hashes, or an entry bundle.
    pub data: Vec<u8>,
}

/// Why a path is not a tile's (only canonical paths are accepted, so one
/// tile has one path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a tile path: {0}")]
pub struct PathError(pub String);

impl TileId {
    /// The hash tile at `level`, `index` of a tree of `size` leaves, as wide
    /// as that tree makes it; `None` if the tree has no such tile.
    pub fn of_hashes(level: u8, index: u64, size: u64) -> Option<TileId> {
        let stored = size.checked_shr(HEIGHT * u32::from(level)).unwrap_or(0);
        width_in(index, stored).map(|width| TileId {
            kind: TileKind::Hashes(level),
            index,
            width,
        })
    }

    /// The entry bundle `index` of a tree of `size` leaves; `None` if the
    /// tree has no such bundle.
    pub fn of_entries(index: u64, size: u64) -> Option<TileId> {
        width_in(index, size).map(|width| TileId {
            kind: TileKind::Entries,
            index,
            width,
        })
    }

    /// Whether the tile is full (it never changes again).
    pub fn is_full(&self) -> bool {
        self.width == WIDTH
    }

    /// The C2SP path, e.g. `tile/0/x001/x234/067.p/8`.
    pub fn path(&self) -> String {
        let mut out = String::from("tile/");
        match self.kind {
            TileKind::Hashes(l) => out.push_str(&l.to_string()),
            TileKind::Entries => out.push_str("entries"),
        }
        out.push('/');
        let digits = format!("{:03}", self.index);
        // Groups of three digits from the right; every group but the last
        // gets an `x`.
        let pad = (3 - digits.len() % 3) % 3;
        let digits = format!("{}{digits}", "0".repeat(pad));
        let groups: Vec<&str> = digits
            .as_bytes()
            .chunks(3)
            .map(|c| std::str::from_utf8(c).unwrap_or("000"))
            .collect();
        for (i, g) in groups.iter().enumerate() {
            if i + 1 < groups.len() {
                out.push('x');
                out.push_str(g);
                out.push('/');
            } else {
                out.push_str(g);
            }
        }
        if !self.is_full() {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }

    /// The tile a canonical C2SP path names.
    pub fn parse(path: &str) -> Result<TileId, PathError> {
        let bad = || PathError(path.chars().take(200).collect());
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (kind, rest) = rest.split_once('/').ok_or_else(bad)?;
        let kind = if kind == "entries" {
            TileKind::Entries
        } else {
            let l: u8 = kind.parse().map_err(|_| bad())?;
            if l > 63 || l.to_string() != kind {
                return Err(bad());
            }
            TileKind::Hashes(l)
        };
        let (number, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let w: u16 = w.parse().map_err(|_| bad())?;
                (n, Some(w))
            }
            None => (rest, None),
        };
        let mut index: u64 = 0;
        let groups: Vec<&str> = number.split('/').collect();
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let digits = if last {
                *g
            } else {
                g.strip_prefix('x').ok_or_else(bad)?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let d: u64 = digits.parse().map_err(|_| bad())?;
            index = index
                .checked_mul(1000)
                .and_then(|x| x.checked_add(d))
                .ok_or_else(bad)?;
        }
        let id = TileId {
            kind,
            index,
            width: width.unwrap_or(WIDTH),
        };
        if id.width == 0 || id.width > WIDTH || id.path() != path {
            return Err(bad());
        }
        Ok(id)
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// The width of tile `index` among `count` items of a level: full, partial
/// (the last, if `count` is not a multiple of [`WIDTH`]) or none.
fn width_in(index: u64, count: u64) -> Option<u16> {
    let full = count / u64::from(WIDTH);
    if index < full {
        return Some(WIDTH);
    }
    let rest = count % u64::from(WIDTH);
    // `rest < WIDTH`, so it fits.
    (index == full && rest > 0).then_some(rest as u16)
}

/// The rightmost tile of every level of a tree of `size` leaves (a partial
/// one where the level has one; the last full one where it does not), and
/// the rightmost entry bundle: what must be served for a checkpoint of that
/// size to be checkable.
pub fn rightmost_tiles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let stored = size.checked_shr(HEIGHT * u32::from(level)).unwrap_or(0);
        if stored == 0 {
            break;
        }
        let last = (stored - 1) / u64::from(WIDTH);
        out.extend(TileId::of_hashes(level, last, size));
        level += 1;
    }
    if size > 0 {
        out.extend(TileId::of_entries((size - 1) / u64::from(WIDTH), size));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: u16) -> TileId {
        TileId {
            kind: TileKind::Hashes(level),
            index,
            width,
        }
    }

    #[test]
    fn paths_follow_the_c2sp_encoding() {
        // tlog-tiles: index 1234067 is `x001/x234/067`.
        for (index, path) in [
            (0, "tile/0/000"),
            (999, "tile/0/999"),
            (1000, "tile/0/x001/000"),
            (1_234_067, "tile/0/x001/x234/067"),
            (123_456_789, "tile/0/x123/x456/789"),
        ] {
            let id = hashes(0, index, WIDTH);
            assert_eq!(id.path(), path);
            assert_eq!(TileId::parse(path), Ok(id));
        }
        let p = TileId {
            kind: TileKind::Entries,
            index: 1000,
            width: 17,
        };
        assert_eq!(p.path(), "tile/entries/x001/000.p/17");
        assert_eq!(TileId::parse(&p.path()), Ok(p));
        assert_eq!(hashes(2, 0, 1).path(), "tile/2/000.p/1");
        let max = hashes(63, u64::MAX, 255);
        assert_eq!(TileId::parse(&max.path()), Ok(max));
    }

    #[test]
    fn only_canonical_paths_parse() {
        for bad in [
            "tile/0/1000",
            "tile/0/001/000",
            "tile/0/x001",
            "tile/0/00",
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/017",
            "tile/0/x000/001",
            "tile/data/000",
            "tile/0/000/",
            "tiles/0/000",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(TileId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tiles_of_a_size_are_the_specs() {
        // tlog-tiles: a tree of 70000 entries has 273 full level-0 tiles and
        // `0/273.p/112`, a full `1/000` and `1/001.p/17`, and `2/000.p/1`.
        let s = 70_000;
        assert_eq!(TileId::of_hashes(0, 272, s), Some(hashes(0, 272, WIDTH)));
        assert_eq!(TileId::of_hashes(0, 273, s), Some(hashes(0, 273, 112)));
        assert_eq!(TileId::of_hashes(0, 274, s), None);
        assert_eq!(TileId::of_hashes(1, 0, s), Some(hashes(1, 0, WIDTH)));
        assert_eq!(TileId::of_hashes(1, 1, s), Some(hashes(1, 1, 17)));
        assert_eq!(TileId::of_hashes(2, 0, s), Some(hashes(2, 0, 1)));
        assert_eq!(TileId::of_hashes(3, 0, s), None);
        let edge: Vec<String> = rightmost_tiles(s).iter().map(TileId::path).collect();
        assert_eq!(
            edge,
            [
                "tile/0/273.p/112",
                "tile/1/001.p/17",
                "tile/2/000.p/1",
                "tile/entries/273.p/112"
            ]
        );
        // 256 entries: a full `0/000` and `1/000.p/1`, which holds the root.
        let edge: Vec<String> = rightmost_tiles(256).iter().map(TileId::path).collect();
        assert_eq!(edge, ["tile/0/000", "tile/1/000.p/1", "tile/entries/000"]);
        assert!(rightmost_tiles(0).is_empty());
    }
}
