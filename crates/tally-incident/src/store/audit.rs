//! Appending to the audit chain: every timeline entry is written, in the
//! same transaction, as the next entry of the hash-chained `audit` table.
//!
//! Invariant: timeline entries and audit entries correspond one to one
//! (`timeline.audit_seq`), and an audit entry's body is exactly the
//! timeline entry it records (`incident`, `at`, `actor`, `kind`, `body`),
//! which is what [`crate::store::IncidentStore::verify_audit`] checks.

use serde_json::{Value, json};
use tally_store::sql::{Tx, args};

use super::error::IncidentError;
use crate::chain::chain_hash;

/// An audit entry: its sequence number and hash.
pub(super) type Head = (i64, Vec<u8>);

/// Appends a timeline entry and its audit entry; returns the audit entry.
pub(super) fn log(
    tx: &mut dyn Tx,
    incident_id: i64,
    at: i64,
    actor: &str,
    kind: &str,
    body: &Value,
) -> Result<Head, IncidentError> {
    let doc = json!({
        "incident": incident_id, "at": at, "actor": actor, "kind": kind, "body": body,
    })
    .to_string()
    .into_bytes();
    let (seq, prev) =
        match tx.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
            Some(r) => (r.i64(0)?, r.blob(1)?),
            None => (0, vec![0u8; 32]),
        };
    let seq = seq + 1;
    let hash = chain_hash(&prev, seq, at, &doc).to_vec();
    tx.execute(
        "INSERT INTO audit (seq, at, body, prev, hash) VALUES ($1, $2, $3, $4, $5)",
        args![seq, at, doc, prev, hash.clone()],
    )?;
    tx.execute(
        "INSERT INTO timeline (incident_id, at, actor, kind, body, audit_seq) VALUES ($1, $2, $3, $4, $5, $6)",
        args![incident_id, at, actor, kind, body.to_string(), seq],
    )?;
    Ok((seq, hash))
}
