//! [`Db`]: a database on either engine, and the three ways to run a closure
//! on it ([`Db::read`], [`Db::write`], [`Db::read_snapshot`]). SQLite runs
//! the closure on the caller's thread; PostgreSQL on a connection thread of
//! the pool.

use std::sync::Mutex;

use rusqlite::Connection;

use super::error::SqlError;
use super::pool::Pool;
use super::schema::{check_schema, write_lock_key};
use super::tx::{Mode, Tx};

/// A database on either engine.
pub struct Db {
    backend: Backend,
}

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres(Pool),
}

impl Db {
    /// Wraps an open (and already migrated) SQLite connection.
    pub fn sqlite(conn: Connection) -> Db {
        conn.set_prepared_statement_cache_capacity(64);
        Db {
            backend: Backend::Sqlite(Mutex::new(conn)),
        }
    }

    /// Prepares a pool of `connections` PostgreSQL connections (at least
    /// one) to `url`, each working in `schema` (which need not exist yet),
    /// whose writers take the state's lock [`write_lock_key`]. Connections
    /// are opened on first use; nothing is contacted here.
    pub fn postgres(url: &str, schema: &str, connections: usize) -> Result<Db, SqlError> {
        Db::postgres_with_lock(
            url,
            schema,
            connections,
            "tally-state",
            write_lock_key(schema),
        )
    }

    /// As [`Db::postgres`], for another store: its writers take the advisory
    /// lock `lock_key` (e.g. [`incident_lock_key`]) instead of the state's,
    /// and `name` names the connections (`application_name`, unless the URL
    /// sets one) and their threads.
    ///
    /// [`incident_lock_key`]: crate::sql::incident_lock_key
    pub fn postgres_with_lock(
        url: &str,
        schema: &str,
        connections: usize,
        name: &str,
        lock_key: i64,
    ) -> Result<Db, SqlError> {
        check_schema(schema)?;
        Ok(Db {
            backend: Backend::Postgres(Pool::start(url, schema, connections, name, lock_key)?),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Runs `f` without taking the write lock.
    pub fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        self.run(Mode::Read, f)
    }

    /// Runs `f` in one transaction, serialised with every other writer;
    /// commits if it returns `Ok`, rolls back if it returns `Err`.
    pub fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        self.run(Mode::Write, f)
    }

    /// Runs `f` without taking the write lock, on one snapshot of the
    /// database: every statement sees the same committed state, whatever
    /// other writers commit meanwhile (SQLite: a deferred read transaction;
    /// PostgreSQL: a read-only `REPEATABLE READ` transaction). For reads that
    /// compare several tables with each other, such as audit verification.
    pub fn read_snapshot<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        self.run(Mode::Snapshot, f)
    }

    fn run<T, E, F>(&self, mode: Mode, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        match &self.backend {
            Backend::Postgres(pool) => pool.run(mode, f),
            Backend::Sqlite(conn) => super::sqlite::run(conn, mode, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_round_trip() {
        let db = Db::sqlite(Connection::open_in_memory().unwrap());
        assert_eq!(db.backend(), "sqlite");
        db.write(|tx| -> Result<(), SqlError> {
            tx.batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, a TEXT UNIQUE, b BLOB)",
            )?;
            let id = tx
                .query_one(
                    "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id",
                    &["x".into(), vec![1u8, 2].into()],
                )?
                .i64(0)?;
            assert_eq!(id, 1);
            let dup = tx.execute("INSERT INTO t (a) VALUES ($1)", &["x".into()]);
            assert!(dup.is_err_and(|e| e.is_unique_violation()));
            Ok(())
        })
        .unwrap();
        let b = db
            .read(|tx| -> Result<_, SqlError> {
                tx.query_opt("SELECT b FROM t WHERE a = $1", &["x".into()])?
                    .map(|r| r.blob(0))
                    .transpose()
            })
            .unwrap();
        assert_eq!(b, Some(vec![1, 2]));
        // A failing closure rolls its transaction back.
        let r: Result<(), crate::state::StateError> = db.write(|tx| {
            tx.execute("INSERT INTO t (a) VALUES ($1)", &["y".into()])?;
            Err(crate::state::StateError::NoSuchKey)
        });
        assert!(r.is_err());
        let n = db
            .read(|tx| -> Result<_, SqlError> {
                tx.query_one("SELECT count(*) FROM t", &[])?.i64(0)
            })
            .unwrap();
        assert_eq!(n, 1);
    }
}
