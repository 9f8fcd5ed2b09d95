//! Detections and incidents, with every incident action also written, in the
//! same transaction, to a hash-chained audit table
//! (`hash = SHA-256(prev || seq || at || body)`) whose head is witnessed
//! outside the database. [`IncidentStore::verify_audit`] recomputes the
//! chain, checks that the witnessed head is still in it, that timeline and
//! audit entries correspond one to one, and that every incident's state,
//! awareness time, materiality and reports to authorities are what its
//! audited timeline says: editing, deleting or inserting any of them is
//! detected.
//!
//! Detections of severity high or critical open an incident, or join the one
//! that is not yet closed: one attack is one incident, however many rules it
//! trips. The incident's `aware_at` is its first such detection's first
//! sighting, the moment the legal clocks start.
//!
//! # Engines
//!
//! The store lives in SQLite (`incidents.db` in a data directory, one server:
//! [`IncidentStore::open`]) or in a PostgreSQL schema shared by a fleet of
//! servers ([`IncidentStore::connect_postgres`]). Both run the same
//! statements through [`tally_store::sql`]; the tables are those of `incidents.db`
//! (`incidents`, `detections`, `timeline`, `audit`, `submissions`, `outbox`,
//! `reminders`), which do not clash with the state store's in the same
//! schema, and PostgreSQL keeps its version in `incidents_schema_version`.
//! Every change is one transaction; on PostgreSQL the incident store's
//! writers take an advisory lock of their own ([`tally_store::sql::incident_lock_key`]),
//! so the writers of all nodes are serialised with each other but never wait
//! for the state store's.
//!
//! # A fleet
//!
//! * **One attack, one incident.** Each server's detection book merges its
//!   own findings and hands its cumulative view of a detection to
//!   [`IncidentStore::record`] again and again. The stored detection merges
//!   the views of every server ([`Detection::absorb`]: earliest first
//!   sighting, latest last sighting, highest severity, actors and evidence
//!   within their caps), and its count is the fleet-wide total: each handle
//!   remembers, per detection, how much of the caller's count it has already
//!   stored (a detection new to the book starts from zero; one restored from
//!   [`IncidentStore::detections_since`] from the count returned), and adds
//!   only the difference. Racing nodes open or join an incident exactly once,
//!   as the write lock serialises them.
//! * **One audit chain.** Appends from every node form one chain, serialised
//!   by the write lock.
//! * **Witnessed heads.** With SQLite the head is the file `incidents.head`
//!   beside the database. With PostgreSQL each node keeps, in a directory of
//!   its own (`incidents-<schema>.head`), the highest `(seq, hash)` it has
//!   seen: written after each of its own commits and after each successful
//!   verification, never moved backwards. Verification fails unless the
//!   stored chain still holds that exact entry, so cutting off or rewriting
//!   what a node has witnessed is detected by that node, whatever the
//!   database now says. Entries no node has witnessed yet can only be
//!   checked for consistency.
//! * **Alert outbox.** On PostgreSQL [`IncidentStore::due`] claims what it
//!   returns for [`OUTBOX_LEASE_SECS`]: no other node gets those items, nor
//!   any other of the same sink (deliveries to a sink stay in order), until
//!   they are settled ([`IncidentStore::delivered`],
//!   [`IncidentStore::attempt_failed`]) or the lease runs out, after which a
//!   node that died mid-round is taken over. Delivery is at least once:
//!   receivers deduplicate on the item id. With SQLite (one server)
//!   nothing is claimed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::clocks::IncidentState;
use crate::detect::{Detection, Severity};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::access::AccessError;
use crate::chain::{chain_hash, hex, read_head, write_head};
use tally_store::sql::{Db, Row, SqlError, Tx, args};

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
    /// Database failure (SQLite or PostgreSQL), or a bad PostgreSQL URL,
    /// schema name or witness directory.
    #[error("incident store error: {0}")]
    Store(#[from] SqlError),
    /// A stored document does not parse.
    #[error("incident store holds an unreadable record: {0}")]
    Corrupt(String),
    /// The PostgreSQL schema was written by a newer version of tally.
    #[error(
        "the incident store has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// Version in the database.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
}

impl From<rusqlite::Error> for IncidentError {
    fn from(e: rusqlite::Error) -> IncidentError {
        IncidentError::Store(e.into())
    }
}

impl IncidentError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            IncidentError::NotFound(_) => "not_found",
            IncidentError::BadTransition { .. } => "bad_transition",
            IncidentError::Audit(e) => e.code(),
            IncidentError::Store(SqlError::Config(_)) => "bad_config",
            IncidentError::Store(_) => "store_unavailable",
            IncidentError::Corrupt(_) => "store_corrupt",
            IncidentError::NewerSchema { .. } => "schema_too_new",
        }
    }
}

/// The SQLite schema, applied (idempotently) at every opening: dropped
/// guards come back.
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

/// The PostgreSQL schema, applied in order; `incidents_schema_version`
/// holds the number applied. Tables and columns are those of the SQLite
/// schema so that both run the same statements; text compares byte-wise
/// (`COLLATE "C"`), as in SQLite. The outbox has two more columns for the
/// claims of [`IncidentStore::due`]. The append-only guards are in
/// [`pg_guards`].
const PG_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE incidents (
    id             BIGSERIAL PRIMARY KEY,
    opened_at      BIGINT NOT NULL,
    aware_at       BIGINT NOT NULL,
    state          TEXT COLLATE "C" NOT NULL,
    severity       TEXT COLLATE "C" NOT NULL,
    title          TEXT COLLATE "C" NOT NULL,
    materiality_at BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE TABLE detections (
    id          BIGSERIAL PRIMARY KEY,
    key         TEXT COLLATE "C" NOT NULL UNIQUE,
    rule        TEXT COLLATE "C" NOT NULL,
    severity    TEXT COLLATE "C" NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    body        TEXT COLLATE "C" NOT NULL,
    incident_id BIGINT REFERENCES incidents(id)
);
CREATE INDEX detections_incident ON detections(incident_id);
CREATE INDEX detections_last ON detections(last_seen);
CREATE TABLE timeline (
    id          BIGSERIAL PRIMARY KEY,
    incident_id BIGINT NOT NULL REFERENCES incidents(id),
    at          BIGINT NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    body        TEXT COLLATE "C" NOT NULL,
    audit_seq   BIGINT NOT NULL
);
CREATE INDEX timeline_incident ON timeline(incident_id);
CREATE UNIQUE INDEX timeline_audit ON timeline(audit_seq);
CREATE TABLE audit (
    seq  BIGINT PRIMARY KEY,
    at   BIGINT NOT NULL,
    body BYTEA  NOT NULL,
    prev BYTEA  NOT NULL,
    hash BYTEA  NOT NULL
);
CREATE TABLE submissions (
    id           BIGSERIAL PRIMARY KEY,
    incident_id  BIGINT NOT NULL REFERENCES incidents(id),
    regime       TEXT COLLATE "C" NOT NULL,
    submitted_at BIGINT NOT NULL,
    actor        TEXT COLLATE "C" NOT NULL,
    reference    TEXT COLLATE "C" NOT NULL
);
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    sink          TEXT COLLATE "C" NOT NULL,
    content_type  TEXT COLLATE "C" NOT NULL,
    body          BYTEA  NOT NULL,
    created_at    BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_at       BIGINT NOT NULL,
    delivered_at  BIGINT,
    failed_at     BIGINT,
    last_error    TEXT COLLATE "C",
    claimed_until BIGINT,
    claimed_by    TEXT COLLATE "C"
);
CREATE INDEX outbox_due ON outbox(next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE TABLE reminders (
    incident_id BIGINT NOT NULL,
    clock       TEXT COLLATE "C" NOT NULL,
    label       TEXT COLLATE "C" NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (incident_id, clock, label)
);
CREATE FUNCTION incidents_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'the incident % is append-only', TG_ARGV[0];
END
$body$;
"#];

/// The append-only guards of the timeline and the audit table on
/// PostgreSQL, put back at every connection if someone dropped them (as
/// SQLite's are at every opening): per table, no row updated or deleted, and
/// no truncation.
fn pg_guards(schema: &str) -> String {
    let mut body = String::new();
    for (table, what) in [("timeline", "timeline"), ("audit", "audit log")] {
        for (name, event, level) in [
            ("append_only", "UPDATE OR DELETE", "ROW"),
            ("no_truncate", "TRUNCATE", "STATEMENT"),
        ] {
            body.push_str(&format!(
                "    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = '{schema}.{table}'::regclass AND tgname = '{table}_{name}') THEN
        CREATE TRIGGER {table}_{name} BEFORE {event} ON {schema}.{table}
            FOR EACH {level} EXECUTE FUNCTION {schema}.incidents_append_only('{what}');
    END IF;
"
            ));
        }
    }
    format!("DO $guard$\nBEGIN\n{body}END\n$guard$;")
}

/// Creates or upgrades the PostgreSQL schema and puts back missing guards.
/// Runs in a [`Db::write`], so under the incident store's advisory lock:
/// nodes starting together migrate one at a time, and the later ones find
/// the work done.
fn migrate_pg(tx: &mut dyn Tx, schema: &str) -> Result<(), IncidentError> {
    tally_store::sql::migrate_schema(tx, schema, "incidents_schema_version", PG_MIGRATIONS)
        .map_err(|e| match e {
            tally_store::sql::MigrateError::NewerSchema(found) => IncidentError::NewerSchema {
                found,
                known: PG_MIGRATIONS.len(),
            },
            tally_store::sql::MigrateError::Sql(e) => e.into(),
        })?;
    // The append-only guards come back at every opening.
    tx.batch(&pg_guards(schema))?;
    Ok(())
}

/// Connections each PostgreSQL-backed incident store keeps.
const PG_CONNECTIONS: usize = 2;

/// How long (seconds, on the clock of the `now` passed in) an item returned
/// by [`IncidentStore::due`] stays claimed by the node that got it, on
/// PostgreSQL. Longer than a round of deliveries normally takes (each
/// attempt times out well within it); a node that dies mid-round delays its
/// items by this much at most.
pub const OUTBOX_LEASE_SECS: i64 = 120;

/// Detection keys whose book counts a handle remembers before it forgets
/// the stale ones.
const MAX_BOOK_KEYS: usize = 100_000;

/// The audit head file beside `incidents.db`.
const HEAD_FILE: &str = "incidents.head";

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

/// The incident store (SQLite `incidents.db` or a PostgreSQL schema) and
/// the audit head this node has witnessed.
pub struct IncidentStore {
    db: Db,
    /// The witness file.
    head: PathBuf,
    /// How messages name the witness.
    head_name: String,
    /// Serialises updates of the witness file.
    witness: Mutex<()>,
    /// Per detection key: the count of the caller's detection book that is
    /// already in the stored total, and the last sighting then.
    books: Mutex<HashMap<String, (u64, i64)>>,
    /// Serialises this handle's [`IncidentStore::record`] calls, so that two
    /// of them never add the same part of a count.
    recording: Mutex<()>,
    /// Names this handle's outbox claims.
    claimant: String,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An audit entry: its sequence number and hash.
type Head = (i64, Vec<u8>);

const INCIDENT_COLUMNS: &str =
    "id, opened_at, aware_at, state, severity, title, materiality_at, updated_at";

fn incident_at(r: &Row) -> Result<Incident, IncidentError> {
    Ok(Incident {
        id: r.i64(0)?,
        opened_at: r.i64(1)?,
        aware_at: r.i64(2)?,
        state: state_of(&r.text(3)?)?,
        severity: severity_of(&r.text(4)?)?,
        title: r.text(5)?,
        materiality_at: r.opt_i64(6)?,
        updated_at: r.i64(7)?,
    })
}

fn read_incident(tx: &mut dyn Tx, id: i64) -> Result<Option<Incident>, IncidentError> {
    tx.query_opt(
        &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"),
        args![id],
    )?
    .map(|r| incident_at(&r))
    .transpose()
}

fn incident_exists(tx: &mut dyn Tx, id: i64) -> Result<(), IncidentError> {
    match tx.query_opt("SELECT 1 FROM incidents WHERE id = $1", args![id])? {
        Some(_) => Ok(()),
        None => Err(IncidentError::NotFound(id)),
    }
}

/// Appends a timeline entry and its audit entry; returns the audit entry.
fn log(
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

fn random_claimant() -> String {
    let mut b = [0u8; 12];
    if aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{}-{nanos}", std::process::id());
    }
    hex(&b)
}

impl IncidentStore {
    fn with(db: Db, head: PathBuf, head_name: String) -> IncidentStore {
        IncidentStore {
            db,
            head,
            head_name,
            witness: Mutex::new(()),
            books: Mutex::new(HashMap::new()),
            recording: Mutex::new(()),
            claimant: random_claimant(),
        }
    }

    /// Opens (creating if needed) `incidents.db` in `dir`; the audit head is
    /// witnessed in `incidents.head` beside it.
    pub fn open(dir: &Path) -> Result<IncidentStore, IncidentError> {
        let conn = Connection::open(dir.join("incidents.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(IncidentStore::with(
            Db::sqlite(conn),
            dir.join(HEAD_FILE),
            HEAD_FILE.to_owned(),
        ))
    }

    /// Connects to the incident store shared by a fleet in PostgreSQL (`url`
    /// as `postgres://user@host:port/database`), in `schema` (1-48 of `a-z`,
    /// `0-9`, `_`, starting with a letter; the state store's schema will
    /// do, the tables do not clash), creating or upgrading its tables if
    /// needed. `witness_dir` is this node's own directory (created if
    /// missing), where it keeps the audit head it has witnessed
    /// (`incidents-<schema>.head`); give every node its own. Safe to call
    /// from many nodes at once, and from inside a tokio runtime: the
    /// connections live on threads of their own.
    pub fn connect_postgres(
        url: &str,
        schema: &str,
        witness_dir: &Path,
    ) -> Result<IncidentStore, IncidentError> {
        let db = Db::postgres_with_lock(
            url,
            schema,
            PG_CONNECTIONS,
            "tally-incidents",
            tally_store::sql::incident_lock_key(schema),
        )?;
        std::fs::create_dir_all(witness_dir).map_err(|e| {
            SqlError::Config(format!(
                "cannot create the audit witness directory {} ({e}); give this node a \
                 writable directory of its own",
                witness_dir.display()
            ))
        })?;
        let s = schema.to_owned();
        db.write(move |tx| migrate_pg(tx, &s))?;
        let head = witness_dir.join(format!("incidents-{schema}.head"));
        let head_name = format!("this node's witness {}", head.display());
        Ok(IncidentStore::with(db, head, head_name))
    }

    /// Which engine holds the incidents: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Records `head` in the witness file unless it already holds a later
    /// entry. A failure to write is not an error of the change just
    /// committed: the witness then lags, and a later commit or verification
    /// catches up.
    fn witness(&self, head: Option<Head>) {
        let Some((seq, hash)) = head else {
            return;
        };
        let _serial = lock(&self.witness);
        if matches!(read_head(&self.head), Ok(Some((witnessed, _))) if witnessed >= seq) {
            return;
        }
        write_head(&self.head, seq, &hash);
    }

    /// Runs a change that appends to the audit log, then witnesses the
    /// head it wrote.
    fn write_logged<T, F>(&self, f: F) -> Result<T, IncidentError>
    where
        F: FnOnce(&mut dyn Tx) -> Result<(T, Option<Head>), IncidentError> + Send + 'static,
        T: Send + 'static,
    {
        let (out, head) = self.db.write(f)?;
        self.witness(head);
        Ok(out)
    }

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

    /// Adds a timeline entry (`note`, `action`, `reminder`, ...).
    pub fn append(
        &self,
        incident_id: i64,
        at: i64,
        actor: &str,
        kind: &str,
        body: &Value,
    ) -> Result<(), IncidentError> {
        let (actor, kind, body) = (actor.to_owned(), kind.to_owned(), body.clone());
        self.write_logged(move |tx| {
            incident_exists(tx, incident_id)?;
            let head = log(tx, incident_id, at, &actor, &kind, &body)?;
            tx.execute(
                "UPDATE incidents SET updated_at = $2 WHERE id = $1",
                args![incident_id, at],
            )?;
            Ok(((), Some(head)))
        })
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
        let (actor, note) = (actor.to_owned(), note.to_owned());
        self.write_logged(move |tx| {
            let cur = tx
                .query_opt("SELECT state FROM incidents WHERE id = $1", args![id])?
                .ok_or(IncidentError::NotFound(id))?
                .text(0)?;
            let cur = state_of(&cur)?;
            if !cur.can_move_to(next) {
                return Err(IncidentError::BadTransition {
                    id,
                    from: cur.as_str(),
                    to: next.as_str(),
                });
            }
            tx.execute(
                "UPDATE incidents SET state = $2, updated_at = $3 WHERE id = $1",
                args![id, next.as_str(), now],
            )?;
            let head = log(
                tx,
                id,
                now,
                &actor,
                "state",
                &json!({"from": cur.as_str(), "to": next.as_str(), "note": note}),
            )?;
            let inc = read_incident(tx, id)?.ok_or(IncidentError::NotFound(id))?;
            Ok((inc, Some(head)))
        })
    }

    /// Records the materiality determination (starts the SEC clock).
    pub fn set_materiality(&self, id: i64, at: i64, actor: &str) -> Result<(), IncidentError> {
        let actor = actor.to_owned();
        self.write_logged(move |tx| {
            let n = tx.execute(
                "UPDATE incidents SET materiality_at = $2, updated_at = $2 WHERE id = $1",
                args![id, at],
            )?;
            if n == 0 {
                return Err(IncidentError::NotFound(id));
            }
            let head = log(
                tx,
                id,
                at,
                &actor,
                "materiality",
                &json!({"materiality_at": at}),
            )?;
            Ok(((), Some(head)))
        })
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
        let (regime, actor, reference) =
            (regime.to_owned(), actor.to_owned(), reference.to_owned());
        self.write_logged(move |tx| {
            incident_exists(tx, id)?;
            tx.execute(
                "INSERT INTO submissions (incident_id, regime, submitted_at, actor, reference) VALUES ($1, $2, $3, $4, $5)",
                args![id, regime.clone(), now, actor.clone(), reference.clone()],
            )?;
            let head = log(
                tx,
                id,
                now,
                &actor,
                "submission",
                &json!({"regime": regime, "reference": reference}),
            )?;
            Ok(((), Some(head)))
        })
    }

    /// Reports made for an incident, oldest first.
    pub fn submissions(&self, id: i64) -> Result<Vec<Submission>, IncidentError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT regime, submitted_at, actor, reference FROM submissions WHERE incident_id = $1 ORDER BY id",
                args![id],
            )?
            .iter()
            .map(|r| {
                Ok(Submission {
                    regime: r.text(0)?,
                    submitted_at: r.i64(1)?,
                    actor: r.text(2)?,
                    reference: r.text(3)?,
                })
            })
            .collect()
        })
    }

    /// Queues an alert durably (delivered at least once, even across restarts).
    pub fn enqueue(
        &self,
        sink: &str,
        content_type: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64, IncidentError> {
        let (sink, content_type, body) = (sink.to_owned(), content_type.to_owned(), body.to_vec());
        self.db.write(move |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO outbox (sink, content_type, body, created_at, next_at) VALUES ($1, $2, $3, $4, $4) RETURNING id",
                    args![sink, content_type, body, now],
                )?
                .i64(0)?)
        })
    }

    /// Alerts due for (another) delivery attempt, oldest first.
    ///
    /// On PostgreSQL the items returned are claimed by this handle for
    /// [`OUTBOX_LEASE_SECS`] after `now`: until they are settled
    /// ([`IncidentStore::delivered`], [`IncidentStore::attempt_failed`]) or
    /// the lease runs out, no other caller gets them, nor any other item of
    /// the same sinks. With SQLite (one server) nothing is claimed.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>, IncidentError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claimant = self.claimant.clone();
        let item = |r: &Row| -> Result<OutboxItem, IncidentError> {
            Ok(OutboxItem {
                id: r.i64(0)?,
                sink: r.text(1)?,
                content_type: r.text(2)?,
                body: r.blob(3)?,
                attempts: r.i64(4)?,
                created_at: r.i64(5)?,
            })
        };
        if self.db.backend() == "postgres" {
            let mut items = self.db.write(move |tx| {
                tx.query(
                    "UPDATE outbox SET claimed_until = $2, claimed_by = $3
                     WHERE id IN (
                         SELECT id FROM outbox
                         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= $1
                           AND (claimed_until IS NULL OR claimed_until <= $1)
                           AND sink NOT IN (
                               SELECT sink FROM outbox
                               WHERE delivered_at IS NULL AND failed_at IS NULL
                                 AND claimed_until > $1)
                         ORDER BY id LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     RETURNING id, sink, content_type, body, attempts, created_at",
                    args![now, now.saturating_add(OUTBOX_LEASE_SECS), claimant, limit],
                )?
                .iter()
                .map(item)
                .collect::<Result<Vec<_>, _>>()
            })?;
            items.sort_by_key(|i| i.id);
            return Ok(items);
        }
        self.db.read(move |tx| {
            tx.query(
                "SELECT id, sink, content_type, body, attempts, created_at FROM outbox
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= $1 ORDER BY id LIMIT $2",
                args![now, limit],
            )?
            .iter()
            .map(item)
            .collect()
        })
    }

    /// Records a delivery.
    pub fn delivered(&self, id: i64, now: i64) -> Result<(), IncidentError> {
        self.db.write(move |tx| {
            let sql = if tx.backend() == "postgres" {
                "UPDATE outbox SET delivered_at = $2, attempts = attempts + 1, last_error = NULL,
                 claimed_until = NULL, claimed_by = NULL WHERE id = $1"
            } else {
                "UPDATE outbox SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1"
            };
            tx.execute(sql, args![id, now])?;
            Ok(())
        })
    }

    /// Records a failed attempt: retried at `next_at`, or given up when `None`.
    ///
    /// On PostgreSQL a failure also ends this handle's round for the item's
    /// sink (deliveries to a sink go in order): its other claims on that
    /// sink are released, so they come back at the next [`IncidentStore::due`].
    pub fn attempt_failed(
        &self,
        id: i64,
        now: i64,
        next_at: Option<i64>,
        error: &str,
    ) -> Result<(), IncidentError> {
        let error = error.to_owned();
        let claimant = self.claimant.clone();
        self.db.write(move |tx| {
            match next_at {
                Some(t) => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = $2, last_error = $3 WHERE id = $1",
                    args![id, t, error],
                )?,
                None => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, failed_at = $2, last_error = $3 WHERE id = $1",
                    args![id, now, error],
                )?,
            };
            if tx.backend() == "postgres" {
                tx.execute(
                    "UPDATE outbox SET claimed_until = NULL, claimed_by = NULL
                     WHERE id = $1
                        OR (claimed_by = $2 AND sink = (SELECT sink FROM outbox WHERE id = $1))",
                    args![id, claimant],
                )?;
            }
            Ok(())
        })
    }

    /// (pending, delivered, failed) alert counts.
    pub fn outbox_counts(&self) -> Result<(i64, i64, i64), IncidentError> {
        self.db.read(|tx| {
            let r = tx.query_one(
                "SELECT COUNT(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 END),
                        COUNT(delivered_at), COUNT(failed_at) FROM outbox",
                &[],
            )?;
            Ok((r.i64(0)?, r.i64(1)?, r.i64(2)?))
        })
    }

    /// Marks a reminder as sent; false if it already was (by any node).
    pub fn mark_reminder(
        &self,
        id: i64,
        clock: &str,
        label: &str,
        now: i64,
    ) -> Result<bool, IncidentError> {
        let (clock, label) = (clock.to_owned(), label.to_owned());
        self.db.write(move |tx| {
            Ok(tx.execute(
                "INSERT INTO reminders (incident_id, clock, label, sent_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (incident_id, clock, label) DO NOTHING",
                args![id, clock, label, now],
            )? == 1)
        })
    }

    /// One incident.
    pub fn incident(&self, id: i64) -> Result<Option<Incident>, IncidentError> {
        self.db.read(move |tx| read_incident(tx, id))
    }

    /// All incidents, newest first.
    pub fn incidents(&self) -> Result<Vec<Incident>, IncidentError> {
        self.db.read(|tx| {
            tx.query(
                &format!("SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC"),
                &[],
            )?
            .iter()
            .map(incident_at)
            .collect()
        })
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

    /// An incident's timeline, oldest first.
    pub fn timeline(&self, incident_id: i64) -> Result<Vec<TimelineEntry>, IncidentError> {
        self.db.read(move |tx| {
            let rows = tx.query(
                "SELECT id, incident_id, at, actor, kind, body FROM timeline WHERE incident_id = $1 ORDER BY id",
                args![incident_id],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = r.i64(0)?;
                let body = serde_json::from_str(&r.text(5)?)
                    .map_err(|e| IncidentError::Corrupt(format!("timeline {id}: {e}")))?;
                out.push(TimelineEntry {
                    id,
                    incident_id: r.i64(1)?,
                    at: r.i64(2)?,
                    actor: r.text(3)?,
                    kind: r.text(4)?,
                    body,
                });
            }
            Ok(out)
        })
    }

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
