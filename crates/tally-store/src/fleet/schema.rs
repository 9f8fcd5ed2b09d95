//! The fleet's schema in PostgreSQL: its name (checked, as it is used
//! unquoted), its tables (versioned through [`crate::migrate`], the `fleet`
//! row of `schema_migrations`, one migrator at a time), the sequencer's
//! advisory lock key and the NOTIFY channel, both derived from the schema
//! name so that deployments sharing a database stay apart.
//!
//! Invariant: a schema from before versions were kept (no `fleet` row, a
//! `queue` table) is at version 1, the only one so far.

use postgres::Client;

use super::error::FleetError;
use crate::migrate::{Legacy, MigrateError, Migrations, Step};

/// The advisory lock key of the sequencer (`"tallyseq"` as ASCII), mixed
/// with the schema name by [`lock_key`] so that deployments sharing a
/// database do not wait for each other.
pub const SEQUENCER_LOCK: i64 = 0x7461_6c6c_7973_6571;

/// The sequencer's advisory lock key for `schema` (FNV-1a of the name, xor
/// [`SEQUENCER_LOCK`]).
pub fn lock_key(schema: &str) -> i64 {
    crate::sql::schema_hash(schema) ^ SEQUENCER_LOCK
}

/// The NOTIFY channel on which new queue rows and checkpoints are announced.
pub fn channel(schema: &str) -> String {
    format!("tally_ledger_{schema}")
}

pub(super) fn check_schema(schema: &str) -> Result<(), FleetError> {
    crate::sql::check_schema(schema).map_err(|_| FleetError::BadSchema(schema.to_string()))
}

/// The fleet's schema (PostgreSQL only).
const FLEET: Migrations = Migrations {
    name: "fleet",
    steps: &[Step::postgres(1, V1)],
    legacy: &[Legacy::Table {
        table: "queue",
        column: None,
        version: 1,
    }],
};

/// Version 1: the queue, the sequenced leaves, the signed checkpoints, the
/// records waiting for their turn, the nodes and the rejected rows.
const V1: &str = "
CREATE TABLE IF NOT EXISTS {schema}.queue (
    seq          BIGSERIAL PRIMARY KEY,
    token_id     TEXT   NOT NULL UNIQUE,
    record       BYTEA  NOT NULL,
    token_sha256 BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL,
    queued_at    BIGINT NOT NULL,
    mac          BYTEA  NOT NULL,
    node         TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS queue_expires ON {schema}.queue (expires_at);
CREATE TABLE IF NOT EXISTS {schema}.leaves (
    idx       BIGINT PRIMARY KEY,
    seq       BIGINT NOT NULL UNIQUE REFERENCES {schema}.queue(seq),
    leaf_hash BYTEA  NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    size      BIGINT PRIMARY KEY,
    note      TEXT   NOT NULL,
    signed_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.pending (
    seq BIGINT PRIMARY KEY REFERENCES {schema}.queue(seq)
);
CREATE TABLE IF NOT EXISTS {schema}.nodes (
    name      TEXT    PRIMARY KEY,
    last_seen BIGINT  NOT NULL,
    published BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.rejected (
    seq    BIGINT PRIMARY KEY REFERENCES {schema}.queue(seq),
    reason TEXT   NOT NULL,
    at     BIGINT NOT NULL
);
";

/// Creates or upgrades the fleet's schema and tables (safe from many nodes:
/// one migrator at a time, under the advisory lock `lock_key(schema) ^ 1`,
/// and the later ones find the work done).
pub fn migrate(client: &mut Client, schema: &str) -> Result<(), FleetError> {
    check_schema(schema)?;
    crate::sql::write_postgres(client, lock_key(schema) ^ 1, |tx| {
        FLEET.apply_postgres(tx, schema)
    })
    .map_err(|e| match e {
        MigrateError::NewerSchema { found, known, .. } => FleetError::NewerSchema {
            found: usize::try_from(found).unwrap_or(usize::MAX),
            known: known as usize,
        },
        MigrateError::Sql(e) => FleetError::Store(e),
    })?;
    Ok(())
}

/// [`migrate`], handing the client back.
pub fn migrate_with(mut client: Client, schema: &str) -> Result<Client, FleetError> {
    migrate(&mut client, schema)?;
    Ok(client)
}
