//! Detections and incidents (`incidents.db`), with every incident action also
//! written, in the same transaction, to a hash-chained audit table
//! (`hash = SHA-256(prev || seq || at || body)`), whose head is also kept
//! beside the database (`incidents.head`). [`IncidentStore::verify_audit`]
//! recomputes the chain, checks that timeline and audit entries correspond one
//! to one, and that every incident's state, awareness time, materiality and
//! reports to authorities are what its audited timeline says: editing,
//! deleting or inserting any of them is detected.
//!
//! Detections of severity high or critical open an incident, or join the one
//! that is not yet closed: one attack is one incident, however many rules it
//! trips. The incident's `aware_at` is its first such detection's first
//! sighting, the moment the legal clocks start.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tally_core::clocks::IncidentState;
use tally_core::detect::{Detection, Severity};

use crate::access::{AccessError, chain_hash, hex};

/// Incident store failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncidentError {
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(i64),
    /// The state change is not allowed.
    #[error("incident {id} is {from}; it cannot become {to}")]
    BadTransition {
        /// Incident.
        id: i64,
        /// Current state.
        from: &'static str,
        /// Asked for.
        to: &'static str,
    },
    /// The audit log failed or was tampered with.
    #[error(transparent)]
    Audit(#[from] AccessError),
    /// Database failure.
    #[error("incident store error: {0}")]
    Store(#[from] rusqlite::Error),
    /// A stored document does not parse.
    #[error("incident store holds an unreadable record: {0}")]
    Corrupt(String),
}

impl IncidentError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            IncidentError::NotFound(_) => "not_found",
            IncidentError::BadTransition { .. } => "bad_transition",
            IncidentError::Audit(e) => e.code(),
            IncidentError::Store(_) => "store_unavailable",
            IncidentError::Corrupt(_) => "store_corrupt",
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incidents (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    opened_at      INTEGER NOT NULL,
    aware_at       INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    severity       TEXT    NOT NULL,
    title          TEXT    NOT NULL,
    materiality_at INTEGER,
    updated_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT    NOT NULL UNIQUE,
    rule        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    incident_id INTEGER REFERENCES incidents(id)
);
CREATE INDEX IF NOT EXISTS detections_incident ON detections(incident_id);
CREATE INDEX IF NOT EXISTS detections_last ON detections(last_seen);
CREATE TABLE IF NOT EXISTS timeline (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    audit_seq   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident_id);
CREATE TRIGGER IF NOT EXISTS timeline_append_only BEFORE UPDATE ON timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TRIGGER IF NOT EXISTS timeline_no_delete BEFORE DELETE ON timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TABLE IF NOT EXISTS audit (
    seq  INTEGER PRIMARY KEY,
    at   INTEGER NOT NULL,
    body BLOB    NOT NULL,
    prev BLOB    NOT NULL,
    hash BLOB    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the incident audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the incident audit log is append-only'); END;
CREATE UNIQUE INDEX IF NOT EXISTS timeline_audit ON timeline(audit_seq);
CREATE TABLE IF NOT EXISTS submissions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id  INTEGER NOT NULL REFERENCES incidents(id),
    regime       TEXT    NOT NULL,
    submitted_at INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    reference    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sink         TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    delivered_at INTEGER,
    failed_at    INTEGER,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE TABLE IF NOT EXISTS reminders (
    incident_id INTEGER NOT NULL,
    clock       TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    sent_at     INTEGER NOT NULL,
    PRIMARY KEY (incident_id, clock, label)
);
";

/// One incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// Id.
    pub id: i64,
    /// When it was opened (unix seconds).
    pub opened_at: i64,
    /// When tally became aware: the first high or critical detection's first sighting.
    pub aware_at: i64,
    /// State.
    pub state: IncidentState,
    /// Highest severity of its detections.
    pub severity: Severity,
    /// Title (the first detection's summary).
    pub title: String,
    /// When the incident was determined material (SEC 8-K Item 1.05), if it was.
    pub materiality_at: Option<i64>,
    /// Last change.
    pub updated_at: i64,
}

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

/// One timeline entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    /// Id.
    pub id: i64,
    /// Incident.
    pub incident_id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who (`tally` for automatic entries, `admin:NAME`, an operator).
    pub actor: String,
    /// `opened`, `detection`, `action`, `note`, `state`, `submission`, `reminder`.
    pub kind: String,
    /// Details.
    pub body: Value,
}

/// A report made to an authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// Regime id.
    pub regime: String,
    /// When.
    pub submitted_at: i64,
    /// Who.
    pub actor: String,
    /// The authority's reference or a note.
    pub reference: String,
}

/// An alert waiting to be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Id (also the delivery id receivers can deduplicate on).
    pub id: i64,
    /// Sink name (`webhook:NAME` or `set`).
    pub sink: String,
    /// Content type of the body.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: i64,
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

/// An `incidents` row as read.
type IncidentRow = (i64, i64, i64, String, String, String, Option<i64>, i64);

/// `incidents.db` and its audit head witness.
pub struct IncidentStore {
    conn: Mutex<Connection>,
    head: std::path::PathBuf,
}

fn tampered(seq: i64, reason: String) -> IncidentError {
    IncidentError::Audit(AccessError::Tampered { seq, reason })
}

fn state_of(s: &str) -> Result<IncidentState, IncidentError> {
    s.parse()
        .map_err(|_| IncidentError::Corrupt(format!("unknown incident state {s:?}")))
}

fn severity_of(s: &str) -> Result<Severity, IncidentError> {
    Severity::parse(s).ok_or_else(|| IncidentError::Corrupt(format!("unknown severity {s:?}")))
}

impl IncidentStore {
    /// Opens (creating if needed) `incidents.db` in `dir`.
    pub fn open(dir: &Path) -> Result<IncidentStore, IncidentError> {
        let conn = Connection::open(dir.join("incidents.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(IncidentStore {
            conn: Mutex::new(conn),
            head: dir.join("incidents.head"),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a timeline entry and its audit entry inside `tx`.
    fn log(
        &self,
        tx: &rusqlite::Transaction<'_>,
        incident_id: i64,
        at: i64,
        actor: &str,
        kind: &str,
        body: &Value,
    ) -> Result<(), IncidentError> {
        let doc = json!({
            "incident": incident_id, "at": at, "actor": actor, "kind": kind, "body": body,
        })
        .to_string()
        .into_bytes();
        let (seq, prev): (i64, Vec<u8>) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, vec![0u8; 32]));
        let seq = seq + 1;
        let hash = chain_hash(&prev, seq, at, &doc);
        tx.execute(
            "INSERT INTO audit (seq, at, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, at, doc, prev, hash.as_slice()],
        )?;
        tx.execute(
            "INSERT INTO timeline (incident_id, at, actor, kind, body, audit_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![incident_id, at, actor, kind, body.to_string(), seq],
        )?;
        Ok(())
    }

    /// Writes the audit head beside the database (after a commit): cutting
    /// off the newest entries then shows.
    fn write_head(&self, conn: &Connection) {
        let head: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten();
        if let Some((seq, hash)) = head {
            let tmp = self.head.with_extension("head.tmp");
            let _ = std::fs::write(&tmp, format!("{seq} {}\n", hex(&hash)))
                .and_then(|_| std::fs::rename(&tmp, &self.head));
        }
    }

    /// Stores detections (`(detection, is_new)`), opening or joining an
    /// incident for each new one of severity high or above, in one
    /// transaction.
    pub fn record(
        &self,
        detections: &[(Detection, bool)],
        now: i64,
    ) -> Result<Recorded, IncidentError> {
        let mut out = Recorded::default();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (d, _) in detections {
            let body =
                serde_json::to_string(d).map_err(|e| IncidentError::Corrupt(e.to_string()))?;
            let existing: Option<(i64, Option<i64>)> = tx
                .query_row(
                    "SELECT id, incident_id FROM detections WHERE key = ?1",
                    params![d.key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (det_id, incident) = match existing {
                Some((id, inc)) => {
                    tx.execute(
                        "UPDATE detections SET severity = ?2, first_seen = ?3, last_seen = ?4, count = ?5, body = ?6 WHERE id = ?1",
                        params![id, d.severity.as_str(), d.first_seen, d.last_seen, d.count as i64, body],
                    )?;
                    (id, inc)
                }
                None => {
                    tx.execute(
                        "INSERT INTO detections (key, rule, severity, first_seen, last_seen, count, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![d.key, d.rule.code(), d.severity.as_str(), d.first_seen, d.last_seen, d.count as i64, body],
                    )?;
                    (tx.last_insert_rowid(), None)
                }
            };
            // A detection stays with its incident; once that incident is
            // closed, new sightings belong to a new one.
            let closed = match incident {
                Some(id) => tx
                    .query_row(
                        "SELECT state = 'closed' FROM incidents WHERE id = ?1",
                        params![id],
                        |r| r.get::<_, bool>(0),
                    )
                    .optional()?
                    .unwrap_or(true),
                None => true,
            };
            if (incident.is_some() && !closed) || d.severity < Severity::High {
                continue;
            }
            if incident.is_some() && d.last_seen <= self.closed_at(&tx, incident)? {
                // Nothing seen since the incident was closed.
                continue;
            }
            // Awareness: the first sighting, or for a detection whose earlier
            // incident is closed, the sighting that brought it back.
            let aware = if incident.is_some() {
                d.last_seen
            } else {
                d.first_seen
            };
            // Join the incident that is not closed, or open one.
            let open: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT id, severity, aware_at FROM incidents WHERE state != 'closed' ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let mut aware_now = aware;
            let inc = match open {
                Some((id, sev, current)) => {
                    let sev = severity_of(&sev)?.max(d.severity);
                    aware_now = current.min(aware);
                    tx.execute(
                        "UPDATE incidents SET severity = ?2, aware_at = ?3, updated_at = ?4 WHERE id = ?1",
                        params![id, sev.as_str(), aware_now, now],
                    )?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO incidents (opened_at, aware_at, state, severity, title, updated_at) VALUES (?1, ?2, 'open', ?3, ?4, ?1)",
                        params![now, aware, d.severity.as_str(), d.summary],
                    )?;
                    let id = tx.last_insert_rowid();
                    out.opened.push(id);
                    self.log(
                        &tx,
                        id,
                        now,
                        "tally",
                        "opened",
                        &json!({
                            "aware_at": aware, "by_detection": d.key, "severity": d.severity,
                        }),
                    )?;
                    id
                }
            };
            tx.execute(
                "UPDATE detections SET incident_id = ?2 WHERE id = ?1",
                params![det_id, inc],
            )?;
            out.assigned.push((d.key.clone(), inc));
            self.log(
                &tx,
                inc,
                now,
                "tally",
                "detection",
                &json!({
                    "detection": det_id, "key": d.key, "rule": d.rule, "severity": d.severity,
                    "first_seen": d.first_seen, "summary": d.summary, "aware_at": aware_now,
                }),
            )?;
        }
        tx.commit()?;
        self.write_head(&conn);
        Ok(out)
    }

    fn closed_at(
        &self,
        tx: &rusqlite::Transaction<'_>,
        incident: Option<i64>,
    ) -> Result<i64, IncidentError> {
        let Some(id) = incident else {
            return Ok(i64::MIN);
        };
        Ok(tx
            .query_row(
                "SELECT MAX(at) FROM timeline WHERE incident_id = ?1 AND kind = 'state'
                 AND json_extract(body, '$.to') = 'closed'",
                params![id],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(i64::MIN))
    }

    /// Adds a timeline entry (`note`, `action`, `reminder`, ...).
    pub fn append(
        &self,
        incident_id: i64,
        at: i64,
        actor: &str,
        kind: &str,
        body: &Value,
    ) -> Result<(), IncidentError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM incidents WHERE id = ?1",
                params![incident_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Err(IncidentError::NotFound(incident_id));
        }
        self.log(&tx, incident_id, at, actor, kind, body)?;
        tx.execute(
            "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
            params![incident_id, at],
        )?;
        tx.commit()?;
        self.write_head(&conn);
        Ok(())
    }

    /// Moves an incident to `next`, if its state allows.
    pub fn set_state(
        &self,
        id: i64,
        next: IncidentState,
        actor: &str,
        now: i64,
        note: &str,
    ) -> Result<Incident, IncidentError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cur: String = tx
            .query_row(
                "SELECT state FROM incidents WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(IncidentError::NotFound(id))?;
        let cur = state_of(&cur)?;
        if !cur.can_move_to(next) {
            return Err(IncidentError::BadTransition {
                id,
                from: cur.as_str(),
                to: next.as_str(),
            });
        }
        tx.execute(
            "UPDATE incidents SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, next.as_str(), now],
        )?;
        self.log(
            &tx,
            id,
            now,
            actor,
            "state",
            &json!({"from": cur.as_str(), "to": next.as_str(), "note": note}),
        )?;
        tx.commit()?;
        self.write_head(&conn);
        drop(conn);
        self.incident(id)?.ok_or(IncidentError::NotFound(id))
    }

    /// Records the materiality determination (starts the SEC clock).
    pub fn set_materiality(&self, id: i64, at: i64, actor: &str) -> Result<(), IncidentError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE incidents SET materiality_at = ?2, updated_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        if n == 0 {
            return Err(IncidentError::NotFound(id));
        }
        self.log(
            &tx,
            id,
            at,
            actor,
            "materiality",
            &json!({"materiality_at": at}),
        )?;
        tx.commit()?;
        self.write_head(&conn);
        Ok(())
    }

    /// Records a report to an authority under `regime`.
    pub fn submit(
        &self,
        id: i64,
        regime: &str,
        actor: &str,
        now: i64,
        reference: &str,
    ) -> Result<(), IncidentError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists = tx
            .query_row("SELECT 1 FROM incidents WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if !exists {
            return Err(IncidentError::NotFound(id));
        }
        tx.execute(
            "INSERT INTO submissions (incident_id, regime, submitted_at, actor, reference) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, regime, now, actor, reference],
        )?;
        self.log(
            &tx,
            id,
            now,
            actor,
            "submission",
            &json!({"regime": regime, "reference": reference}),
        )?;
        tx.commit()?;
        self.write_head(&conn);
        Ok(())
    }

    /// Reports made for an incident, oldest first.
    pub fn submissions(&self, id: i64) -> Result<Vec<Submission>, IncidentError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT regime, submitted_at, actor, reference FROM submissions WHERE incident_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok(Submission {
                regime: r.get(0)?,
                submitted_at: r.get(1)?,
                actor: r.get(2)?,
                reference: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queues an alert durably (delivered at least once, even across restarts).
    pub fn enqueue(
        &self,
        sink: &str,
        content_type: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64, IncidentError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO outbox (sink, content_type, body, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![sink, content_type, body, now],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Alerts due for (another) delivery attempt, oldest first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>, IncidentError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, sink, content_type, body, attempts, created_at FROM outbox
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                sink: r.get(1)?,
                content_type: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a delivery.
    pub fn delivered(&self, id: i64, now: i64) -> Result<(), IncidentError> {
        self.conn().execute(
            "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_at`, or given up when `None`.
    pub fn attempt_failed(
        &self,
        id: i64,
        now: i64,
        next_at: Option<i64>,
        error: &str,
    ) -> Result<(), IncidentError> {
        match next_at {
            Some(t) => self.conn().execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, t, error],
            )?,
            None => self.conn().execute(
                "UPDATE outbox SET attempts = attempts + 1, failed_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, now, error],
            )?,
        };
        Ok(())
    }

    /// (pending, delivered, failed) alert counts.
    pub fn outbox_counts(&self) -> Result<(i64, i64, i64), IncidentError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(SUM(delivered_at IS NULL AND failed_at IS NULL), 0),
                    COALESCE(SUM(delivered_at IS NOT NULL), 0), COALESCE(SUM(failed_at IS NOT NULL), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// Marks a reminder as sent; false if it already was.
    pub fn mark_reminder(
        &self,
        id: i64,
        clock: &str,
        label: &str,
        now: i64,
    ) -> Result<bool, IncidentError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO reminders (incident_id, clock, label, sent_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, clock, label, now],
        )? == 1)
    }

    fn row_incident(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    }

    fn to_incident(t: IncidentRow) -> Result<Incident, IncidentError> {
        Ok(Incident {
            id: t.0,
            opened_at: t.1,
            aware_at: t.2,
            state: state_of(&t.3)?,
            severity: severity_of(&t.4)?,
            title: t.5,
            materiality_at: t.6,
            updated_at: t.7,
        })
    }

    /// One incident.
    pub fn incident(&self, id: i64) -> Result<Option<Incident>, IncidentError> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, opened_at, aware_at, state, severity, title, materiality_at, updated_at FROM incidents WHERE id = ?1",
                params![id],
                Self::row_incident,
            )
            .optional()?;
        row.map(Self::to_incident).transpose()
    }

    /// All incidents, newest first.
    pub fn incidents(&self) -> Result<Vec<Incident>, IncidentError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, opened_at, aware_at, state, severity, title, materiality_at, updated_at FROM incidents ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], Self::row_incident)?;
        rows.map(|r| r.map_err(IncidentError::from).and_then(Self::to_incident))
            .collect()
    }

    fn detections_where(
        &self,
        clause: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredDetection>, IncidentError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, incident_id, body FROM detections {clause}"
        ))?;
        let rows = stmt.query_map(p, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, incident_id, body) = row?;
            let detection = serde_json::from_str(&body)
                .map_err(|e| IncidentError::Corrupt(format!("detection {id}: {e}")))?;
            out.push(StoredDetection {
                id,
                incident_id,
                detection,
            });
        }
        Ok(out)
    }

    /// An incident's detections, first seen first.
    pub fn detections(&self, incident_id: i64) -> Result<Vec<StoredDetection>, IncidentError> {
        self.detections_where(
            "WHERE incident_id = ?1 ORDER BY first_seen, id",
            &[&incident_id],
        )
    }

    /// The latest detections of any incident or none, newest first.
    pub fn recent_detections(&self, limit: usize) -> Result<Vec<StoredDetection>, IncidentError> {
        self.detections_where(
            "ORDER BY last_seen DESC, id DESC LIMIT ?1",
            &[&(limit as i64)],
        )
    }

    /// Detections last seen at or after `since` (to restore a detection book).
    pub fn detections_since(&self, since: i64) -> Result<Vec<StoredDetection>, IncidentError> {
        self.detections_where("WHERE last_seen >= ?1 ORDER BY id", &[&since])
    }

    /// An incident's timeline, oldest first.
    pub fn timeline(&self, incident_id: i64) -> Result<Vec<TimelineEntry>, IncidentError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, incident_id, at, actor, kind, body FROM timeline WHERE incident_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![incident_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, incident_id, at, actor, kind, body) = row?;
            let body = serde_json::from_str(&body)
                .map_err(|e| IncidentError::Corrupt(format!("timeline {id}: {e}")))?;
            out.push(TimelineEntry {
                id,
                incident_id,
                at,
                actor,
                kind,
                body,
            });
        }
        Ok(out)
    }

    /// Verifies the incident audit trail. Returns the number of entries.
    ///
    /// 1. The chain: sequence numbers contiguous from 1, every hash recomputed,
    ///    and the head no shorter than, and consistent with, `incidents.head`.
    /// 2. Timeline and audit correspond one to one, entry for entry.
    /// 3. Every incident is what its audited timeline says: state (the last
    ///    state change, `open` without one), awareness time (the last one
    ///    recorded when it was opened or joined), materiality, and the reports
    ///    to authorities (exactly the audited submissions).
    pub fn verify_audit(&self) -> Result<u64, IncidentError> {
        let conn = self.conn();
        // 1. The chain.
        let mut stmt = conn.prepare("SELECT seq, at, body, prev, hash FROM audit ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        let mut audited: std::collections::HashMap<i64, Value> = std::collections::HashMap::new();
        let mut prev = vec![0u8; 32];
        let mut hashes: std::collections::HashMap<i64, Vec<u8>> = std::collections::HashMap::new();
        for (expected, row) in (1i64..).zip(rows) {
            let (seq, at, body, stored_prev, hash) = row?;
            if seq != expected {
                return Err(tampered(
                    expected,
                    format!("audit entry {expected} is missing"),
                ));
            }
            if stored_prev != prev
                || chain_hash(&prev, seq, at, &body).as_slice() != hash.as_slice()
            {
                return Err(tampered(seq, format!("audit entry {seq} was edited")));
            }
            audited.insert(seq, serde_json::from_slice(&body).unwrap_or(Value::Null));
            hashes.insert(seq, hash.clone());
            prev = hash;
        }
        if let Ok(text) = std::fs::read_to_string(&self.head) {
            let mut parts = text.split_whitespace();
            let seq: i64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let hash = parts.next().unwrap_or("");
            match hashes.get(&seq) {
                Some(h) if hex(h) == hash => {}
                Some(_) => {
                    return Err(tampered(
                        seq,
                        format!("audit entry {seq} differs from incidents.head"),
                    ));
                }
                None => {
                    return Err(tampered(
                        seq,
                        format!(
                            "the audit log ends before entry {seq}, which incidents.head records"
                        ),
                    ));
                }
            }
        }
        // 2. Timeline <-> audit.
        let mut stmt = conn.prepare(
            "SELECT id, incident_id, at, actor, kind, body, audit_seq FROM timeline ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut seen = std::collections::HashSet::new();
        let mut by_incident: std::collections::BTreeMap<i64, Vec<(String, Value)>> =
            Default::default();
        for row in rows {
            let (id, incident, at, actor, kind, body, seq) = row?;
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
        for inc in Self::all_incidents(&conn)? {
            let entries = by_incident.get(&inc.id).cloned().unwrap_or_default();
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
            let mut stmt = conn.prepare(
                "SELECT regime, submitted_at, reference FROM submissions WHERE incident_id = ?1",
            )?;
            let mut stored: Vec<(String, i64, String)> = stmt
                .query_map(params![inc.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
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
        Ok(audited.len() as u64)
    }

    fn all_incidents(conn: &Connection) -> Result<Vec<Incident>, IncidentError> {
        let mut stmt = conn.prepare(
            "SELECT id, opened_at, aware_at, state, severity, title, materiality_at, updated_at FROM incidents ORDER BY id",
        )?;
        let rows = stmt.query_map([], Self::row_incident)?;
        rows.map(|r| r.map_err(IncidentError::from).and_then(Self::to_incident))
            .collect()
    }
}
