//! The [`StateStore`] handle: opening either engine (migrating it), the row
//! key once installed (until then, methods on sealed rows answer
//! [`StateError::Unsealed`]), the hook told of every row refused for its
//! MAC, and the change counter a node polls to know when to reload what it
//! caches. The methods on each kind of row live in the sibling modules,
//! each in an `impl StateStore` block of its own.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::error::StateError;
use super::schema::{migrate, migrate_pg};
use crate::rows::RowMac;
use crate::sql::Db;

/// Connections each PostgreSQL-backed store keeps.
const PG_CONNECTIONS: usize = 3;

/// The state database.
pub struct StateStore {
    pub(super) db: Db,
    /// The key sealing the rows that grant access, once installed.
    pub(super) rows: std::sync::OnceLock<Arc<RowMac>>,
    /// Told of every row refused for its MAC.
    on_tamper: std::sync::OnceLock<TamperHook>,
}

/// What [`StateStore::on_tamper`] installs.
type TamperHook = Box<dyn Fn(&str) + Send + Sync>;

impl StateStore {
    /// Opens (creating if needed) the state database at `path`.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(StateStore {
            db: Db::sqlite(conn),
            rows: std::sync::OnceLock::new(),
            on_tamper: std::sync::OnceLock::new(),
        })
    }

    /// Connects to the state shared by a fleet in PostgreSQL (`url` as
    /// `postgres://user@host:port/database`), in `schema` (1-48 of `a-z`,
    /// `0-9`, `_`, starting with a letter), creating or upgrading the schema
    /// if needed. Safe to call from many nodes at once, and from inside a
    /// tokio runtime: the connections live on threads of their own.
    pub fn connect_postgres(url: &str, schema: &str) -> Result<StateStore, StateError> {
        let db = Db::postgres(url, schema, PG_CONNECTIONS)?;
        let s = schema.to_owned();
        db.write(move |tx| migrate_pg(tx, &s))?;
        Ok(StateStore {
            db,
            rows: std::sync::OnceLock::new(),
            on_tamper: std::sync::OnceLock::new(),
        })
    }

    /// Calls `f` with a description of each row refused for its MAC (the
    /// server raises an incident); the first hook installed stays.
    pub fn on_tamper(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_tamper.set(Box::new(f));
    }

    /// `r`, after telling the hook of a refused row.
    pub(super) fn noticed<T>(&self, r: Result<T, StateError>) -> Result<T, StateError> {
        if let (Err(StateError::Tampered(what)), Some(hook)) = (&r, self.on_tamper.get()) {
            hook(what);
        }
        r
    }

    /// The row key, or [`StateError::Unsealed`].
    pub(super) fn mac(&self) -> Result<Arc<RowMac>, StateError> {
        self.rows.get().cloned().ok_or(StateError::Unsealed)
    }

    /// Which engine holds the state: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// A counter that changes when keys, custodians, revocations, blocks or
    /// users may have changed, so that a node knows to reload what it caches.
    ///
    /// On SQLite it is `PRAGMA data_version`: it moves whenever another
    /// connection (another process, such as an admin command) commits to the
    /// state database, but not for this handle's own writes. On PostgreSQL it
    /// is a counter moved by triggers on those tables, for every node's
    /// writes, this one's included (a harmless extra reload); the triggers
    /// also `NOTIFY` the channel `tally_state_<schema>`, which a node may
    /// `LISTEN` to in order to look early. Sessions and refresh tokens do not
    /// move it on PostgreSQL.
    pub fn data_version(&self) -> Result<i64, StateError> {
        self.db.read(|tx| {
            let sql = if tx.backend() == "postgres" {
                "SELECT v FROM changes"
            } else {
                "PRAGMA data_version"
            };
            Ok(tx.query_one(sql, &[])?.i64(0)?)
        })
    }
}

/// A row count as `usize`.
pub(super) fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
