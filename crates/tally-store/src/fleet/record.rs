//! Queued records and their seal: [`RecordMac`], the HMAC under a key
//! derived from the master key that every queue row carries, and
//! [`QueuedRecord`], a row read back only once its MAC verifies, its record
//! decodes and it is filed under its own token id. A row that fails any of
//! these is tampering, never a record.

use aws_lc_rs::hmac;
use tally_core::record::IssuanceRecord;

use super::error::FleetError;

/// The record MAC: HMAC-SHA256 under a key derived from the master key.
#[derive(Clone)]
pub struct RecordMac(hmac::Key);

impl std::fmt::Debug for RecordMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordMac(<redacted>)")
    }
}

impl RecordMac {
    /// The purpose string under which the key is derived from the master key.
    pub const PURPOSE: &'static str = "fleet/record-mac/v1";

    /// A MAC keyed by `key` (32 bytes derived from the master key).
    pub fn new(key: &[u8; 32]) -> RecordMac {
        RecordMac(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The tag of an encoded record.
    pub fn tag(&self, record: &[u8]) -> Vec<u8> {
        hmac::sign(&self.0, record).as_ref().to_vec()
    }

    /// Whether `tag` is this key's tag of `record` (constant time).
    pub fn verify(&self, record: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, record, tag).is_ok()
    }
}

/// A queued record as read back: checked against its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRecord {
    /// Queue sequence number.
    pub seq: i64,
    /// The record.
    pub record: IssuanceRecord,
    /// The node that queued it.
    pub node: String,
}

/// Decodes a queue row's record and checks its MAC and token id.
pub(super) fn authentic(
    mac: &RecordMac,
    seq: i64,
    bytes: &[u8],
    tag: &[u8],
    token_id: Option<&str>,
    node: String,
) -> Result<QueuedRecord, FleetError> {
    let forged = |reason: &str| FleetError::Tampered {
        index: seq.max(0) as u64,
        reason: format!("queue row {seq}: {reason}"),
    };
    if !mac.verify(bytes, tag) {
        return Err(forged(
            "its MAC does not verify: it was not queued by a node holding the master key",
        ));
    }
    let record = IssuanceRecord::decode(bytes).map_err(|e| forged(&e.to_string()))?;
    if token_id.is_some_and(|t| t != record.token_id) {
        return Err(forged("the record is filed under another token id"));
    }
    Ok(QueuedRecord { seq, record, node })
}

/// [`authentic`] over a row of `seq, record, mac, node`.
pub(super) fn authentic_row(
    mac: &RecordMac,
    r: &postgres::Row,
    token_id: Option<&str>,
) -> Result<QueuedRecord, FleetError> {
    authentic(
        mac,
        r.try_get(0)?,
        &r.try_get::<_, Vec<u8>>(1)?,
        &r.try_get::<_, Vec<u8>>(2)?,
        token_id,
        r.try_get(3)?,
    )
}
