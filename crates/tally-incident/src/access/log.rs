//! The access log: every gate decision, append-only, hash-chained, with
//! retention and legal holds.
//!
//! Each event is stored with `hash = SHA-256(prev || seq || at_ms || body)`,
//! chaining it to the one before. Editing, deleting or inserting an event
//! breaks the chain, which [`AccessLog::verify`] reports with the first bad
//! sequence number; the latest head is also kept beside the database
//! (`access.head`), so cutting off the newest events is noticed too. Old events
//! are removed only by [`AccessLog::purge`], which refuses while a legal hold
//! covers any of them and records where the chain now starts.
//!
//! Invariants: the file's schema is versioned ([`tally_store::migrate`]);
//! the append-only and legal-hold triggers come back at every opening.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use tally_store::migrate::{Legacy, MigrateError, Migrations, Step};
use tally_store::sql::SqlError;

use crate::chain::{chain_hash, hex, read_head, write_head};

/// Access-log failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A legal hold covers events that would be deleted.
    #[error("legal hold {id} ({reason}) covers events in this range; nothing was deleted")]
    Held {
        /// The hold.
        id: i64,
        /// Its reason.
        reason: String,
    },
    /// The stored events no longer form the chain that was written.
    #[error("access log tampered at event {seq}: {reason}")]
    Tampered {
        /// First bad sequence number.
        seq: i64,
        /// What was found.
        reason: String,
    },
    /// Database failure.
    #[error("access log store error: {0}")]
    Store(#[from] rusqlite::Error),
    /// Creating or upgrading the access log's tables failed.
    #[error("access log store error: {0}")]
    Schema(SqlError),
    /// The access log was written by a newer version of tally.
    #[error(
        "the access log has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// Version in the file.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
}

impl AccessError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::Held { .. } => "legal_hold",
            AccessError::Tampered { .. } => "access_log_tampered",
            AccessError::Store(_) => "store_unavailable",
            AccessError::Schema(_) => "store_unavailable",
            AccessError::NewerSchema { .. } => "schema_too_new",
        }
    }
}

/// The access log's schema (SQLite only), versioned through
/// [`tally_store::migrate`] in `PRAGMA user_version`. A file from before
/// versions were kept is at version 2 if its holds say who released them,
/// else at version 1.
const ACCESS: Migrations = Migrations {
    name: "access_log",
    steps: &[
        Step::sqlite(1, V1),
        // Who released a hold and why.
        Step::sqlite(
            2,
            "ALTER TABLE holds ADD COLUMN released_by TEXT;
             ALTER TABLE holds ADD COLUMN release_reason TEXT;",
        ),
    ],
    legacy: &[
        Legacy::Table {
            table: "holds",
            column: Some("release_reason"),
            version: 2,
        },
        Legacy::Table {
            table: "events",
            column: None,
            version: 1,
        },
    ],
};

/// Version 1: the events, where the chain starts, the holds.
const V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq   INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    body  BLOB    NOT NULL,
    prev  BLOB    NOT NULL,
    hash  BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at_ms);
CREATE TABLE IF NOT EXISTS chain_base (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq  INTEGER NOT NULL,
    prev_hash BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    from_ms     INTEGER NOT NULL,
    until_ms    INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    released_at INTEGER
);
";

/// The append-only and legal-hold guards, put back at every opening if
/// someone dropped them (they are not part of a version).
const GUARDS: &str = "
CREATE TRIGGER IF NOT EXISTS events_append_only BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_legal_hold BEFORE DELETE ON events
WHEN EXISTS (SELECT 1 FROM holds WHERE released_at IS NULL
             AND OLD.at_ms BETWEEN from_ms AND until_ms)
BEGIN SELECT RAISE(ABORT, 'a legal hold covers this event'); END;
";

/// A legal hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Id.
    pub id: i64,
    /// Start of the held range (unix milliseconds).
    pub from_ms: i64,
    /// End of the held range (unix milliseconds, inclusive).
    pub until_ms: i64,
    /// Why (case, order).
    pub reason: String,
    /// Who set it.
    pub actor: String,
}

/// Summary of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessReport {
    /// Events checked.
    pub events: u64,
    /// First sequence number present (after purges).
    pub first_seq: i64,
    /// Last sequence number.
    pub last_seq: i64,
}

/// The access log database (`access.db`).
pub struct AccessLog {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl AccessLog {
    /// Opens (creating if needed) the access log at `path`.
    pub fn open(path: &Path) -> Result<AccessLog, AccessError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        ACCESS.apply_sqlite(&mut conn).map_err(|e| match e {
            MigrateError::NewerSchema { found, known, .. } => AccessError::NewerSchema {
                found: usize::try_from(found).unwrap_or(usize::MAX),
                known: known as usize,
            },
            MigrateError::Sql(e) => AccessError::Schema(e),
            other => AccessError::Schema(SqlError::Database(other.to_string())),
        })?;
        conn.execute_batch(GUARDS)?;
        Ok(AccessLog {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn head_path(&self) -> PathBuf {
        self.path.with_extension("head")
    }

    /// Appends events (`(at_ms, JSON body)`) in one transaction, chained to
    /// the current head. Returns the last sequence number.
    pub fn append(&self, events: &[(i64, Vec<u8>)]) -> Result<i64, AccessError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (mut seq, mut prev) = match head {
            Some((s, h)) => (s, h),
            None => tx
                .query_row(
                    "SELECT next_seq - 1, prev_hash FROM chain_base WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or((0, vec![0u8; 32])),
        };
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (seq, at_ms, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (at_ms, body) in events {
                seq += 1;
                let hash = chain_hash(&prev, seq, *at_ms, body);
                stmt.execute(params![seq, at_ms, body, prev, hash.as_slice()])?;
                prev = hash.to_vec();
            }
        }
        tx.commit()?;
        // The head beside the database: cutting off the newest events shows.
        write_head(&self.head_path(), seq, &prev);
        Ok(seq)
    }

    /// Recomputes the chain from its base to the head.
    pub fn verify(&self) -> Result<AccessReport, AccessError> {
        let conn = self.conn();
        let (mut expected_seq, mut prev) = conn
            .query_row(
                "SELECT next_seq, prev_hash FROM chain_base WHERE id = 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?
            .unwrap_or((1, vec![0u8; 32]));
        let first_seq = expected_seq;
        let mut stmt =
            conn.prepare("SELECT seq, at_ms, body, prev, hash FROM events ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let at_ms: i64 = r.get(1)?;
            let body: Vec<u8> = r.get(2)?;
            let stored_prev: Vec<u8> = r.get(3)?;
            let hash: Vec<u8> = r.get(4)?;
            if seq != expected_seq {
                return Err(AccessError::Tampered {
                    seq: expected_seq,
                    reason: format!("event {expected_seq} is missing (next stored is {seq})"),
                });
            }
            if stored_prev != prev
                || chain_hash(&prev, seq, at_ms, &body).as_slice() != hash.as_slice()
            {
                return Err(AccessError::Tampered {
                    seq,
                    reason: "the event does not match the chain (edited)".into(),
                });
            }
            prev = hash;
            expected_seq += 1;
            n += 1;
        }
        let last_seq = expected_seq - 1;
        let witnessed = read_head(&self.head_path()).map_err(|reason| AccessError::Tampered {
            seq: last_seq,
            reason,
        })?;
        if let Some((s, h)) = witnessed {
            if s > last_seq {
                return Err(AccessError::Tampered {
                    seq: last_seq + 1,
                    reason: format!("events up to {s} were written, the log ends at {last_seq}"),
                });
            }
            let stored: Option<Vec<u8>> = conn
                .query_row("SELECT hash FROM events WHERE seq = ?1", params![s], |r| {
                    r.get(0)
                })
                .optional()?;
            if s >= first_seq && stored.map(|x| hex(&x)) != Some(h) {
                return Err(AccessError::Tampered {
                    seq: s,
                    reason: "the event recorded as the head differs".into(),
                });
            }
        }
        Ok(AccessReport {
            events: n,
            first_seq,
            last_seq,
        })
    }

    /// Deletes events older than `before_ms` (retention), unless a legal hold
    /// covers any of them; the chain then starts after the last deleted one.
    /// Returns how many were deleted.
    pub fn purge(&self, before_ms: i64) -> Result<usize, AccessError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let oldest: Option<i64> =
            tx.query_row("SELECT min(at_ms) FROM events", [], |r| r.get(0))?;
        let Some(oldest) = oldest else {
            return Ok(0);
        };
        if let Some((id, reason)) = tx
            .query_row(
                "SELECT id, reason FROM holds WHERE released_at IS NULL
                 AND from_ms < ?2 AND until_ms >= ?1 ORDER BY id LIMIT 1",
                params![oldest, before_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        {
            return Err(AccessError::Held { id, reason });
        }
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM events WHERE at_ms < ?1 ORDER BY seq DESC LIMIT 1",
                params![before_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((last_seq, last_hash)) = last else {
            return Ok(0);
        };
        let n = tx.execute("DELETE FROM events WHERE seq <= ?1", params![last_seq])?;
        tx.execute(
            "INSERT INTO chain_base (id, next_seq, prev_hash) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET next_seq = excluded.next_seq, prev_hash = excluded.prev_hash",
            params![last_seq + 1, last_hash],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Places a legal hold on `[from_ms, until_ms]`.
    pub fn hold(
        &self,
        from_ms: i64,
        until_ms: i64,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<i64, AccessError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO holds (from_ms, until_ms, reason, actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![from_ms, until_ms, reason, actor, now],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Releases a hold. Returns false if no such hold is in force.
    pub fn release(&self, id: i64, now: i64, by: &str, reason: &str) -> Result<bool, AccessError> {
        Ok(self.conn().execute(
            "UPDATE holds SET released_at = ?2, released_by = ?3, release_reason = ?4
             WHERE id = ?1 AND released_at IS NULL",
            params![id, now, by, reason],
        )? == 1)
    }

    /// Holds in force.
    pub fn holds(&self) -> Result<Vec<Hold>, AccessError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, from_ms, until_ms, reason, actor FROM holds WHERE released_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Hold {
                id: r.get(0)?,
                from_ms: r.get(1)?,
                until_ms: r.get(2)?,
                reason: r.get(3)?,
                actor: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events stored (after retention).
    pub fn event_count(&self) -> Result<u64, AccessError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The body of event `seq`, if it is stored.
    pub fn get(&self, seq: i64) -> Result<Option<Vec<u8>>, AccessError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT body FROM events WHERE seq = ?1",
                params![seq],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Calls `f` with every event (`seq`, `at_ms`, body) with `from_ms <= at_ms
    /// < until_ms`, in sequence order, reading in pages so that memory stays
    /// flat however long the range; `f` returning false stops the scan.
    pub fn scan(
        &self,
        from_ms: i64,
        until_ms: i64,
        mut f: impl FnMut(i64, i64, &[u8]) -> bool,
    ) -> Result<u64, AccessError> {
        const PAGE: i64 = 10_000;
        let mut after = i64::MIN;
        let mut seen = 0u64;
        loop {
            let page: Vec<(i64, i64, Vec<u8>)> = {
                let conn = self.conn();
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, at_ms, body FROM events
                     WHERE seq > ?1 AND at_ms >= ?2 AND at_ms < ?3 ORDER BY seq LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![after, from_ms, until_ms, PAGE], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let n = page.len() as i64;
            for (seq, at, body) in page {
                after = seq;
                seen += 1;
                if !f(seq, at, &body) {
                    return Ok(seen);
                }
            }
            if n < PAGE {
                return Ok(seen);
            }
        }
    }

    /// Up to `n` events after `seq` (`seq`, `at_ms`, JSON body), oldest
    /// first: what a follower reads next.
    pub fn after(&self, seq: i64, n: usize) -> Result<Vec<(i64, i64, Vec<u8>)>, AccessError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at_ms, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, n as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `n` events (`seq`, `at_ms`, JSON body), oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<(i64, i64, Vec<u8>)>, AccessError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at_ms, body FROM (SELECT * FROM events ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![n as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tally-access-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn filled(d: &Path) -> AccessLog {
        let log = AccessLog::open(&d.join("access.db")).unwrap();
        let events: Vec<(i64, Vec<u8>)> = (0..10)
            .map(|i| (1000 * i, format!("{{\"i\":{i}}}").into_bytes()))
            .collect();
        assert_eq!(log.append(&events[..4]).unwrap(), 4);
        assert_eq!(log.append(&events[4..]).unwrap(), 10);
        log
    }

    #[test]
    fn chain_verifies_and_catches_edits_deletions_and_truncation() {
        let d = dir();
        let log = filled(&d);
        assert_eq!(log.verify().unwrap().events, 10);
        let raw = Connection::open(d.join("access.db")).unwrap();
        // The database itself refuses an edit...
        assert!(
            raw.execute("UPDATE events SET body = x'00' WHERE seq = 3", [])
                .is_err()
        );
        // ...and one who drops the trigger is still caught.
        raw.execute_batch("DROP TRIGGER events_append_only; UPDATE events SET body = CAST('{\"i\":99}' AS BLOB) WHERE seq = 3;").unwrap();
        assert!(matches!(
            log.verify(),
            Err(AccessError::Tampered { seq: 3, .. })
        ));
        let d2 = dir();
        let log2 = filled(&d2);
        let raw2 = Connection::open(d2.join("access.db")).unwrap();
        raw2.execute("DELETE FROM events WHERE seq = 5", [])
            .unwrap();
        assert!(matches!(
            log2.verify(),
            Err(AccessError::Tampered { seq: 5, .. })
        ));
        let d3 = dir();
        let log3 = filled(&d3);
        let raw3 = Connection::open(d3.join("access.db")).unwrap();
        raw3.execute("DELETE FROM events WHERE seq >= 9", [])
            .unwrap();
        let err = log3.verify().unwrap_err();
        assert!(matches!(err, AccessError::Tampered { seq: 9, .. }), "{err}");
        for d in [d, d2, d3] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn retention_respects_legal_holds_and_keeps_the_chain() {
        let d = dir();
        let log = filled(&d);
        let hold = log.hold(2000, 3000, "case 2026-117", "legal", 0).unwrap();
        let err = log.purge(5000).unwrap_err();
        assert_eq!(err.code(), "legal_hold");
        assert!(err.to_string().contains("case 2026-117"));
        assert_eq!(log.verify().unwrap().events, 10);
        // Outside the hold, retention works and the chain still verifies.
        assert_eq!(log.purge(2000).unwrap(), 2);
        let report = log.verify().unwrap();
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (8, 3, 10)
        );
        // Even a raw DELETE is refused inside the hold.
        let raw = Connection::open(d.join("access.db")).unwrap();
        assert!(
            raw.execute("DELETE FROM events WHERE at_ms = 2000", [])
                .is_err()
        );
        assert!(log.release(hold, 1, "test", "case closed").unwrap());
        assert_eq!(log.purge(5000).unwrap(), 3);
        log.append(&[(20_000, b"{}".to_vec())]).unwrap();
        let report = log.verify().unwrap();
        assert_eq!((report.first_seq, report.last_seq), (6, 11));
        std::fs::remove_dir_all(d).unwrap();
    }
}
