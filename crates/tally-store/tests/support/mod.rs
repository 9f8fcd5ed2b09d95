//! What the store's PostgreSQL tests share: the server's URL (127.0.0.1:5432,
//! database `test`, or `TALLY_TEST_PG_URL`), the skip rule (without a
//! reachable server a test says it is skipped; with `CI=true` it must run),
//! unique names, and schemas and directories removed when a test ends, even
//! when it fails.
#![allow(dead_code, unused_macros)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tally_core::digest::TokenDigest;
use tally_core::note::NoteSigner;
use tally_core::record::IssuanceRecord;
use tally_store::fleet;

/// Record `i` of a test ledger: token id `jti-{i}`, subject `member-{i}`.
pub fn record(i: usize) -> IssuanceRecord {
    let token = format!("token-bytes-{i}");
    IssuanceRecord {
        token_id: format!("jti-{i}"),
        token_sha256: TokenDigest::of(token.as_bytes()),
        subject: format!("member-{i}"),
        kid: "k1".into(),
        issuer: "https://shop.example".into(),
        issued_at: 1_800_000_000 + i as i64,
        expires_at: 1_800_000_900 + i as i64,
        auth_context: "pwd".into(),
    }
}

/// The checkpoint signer of a test ledger.
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed("tally.example/fleet", &[7u8; 32]).unwrap()
}

/// The test server's URL.
pub fn url() -> String {
    std::env::var("TALLY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs `f` on a thread of its own: the synchronous PostgreSQL client used
/// to set up and clean up must not run on a tokio runtime thread.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Whether PostgreSQL answers; panics under `CI=true` if it does not.
pub fn postgres_reachable() -> bool {
    // The client is dropped off the runtime too.
    match off_runtime(|| fleet::connect(&url()).map(drop)) {
        Ok(_) => true,
        Err(e) => {
            tally_testkit::skip(&format!("PostgreSQL at {} is unreachable ({e})", url()));
            false
        }
    }
}

/// A schema of one test, dropped when it goes.
pub struct Schema(pub String);

impl Schema {
    /// A fresh schema named after `prefix`, or `None` (said) when PostgreSQL
    /// cannot be reached.
    pub fn new(prefix: &str) -> Option<Schema> {
        postgres_reachable().then(|| Schema(unique(&format!("t_{prefix}"))))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = &self.0;
        off_runtime(|| {
            if let Ok(mut c) = fleet::connect(&url()) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
            }
        });
    }
}

/// A directory of one test (`tempfile`), removed when it goes.
pub struct TempDir(pub PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    /// A fresh directory named after `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap();
        TempDir(dir.path().to_path_buf(), dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// The database of one conformance test, removed when it goes: a SQLite
/// directory, or a PostgreSQL schema with a directory for the nodes' own
/// files (witnesses).
pub enum Backend {
    /// SQLite files in a directory.
    Sqlite(TempDir),
    /// A PostgreSQL schema, and a directory for the nodes' files.
    Postgres { schema: Schema, dir: TempDir },
}

impl Backend {
    /// SQLite, in a fresh directory.
    pub fn sqlite() -> Backend {
        Backend::Sqlite(TempDir::new("tally-conformance"))
    }

    /// PostgreSQL, in a fresh schema; `None` (said) when it cannot be
    /// reached.
    pub fn postgres() -> Option<Backend> {
        Some(Backend::Postgres {
            schema: Schema::new("conf")?,
            dir: TempDir::new("tally-conformance-nodes"),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The PostgreSQL schema, if this is PostgreSQL.
    pub fn schema(&self) -> Option<&str> {
        match self {
            Backend::Sqlite(_) => None,
            Backend::Postgres { schema, .. } => Some(&schema.0),
        }
    }

    /// Runs `sql` on the database directly, behind the store's back, as
    /// someone with write access to it would (on SQLite in the file `file`
    /// of the directory); `Err` if a statement fails.
    pub fn run_sql(&self, file: &str, sql: &str) -> Result<(), String> {
        match self {
            Backend::Sqlite(dir) => rusqlite::Connection::open(dir.path().join(file))
                .unwrap()
                .execute_batch(sql)
                .map_err(|e| e.to_string()),
            Backend::Postgres { schema, .. } => off_runtime(|| {
                fleet::connect(&url())
                    .unwrap()
                    .batch_execute(&format!("SET search_path TO {};\n{sql}", schema.0))
                    .map_err(|e| e.to_string())
            }),
        }
    }
}

/// Runs each named test function (taking a `&support::Backend`) once per
/// backend: `on_sqlite::name` and `on_postgres::name`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::support::Backend::sqlite());
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = crate::support::Backend::postgres() {
                        super::$name(&b);
                    }
                }
            )*
        }
    };
}

// ------------------------------------------- schemas across releases --

/// The previous release's PostgreSQL migration routine
/// (`tally_store::sql::migrate_schema` at 1a7ff94), kept to make the
/// schemas it made: `migrations` run in order with the schema as their
/// search path (`{schema}` replaced by its name), their count kept in the
/// one-row table `version_table`.
pub fn previous_migrate_schema(schema: &str, version_table: &str, migrations: &[&str]) {
    let mut c = fleet::connect(&url()).unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.{version_table} (version BIGINT NOT NULL);"
    ))
    .unwrap();
    for sql in migrations {
        let sql = sql.replace("{schema}", schema);
        tx.batch_execute(&format!("SET LOCAL search_path TO {schema};\n{sql}"))
            .unwrap();
    }
    tx.execute(
        &format!("INSERT INTO {schema}.{version_table} (version) VALUES ($1)"),
        &[&(migrations.len() as i64)],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// A fixture's migrations: the text after each of its `-- migration N`
/// lines.
pub fn fixture_migrations(fixture: &str) -> Vec<&str> {
    fixture
        .split("\n-- migration ")
        .skip(1)
        .map(|m| m.split_once('\n').unwrap().1)
        .collect()
}

/// Runs statements on the test server, in `schema` when given.
pub fn pg_exec(schema: Option<&str>, sql: &str) {
    let mut c = fleet::connect(&url()).unwrap();
    let path = schema.map_or(String::new(), |s| format!("SET search_path TO {s};\n"));
    c.batch_execute(&format!("{path}{sql}")).unwrap();
}

/// The first column of the first row of a query on the test server, as an
/// integer, if there is a row.
pub fn pg_i64(sql: &str) -> Option<i64> {
    let mut c = fleet::connect(&url()).unwrap();
    c.query_opt(sql, &[]).unwrap().map(|r| r.get(0))
}

/// The version `schema_migrations` of `schema` records for `store`, if
/// the table and the row exist.
pub fn pg_version(schema: &str, store: &str) -> Option<i64> {
    pg_i64(&format!(
        "SELECT 1::bigint WHERE to_regclass('{schema}.schema_migrations') IS NOT NULL"
    ))?;
    pg_i64(&format!(
        "SELECT version FROM {schema}.schema_migrations WHERE store = '{store}'"
    ))
}

/// Every column, index, constraint, trigger and function of a PostgreSQL
/// schema but its version tables (`schema_migrations`, `*schema_version`),
/// with the schema's name written `{schema}`, sorted: two schemas made by
/// the same statements compare equal.
pub fn pg_objects(schema: &str) -> Vec<String> {
    let queries = [
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
                || is_nullable || ' ' || coalesce(column_default, '-') || ' '
                || coalesce(collation_name, '-'), table_name::text
         FROM information_schema.columns WHERE table_schema = $1::text",
        "SELECT 'index ' || indexdef, tablename::text FROM pg_indexes WHERE schemaname = $1::text",
        "SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(k.oid), r.relname::text
         FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
         WHERE k.connamespace = $1::text::regnamespace",
        "SELECT 'trigger ' || pg_get_triggerdef(t.oid), r.relname::text
         FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
         WHERE r.relnamespace = $1::text::regnamespace AND NOT t.tgisinternal",
        "SELECT 'function ' || proname || ' ' || prosrc, '' FROM pg_proc
         WHERE pronamespace = $1::text::regnamespace",
    ];
    let mut c = fleet::connect(&url()).unwrap();
    let mut out = Vec::new();
    for q in queries {
        for r in c.query(q, &[&schema]).unwrap() {
            let (line, table): (String, String) = (r.get(0), r.get(1));
            if table != "schema_migrations" && !table.ends_with("schema_version") {
                out.push(line.replace(schema, "{schema}"));
            }
        }
    }
    out.sort();
    out
}

/// Every object of a SQLite file (type, name, table, statement), sorted.
pub fn sqlite_objects(path: &Path) -> Vec<(String, String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Runs statements on a SQLite file.
pub fn sqlite_exec(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// A SQLite file's `PRAGMA user_version`.
pub fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}
