//! The embedded ledger's SQLite file: its schema ([`LEDGER`], versioned
//! through [`crate::migrate`]), how connections to it are opened (WAL and
//! `synchronous = FULL` for the writer, read-only for readers and `tally
//! ledger verify`, which refuse a file from a newer tally), and the
//! checkpoint rows. Only the writer thread and [`super::Ledger::open`]
//! write through these functions.
//!
//! Invariant: a `ledger.db` from before versions were kept (`user_version`
//! 0 with a `ledger` table) is at version 1, the only one so far.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tally_core::note::SignedCheckpoint;

use super::types::LedgerError;
use crate::migrate::{Legacy, MigrateError, Migrations, Step};

/// The ledger's schema (SQLite only), brought up to date when the writer
/// opens the file.
pub(super) const LEDGER: Migrations = Migrations {
    name: "ledger",
    steps: &[Step::sqlite(1, V1)],
    legacy: &[Legacy::Table {
        table: "ledger",
        column: None,
        version: 1,
    }],
};

/// Version 1: the entries and the signed checkpoints.
const V1: &str = "
CREATE TABLE IF NOT EXISTS ledger (
    idx        INTEGER PRIMARY KEY,
    token_id   TEXT    NOT NULL UNIQUE,
    record     BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    signed_at INTEGER NOT NULL
);
";

pub(super) fn open_conn(path: &Path, read_only: bool) -> Result<Connection, LedgerError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SQLite's `data_version`: it moves when another connection commits.
pub(super) fn data_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Stores a signed checkpoint row (in the caller's transaction, if any).
pub(super) fn store_head(conn: &Connection, signed: &SignedCheckpoint) -> Result<(), LedgerError> {
    let cp = signed.checkpoint();
    conn.execute(
        "INSERT OR REPLACE INTO checkpoints (size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            cp.size as i64,
            cp.root_hash.as_slice(),
            signed.note(),
            now_secs()
        ],
    )?;
    Ok(())
}

/// A migration failure as the ledger reports it.
pub(super) fn ledger_error(e: MigrateError) -> LedgerError {
    match e {
        MigrateError::NewerSchema { found, known, .. } => LedgerError::NewerSchema {
            found: usize::try_from(found).unwrap_or(usize::MAX),
            known: known as usize,
        },
        MigrateError::Sql(e) => LedgerError::Store(e.to_string()),
    }
}

/// Opens an existing ledger file read-only (for `tally ledger verify`);
/// refuses one written by a newer tally.
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    if !path.exists() {
        return Err(LedgerError::Store(format!(
            "no ledger at {} (run `tally init` or `tally serve` first)",
            path.display()
        )));
    }
    let conn = open_conn(path, true)?;
    LEDGER.check_sqlite(&conn).map_err(ledger_error)?;
    Ok(conn)
}

/// The note of the latest stored checkpoint.
pub fn latest_checkpoint_note(conn: &Connection) -> Result<String, LedgerError> {
    conn.query_row(
        "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| LedgerError::Store("the ledger has no checkpoint yet".into()))
}
