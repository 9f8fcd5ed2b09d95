//! The incident store's tables, versioned through [`tally_store::migrate`]
//! ([`INCIDENTS`]: `PRAGMA user_version` of `incidents.db`, the `incidents`
//! row of `schema_migrations` in PostgreSQL), and the append-only guards
//! put back at every opening on either engine.
//!
//! Both engines have the same tables and columns (`incidents`,
//! `detections`, `timeline`, `audit`, `submissions`, `outbox`,
//! `reminders`), so that the store runs the same statements on either; the
//! timeline and the audit table refuse updates and deletions on both.
//!
//! Invariants: steps are only ever appended to, never edited. A store from
//! before versions were kept here is at version 1 (the only one so far):
//! on PostgreSQL by its count of migrations in `incidents_schema_version`
//! (1; a higher count is a newer schema), on SQLite by its `incidents`
//! table. The guards are not part of a version: whoever drops one finds it
//! back at the next opening.

use rusqlite::Connection;
use tally_store::migrate::{Legacy, MigrateError, Migrations, Step};
use tally_store::sql::Tx;

use super::error::IncidentError;

/// The incident store's schema on both engines.
pub(super) const INCIDENTS: Migrations = Migrations {
    name: "incidents",
    steps: &[Step::each(1, SQLITE_V1, PG_V1)],
    legacy: &[
        Legacy::Counter {
            table: "incidents_schema_version",
            versions: &[0, 1],
        },
        Legacy::Table {
            table: "incidents",
            column: None,
            version: 1,
        },
    ],
};

/// Version 1 on SQLite (its append-only guards are [`SQLITE_GUARDS`]).
const SQLITE_V1: &str = "
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
CREATE TABLE IF NOT EXISTS audit (
    seq  INTEGER PRIMARY KEY,
    at   INTEGER NOT NULL,
    body BLOB    NOT NULL,
    prev BLOB    NOT NULL,
    hash BLOB    NOT NULL
);
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

/// The append-only guards of the timeline and the audit table on SQLite,
/// put back at every opening if someone dropped them.
const SQLITE_GUARDS: &str = "
CREATE TRIGGER IF NOT EXISTS timeline_append_only BEFORE UPDATE ON timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TRIGGER IF NOT EXISTS timeline_no_delete BEFORE DELETE ON timeline
BEGIN SELECT RAISE(ABORT, 'the incident timeline is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the incident audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the incident audit log is append-only'); END;
";

/// Version 1 on PostgreSQL. Tables and columns are those of the SQLite
/// schema so that both run the same statements; text compares byte-wise
/// (`COLLATE "C"`), as in SQLite. The outbox has two more columns for the
/// claims of [`IncidentStore::due`](crate::store::IncidentStore::due). The append-only guards are in
/// [`pg_guards`].
const PG_V1: &str = r#"
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
"#;

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

/// Creates or upgrades `incidents.db` and puts back missing guards.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), IncidentError> {
    INCIDENTS.apply_sqlite(conn).map_err(incident_error)?;
    conn.execute_batch(SQLITE_GUARDS)?;
    Ok(())
}

/// Creates or upgrades the PostgreSQL schema and puts back missing guards.
/// Runs in a [`Db::write`](tally_store::sql::Db::write), so under the incident store's advisory lock:
/// nodes starting together migrate one at a time, and the later ones find
/// the work done.
pub(super) fn migrate_pg(tx: &mut dyn Tx, schema: &str) -> Result<(), IncidentError> {
    INCIDENTS
        .apply_postgres(tx, schema)
        .map_err(incident_error)?;
    // The append-only guards come back at every opening.
    tx.batch(&pg_guards(schema))?;
    Ok(())
}

/// A migration failure as the incident store reports it.
fn incident_error(e: MigrateError) -> IncidentError {
    match e {
        MigrateError::NewerSchema { found, known, .. } => IncidentError::NewerSchema {
            found: usize::try_from(found).unwrap_or(usize::MAX),
            known: known as usize,
        },
        MigrateError::Sql(e) => e.into(),
        other => IncidentError::Store(tally_store::sql::SqlError::Database(other.to_string())),
    }
}

/// Connections each PostgreSQL-backed incident store keeps.
pub(super) const PG_CONNECTIONS: usize = 2;
