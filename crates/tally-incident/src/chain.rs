//! The hash chain shared by the access log ([`crate::access::AccessLog`]) and
//! the incident audit table ([`crate::store::IncidentStore`]): how one link
//! is hashed, and the head witness kept beside a chain's database.
//!
//! Invariants both chains rely on:
//!
//! * entry `seq` stores `hash = SHA-256(prev || seq || at || body)`, with
//!   `seq` and `at` as 8 big-endian bytes and `prev` the hash of entry
//!   `seq - 1` (32 zero bytes before the first one), so editing, deleting or
//!   inserting an entry breaks every later link;
//! * the head witness is one line, `"{seq} {hex hash}\n"`, replaced whole
//!   (written beside, then renamed), so a reader sees the old witness or the
//!   new one, never half of one.

use std::path::Path;

use aws_lc_rs::digest::{Context, SHA256};

/// Writes a chain's head witness, `"{seq} {hex hash}\n"`, beside its
/// database (write, then rename: never half a file). A failure is not an
/// error of the change just committed: the witness then lags, and a later
/// commit or verification catches up.
pub(crate) fn write_head(path: &Path, seq: i64, hash: &[u8]) {
    let tmp = path.with_extension("head.tmp");
    let _ = std::fs::write(&tmp, format!("{seq} {}\n", hex(hash)))
        .and_then(|_| std::fs::rename(&tmp, path));
}

/// A head witness written by [`write_head`]: its sequence number and hex
/// hash; `None` if there is no witness yet. A witness that cannot be read,
/// or does not read as one, is an error (it may have been tampered with).
pub(crate) fn read_head(path: &Path) -> Result<Option<(i64, String)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    text.trim()
        .split_once(' ')
        .and_then(|(seq, hash)| Some((seq.parse().ok()?, hash.to_owned())))
        .map(Some)
        .ok_or_else(|| format!("{} is not a head witness", path.display()))
}

/// `SHA-256(prev || seq || at || body)`: one link of the hash chains of the
/// access log and of the incident audit trail.
pub(crate) fn chain_hash(prev: &[u8], seq: i64, at_ms: i64, body: &[u8]) -> [u8; 32] {
    let mut c = Context::new(&SHA256);
    c.update(prev);
    c.update(&seq.to_be_bytes());
    c.update(&at_ms.to_be_bytes());
    c.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// Lower-case hex of `b` (how witnesses and claimants write bytes).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
