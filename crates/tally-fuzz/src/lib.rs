//! The properties that tally's fuzz targets check.
//!
//! Each module holds one `check(data)` for one parser: it feeds `data` to the
//! parser and panics only when a property that must hold for every input is
//! broken (a panic inside the parser is such a break, too). The `cargo fuzz`
//! targets in `fuzz/` are one call each, and this crate's test replays every
//! seed corpus and every regression input with the same checks, so a crash
//! the fuzzer once found stays a failing test until it is fixed.
//!
//! The harness signs inputs itself with fixed keys ([`keys`]), so the fuzzer
//! reaches what lies behind a valid signature (claims, DPoP claims,
//! checkpoint bodies) instead of stopping at the first signature check.
#![forbid(unsafe_code)]

pub mod config;
pub mod dpop;
pub mod jws;
pub mod keys;
pub mod note;
pub mod record;
pub mod target;
pub mod tiles;

/// One property check: panics when `data` breaks a property.
pub type Check = fn(&[u8]);

/// Every target: its name (the directory of its corpus) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("jws", jws::check),
    ("record", record::check),
    ("note", note::check),
    ("target", target::check),
    ("dpop", dpop::check),
    ("config", config::check),
    ("tiles", tiles::check),
];

/// The token a signed-mode input stands for: for `s` followed by
/// `header\npayload`, both signed as they are with the harness key
/// ([`keys::compact`]); `None` for any other input.
pub fn signed(data: &[u8]) -> Option<String> {
    let rest = data.strip_prefix(b"s")?;
    let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    Some(keys::compact(header, payload))
}
