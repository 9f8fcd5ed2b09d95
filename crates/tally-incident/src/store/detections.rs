//! Detections: storing what each server's detection book hands over, and
//! opening or joining an incident for those of severity high or above.
//!
//! Invariants: a stored detection's count is the fleet-wide total, each
//! handle adding only what the caller's book counted since it last stored
//! it (never counted twice); one attack is one incident, the detection
//! joining the incident that is not closed; and a detection stays with its
//! incident until that incident is closed.

use std::collections::HashMap;

use serde_json::{Value, json};
use tally_store::sql::{Tx, args};

use super::audit::{Head, log};
use super::error::IncidentError;
use super::handle::{IncidentStore, lock};
use super::incidents::severity_of;
use crate::detect::{Detection, Severity};

/// Detection keys whose book counts a handle remembers before it forgets
/// the stale ones.
const MAX_BOOK_KEYS: usize = 100_000;

/// A stored detection.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDetection {
    /// Id.
    pub id: i64,
    /// The incident it belongs to, if any.
    pub incident_id: Option<i64>,
    /// The detection.
    pub detection: Detection,
}

/// What recording detections did to incidents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Incidents opened by this call.
    pub opened: Vec<i64>,
    /// (detection key, incident) for each detection that was put in an
    /// incident by this call (including the one that opened it).
    pub assigned: Vec<(String, i64)>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// When the incident was last closed, per its timeline.
fn closed_at(tx: &mut dyn Tx, id: i64) -> Result<i64, IncidentError> {
    let mut last = i64::MIN;
    for r in tx.query(
        "SELECT at, body FROM timeline WHERE incident_id = $1 AND kind = 'state'",
        args![id],
    )? {
        let body: Value = serde_json::from_str(&r.text(1)?).unwrap_or(Value::Null);
        if body["to"] == "closed" {
            last = last.max(r.i64(0)?);
        }
    }
    Ok(last)
}

/// One detection handed to [`record_in`]: the caller's view, and how much
/// of its count is already stored (`None`: not known).
type Handed = (Detection, Option<u64>);

/// The body of [`IncidentStore::record`], in its transaction.
fn record_in(
    tx: &mut dyn Tx,
    detections: Vec<Handed>,
    now: i64,
) -> Result<(Recorded, Option<Head>), IncidentError> {
    let mut out = Recorded::default();
    let mut head = None;
    // The same key twice in one call: the second adds to the first.
    let mut handed: HashMap<String, u64> = HashMap::new();
    for (d, stored_part) in detections {
        let stored_part = handed.get(&d.key).copied().or(stored_part);
        handed.insert(d.key.clone(), d.count);
        let existing = tx.query_opt(
            "SELECT id, incident_id, count, body FROM detections WHERE key = $1",
            args![d.key.clone()],
        )?;
        let (det_id, incident, m) = match existing {
            Some(r) => {
                let id = r.i64(0)?;
                let stored_count = u64::try_from(r.i64(2)?).unwrap_or(0);
                let mut m: Detection = serde_json::from_str(&r.text(3)?)
                    .map_err(|e| IncidentError::Corrupt(format!("detection {id}: {e}")))?;
                m.absorb(&d);
                // Unknown: the caller's count is at most the stored total
                // plus what it saw since (never counted twice).
                let added = d.count.saturating_sub(stored_part.unwrap_or(stored_count));
                m.count = stored_count.saturating_add(added);
                let body =
                    serde_json::to_string(&m).map_err(|e| IncidentError::Corrupt(e.to_string()))?;
                tx.execute(
                    "UPDATE detections SET severity = $2, first_seen = $3, last_seen = $4, count = $5, body = $6 WHERE id = $1",
                    args![id, m.severity.as_str(), m.first_seen, m.last_seen, to_i64(m.count), body],
                )?;
                (id, r.opt_i64(1)?, m)
            }
            None => {
                let body =
                    serde_json::to_string(&d).map_err(|e| IncidentError::Corrupt(e.to_string()))?;
                let id = tx
                    .query_one(
                        "INSERT INTO detections (key, rule, severity, first_seen, last_seen, count, body) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                        args![d.key.clone(), d.rule.code(), d.severity.as_str(), d.first_seen, d.last_seen, to_i64(d.count), body],
                    )?
                    .i64(0)?;
                (id, None, d)
            }
        };
        // A detection stays with its incident; once that incident is
        // closed, new sightings belong to a new one.
        let closed = match incident {
            Some(id) => tx
                .query_opt("SELECT state FROM incidents WHERE id = $1", args![id])?
                .map(|r| r.text(0))
                .transpose()?
                .is_none_or(|s| s == "closed"),
            None => true,
        };
        if (incident.is_some() && !closed) || m.severity < Severity::High {
            continue;
        }
        if let Some(id) = incident
            && m.last_seen <= closed_at(tx, id)?
        {
            // Nothing seen since the incident was closed.
            continue;
        }
        // Awareness: the first sighting, or for a detection whose earlier
        // incident is closed, the sighting that brought it back.
        let aware = if incident.is_some() {
            m.last_seen
        } else {
            m.first_seen
        };
        // Join the incident that is not closed, or open one.
        let open = tx.query_opt(
            "SELECT id, severity, aware_at FROM incidents WHERE state <> 'closed' ORDER BY id DESC LIMIT 1",
            &[],
        )?;
        let mut aware_now = aware;
        let inc = match open {
            Some(r) => {
                let id = r.i64(0)?;
                let sev = severity_of(&r.text(1)?)?.max(m.severity);
                aware_now = r.i64(2)?.min(aware);
                tx.execute(
                    "UPDATE incidents SET severity = $2, aware_at = $3, updated_at = $4 WHERE id = $1",
                    args![id, sev.as_str(), aware_now, now],
                )?;
                id
            }
            None => {
                let id = tx
                    .query_one(
                        "INSERT INTO incidents (opened_at, aware_at, state, severity, title, updated_at) VALUES ($1, $2, 'open', $3, $4, $1) RETURNING id",
                        args![now, aware, m.severity.as_str(), m.summary.clone()],
                    )?
                    .i64(0)?;
                out.opened.push(id);
                // The detection entry below is the head this call leaves.
                log(
                    tx,
                    id,
                    now,
                    "tally",
                    "opened",
                    &json!({
                        "aware_at": aware, "by_detection": m.key, "severity": m.severity,
                    }),
                )?;
                id
            }
        };
        tx.execute(
            "UPDATE detections SET incident_id = $2 WHERE id = $1",
            args![det_id, inc],
        )?;
        out.assigned.push((m.key.clone(), inc));
        head = Some(log(
            tx,
            inc,
            now,
            "tally",
            "detection",
            &json!({
                "detection": det_id, "key": m.key, "rule": m.rule, "severity": m.severity,
                "first_seen": m.first_seen, "summary": m.summary, "aware_at": aware_now,
            }),
        )?);
    }
    Ok((out, head))
}

impl IncidentStore {
    /// Stores detections (`(detection, is_new)`, as a detection book hands
    /// them over: `is_new` when the book made the detection from scratch),
    /// opening or joining an incident for each one of severity high or
    /// above that has no open incident yet, in one transaction.
    ///
    /// A detection already stored (by this node or another) is merged with
    /// the one handed over, and its count grows by what the caller's book
    /// counted since this handle last stored it (see the module docs).
    pub fn record(
        &self,
        detections: &[(Detection, bool)],
        now: i64,
    ) -> Result<Recorded, IncidentError> {
        let _serial = lock(&self.recording);
        let handed: Vec<Handed> = {
            let books = lock(&self.books);
            detections
                .iter()
                .map(|(d, new)| {
                    let stored = if *new {
                        Some(0)
                    } else {
                        books.get(&d.key).map(|(n, _)| *n)
                    };
                    (d.clone(), stored)
                })
                .collect()
        };
        let out = self.write_logged(move |tx| record_in(tx, handed, now))?;
        self.remember(detections.iter().map(|(d, _)| d), now);
        Ok(out)
    }

    /// Notes the counts of the caller's book that are now stored.
    fn remember<'a>(&self, detections: impl Iterator<Item = &'a Detection>, now: i64) {
        let mut books = lock(&self.books);
        for d in detections {
            books.insert(d.key.clone(), (d.count, d.last_seen));
        }
        if books.len() > MAX_BOOK_KEYS {
            // Forget what no book is likely to hold any more; a forgotten
            // key only makes the next count an underestimate, never a
            // double count.
            let cutoff = now.saturating_sub(7 * 86_400);
            books.retain(|_, (_, last)| *last >= cutoff);
            if books.len() > MAX_BOOK_KEYS {
                books.clear();
            }
        }
    }

    fn detections_where(
        &self,
        clause: &'static str,
        p: Vec<tally_store::sql::Value>,
    ) -> Result<Vec<StoredDetection>, IncidentError> {
        self.db.read(move |tx| {
            let rows = tx.query(
                &format!("SELECT id, incident_id, body FROM detections {clause}"),
                &p,
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = r.i64(0)?;
                let detection = serde_json::from_str(&r.text(2)?)
                    .map_err(|e| IncidentError::Corrupt(format!("detection {id}: {e}")))?;
                out.push(StoredDetection {
                    id,
                    incident_id: r.opt_i64(1)?,
                    detection,
                });
            }
            Ok(out)
        })
    }

    /// An incident's detections, first seen first.
    pub fn detections(&self, incident_id: i64) -> Result<Vec<StoredDetection>, IncidentError> {
        self.detections_where(
            "WHERE incident_id = $1 ORDER BY first_seen, id",
            vec![incident_id.into()],
        )
    }

    /// The latest detections of any incident or none, newest first.
    pub fn recent_detections(&self, limit: usize) -> Result<Vec<StoredDetection>, IncidentError> {
        self.detections_where(
            "ORDER BY last_seen DESC, id DESC LIMIT $1",
            vec![i64::try_from(limit).unwrap_or(i64::MAX).into()],
        )
    }

    /// Detections last seen at or after `since`, to restore a detection
    /// book: this handle takes the counts returned as where that book
    /// starts, so that [`IncidentStore::record`] later adds only what the
    /// book counts beyond them.
    pub fn detections_since(&self, since: i64) -> Result<Vec<StoredDetection>, IncidentError> {
        let out = self.detections_where("WHERE last_seen >= $1 ORDER BY id", vec![since.into()])?;
        let now = out
            .iter()
            .map(|s| s.detection.last_seen)
            .max()
            .unwrap_or(since);
        self.remember(out.iter().map(|s| &s.detection), now);
        Ok(out)
    }
}
