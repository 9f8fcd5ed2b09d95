//! The [`IncidentStore`] handle: opening it on SQLite or connecting it to
//! PostgreSQL, and witnessing the audit head it writes.
//!
//! Invariants: every change that appends to the audit chain goes through
//! [`IncidentStore::write_logged`], which witnesses the head it wrote once
//! the transaction has committed; the witness only ever moves forward.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;
use tally_store::sql::{Db, SqlError, Tx};

use super::audit::Head;
use super::error::IncidentError;
use super::schema::{PG_CONNECTIONS, migrate, migrate_pg};
use crate::chain::{hex, read_head, write_head};

/// The audit head file beside `incidents.db`.
const HEAD_FILE: &str = "incidents.head";

/// The incident store (SQLite `incidents.db` or a PostgreSQL schema) and
/// the audit head this node has witnessed.
pub struct IncidentStore {
    pub(super) db: Db,
    /// The witness file.
    pub(super) head: PathBuf,
    /// How messages name the witness.
    pub(super) head_name: String,
    /// Serialises updates of the witness file.
    witness: Mutex<()>,
    /// Per detection key: the count of the caller's detection book that is
    /// already in the stored total, and the last sighting then.
    pub(super) books: Mutex<HashMap<String, (u64, i64)>>,
    /// Serialises this handle's [`IncidentStore::record`] calls, so that two
    /// of them never add the same part of a count.
    pub(super) recording: Mutex<()>,
    /// Names this handle's outbox claims.
    pub(super) claimant: String,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut conn = Connection::open(dir.join("incidents.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
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
    pub(super) fn witness(&self, head: Option<Head>) {
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
    pub(super) fn write_logged<T, F>(&self, f: F) -> Result<T, IncidentError>
    where
        F: FnOnce(&mut dyn Tx) -> Result<(T, Option<Head>), IncidentError> + Send + 'static,
        T: Send + 'static,
    {
        let (out, head) = self.db.write(f)?;
        self.witness(head);
        Ok(out)
    }
}
