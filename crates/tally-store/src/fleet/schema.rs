//! The fleet's schema in PostgreSQL: its name (checked, as it is used
//! unquoted), its tables (created idempotently, one migrator at a time), the
//! sequencer's advisory lock key and the NOTIFY channel, both derived from
//! the schema name so that deployments sharing a database stay apart.

use postgres::Client;

use super::error::FleetError;

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

/// Creates the schema and tables if needed (idempotent; safe from many nodes).
pub fn migrate(client: &mut Client, schema: &str) -> Result<(), FleetError> {
    check_schema(schema)?;
    let mut tx = client.transaction()?;
    // One migrator at a time.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&(lock_key(schema) ^ 1)],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
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
         );"
    ))?;
    tx.commit()?;
    Ok(())
}

/// [`migrate`], handing the client back.
pub fn migrate_with(mut client: Client, schema: &str) -> Result<Client, FleetError> {
    migrate(&mut client, schema)?;
    Ok(client)
}
