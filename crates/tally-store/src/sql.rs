//! A small SQL layer that runs the same statements on SQLite or PostgreSQL.
//!
//! Statements are written once, in the dialect both engines accept, with
//! PostgreSQL placeholders `$1, $2, …` (SQLite gets them as `?1, ?2, …`).
//! Values cross the boundary as [`Value`]s and come back as [`Row`]s whose
//! getters fail, rather than panic, on a missing column or a wrong type.
//!
//! All access goes through [`Db::read`] and [`Db::write`], which hand a
//! [`Tx`] to a closure:
//!
//! * [`Db::write`] is one transaction, and writers are serialised: SQLite
//!   takes its write lock up front (`BEGIN IMMEDIATE`); PostgreSQL first
//!   takes a transaction-scoped advisory lock, so a read-modify-write
//!   closure is atomic across every node sharing the database. Each store
//!   has a lock of its own in a schema ([`write_lock_key`] for the state,
//!   [`incident_lock_key`] for the incident store, see
//!   [`Db::postgres_with_lock`]): the writers of one store never wait for
//!   those of another. The transaction commits when the closure returns
//!   `Ok` and rolls back when it returns `Err`.
//! * [`Db::read`] takes no write lock (PostgreSQL: a read-only transaction).
//! * [`Db::read_snapshot`] neither, but all its statements see one snapshot
//!   (for reads that compare tables with each other while others write).
//!
//! The synchronous `postgres` client must not block on a tokio worker
//! thread, and callers may well be async handlers. So each PostgreSQL
//! connection lives on a thread of its own; closures are sent to a free
//! connection thread and the caller waits for the answer. That is why
//! closures and their results are `Send + 'static`: they own their data.
//!
//! Closures return the error type of their store (anything that a
//! [`SqlError`] converts into), so a store keeps its own domain errors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::types::{FromSql, ToSql, Type};
use postgres::{Client, Statement};
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

/// A value bound to a placeholder or read from a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer (`INTEGER` in SQLite, `BIGINT` in PostgreSQL).
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes (`BLOB` in SQLite, `BYTEA` in PostgreSQL).
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// Parameters for a statement: `args![a, b]` is
/// `&[Value::from(a), Value::from(b)]`.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::sql::Value::from($v)),*]
    };
}
pub use crate::args;

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}

impl From<Option<Vec<u8>>> for Value {
    fn from(v: Option<Vec<u8>>) -> Value {
        v.map_or(Value::Null, Value::Blob)
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        v.map_or(Value::Null, Value::Int)
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        v.map_or(Value::Null, Value::from)
    }
}

/// Failures of the SQL layer, whichever the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A uniqueness constraint refused the row (SQLite constraint violation,
    /// PostgreSQL SQLSTATE 23505).
    #[error("a row with the same unique key already exists ({0})")]
    UniqueViolation(String),
    /// The database cannot be reached, or the connection broke.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(String),
    /// A column that is missing or holds another type than expected.
    #[error("unexpected stored data: {0}")]
    Column(String),
    /// A query expected a row and found none.
    #[error("the query returned no row")]
    NoRow,
    /// Bad configuration: the URL or the schema name.
    #[error("{0}")]
    Config(String),
}

impl SqlError {
    /// Whether this is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, SqlError::UniqueViolation(_))
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> SqlError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                SqlError::UniqueViolation(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::ReadOnly
                ) =>
            {
                SqlError::Unavailable(format!("SQLite: {e}"))
            }
            _ => SqlError::Database(format!("SQLite: {e}")),
        }
    }
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> SqlError {
        // Only the code and the primary message: the DETAIL of a PostgreSQL
        // error may quote the values of the row concerned.
        if let Some(db) = e.as_db_error() {
            let what = format!("PostgreSQL {}", crate::pg::describe(&e));
            if *db.code() == postgres::error::SqlState::UNIQUE_VIOLATION {
                return SqlError::UniqueViolation(db.constraint().unwrap_or("unique").to_owned());
            }
            if crate::pg::is_unavailable(&e) {
                return SqlError::Unavailable(format!(
                    "{what}; check that PostgreSQL is up and not overloaded"
                ));
            }
            return SqlError::Database(what);
        }
        SqlError::Unavailable(format!(
            "PostgreSQL is unreachable ({}); check that it is running and that the URL is right",
            crate::pg::describe(&e)
        ))
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

/// One result row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of these values.
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Column `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i)
    }

    fn column(&self, i: usize) -> Result<&Value, SqlError> {
        self.values.get(i).ok_or_else(|| {
            SqlError::Column(format!(
                "column {i} requested from a row of {}",
                self.values.len()
            ))
        })
    }

    fn mismatch(&self, i: usize, wanted: &str) -> SqlError {
        let found = self.values.get(i).map_or("nothing", Value::kind);
        SqlError::Column(format!(
            "column {i} holds {found} where {wanted} was expected"
        ))
    }

    /// Column `i` as an integer.
    pub fn i64(&self, i: usize) -> Result<i64, SqlError> {
        match self.column(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    /// Column `i` as an integer or `NULL`.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(self.mismatch(i, "an integer or NULL")),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String, SqlError> {
        match self.column(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    /// Column `i` as text or `NULL`.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            _ => Err(self.mismatch(i, "text or NULL")),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, SqlError> {
        match self.column(i)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "bytes")),
        }
    }

    /// Column `i` as bytes or `NULL`.
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Blob(v) => Ok(Some(v.clone())),
            _ => Err(self.mismatch(i, "bytes or NULL")),
        }
    }
}

/// A transaction on either engine.
///
/// Statements use `$1, $2, …` placeholders and must be valid on both engines.
/// A statement that fails aborts a PostgreSQL transaction: return its error
/// from the closure (the transaction then rolls back) rather than carry on.
pub trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;

    /// Runs a query (or a statement with `RETURNING`); returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;

    /// Runs several `;`-separated statements without parameters (schema
    /// changes).
    fn batch(&mut self, sql: &str) -> Result<(), SqlError>;

    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query; [`SqlError::NoRow`] if there is none.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, params)?.ok_or(SqlError::NoRow)
    }
}

/// How long a closure may wait for a free PostgreSQL connection before it
/// fails without running.
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long a caller waits for a PostgreSQL answer at most.
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// Every statement is cancelled by the server after this.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed connection attempt, jobs fail at once for this long
/// instead of each waiting for a connection timeout of its own.
const DOWN_BACKOFF: Duration = Duration::from_secs(1);

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
    pub fn postgres_with_lock(
        url: &str,
        schema: &str,
        connections: usize,
        name: &str,
        lock_key: i64,
    ) -> Result<Db, SqlError> {
        check_schema(schema)?;
        let tls = crate::pg::parse(url).map_err(SqlError::Config)?;
        let mut config = tls.config.clone();
        crate::pg::harden(&mut config, Some(STATEMENT_TIMEOUT));
        if config.get_application_name().is_none() {
            config.application_name(name);
        }
        let target = describe(&config);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let down = Arc::new(Mutex::new(None));
        for n in 0..connections.max(1) {
            let mut worker = Worker {
                config: config.clone(),
                target: target.clone(),
                schema: schema.to_owned(),
                lock_key,
                tls: tls.clone(),
                client: None,
                statements: HashMap::new(),
                down: down.clone(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-pg-{n}"))
                .spawn(move || worker.serve(&queue))
                .map_err(|e| {
                    SqlError::Unavailable(format!(
                        "cannot start a PostgreSQL connection thread: {e}"
                    ))
                })?;
        }
        Ok(Db {
            backend: Backend::Postgres(Pool { jobs }),
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
        let conn = match &self.backend {
            Backend::Postgres(pool) => return pool.run(mode, f),
            Backend::Sqlite(conn) => conn,
        };
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let behavior = match mode {
            // Plain reads run outside a transaction, as before.
            Mode::Read => return f(&mut SqliteTx { conn: &conn }),
            Mode::Snapshot => rusqlite::TransactionBehavior::Deferred,
            Mode::Write => rusqlite::TransactionBehavior::Immediate,
        };
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(SqlError::from)?;
        let out = f(&mut SqliteTx { conn: &tx })?;
        // A snapshot only reads: dropping its transaction rolls it back.
        if mode == Mode::Write {
            tx.commit().map_err(SqlError::from)?;
        }
        Ok(out)
    }
}

/// What a PostgreSQL transaction is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Read only, each statement seeing what is committed when it starts.
    Read,
    /// Read only, on one snapshot.
    Snapshot,
    /// Read and write, under the advisory write lock.
    Write,
}

// ---------------------------------------------------------------- SQLite

/// Rewrites `$N` placeholders to SQLite's `?N`, outside string literals.
fn sqlite_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut in_literal = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A doubled quote inside a literal toggles twice: still inside.
            '\'' => in_literal = !in_literal,
            '$' if !in_literal && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Cow::Owned(out)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

struct SqliteTx<'a> {
    conn: &'a Connection,
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let n = stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(_) => {
                        return Err(SqlError::Column(format!(
                            "column {i} holds a floating-point number"
                        )));
                    }
                    ValueRef::Text(t) => {
                        Value::Text(String::from_utf8(t.to_vec()).map_err(|_| {
                            SqlError::Column(format!("column {i} holds text that is not UTF-8"))
                        })?)
                    }
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row::new(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

// ------------------------------------------------------------ PostgreSQL

type Job = Box<dyn FnOnce(&mut Worker) + Send + 'static>;

/// The connection threads, fed through one channel.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn run<T, E, F>(&self, mode: Mode, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel::<Result<T, E>>(1);
        let queued = Instant::now();
        let job: Job = Box::new(move |w: &mut Worker| {
            let out = if queued.elapsed() > QUEUE_WAIT {
                Err(SqlError::Unavailable(format!(
                    "no PostgreSQL connection became free within {} s; the database is slow \
                     or overloaded",
                    QUEUE_WAIT.as_secs()
                ))
                .into())
            } else {
                w.run(mode, f)
            };
            // The caller may have given up; nobody to tell then.
            let _ = reply.send(out);
        });
        self.jobs.send(job).map_err(|_| {
            SqlError::Unavailable("the PostgreSQL connection threads have stopped".into())
        })?;
        match answer.recv_timeout(REPLY_WAIT) {
            Ok(out) => out,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SqlError::Unavailable(format!(
                "PostgreSQL did not answer within {} s{}",
                REPLY_WAIT.as_secs(),
                if mode == Mode::Write {
                    "; the change may or may not have been applied"
                } else {
                    ""
                }
            ))
            .into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SqlError::Unavailable(
                "a PostgreSQL connection thread failed while running the request".into(),
            )
            .into()),
        }
    }
}

/// One connection thread: its client (opened on demand) and its prepared
/// statements.
struct Worker {
    config: postgres::Config,
    /// `host:port/database`, for messages (never the password).
    target: String,
    schema: String,
    lock_key: i64,
    /// TLS settings from the URL.
    tls: crate::pg::Target,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    /// When a connection attempt last failed, shared by the pool.
    down: Arc<Mutex<Option<Instant>>>,
}

fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

impl Worker {
    fn serve(&mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let job = {
                let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.recv()
            };
            let Ok(job) = job else {
                // The pool is gone.
                return;
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(self)));
            if ran.is_err() {
                // The connection may be mid-transaction: start afresh.
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    /// An open connection, reconnecting if needed.
    fn connect(&mut self) -> Result<(), SqlError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.reset();
        {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if down.is_some_and(|at| at.elapsed() < DOWN_BACKOFF) {
                return Err(SqlError::Unavailable(format!(
                    "PostgreSQL at {} was unreachable a moment ago; check that it is running",
                    self.target
                )));
            }
        }
        let attempt = crate::pg::connect(&self.config, &self.tls).and_then(|mut c| {
            c.batch_execute(&format!("SET search_path TO {}", self.schema))?;
            Ok(c)
        });
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match attempt {
            Ok(c) => {
                *down = None;
                self.client = Some(c);
                Ok(())
            }
            Err(e) => {
                *down = Some(Instant::now());
                Err(match SqlError::from(e) {
                    SqlError::Unavailable(m) | SqlError::Database(m) => SqlError::Unavailable(
                        format!("cannot connect to PostgreSQL at {}: {m}", self.target),
                    ),
                    other => other,
                })
            }
        }
    }

    /// Opens a transaction; a connection found dead on the way is replaced
    /// once (nothing has been done on it yet, so retrying is safe).
    fn begin(&mut self, mode: Mode) -> Result<(), SqlError> {
        let begin = match mode {
            Mode::Write => "BEGIN",
            Mode::Read => "BEGIN READ ONLY",
            Mode::Snapshot => "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
        };
        let mut last = None;
        for _ in 0..2 {
            self.connect()?;
            let Some(client) = self.client.as_mut() else {
                break;
            };
            match client.batch_execute(begin) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    self.reset();
                    last = Some(SqlError::from(e));
                }
            }
        }
        match last {
            Some(e) => Err(e),
            None if self.client.is_some() => Ok(()),
            None => Err(SqlError::Unavailable("no PostgreSQL connection".into())),
        }
    }

    fn run<T, E: From<SqlError>>(
        &mut self,
        mode: Mode,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin(mode)?;
        let lock_key = self.lock_key;
        let Worker {
            client: Some(client),
            statements,
            ..
        } = self
        else {
            return Err(SqlError::Unavailable("no PostgreSQL connection".into()).into());
        };
        let mut tx = PgTx {
            client,
            statements,
            failed: false,
        };
        let out = if mode == Mode::Write {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[Value::Int(lock_key)])
                .map_err(E::from)
                .and_then(|_| f(&mut tx))
        } else {
            f(&mut tx)
        };
        let end = match &out {
            Ok(_) => tx.client.batch_execute("COMMIT"),
            Err(_) => tx.client.batch_execute("ROLLBACK"),
        };
        let broken = tx.client.is_closed();
        let failed = end.is_err() || tx.failed;
        if broken {
            self.reset();
        } else if failed {
            // A schema change by another node can invalidate prepared
            // statements: prepare afresh after any database failure.
            self.statements.clear();
        }
        match (out, end) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(SqlError::from(e).into()),
            (Err(e), _) => Err(e),
        }
    }
}

struct PgTx<'a> {
    client: &'a mut Client,
    statements: &'a mut HashMap<String, Statement>,
    /// Whether a statement failed in this transaction.
    failed: bool,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, SqlError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Converts `params` to the types the server inferred for `stmt`.
fn pg_params(
    stmt: &Statement,
    params: &[Value],
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, SqlError> {
    let types = stmt.params();
    if types.len() != params.len() {
        return Err(SqlError::Database(format!(
            "the statement takes {} parameters, {} were given",
            types.len(),
            params.len()
        )));
    }
    let mut out: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(params.len());
    for (i, (ty, v)) in types.iter().zip(params).enumerate() {
        let wrong = || {
            SqlError::Database(format!(
                "parameter ${} is {} but the statement wants {}",
                i + 1,
                v.kind(),
                ty.name()
            ))
        };
        out.push(match (v, ty) {
            (Value::Null, &Type::INT8) => Box::new(None::<i64>),
            (Value::Null, &Type::INT4) => Box::new(None::<i32>),
            (Value::Null, &Type::INT2) => Box::new(None::<i16>),
            (Value::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
            (Value::Null, &Type::BOOL) => Box::new(None::<bool>),
            (Value::Null, _) => Box::new(None::<String>),
            (Value::Int(n), &Type::INT8) => Box::new(*n),
            (Value::Int(n), &Type::INT4) => Box::new(i32::try_from(*n).map_err(|_| wrong())?),
            (Value::Int(n), &Type::INT2) => Box::new(i16::try_from(*n).map_err(|_| wrong())?),
            (Value::Text(s), t) if <String as ToSql>::accepts(t) => Box::new(s.clone()),
            (Value::Blob(b), &Type::BYTEA) => Box::new(b.clone()),
            _ => return Err(wrong()),
        });
    }
    Ok(out)
}

fn pg_row(r: &postgres::Row) -> Result<Row, SqlError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let ty = c.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::VOID => None,
            _ if <String as FromSql>::accepts(ty) => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => {
                return Err(SqlError::Column(format!(
                    "column {} has type {}, which this layer does not read",
                    c.name(),
                    ty.name()
                )));
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row::new(values))
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PgTx<'_> {
    /// Notes a failure: a schema change by another node can invalidate
    /// prepared statements, so they are prepared afresh after any failure.
    fn noting<T>(&mut self, r: Result<T, SqlError>) -> Result<T, SqlError> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let r = self.statement(sql).and_then(|stmt| {
            let params = pg_params(&stmt, params)?;
            Ok(self.client.execute(&stmt, &refs(&params))?)
        });
        self.noting(r)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let r = self.statement(sql).and_then(|stmt| {
            let params = pg_params(&stmt, params)?;
            self.client
                .query(&stmt, &refs(&params))?
                .iter()
                .map(pg_row)
                .collect()
        });
        self.noting(r)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        let r = self.client.batch_execute(sql).map_err(SqlError::from);
        self.noting(r)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(
            sqlite_placeholders("SELECT $1, '$2', 'it''s $3', $10 FROM t WHERE a = $2"),
            "SELECT ?1, '$2', 'it''s $3', ?10 FROM t WHERE a = ?2"
        );
        assert_eq!(sqlite_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(sqlite_placeholders("SELECT '$' || $1"), "SELECT '$' || ?1");
    }

    #[test]
    fn rows_refuse_wrong_types_and_missing_columns() {
        let r = Row::new(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Blob(vec![1]),
        ]);
        assert_eq!(r.i64(0).unwrap(), 7);
        assert_eq!(r.opt_i64(1).unwrap(), None);
        assert_eq!(r.opt_text(1).unwrap(), None);
        assert_eq!(r.opt_blob(1).unwrap(), None);
        assert_eq!(r.text(2).unwrap(), "x");
        assert_eq!(r.blob(3).unwrap(), vec![1]);
        assert!(matches!(r.i64(1), Err(SqlError::Column(_))));
        assert!(matches!(r.text(0), Err(SqlError::Column(_))));
        assert!(matches!(r.blob(2), Err(SqlError::Column(_))));
        assert!(matches!(r.i64(9), Err(SqlError::Column(_))));
    }

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
