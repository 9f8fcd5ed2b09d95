//! Schemas in PostgreSQL: their names (checked, as they are used unquoted),
//! the advisory lock key each store's writers take in a schema (derived from
//! its name, distinct per store), and [`migrate_schema`], which brings a
//! store's tables up to date under that lock.

use super::error::SqlError;
use super::tx::Tx;
use crate::args;

/// The advisory lock key (`"tallystt"` as ASCII) mixed by [`write_lock_key`]
/// with the schema name. Distinct from the fleet sequencer's key.
const STATE_LOCK: i64 = 0x7461_6c6c_7973_7474;

/// The advisory lock key (`"tallyinc"` as ASCII) mixed by
/// [`incident_lock_key`] with the schema name.
const INCIDENT_LOCK: i64 = 0x7461_6c6c_7969_6e63;

/// FNV-1a of a schema name.
pub(crate) fn schema_hash(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The PostgreSQL advisory lock key that serialises writers of the state in
/// `schema` (FNV-1a of the name, xor a constant of this module).
pub fn write_lock_key(schema: &str) -> i64 {
    schema_hash(schema) ^ STATE_LOCK
}

/// The PostgreSQL advisory lock key that serialises writers of the incident
/// store in `schema`: distinct from [`write_lock_key`], so that incident
/// writes and state writes in one schema do not wait for each other.
pub fn incident_lock_key(schema: &str) -> i64 {
    schema_hash(schema) ^ INCIDENT_LOCK
}

/// Checks a PostgreSQL schema name: 1-48 of `a-z`, `0-9`, `_`, starting
/// with a letter (so it can be used unquoted in statements).
pub fn check_schema(schema: &str) -> Result<(), SqlError> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SqlError::Config(format!(
            "PostgreSQL schema name {schema:?} is not valid: use 1-48 characters of a-z, 0-9 \
             and _, starting with a letter"
        )))
    }
}

/// Why [`migrate_schema`] failed.
#[derive(Debug)]
pub enum MigrateError {
    /// The schema was written by a newer tally, which knows this many
    /// migrations.
    NewerSchema(usize),
    /// A statement failed.
    Sql(SqlError),
}

impl From<SqlError> for MigrateError {
    fn from(e: SqlError) -> MigrateError {
        MigrateError::Sql(e)
    }
}

/// Brings `schema` up to date with `migrations` (each a batch of SQL in
/// which `{schema}` stands for the schema's name, run with it as the search
/// path), recording how many were applied in the one-row table
/// `version_table`. Runs in the caller's transaction, so under the store's
/// advisory write lock: nodes starting together migrate one at a time.
pub fn migrate_schema(
    tx: &mut dyn Tx,
    schema: &str,
    version_table: &str,
    migrations: &[&str],
) -> Result<(), MigrateError> {
    tx.batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.{version_table} (version BIGINT NOT NULL);"
    ))?;
    let stored = tx
        .query_opt(
            &format!("SELECT version FROM {schema}.{version_table}"),
            &[],
        )?
        .map(|r| r.i64(0))
        .transpose()?;
    let applied = usize::try_from(stored.unwrap_or(0)).unwrap_or(usize::MAX);
    if applied > migrations.len() {
        return Err(MigrateError::NewerSchema(applied));
    }
    if applied == migrations.len() {
        return Ok(());
    }
    for sql in &migrations[applied..] {
        let sql = sql.replace("{schema}", schema);
        tx.batch(&format!("SET LOCAL search_path TO {schema};\n{sql}"))?;
    }
    let version = migrations.len() as i64;
    let statement = if stored.is_some() {
        format!("UPDATE {schema}.{version_table} SET version = $1")
    } else {
        format!("INSERT INTO {schema}.{version_table} (version) VALUES ($1)")
    };
    tx.execute(&statement, args![version])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("tally").is_ok());
        assert!(check_schema("t_state_1").is_ok());
        for bad in ["", "1abc", "Tally", "a-b", "a;drop", &"a".repeat(49)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
        assert_ne!(write_lock_key("a"), write_lock_key("b"));
        assert_ne!(write_lock_key("tally"), crate::fleet::lock_key("tally"));
        assert_ne!(incident_lock_key("tally"), write_lock_key("tally"));
        assert_ne!(incident_lock_key("tally"), crate::fleet::lock_key("tally"));
    }
}
