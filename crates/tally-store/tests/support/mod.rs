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
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PostgreSQL at {} is unreachable: {e}",
                url()
            );
            eprintln!("skipping: PostgreSQL at {} is unreachable ({e})", url());
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
