//! Verifying the incident audit trail: the chain itself, the witnessed
//! head, timeline against audit, and every incident against its audited
//! timeline.
//!
//! Read-only, on one snapshot: other nodes writing meanwhile cause no false
//! alarm. Anything that does not match is reported as the access log's
//! `Tampered` error, with the first bad audit entry (0 when the mismatch is
//! an incident's row rather than an entry).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};
use tally_store::sql::Tx;

use super::audit::Head;
use super::error::IncidentError;
use super::handle::IncidentStore;
use super::incidents::{INCIDENT_COLUMNS, incident_at};
use crate::access::AccessError;
use crate::chain::{chain_hash, hex, read_head};

fn tampered(seq: i64, reason: String) -> IncidentError {
    IncidentError::Audit(AccessError::Tampered { seq, reason })
}

impl IncidentStore {
    /// Verifies the incident audit trail. Returns the number of entries.
    ///
    /// 1. The chain: sequence numbers contiguous from 1, every hash
    ///    recomputed, and the entry of the witness (`incidents.head`, or this
    ///    node's witness file on PostgreSQL) still in it, unchanged.
    /// 2. Timeline and audit correspond one to one, entry for entry.
    /// 3. Every incident is what its audited timeline says: state (the last
    ///    state change, `open` without one), awareness time (the last one
    ///    recorded when it was opened or joined), materiality, and the reports
    ///    to authorities (exactly the audited submissions).
    ///
    /// Everything is read from one snapshot, so that other nodes writing
    /// meanwhile cause no false alarm. After a successful verification the
    /// head verified is witnessed.
    pub fn verify_audit(&self) -> Result<u64, IncidentError> {
        // Read before the snapshot: what was witnessed is committed.
        let witnessed = read_head(&self.head).map_err(|reason| tampered(0, reason))?;
        let head_name = self.head_name.clone();
        let (n, head) = self
            .db
            .read_snapshot(move |tx| verify_in(tx, witnessed, &head_name))?;
        self.witness(head);
        Ok(n)
    }
}

/// The body of [`IncidentStore::verify_audit`], on one snapshot.
fn verify_in(
    tx: &mut dyn Tx,
    witnessed: Option<(i64, String)>,
    head_name: &str,
) -> Result<(u64, Option<Head>), IncidentError> {
    // 1. The chain.
    let rows = tx.query(
        "SELECT seq, at, body, prev, hash FROM audit ORDER BY seq",
        &[],
    )?;
    let mut audited: HashMap<i64, Value> = HashMap::new();
    let mut prev = vec![0u8; 32];
    // The stored hash of the witnessed entry, once the chain reaches it.
    let mut at_witness: Option<Vec<u8>> = None;
    let mut head = None;
    for (expected, r) in (1i64..).zip(rows) {
        let (seq, at, body, stored_prev, hash) =
            (r.i64(0)?, r.i64(1)?, r.blob(2)?, r.blob(3)?, r.blob(4)?);
        if seq != expected {
            return Err(tampered(
                expected,
                format!("audit entry {expected} is missing"),
            ));
        }
        if stored_prev != prev || chain_hash(&prev, seq, at, &body).as_slice() != hash.as_slice() {
            return Err(tampered(seq, format!("audit entry {seq} was edited")));
        }
        audited.insert(seq, serde_json::from_slice(&body).unwrap_or(Value::Null));
        if witnessed.as_ref().is_some_and(|(w, _)| *w == seq) {
            at_witness = Some(hash.clone());
        }
        head = Some((seq, hash.clone()));
        prev = hash;
    }
    if let Some((seq, hash)) = witnessed {
        match at_witness {
            Some(h) if hex(&h) == hash => {}
            Some(_) => {
                return Err(tampered(
                    seq,
                    format!("audit entry {seq} differs from {head_name}"),
                ));
            }
            None => {
                return Err(tampered(
                    seq,
                    format!("the audit log ends before entry {seq}, which {head_name} records"),
                ));
            }
        }
    }
    // 2. Timeline <-> audit.
    let rows = tx.query(
        "SELECT id, incident_id, at, actor, kind, body, audit_seq FROM timeline ORDER BY id",
        &[],
    )?;
    let mut seen = HashSet::new();
    let mut by_incident: BTreeMap<i64, Vec<(String, Value)>> = BTreeMap::new();
    for r in rows {
        let (id, incident, at, actor, kind, body, seq) = (
            r.i64(0)?,
            r.i64(1)?,
            r.i64(2)?,
            r.text(3)?,
            r.text(4)?,
            r.text(5)?,
            r.i64(6)?,
        );
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let expected =
            json!({"incident": incident, "at": at, "actor": actor, "kind": kind, "body": body});
        match audited.get(&seq) {
            Some(doc) if *doc == expected => {}
            Some(_) => {
                return Err(tampered(
                    seq,
                    format!("timeline entry {id} differs from the audit log"),
                ));
            }
            None => {
                return Err(tampered(
                    seq,
                    format!("timeline entry {id} has no audit entry"),
                ));
            }
        }
        seen.insert(seq);
        by_incident
            .entry(incident)
            .or_default()
            .push((kind, json!({"at": at, "body": body})));
    }
    if let Some(seq) = audited.keys().copied().filter(|s| !seen.contains(s)).min() {
        return Err(tampered(
            seq,
            format!("the timeline entry of audit entry {seq} was deleted"),
        ));
    }
    // 3. Incidents and submissions against their audited timelines.
    let mut stored_subs: BTreeMap<i64, Vec<(String, i64, String)>> = BTreeMap::new();
    for r in tx.query(
        "SELECT incident_id, regime, submitted_at, reference FROM submissions",
        &[],
    )? {
        stored_subs
            .entry(r.i64(0)?)
            .or_default()
            .push((r.text(1)?, r.i64(2)?, r.text(3)?));
    }
    let incidents = tx
        .query(
            &format!("SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id"),
            &[],
        )?
        .iter()
        .map(incident_at)
        .collect::<Result<Vec<_>, _>>()?;
    for inc in incidents {
        let entries = by_incident.remove(&inc.id).unwrap_or_default();
        let state = entries
            .iter()
            .rfind(|(k, _)| k == "state")
            .and_then(|(_, e)| e["body"]["to"].as_str().map(str::to_string))
            .unwrap_or_else(|| "open".into());
        let aware = entries
            .iter()
            .filter(|(k, _)| k == "opened" || k == "detection")
            .filter_map(|(_, e)| e["body"]["aware_at"].as_i64())
            .next_back();
        let material = entries
            .iter()
            .filter(|(k, _)| k == "materiality")
            .filter_map(|(_, e)| e["body"]["materiality_at"].as_i64())
            .next_back();
        if state != inc.state.as_str() {
            return Err(tampered(
                0,
                format!(
                    "incident {} is {} but its audited timeline says {state}",
                    inc.id,
                    inc.state.as_str()
                ),
            ));
        }
        if aware != Some(inc.aware_at) {
            return Err(tampered(
                0,
                format!(
                    "incident {}: aware_at differs from its audited timeline",
                    inc.id
                ),
            ));
        }
        if material != inc.materiality_at {
            return Err(tampered(
                0,
                format!(
                    "incident {}: materiality differs from its audited timeline",
                    inc.id
                ),
            ));
        }
        let mut audited_subs: Vec<(String, i64, String)> = entries
            .iter()
            .filter(|(k, _)| k == "submission")
            .map(|(_, e)| {
                (
                    e["body"]["regime"].as_str().unwrap_or("").to_string(),
                    e["at"].as_i64().unwrap_or(0),
                    e["body"]["reference"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let mut stored = stored_subs.remove(&inc.id).unwrap_or_default();
        audited_subs.sort();
        stored.sort();
        if audited_subs != stored {
            return Err(tampered(
                0,
                format!(
                    "incident {}: reports to authorities differ from its audited timeline",
                    inc.id
                ),
            ));
        }
    }
    Ok((audited.len() as u64, head))
}
