//! Versioned schemas, one mechanism for every store on both engines.
//!
//! A store describes its schema as [`Migrations`]: its name and its
//! [`Step`]s, version 1, 2, 3…, each with its SQL for SQLite and for
//! PostgreSQL (the same text, or one per engine where they differ, or none
//! on an engine the store does not live on). [`Migrations::apply_sqlite`]
//! and [`Migrations::apply_postgres`] bring a database up to the last step,
//! both through one code path.
//!
//! # Where the version is kept
//!
//! * **SQLite**: `PRAGMA user_version` of the file. Every store has a file
//!   of its own (`state.db`, `ledger.db`, `incidents.db`, `access.db`), so
//!   the file's version is its store's.
//! * **PostgreSQL**: the store's row (by [`Migrations::name`]) in the table
//!   `schema_migrations (store, version)` of the schema. Stores sharing a
//!   schema (the state and the incident store, say) have a row each.
//!
//! # Invariants
//!
//! * Steps are numbered 1, 2, 3… without a gap and are only ever appended:
//!   a released step is never edited, as databases already carry it.
//! * The pending steps and the new version are one transaction: a database
//!   is at a version, never between two.
//! * Migrations of a database are serialised, and a migrator that waited
//!   reads the version again and finds the work done. SQLite takes its
//!   write lock first (`BEGIN IMMEDIATE`). On PostgreSQL the caller's
//!   transaction already holds its store's advisory write lock (as every
//!   write of that store does), and [`Migrations::apply_postgres`] also
//!   takes the schema's [`migrate_lock_key`], which the migrations of every
//!   store take, so that stores sharing a schema create and update
//!   `schema_migrations` one at a time.
//! * A database at a version above the last step is refused
//!   ([`MigrateError::NewerSchema`], code `schema_too_new`: upgrade tally),
//!   never changed or downgraded.
//! * A database written before versions were kept this way (SQLite version
//!   0, or no row in `schema_migrations`) is recognised by its [`Legacy`]
//!   markers and adopted at that version: no row is rewritten, only the
//!   version is recorded and the steps after it run. The old markers are
//!   left as they were (nodes of the earlier release still start during a
//!   rolling upgrade of a fleet) and are never read again once the version
//!   is recorded here.
//!
//! [`migrate_lock_key`]: crate::sql::migrate_lock_key

use rusqlite::Connection;

use crate::sql::{SqlError, Tx, Value};

/// A store's schema: its versions, in order, and how a database from
/// before they were recorded here is recognised.
#[derive(Debug)]
pub struct Migrations {
    /// The store's name: its row in PostgreSQL's `schema_migrations`, and
    /// what messages call it.
    pub name: &'static str,
    /// Versions 1, 2, 3…, in order, only ever appended to.
    pub steps: &'static [Step],
    /// Markers of databases written before the version was kept here, tried
    /// in order; the first found gives the version.
    pub legacy: &'static [Legacy],
}

/// One version of a store's schema: the statements that bring the version
/// before it to this one. In PostgreSQL's, `{schema}` stands for the
/// schema's name (the statements also run with it as the search path).
#[derive(Debug)]
pub struct Step {
    /// Its number: the step's place in the list, counting from 1.
    pub version: u32,
    /// The statements on SQLite: `None` if the store never lives there, `""`
    /// if nothing changes there at this version.
    pub sqlite: Option<&'static str>,
    /// The statements on PostgreSQL: `None` if the store never lives there,
    /// `""` if nothing changes there at this version.
    pub postgres: Option<&'static str>,
}

impl Step {
    /// A step with the same statements on both engines.
    pub const fn both(version: u32, sql: &'static str) -> Step {
        Step {
            version,
            sqlite: Some(sql),
            postgres: Some(sql),
        }
    }

    /// A step with statements of its own on each engine.
    pub const fn each(version: u32, sqlite: &'static str, postgres: &'static str) -> Step {
        Step {
            version,
            sqlite: Some(sqlite),
            postgres: Some(postgres),
        }
    }

    /// A step of a store that lives only in SQLite.
    pub const fn sqlite(version: u32, sql: &'static str) -> Step {
        Step {
            version,
            sqlite: Some(sql),
            postgres: None,
        }
    }

    /// A step of a store that lives only in PostgreSQL.
    pub const fn postgres(version: u32, sql: &'static str) -> Step {
        Step {
            version,
            sqlite: None,
            postgres: Some(sql),
        }
    }
}

/// How a database written before its version was kept here shows which
/// version it is at.
#[derive(Debug)]
pub enum Legacy {
    /// The one-row table `table` (column `version`) in which the earlier
    /// PostgreSQL migrations counted the migrations applied: `n` of them
    /// make version `versions[n]`. A count beyond the list is a newer
    /// schema.
    Counter {
        /// The table.
        table: &'static str,
        /// The version each count makes, from a count of 0.
        versions: &'static [u32],
    },
    /// The table `table` exists (with the column `column`, if given): the
    /// database is at `version`.
    Table {
        /// The table.
        table: &'static str,
        /// A column that must exist too.
        column: Option<&'static str>,
        /// The version this makes.
        version: u32,
    },
}

/// What [`Migrations::apply_sqlite`] or [`Migrations::apply_postgres`]
/// found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The version the database was at (0 for a new one).
    pub from: u32,
    /// The version it is at now: the last step.
    pub to: u32,
    /// Whether `from` was recognised by a [`Legacy`] marker (and recorded
    /// here for the first time).
    pub adopted: bool,
}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database was written by a newer tally.
    #[error(
        "the {store} store has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// The store.
        store: &'static str,
        /// The version in the database.
        found: u64,
        /// The last version this code knows.
        known: u32,
    },
    /// A statement failed, or the store does not live on this engine.
    #[error(transparent)]
    Sql(#[from] SqlError),
}

impl MigrateError {
    /// Stable code: `schema_too_new`, `bad_config` or `store_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            MigrateError::NewerSchema { .. } => "schema_too_new",
            MigrateError::Sql(SqlError::Config(_)) => "bad_config",
            MigrateError::Sql(_) => "store_unavailable",
        }
    }
}

/// Where a store's tables are.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// The SQLite file of the connection.
    Sqlite,
    /// A PostgreSQL schema.
    Postgres(&'a str),
}

impl Migrations {
    /// The last version.
    pub fn latest(&self) -> u32 {
        self.steps.len() as u32
    }

    /// Brings the SQLite file of `conn` to the last version, in one
    /// `IMMEDIATE` transaction (nothing is locked when it is there already).
    pub fn apply_sqlite(&self, conn: &mut Connection) -> Result<Applied, MigrateError> {
        let at = crate::sql::read_sqlite(conn, |tx| read_user_version(tx))?;
        if at == u64::from(self.latest()) {
            return Ok(Applied {
                from: self.latest(),
                to: self.latest(),
                adopted: false,
            });
        }
        crate::sql::write_sqlite(conn, |tx| self.run(tx, Place::Sqlite))
    }

    /// Refuses the SQLite file of `conn` if a newer tally wrote it; changes
    /// nothing (for read-only connections).
    pub fn check_sqlite(&self, conn: &Connection) -> Result<(), MigrateError> {
        let at = crate::sql::read_sqlite(conn, |tx| read_user_version(tx))?;
        self.not_newer(at)
    }

    /// Brings the store's tables in the PostgreSQL `schema` (created if
    /// missing) to the last version, in the caller's transaction, which
    /// holds the store's advisory write lock ([`crate::sql::Db::write`]);
    /// the schema's migration lock is taken here.
    pub fn apply_postgres(&self, tx: &mut dyn Tx, schema: &str) -> Result<Applied, MigrateError> {
        crate::sql::check_schema(schema)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[Value::Int(crate::sql::migrate_lock_key(schema))],
        )?;
        tx.batch(&format!(
            r#"CREATE SCHEMA IF NOT EXISTS {schema};
               CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                   store   TEXT COLLATE "C" PRIMARY KEY,
                   version BIGINT NOT NULL
               );"#
        ))?;
        self.run(tx, Place::Postgres(schema))
    }

    /// The one code path of both engines, in a transaction that serialises
    /// migrators: the version recorded (or recognised), refused if newer,
    /// then the steps after it and the new version.
    fn run(&self, tx: &mut dyn Tx, place: Place<'_>) -> Result<Applied, MigrateError> {
        self.check_steps()?;
        let recorded = match place {
            Place::Sqlite => Some(read_user_version(tx)?).filter(|&v| v > 0),
            Place::Postgres(schema) => tx
                .query_opt(
                    &format!("SELECT version FROM {schema}.schema_migrations WHERE store = $1"),
                    &[Value::from(self.name)],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .map(|v| u64::try_from(v).unwrap_or(u64::MAX)),
        };
        let (from, adopted) = match recorded {
            Some(v) => (v, false),
            None => match self.recognise(tx, place)? {
                Some(v) => (v, true),
                None => (0, false),
            },
        };
        self.not_newer(from)?;
        let from = from as u32;
        for step in &self.steps[from as usize..] {
            let sql = match place {
                Place::Sqlite => step.sqlite,
                Place::Postgres(_) => step.postgres,
            };
            let Some(sql) = sql else {
                return Err(SqlError::Config(format!(
                    "the {} store does not live in {}",
                    self.name,
                    tx.backend()
                ))
                .into());
            };
            match place {
                _ if sql.trim().is_empty() => {}
                Place::Sqlite => tx.batch(sql)?,
                Place::Postgres(schema) => tx.batch(&format!(
                    "SET LOCAL search_path TO {schema};\n{}",
                    sql.replace("{schema}", schema)
                ))?,
            }
        }
        let to = self.latest();
        if to != from || adopted {
            match place {
                // PRAGMA takes no parameter; `to` is a number.
                Place::Sqlite => tx.batch(&format!("PRAGMA user_version = {to}"))?,
                Place::Postgres(schema) => {
                    tx.execute(
                        &format!(
                            "INSERT INTO {schema}.schema_migrations (store, version) VALUES ($1, $2)
                             ON CONFLICT (store) DO UPDATE SET version = excluded.version"
                        ),
                        &[Value::from(self.name), Value::Int(i64::from(to))],
                    )?;
                }
            }
        }
        Ok(Applied { from, to, adopted })
    }

    /// [`MigrateError::NewerSchema`] if `found` is above the last version.
    fn not_newer(&self, found: u64) -> Result<(), MigrateError> {
        if found > u64::from(self.latest()) {
            return Err(MigrateError::NewerSchema {
                store: self.name,
                found,
                known: self.latest(),
            });
        }
        Ok(())
    }

    /// Steps numbered 1, 2, 3… in order (a store's own mistake, caught
    /// before anything is changed).
    fn check_steps(&self) -> Result<(), SqlError> {
        for (i, step) in self.steps.iter().enumerate() {
            if step.version as usize != i + 1 {
                return Err(SqlError::Config(format!(
                    "the {} store's migration {} is numbered {} (internal error)",
                    self.name,
                    i + 1,
                    step.version
                )));
            }
        }
        Ok(())
    }

    /// The version a database from before versions were kept here is at,
    /// by the first of its legacy markers found; `None` for a new database.
    fn recognise(&self, tx: &mut dyn Tx, place: Place<'_>) -> Result<Option<u64>, MigrateError> {
        for marker in self.legacy {
            match *marker {
                Legacy::Counter { table, versions } => {
                    if !table_exists(tx, place, table, None)? {
                        continue;
                    }
                    let name = match place {
                        Place::Sqlite => table.to_owned(),
                        Place::Postgres(schema) => format!("{schema}.{table}"),
                    };
                    let count = tx
                        .query_opt(&format!("SELECT version FROM {name}"), &[])?
                        .map(|r| r.i64(0))
                        .transpose()?
                        .unwrap_or(0);
                    let count = usize::try_from(count).unwrap_or(usize::MAX);
                    return match versions.get(count) {
                        Some(&v) => Ok(Some(u64::from(v))),
                        None => Err(MigrateError::NewerSchema {
                            store: self.name,
                            found: count as u64,
                            known: self.latest(),
                        }),
                    };
                }
                Legacy::Table {
                    table,
                    column,
                    version,
                } => {
                    if table_exists(tx, place, table, column)? {
                        return Ok(Some(u64::from(version)));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// SQLite's `PRAGMA user_version`.
fn read_user_version(tx: &mut dyn Tx) -> Result<u64, SqlError> {
    let v = tx.query_one("PRAGMA user_version", &[])?.i64(0)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Whether `table` (and its `column`, if given) exists where the store is.
fn table_exists(
    tx: &mut dyn Tx,
    place: Place<'_>,
    table: &str,
    column: Option<&str>,
) -> Result<bool, SqlError> {
    let (sql, params): (&str, Vec<Value>) = match (place, column) {
        (Place::Sqlite, None) => (
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = $1",
            vec![table.into()],
        ),
        (Place::Sqlite, Some(c)) => (
            "SELECT 1 FROM pragma_table_info($1) WHERE name = $2",
            vec![table.into(), c.into()],
        ),
        (Place::Postgres(schema), None) => (
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = $1::text AND table_name = $2::text",
            vec![schema.into(), table.into()],
        ),
        (Place::Postgres(schema), Some(c)) => (
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = $1::text AND table_name = $2::text AND column_name = $3::text",
            vec![schema.into(), table.into(), c.into()],
        ),
    };
    Ok(tx.query_opt(sql, &params)?.is_some())
}

#[cfg(test)]
mod tests;
