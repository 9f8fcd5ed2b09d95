//! Operational state: users, signing keys (sealed), sessions, and settings.
//!
//! The state lives in SQLite (`state.db`, one server) or in a PostgreSQL
//! schema shared by a fleet of servers ([`StateStore::connect_postgres`]).
//! Both run the same statements through [`crate::sql`]; every change is one
//! transaction serialised with the other writers, so read-modify-write
//! methods such as [`StateStore::use_refresh_token`] stay atomic across
//! nodes.
//!
//! Private key material is stored only sealed under the master key (see
//! `tally_core::seal`); this module never sees it in the clear.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;

use std::sync::Arc;

use crate::rows::{Field, RowMac};
use crate::sql::{Db, SqlError, Tx, args};

/// State-store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The user already exists.
    #[error("user already exists")]
    UserExists,
    /// The key id is already in use.
    #[error("a key with this kid already exists")]
    KeyExists,
    /// No such key.
    #[error("no such key")]
    NoSuchKey,
    /// The client id is already registered.
    #[error("client already exists")]
    ClientExists,
    /// The database was written by a newer version of tally.
    #[error(
        "the state store has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// Version in the database.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
    /// A row that grants access (a user, client, session or refresh token)
    /// fails its MAC: it was written or changed by someone without the
    /// master key. It is refused, never used.
    #[error(
        "{0} fails its MAC: it was written by someone without the master key (refused; see `tally incident list`)"
    )]
    Tampered(String),
    /// The store holds rows from before row seals, which an operator has
    /// not yet reviewed and sealed.
    #[error(
        "the state store holds {rows} rows from before row seals (users, clients, sessions, refresh tokens): \
         list them with `tally state seal` and, once they are what you expect, seal them with \
         `tally state seal --yes`"
    )]
    Unadopted {
        /// Rows without a MAC.
        rows: usize,
    },
    /// A method that reads or writes sealed rows was called before
    /// [`StateStore::seal_rows`].
    #[error("the state store's row key is not installed (internal error)")]
    Unsealed,
    /// Database failure (SQLite or PostgreSQL), or a bad PostgreSQL URL or
    /// schema name.
    #[error("state store error: {0}")]
    Store(#[from] SqlError),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> StateError {
        StateError::Store(e.into())
    }
}

impl StateError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::UserExists => "user_exists",
            StateError::KeyExists => "key_exists",
            StateError::NoSuchKey => "no_such_key",
            StateError::ClientExists => "client_exists",
            StateError::NewerSchema { .. } => "schema_too_new",
            StateError::Tampered(_) => "state_tampered",
            StateError::Unsealed => "state_unsealed",
            StateError::Unadopted { .. } => "state_unadopted",
            StateError::Store(SqlError::Config(_)) => "bad_config",
            StateError::Store(_) => "store_unavailable",
        }
    }
}

/// `e` as `domain` if it is a unique-constraint violation.
fn unique_as(e: SqlError, domain: StateError) -> StateError {
    if e.is_unique_violation() {
        domain
    } else {
        e.into()
    }
}

/// What a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Signs access tokens.
    Token,
    /// Signs ledger checkpoints.
    Ledger,
    /// Signs Security Event Tokens (RFC 8417) sent to receivers.
    Events,
}

impl KeyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Token => "token",
            KeyPurpose::Ledger => "ledger",
            KeyPurpose::Events => "events",
        }
    }
}

/// Lifecycle state of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens (exactly one per issuer).
    Active,
    /// No longer signs; still verifies tokens it signed.
    Retiring,
    /// Neither signs nor verifies.
    Retired,
    /// Known to be in the wrong hands: neither signs nor verifies.
    Compromised,
}

impl KeyState {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
            KeyState::Compromised => "compromised",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<KeyState> {
        match s {
            "active" => Some(KeyState::Active),
            "retiring" => Some(KeyState::Retiring),
            "retired" => Some(KeyState::Retired),
            "compromised" => Some(KeyState::Compromised),
            _ => None,
        }
    }

    /// Whether tokens signed by a key in this state still verify.
    pub fn verifies(self) -> bool {
        matches!(self, KeyState::Active | KeyState::Retiring)
    }
}

/// A stored key. `sealed` is the private key sealed under the master key.
#[derive(Clone)]
pub struct KeyRow {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm name (`EdDSA`, `ES256`, `RS256`) or `note-ed25519`.
    pub alg: String,
    /// What it signs.
    pub purpose: KeyPurpose,
    /// Lifecycle state.
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
    /// When the key entered its current state (unix seconds).
    pub state_changed_at: i64,
    /// Public part: a JWK (token keys) or a note verifier key (ledger key).
    pub public: String,
    /// Sealed private key.
    pub sealed: Vec<u8>,
    /// Where it came from (`generated`, `imported`).
    pub source: String,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("purpose", &self.purpose)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("state_changed_at", &self.state_changed_at)
            .finish_non_exhaustive()
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE keys (
    kid              TEXT PRIMARY KEY,
    alg              TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL,
    public           TEXT NOT NULL,
    sealed           BLOB NOT NULL,
    source           TEXT NOT NULL
);
CREATE TABLE key_custodians (
    kid        TEXT NOT NULL REFERENCES keys(kid),
    person     TEXT NOT NULL,
    added_at   INTEGER NOT NULL,
    removed_at INTEGER,
    PRIMARY KEY (kid, person)
);
CREATE TABLE key_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    kid    TEXT,
    event  TEXT NOT NULL,
    actor  TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE revocations (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id     TEXT    NOT NULL UNIQUE,
    token_sha256 BLOB    NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);
CREATE TABLE forgery_sightings (
    kid        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
",
    "
CREATE TABLE sessions (
    family         TEXT PRIMARY KEY,
    subject        TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    auth_context   TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
);
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    family     TEXT NOT NULL REFERENCES sessions(family),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE session_tokens (
    token_id     TEXT PRIMARY KEY,
    family       TEXT NOT NULL REFERENCES sessions(family),
    token_sha256 BLOB NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX session_tokens_family ON session_tokens(family);
CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE signature_counts (
    kid      TEXT PRIMARY KEY,
    signed   INTEGER NOT NULL,
    withheld INTEGER NOT NULL
);
CREATE TABLE blocks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    removed_at INTEGER
);
ALTER TABLE users ADD COLUMN totp_sealed BLOB;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
",
    // v3: sessions bound to a DPoP key; administrators.
    "
ALTER TABLE sessions ADD COLUMN jkt TEXT;
ALTER TABLE sessions ADD COLUMN audience TEXT;
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
",
    // v4: login failures shared by the nodes of a fleet; signature counts
    // per key and node (a node cannot see another's signatures as they are
    // made, so only per-node accounts balance; '' is the only node of an
    // embedded store).
    "
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_failure INTEGER NOT NULL
);
CREATE TABLE signature_counts_by_node (
    kid      TEXT NOT NULL,
    node     TEXT NOT NULL,
    signed   INTEGER NOT NULL,
    withheld INTEGER NOT NULL,
    PRIMARY KEY (kid, node)
);
INSERT INTO signature_counts_by_node (kid, node, signed, withheld)
    SELECT kid, '', signed, withheld FROM signature_counts;
DROP TABLE signature_counts;
ALTER TABLE signature_counts_by_node RENAME TO signature_counts;
",
    // v5: the rows that grant access carry a MAC (see `crate::rows`).
    "
ALTER TABLE users ADD COLUMN mac BLOB;
ALTER TABLE clients ADD COLUMN mac BLOB;
ALTER TABLE sessions ADD COLUMN mac BLOB;
ALTER TABLE refresh_tokens ADD COLUMN mac BLOB;
",
    // v6: the addresses each user or client recently authenticated from,
    // shared by the nodes of a fleet (their per-subject lock does not apply
    // there); subject and address stored as SHA-256 digests.
    "
CREATE TABLE known_addresses (
    subject      TEXT NOT NULL,
    address      TEXT NOT NULL,
    last_success INTEGER NOT NULL,
    PRIMARY KEY (subject, address)
);
",
];

fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StateError::NewerSchema {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now as usize > i {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The PostgreSQL schema, applied in order; the `schema_version` table of
/// the schema holds the number applied. `{schema}` stands for the schema
/// name. Tables and columns are those of the SQLite schema so that both run
/// the same statements; text compares byte-wise (`COLLATE "C"`), as in
/// SQLite. As in SQLite, where they were never enforced, there are no
/// foreign keys.
///
/// `changes` is a one-row counter that statement-level triggers move on
/// every write to the tables a node caches (keys, custodians, revocations,
/// blocks, users), and that [`StateStore::data_version`] reads; the triggers
/// also `NOTIFY tally_state_{schema}` for nodes that `LISTEN`. Sessions,
/// refresh tokens and a user's last TOTP step, written on every login, do not
/// move it.
const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
CREATE TABLE users (
    name           TEXT COLLATE "C" PRIMARY KEY,
    password_hash  TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL,
    totp_sealed    BYTEA,
    totp_last_step BIGINT,
    role           TEXT COLLATE "C" NOT NULL DEFAULT 'user'
);
CREATE TABLE keys (
    kid              TEXT COLLATE "C" PRIMARY KEY,
    alg              TEXT COLLATE "C" NOT NULL,
    purpose          TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL,
    created_at       BIGINT NOT NULL,
    state_changed_at BIGINT NOT NULL,
    public           TEXT COLLATE "C" NOT NULL,
    sealed           BYTEA NOT NULL,
    source           TEXT COLLATE "C" NOT NULL
);
CREATE TABLE key_custodians (
    kid        TEXT COLLATE "C" NOT NULL,
    person     TEXT COLLATE "C" NOT NULL,
    added_at   BIGINT NOT NULL,
    removed_at BIGINT,
    PRIMARY KEY (kid, person)
);
CREATE TABLE key_events (
    seq    BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    kid    TEXT COLLATE "C",
    event  TEXT COLLATE "C" NOT NULL,
    actor  TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL
);
CREATE TABLE revocations (
    seq          BIGSERIAL PRIMARY KEY,
    token_id     TEXT COLLATE "C" NOT NULL UNIQUE,
    token_sha256 BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT NOT NULL,
    reason       TEXT COLLATE "C" NOT NULL
);
CREATE TABLE forgery_sightings (
    kid        TEXT COLLATE "C" PRIMARY KEY,
    count      BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE TABLE sessions (
    family         TEXT COLLATE "C" PRIMARY KEY,
    subject        TEXT COLLATE "C" NOT NULL,
    client_id      TEXT COLLATE "C" NOT NULL,
    auth_context   TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT COLLATE "C",
    jkt            TEXT COLLATE "C",
    audience       TEXT COLLATE "C"
);
CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    family     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE session_tokens (
    token_id     TEXT COLLATE "C" PRIMARY KEY,
    family       TEXT COLLATE "C" NOT NULL,
    token_sha256 BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX session_tokens_family ON session_tokens(family);
CREATE TABLE clients (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE signature_counts (
    kid      TEXT COLLATE "C" PRIMARY KEY,
    signed   BIGINT NOT NULL,
    withheld BIGINT NOT NULL
);
CREATE TABLE blocks (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT COLLATE "C" NOT NULL,
    value      TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    removed_at BIGINT
);
CREATE TABLE changes (
    v BIGINT NOT NULL
);
INSERT INTO changes (v) VALUES (0);
CREATE FUNCTION note_change() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE {schema}.changes SET v = v + 1;
    PERFORM pg_notify('tally_state_{schema}', '');
    RETURN NULL;
END
$body$;
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER key_custodians_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON key_custodians
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER revocations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER blocks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON blocks
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, password_hash, role, totp_sealed ON users
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
"#,
    r#"
CREATE TABLE login_failures (
    key          TEXT COLLATE "C" PRIMARY KEY,
    failures     BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_failure BIGINT NOT NULL
);
ALTER TABLE signature_counts ADD COLUMN node TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE signature_counts DROP CONSTRAINT signature_counts_pkey;
ALTER TABLE signature_counts ADD PRIMARY KEY (kid, node);
"#,
    // v3: the rows that grant access carry a MAC (see `crate::rows`).
    r#"
ALTER TABLE users ADD COLUMN mac BYTEA;
ALTER TABLE clients ADD COLUMN mac BYTEA;
ALTER TABLE sessions ADD COLUMN mac BYTEA;
ALTER TABLE refresh_tokens ADD COLUMN mac BYTEA;
"#,
    // v4: known addresses (as in SQLite's v6).
    r#"
CREATE TABLE known_addresses (
    subject      TEXT COLLATE "C" NOT NULL,
    address      TEXT COLLATE "C" NOT NULL,
    last_success BIGINT NOT NULL,
    PRIMARY KEY (subject, address)
);
"#,
];

/// How a throttling key is stored: its SHA-256, in hex.
fn throttle_key(key: &str) -> String {
    tally_core::digest::TokenDigest::of(key.as_bytes()).to_hex()
}

/// The `NOTIFY` channel on which the PostgreSQL state in `schema` announces
/// changes that move [`StateStore::data_version`].
pub fn change_channel(schema: &str) -> String {
    format!("tally_state_{schema}")
}

/// Creates or upgrades the PostgreSQL schema. Runs in a [`Db::write`], so
/// under the advisory write lock: nodes starting together migrate one at a
/// time, and the later ones find the work done.
fn migrate_pg(tx: &mut dyn Tx, schema: &str) -> Result<(), StateError> {
    crate::sql::migrate_schema(tx, schema, "schema_version", PG_MIGRATIONS).map_err(|e| match e {
        crate::sql::MigrateError::NewerSchema(found) => StateError::NewerSchema {
            found,
            known: PG_MIGRATIONS.len(),
        },
        crate::sql::MigrateError::Sql(e) => e.into(),
    })
}

/// Connections each PostgreSQL-backed store keeps.
const PG_CONNECTIONS: usize = 3;

/// The state database.
pub struct StateStore {
    db: Db,
    /// The key sealing the rows that grant access, once installed.
    rows: std::sync::OnceLock<Arc<RowMac>>,
    /// Told of every row refused for its MAC.
    on_tamper: std::sync::OnceLock<TamperHook>,
}

/// The tables whose rows carry a MAC.
const SEALED_TABLES: [&str; 4] = ["users", "clients", "sessions", "refresh_tokens"];

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
    fn noticed<T>(&self, r: Result<T, StateError>) -> Result<T, StateError> {
        if let (Err(StateError::Tampered(what)), Some(hook)) = (&r, self.on_tamper.get()) {
            hook(what);
        }
        r
    }

    /// Installs the key that seals the rows granting access (users, clients,
    /// sessions, refresh tokens; see [`crate::rows`]); until then the
    /// methods that read or write them answer [`StateError::Unsealed`].
    /// Call it once the master key is known to be the right one.
    ///
    /// A store whose marker `rows_sealed_at` is set is ready. Without the
    /// marker: a store with no unsealed row (a new one) gets the marker; one
    /// holding rows from before seals answers [`StateError::Unadopted`]
    /// (the key is installed all the same, so that
    /// [`StateStore::unsealed_rows`] and [`StateStore::adopt_unsealed`]
    /// work). Rows are never sealed without an operator's say: someone who
    /// can write to the database could delete the marker and clear the
    /// MACs to have rows of his own sealed. A caller that has seen this
    /// store sealed before (it keeps a witness of its own) passes
    /// `seen_sealed`, and a missing marker is then [`StateError::Tampered`].
    pub fn seal_rows(&self, mac: RowMac, now: i64, seen_sealed: bool) -> Result<(), StateError> {
        self.rows.get_or_init(|| Arc::new(mac));
        self.db.write(move |tx| {
            if tx
                .query_opt("SELECT value FROM meta WHERE key = 'rows_sealed_at'", &[])?
                .is_some()
            {
                return Ok(());
            }
            if seen_sealed {
                return Err(StateError::Tampered(
                    "the state store's seal marker (meta rows_sealed_at) is gone though this node has \
                     seen the store sealed: someone made it look unsealed so that rows of his own \
                     would be sealed. Nothing was sealed. If a backup from before row seals was \
                     restored on purpose, remove this node's rows.sealed file and start again"
                        .into(),
                ));
            }
            let mut rows = 0;
            for table in SEALED_TABLES {
                rows += tx
                    .query_one(
                        &format!("SELECT COUNT(*) FROM {table} WHERE mac IS NULL"),
                        &[],
                    )?
                    .i64(0)?;
            }
            if rows > 0 {
                return Err(StateError::Unadopted {
                    rows: usize::try_from(rows).unwrap_or(usize::MAX),
                });
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('rows_sealed_at', $1)",
                args![now.to_string()],
            )?;
            Ok(())
        })
    }

    /// The rows without a MAC, as `(table, what)`: a user with its role, a
    /// client, a session with its subject, a refresh token with its session.
    pub fn unsealed_rows(&self) -> Result<Vec<(String, String)>, StateError> {
        self.db.read(|tx| {
            let mut out = Vec::new();
            for r in tx.query(
                "SELECT name, role FROM users WHERE mac IS NULL ORDER BY name",
                &[],
            )? {
                out.push((
                    "users".into(),
                    format!("{} (role {})", r.text(0)?, r.text(1)?),
                ));
            }
            for r in tx.query("SELECT id FROM clients WHERE mac IS NULL ORDER BY id", &[])? {
                out.push(("clients".into(), r.text(0)?));
            }
            for r in tx.query(
                "SELECT family, subject FROM sessions WHERE mac IS NULL ORDER BY family",
                &[],
            )? {
                out.push((
                    "sessions".into(),
                    format!("{} (subject {})", r.text(0)?, r.text(1)?),
                ));
            }
            for r in tx.query(
                "SELECT family FROM refresh_tokens WHERE mac IS NULL ORDER BY family",
                &[],
            )? {
                out.push((
                    "refresh_tokens".into(),
                    format!("a token of session {}", r.text(0)?),
                ));
            }
            Ok(out)
        })
    }

    /// Seals every row without a MAC as it stands and sets the marker, on an
    /// operator's say (after reading [`StateStore::unsealed_rows`]): the
    /// step that upgrades a store from before row seals. Returns how many
    /// rows were sealed.
    pub fn adopt_unsealed(&self, now: i64) -> Result<usize, StateError> {
        let mac = self.mac()?;
        self.db.write(move |tx| {
            let mut sealed = 0u64;
            for r in tx.query(
                "SELECT name, password_hash, role, totp_sealed FROM users WHERE mac IS NULL",
                &[],
            )? {
                let (name, hash, role, totp) = (r.text(0)?, r.text(1)?, r.text(2)?, r.opt_blob(3)?);
                let tag = mac.tag("users", &user_fields(&name, &hash, &role, totp.as_deref()));
                sealed += tx.execute(
                    "UPDATE users SET mac = $2 WHERE name = $1",
                    args![name, tag],
                )?;
            }
            for r in tx.query(
                "SELECT id, secret_hash, created_at FROM clients WHERE mac IS NULL",
                &[],
            )? {
                let (id, hash, at) = (r.text(0)?, r.text(1)?, r.i64(2)?);
                let tag = mac.tag("clients", &client_fields(&id, &hash, at));
                sealed +=
                    tx.execute("UPDATE clients SET mac = $2 WHERE id = $1", args![id, tag])?;
            }
            for r in tx.query(
                &format!(
                    "SELECT {SESSION_COLUMNS}, s.created_at FROM sessions s WHERE s.mac IS NULL"
                ),
                &[],
            )? {
                let session = session_at(&r, 0)?;
                let tag = mac.tag("sessions", &session_fields(&session, r.i64(6)?));
                sealed += tx.execute(
                    "UPDATE sessions SET mac = $2 WHERE family = $1",
                    args![session.family, tag],
                )?;
            }
            for r in tx.query(
                "SELECT hash, family, created_at, expires_at FROM refresh_tokens WHERE mac IS NULL",
                &[],
            )? {
                let (hash, family) = (r.blob(0)?, r.text(1)?);
                let tag = mac.tag(
                    "refresh_tokens",
                    &refresh_fields(&hash, &family, r.i64(2)?, r.i64(3)?),
                );
                sealed += tx.execute(
                    "UPDATE refresh_tokens SET mac = $2 WHERE hash = $1",
                    args![hash, tag],
                )?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('rows_sealed_at', $1)
                 ON CONFLICT (key) DO NOTHING",
                args![now.to_string()],
            )?;
            Ok(count(sealed))
        })
    }

    /// The row key, or [`StateError::Unsealed`].
    fn mac(&self) -> Result<Arc<RowMac>, StateError> {
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

    /// Reads a setting.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let key = key.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt("SELECT value FROM meta WHERE key = $1", args![key])?
                .map(|r| r.text(0))
                .transpose()?)
        })
    }

    /// Writes a setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, value],
            )?;
            Ok(())
        })
    }

    /// Writes a setting unless it is already set; returns the value in force
    /// (so that nodes starting at once agree on one value).
    pub fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StateError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                args![key.clone(), value],
            )?;
            tx.query_one("SELECT value FROM meta WHERE key = $1", args![key])?
                .text(0)
                .map_err(Into::into)
        })
    }

    /// Adds a user with an already-computed password hash (PHC string).
    pub fn add_user(&self, name: &str, password_hash: &str, now: i64) -> Result<(), StateError> {
        self.add_users(&[(name.to_owned(), password_hash.to_owned())], now)
    }

    /// Adds many users in one transaction (bulk import); all or none.
    pub fn add_users(&self, users: &[(String, String)], now: i64) -> Result<(), StateError> {
        let mac = self.mac()?;
        let users = users.to_vec();
        self.db.write(move |tx| {
            for (name, hash) in users {
                let tag = mac.tag("users", &user_fields(&name, &hash, "user", None));
                tx.execute(
                    "INSERT INTO users (name, password_hash, created_at, role, mac)
                     VALUES ($1, $2, $3, 'user', $4)",
                    args![name, hash, now, tag],
                )
                .map_err(|e| unique_as(e, StateError::UserExists))?;
            }
            Ok(())
        })
    }

    /// Enrols (or re-enrols) a user in TOTP with a sealed secret.
    pub fn set_totp(&self, name: &str, sealed: &[u8]) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, sealed) = (name.to_owned(), sealed.to_vec());
        self.noticed(self.db.write(move |tx| {
            let Some(u) = user_row(tx, &mac, &name)? else {
                return Ok(false);
            };
            let tag = mac.tag(
                "users",
                &user_fields(&name, &u.password_hash, &u.role, Some(&sealed)),
            );
            let n = tx.execute(
                "UPDATE users SET totp_sealed = $2, totp_last_step = NULL, mac = $3 WHERE name = $1",
                args![name, sealed, tag],
            )?;
            Ok(n == 1)
        }))
    }

    /// A user's sealed TOTP secret and the last time step accepted, if enrolled.
    pub fn totp(&self, name: &str) -> Result<Option<TotpEnrolment>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(self.db.read(move |tx| {
            Ok(user_row(tx, &mac, &name)?
                .and_then(|u| u.totp_sealed.map(|t| (t, u.totp_last_step))))
        }))
    }

    /// Records that time step `step` was used, only if it is later than the
    /// last one (so one code is accepted once, even by concurrent logins).
    pub fn use_totp_step(&self, name: &str, step: i64) -> Result<bool, StateError> {
        let name = name.to_owned();
        self.db.write(move |tx| {
            let n = tx.execute(
                "UPDATE users SET totp_last_step = $2
                 WHERE name = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
                args![name, step],
            )?;
            Ok(n == 1)
        })
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(
            self.db
                .read(move |tx| Ok(user_row(tx, &mac, &name)?.map(|u| u.password_hash))),
        )
    }

    /// A user's role (`user` or `admin`), if the user exists.
    pub fn user_role(&self, name: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(
            self.db
                .read(move |tx| Ok(user_row(tx, &mac, &name)?.map(|u| u.role))),
        )
    }

    /// Sets a user's role (`user` or `admin`); false if there is no such user.
    pub fn set_role(&self, name: &str, role: &str) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, role) = (name.to_owned(), role.to_owned());
        self.noticed(self.db.write(move |tx| {
            let Some(u) = user_row(tx, &mac, &name)? else {
                return Ok(false);
            };
            let tag = mac.tag(
                "users",
                &user_fields(&name, &u.password_hash, &role, u.totp_sealed.as_deref()),
            );
            Ok(tx.execute(
                "UPDATE users SET role = $2, mac = $3 WHERE name = $1",
                args![name, role, tag],
            )? == 1)
        }))
    }

    /// Gives a user a new password hash, the `user` role and no TOTP
    /// enrolment, sealed afresh, whatever the row held, and ends every
    /// session of the user (their refresh tokens stop working, their
    /// unexpired access tokens are revoked), in one transaction: how an
    /// operator holding the master key takes back an account someone else
    /// had the use of. False if there is no such user.
    pub fn reset_user(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.db.write(move |tx| {
            let tag = mac.tag("users", &user_fields(&name, &hash, "user", None));
            let found = tx.execute(
                "UPDATE users SET password_hash = $2, role = 'user', totp_sealed = NULL,
                     totp_last_step = NULL, mac = $3
                 WHERE name = $1",
                args![&name, hash, tag],
            )? == 1;
            if found {
                tx.execute(
                    "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                     SELECT t.token_id, t.token_sha256, t.expires_at, $2, 'user_reset'
                     FROM session_tokens t JOIN sessions s ON s.family = t.family
                     WHERE s.subject = $1 AND t.expires_at > $2
                     ON CONFLICT (token_id) DO NOTHING",
                    args![&name, now],
                )?;
                tx.execute(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'user_reset'
                     WHERE subject = $1 AND revoked_at IS NULL",
                    args![name, now],
                )?;
            }
            Ok(found)
        })
    }

    /// Names of all users.
    pub fn users(&self) -> Result<Vec<String>, StateError> {
        self.db.read(|tx| {
            tx.query("SELECT name FROM users ORDER BY name", &[])?
                .iter()
                .map(|r| Ok(r.text(0)?))
                .collect()
        })
    }

    /// Stores a new key.
    pub fn insert_key(&self, row: &KeyRow) -> Result<(), StateError> {
        let row = row.clone();
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO keys (kid, alg, purpose, state, created_at, state_changed_at, public, sealed, source)
                 VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)",
                args![
                    row.kid,
                    row.alg,
                    row.purpose.as_str(),
                    row.state.as_str(),
                    row.created_at,
                    row.public,
                    row.sealed,
                    row.source
                ],
            )
            .map_err(|e| unique_as(e, StateError::KeyExists))?;
            Ok(())
        })
    }

    /// Makes `row` the one active token key, in one transaction: the previous
    /// active token key (if any) becomes `old_state` (`retiring`, or
    /// `compromised`), the old key's current custodians are copied to the new key
    /// except `drop_custodian`, and `event` is recorded.
    pub fn rotate_in(
        &self,
        row: &KeyRow,
        old_state: KeyState,
        drop_custodian: Option<&str>,
        event: &KeyEvent,
    ) -> Result<Option<String>, StateError> {
        let row = row.clone();
        let drop_custodian = drop_custodian.map(str::to_owned);
        let event = event.clone();
        self.db.write(move |tx| {
            if tx
                .query_opt("SELECT 1 FROM keys WHERE kid = $1", args![&row.kid])?
                .is_some()
            {
                return Err(StateError::KeyExists);
            }
            let old = tx
                .query_opt(
                    "SELECT kid FROM keys WHERE purpose = 'token' AND state = 'active'",
                    &[],
                )?
                .map(|r| r.text(0))
                .transpose()?;
            tx.execute(
                "UPDATE keys SET state = $1, state_changed_at = $2
                 WHERE purpose = 'token' AND state = 'active'",
                args![old_state.as_str(), event.at],
            )?;
            tx.execute(
                "INSERT INTO keys (kid, alg, purpose, state, created_at, state_changed_at, public, sealed, source)
                 VALUES ($1, $2, 'token', 'active', $3, $3, $4, $5, $6)",
                args![
                    &row.kid,
                    row.alg,
                    row.created_at,
                    row.public,
                    row.sealed,
                    row.source
                ],
            )
            .map_err(|e| unique_as(e, StateError::KeyExists))?;
            if let Some(old) = &old {
                tx.execute(
                    "INSERT INTO key_custodians (kid, person, added_at)
                     SELECT $1, person, $3 FROM key_custodians
                     WHERE kid = $2 AND removed_at IS NULL AND person IS DISTINCT FROM $4",
                    args![&row.kid, old, event.at, drop_custodian],
                )?;
            }
            insert_event(tx, &event)?;
            Ok(old)
        })
    }

    /// Makes `row` the one active token key; the previous one becomes `retiring`.
    pub fn insert_active_token_key(&self, row: &KeyRow) -> Result<(), StateError> {
        self.rotate_in(
            row,
            KeyState::Retiring,
            None,
            &KeyEvent {
                at: row.created_at,
                kid: Some(row.kid.clone()),
                event: "activated".into(),
                actor: "tally".into(),
                detail: format!("{} key ({})", row.alg, row.source),
            },
        )
        .map(|_| ())
    }

    /// Every key with this purpose, oldest first.
    pub fn keys(&self, purpose: KeyPurpose) -> Result<Vec<KeyRow>, StateError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT kid, alg, state, created_at, state_changed_at, public, sealed, source FROM keys
                 WHERE purpose = $1 ORDER BY created_at, kid",
                args![purpose.as_str()],
            )?
            .iter()
            .map(|r| {
                Ok(KeyRow {
                    kid: r.text(0)?,
                    alg: r.text(1)?,
                    purpose,
                    // Unknown states fail closed: treated as compromised (never used).
                    state: KeyState::parse(&r.text(2)?).unwrap_or(KeyState::Compromised),
                    created_at: r.i64(3)?,
                    state_changed_at: r.i64(4)?,
                    public: r.text(5)?,
                    sealed: r.blob(6)?,
                    source: r.text(7)?,
                })
            })
            .collect()
        })
    }

    /// Changes a key's state and records `event`, in one transaction.
    pub fn set_key_state(
        &self,
        kid: &str,
        state: KeyState,
        event: &KeyEvent,
    ) -> Result<(), StateError> {
        let kid = kid.to_owned();
        let event = event.clone();
        self.db.write(move |tx| {
            let n = tx.execute(
                "UPDATE keys SET state = $2, state_changed_at = $3 WHERE kid = $1",
                args![kid, state.as_str(), event.at],
            )?;
            if n == 0 {
                return Err(StateError::NoSuchKey);
            }
            insert_event(tx, &event)
        })
    }

    /// Adds `person` as a custodian of `kid`. Returns false if they already are.
    pub fn add_custodian(
        &self,
        kid: &str,
        person: &str,
        event: &KeyEvent,
    ) -> Result<bool, StateError> {
        let (kid, person) = (kid.to_owned(), person.to_owned());
        let event = event.clone();
        self.db.write(move |tx| {
            if tx
                .query_opt("SELECT 1 FROM keys WHERE kid = $1", args![&kid])?
                .is_none()
            {
                return Err(StateError::NoSuchKey);
            }
            let n = tx.execute(
                "INSERT INTO key_custodians (kid, person, added_at) VALUES ($1, $2, $3)
                 ON CONFLICT (kid, person) DO UPDATE SET removed_at = NULL, added_at = excluded.added_at
                 WHERE key_custodians.removed_at IS NOT NULL",
                args![kid, person, event.at],
            )?;
            if n > 0 {
                insert_event(tx, &event)?;
            }
            Ok(n > 0)
        })
    }

    /// Current custodians of `kid`.
    pub fn custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT person FROM key_custodians WHERE kid = $1 AND removed_at IS NULL ORDER BY person",
                args![kid],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?))
            .collect()
        })
    }

    /// Former custodians of `kid` (offboarded from it).
    pub fn former_custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT person FROM key_custodians WHERE kid = $1 AND removed_at IS NOT NULL ORDER BY person",
                args![kid],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?))
            .collect()
        })
    }

    /// Token keys `person` is a current custodian of, with their states.
    pub fn keys_of_custodian(&self, person: &str) -> Result<Vec<(String, KeyState)>, StateError> {
        let person = person.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT k.kid, k.state FROM key_custodians c JOIN keys k ON k.kid = c.kid
                 WHERE c.person = $1 AND c.removed_at IS NULL ORDER BY k.created_at, k.kid",
                args![person],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.text(0)?,
                    KeyState::parse(&r.text(1)?).unwrap_or(KeyState::Compromised),
                ))
            })
            .collect()
        })
    }

    /// Ends `person`'s custody of every key and records `event`.
    pub fn remove_custodian_everywhere(
        &self,
        person: &str,
        event: &KeyEvent,
    ) -> Result<usize, StateError> {
        let person = person.to_owned();
        let event = event.clone();
        self.db.write(move |tx| {
            let n = tx.execute(
                "UPDATE key_custodians SET removed_at = $2 WHERE person = $1 AND removed_at IS NULL",
                args![person, event.at],
            )?;
            insert_event(tx, &event)?;
            Ok(count(n))
        })
    }

    /// Records an event in the key audit log.
    pub fn record_event(&self, event: &KeyEvent) -> Result<(), StateError> {
        let event = event.clone();
        self.db.write(move |tx| insert_event(tx, &event))
    }

    /// The newest `limit` key events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<KeyEvent>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.read(move |tx| {
            tx.query(
                "SELECT at, kid, event, actor, detail FROM
                   (SELECT * FROM key_events ORDER BY seq DESC LIMIT $1) AS newest ORDER BY seq",
                args![limit],
            )?
            .iter()
            .map(|r| {
                Ok(KeyEvent {
                    at: r.i64(0)?,
                    kid: r.opt_text(1)?,
                    event: r.text(2)?,
                    actor: r.text(3)?,
                    detail: r.text(4)?,
                })
            })
            .collect()
        })
    }

    /// Revokes tokens (idempotent per token id). Returns how many were new.
    pub fn revoke(
        &self,
        tokens: &[Revocation],
        reason: &str,
        now: i64,
    ) -> Result<usize, StateError> {
        let tokens = tokens.to_vec();
        let reason = reason.to_owned();
        self.db.write(move |tx| {
            let mut n = 0;
            for t in tokens {
                n += tx.execute(
                    "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id) DO NOTHING",
                    args![
                        t.token_id,
                        t.token_sha256.as_slice(),
                        t.expires_at,
                        now,
                        &reason
                    ],
                )?;
            }
            Ok(count(n))
        })
    }

    /// Revocations recorded after sequence number `after`, in order.
    pub fn revocations_after(&self, after: i64) -> Result<Vec<(i64, Revocation)>, StateError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT seq, token_id, token_sha256, expires_at FROM revocations WHERE seq > $1 ORDER BY seq",
                args![after],
            )?
            .iter()
            .map(|r| {
                let digest = r.blob(2)?;
                let mut d = [0u8; 32];
                if digest.len() == 32 {
                    d.copy_from_slice(&digest);
                }
                Ok((
                    r.i64(0)?,
                    Revocation {
                        token_id: r.text(1)?,
                        token_sha256: d,
                        expires_at: r.i64(3)?,
                    },
                ))
            })
            .collect()
        })
    }

    /// Whether `token_id` is revoked.
    pub fn is_revoked(&self, token_id: &str) -> Result<bool, StateError> {
        let token_id = token_id.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT 1 FROM revocations WHERE token_id = $1",
                    args![token_id],
                )?
                .is_some())
        })
    }

    /// Adds to `node`'s durable signature counts (`""` when embedded):
    /// `(kid, signed, withheld)` deltas.
    pub fn add_signature_counts(
        &self,
        node: &str,
        deltas: &[(String, u64, u64)],
    ) -> Result<(), StateError> {
        let (node, deltas) = (node.to_owned(), deltas.to_vec());
        self.db.write(move |tx| {
            for (kid, s, w) in deltas {
                tx.execute(
                    "INSERT INTO signature_counts (kid, node, signed, withheld) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kid, node) DO UPDATE SET signed = signature_counts.signed + excluded.signed,
                       withheld = signature_counts.withheld + excluded.withheld",
                    args![kid, node.as_str(), s as i64, w as i64],
                )?;
            }
            Ok(())
        })
    }

    /// Durable signature counts per key of `node` (`""` when embedded):
    /// `kid -> (signed, withheld)`.
    pub fn signature_counts(&self, node: &str) -> Result<HashMap<String, (u64, u64)>, StateError> {
        let node = node.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT kid, signed, withheld FROM signature_counts WHERE node = $1",
                args![node.as_str()],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.text(0)?,
                    (r.i64(1)?.max(0) as u64, r.i64(2)?.max(0) as u64),
                ))
            })
            .collect()
        })
    }

    /// Adds a block (`kind`: `ip`, `device`, `subject` or `token`); returns its id.
    pub fn add_block(
        &self,
        kind: &str,
        value: &str,
        reason: &str,
        actor: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StateError> {
        let (kind, value) = (kind.to_owned(), value.to_owned());
        let (reason, actor) = (reason.to_owned(), actor.to_owned());
        self.db.write(move |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO blocks (kind, value, reason, actor, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    args![kind, value, reason, actor, now, expires_at],
                )?
                .i64(0)?)
        })
    }

    /// Lifts a block. Returns false if there is no such block in force.
    pub fn remove_block(&self, id: i64, now: i64) -> Result<bool, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "UPDATE blocks SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL",
                args![id, now],
            )? == 1)
        })
    }

    /// Blocks not lifted and not expired at `now`.
    pub fn blocks(&self, now: i64) -> Result<Vec<BlockRow>, StateError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT id, kind, value, reason, actor, created_at, expires_at FROM blocks
                 WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > $1) ORDER BY id",
                args![now],
            )?
            .iter()
            .map(|r| {
                Ok(BlockRow {
                    id: r.i64(0)?,
                    kind: r.text(1)?,
                    value: r.text(2)?,
                    reason: r.text(3)?,
                    actor: r.text(4)?,
                    created_at: r.i64(5)?,
                    expires_at: r.opt_i64(6)?,
                })
            })
            .collect()
        })
    }

    /// Adds forged-token sightings per key (`(kid, count, first_seen, last_seen)`).
    pub fn add_forgery_sightings(
        &self,
        sightings: &[(String, u64, i64, i64)],
    ) -> Result<(), StateError> {
        let sightings = sightings.to_vec();
        self.db.write(move |tx| {
            for (kid, count, first, last) in sightings {
                tx.execute(
                    "INSERT INTO forgery_sightings (kid, count, first_seen, last_seen) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kid) DO UPDATE SET count = forgery_sightings.count + excluded.count,
                       first_seen = CASE WHEN excluded.first_seen < forgery_sightings.first_seen
                                         THEN excluded.first_seen ELSE forgery_sightings.first_seen END,
                       last_seen = CASE WHEN excluded.last_seen > forgery_sightings.last_seen
                                        THEN excluded.last_seen ELSE forgery_sightings.last_seen END",
                    args![kid, count as i64, first, last],
                )?;
            }
            Ok(())
        })
    }

    /// Shared login throttling (a fleet): the latest lock among `keys` at
    /// `now`, in seconds from now (0: none). Keys are stored as SHA-256
    /// digests, never as user names or addresses.
    pub fn login_locked_for(&self, keys: &[&str], now: i64) -> Result<i64, StateError> {
        let digests: Vec<String> = keys.iter().map(|k| throttle_key(k)).collect();
        self.db.read(move |tx| {
            let mut longest = 0;
            for d in &digests {
                if let Some(r) = tx.query_opt(
                    "SELECT locked_until FROM login_failures WHERE key = $1",
                    args![d.as_str()],
                )? {
                    longest = longest.max(r.i64(0)? - now);
                }
            }
            Ok(longest.max(0))
        })
    }

    /// Books a failed login for every key at `now` under `policy` (the lock
    /// doubles per failure beyond the free ones, never shortens; a key quiet
    /// for `forget_after_secs` starts again from zero). Returns the longest
    /// lock now in force, in seconds.
    pub fn login_failed(
        &self,
        keys: &[&str],
        now: i64,
        policy: tally_core::throttle::ThrottlePolicy,
    ) -> Result<i64, StateError> {
        let entries: Vec<(&str, tally_core::throttle::ThrottlePolicy)> =
            keys.iter().map(|k| (*k, policy)).collect();
        self.login_failed_each(&entries, now)
    }

    /// [`StateStore::login_failed`] with a policy per key, in one transaction
    /// (a pair, an address and a subject each have their own).
    pub fn login_failed_each(
        &self,
        entries: &[(&str, tally_core::throttle::ThrottlePolicy)],
        now: i64,
    ) -> Result<i64, StateError> {
        let mut digests: Vec<(String, tally_core::throttle::ThrottlePolicy)> = Vec::new();
        for (k, policy) in entries {
            let d = throttle_key(k);
            if !digests.iter().any(|(seen, _)| *seen == d) {
                digests.push((d, *policy));
            }
        }
        self.db.write(move |tx| {
            let mut longest = 0;
            for (d, policy) in &digests {
                let prev = tx.query_opt(
                    "SELECT failures, locked_until, last_failure FROM login_failures WHERE key = $1",
                    args![d.as_str()],
                )?;
                let (failures, locked_until) = match prev {
                    Some(r) => {
                        let (f, until, last) = (r.i64(0)?, r.i64(1)?, r.i64(2)?);
                        let forgotten = policy.forget_after_secs == 0
                            || (now - last >= policy.forget_after_secs as i64 && until <= now);
                        if forgotten { (1, 0) } else { (f + 1, until) }
                    }
                    None => (1, 0),
                };
                let delay = policy.delay_after(u32::try_from(failures).unwrap_or(u32::MAX));
                // A free failure locks nothing; a lock never shortens.
                let until = if delay == 0 {
                    locked_until
                } else {
                    locked_until.max(now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)))
                };
                tx.execute(
                    "INSERT INTO login_failures (key, failures, locked_until, last_failure)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                       locked_until = excluded.locked_until, last_failure = excluded.last_failure",
                    args![d.as_str(), failures, until, now],
                )?;
                longest = longest.max(until - now);
            }
            Ok(longest.max(0))
        })
    }

    /// A successful login: forgets `key` (the user's key only, never an
    /// address another user may share).
    pub fn login_succeeded(&self, key: &str) -> Result<(), StateError> {
        let d = throttle_key(key);
        self.db.write(move |tx| {
            tx.execute(
                "DELETE FROM login_failures WHERE key = $1",
                args![d.as_str()],
            )?;
            Ok(())
        })
    }

    /// Forgets login failures older than `before` that lock nothing.
    pub fn forget_login_failures(&self, before: i64, now: i64) -> Result<u64, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM login_failures WHERE last_failure < $1 AND locked_until <= $2",
                args![before, now],
            )?)
        })
    }

    /// Shared known addresses (a fleet): `subject` (a user's or client's
    /// throttling key) completed an authentication from `address` at `now`.
    /// Only its `keep` most recent addresses are kept. Both are stored as
    /// SHA-256 digests, as throttling keys are.
    pub fn remember_address(
        &self,
        subject: &str,
        address: &str,
        now: i64,
        keep: usize,
    ) -> Result<(), StateError> {
        let (s, a) = (throttle_key(subject), throttle_key(address));
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO known_addresses (subject, address, last_success) VALUES ($1, $2, $3)
                 ON CONFLICT (subject, address) DO UPDATE SET last_success =
                   CASE WHEN excluded.last_success > known_addresses.last_success
                        THEN excluded.last_success ELSE known_addresses.last_success END",
                args![s.as_str(), a.as_str(), now],
            )?;
            tx.execute(
                "DELETE FROM known_addresses WHERE subject = $1 AND address NOT IN
                   (SELECT address FROM known_addresses WHERE subject = $1
                    ORDER BY last_success DESC, address LIMIT $2)",
                args![s.as_str(), keep],
            )?;
            Ok(())
        })
    }

    /// Whether `subject` completed an authentication from `address` after `since`.
    pub fn address_known(
        &self,
        subject: &str,
        address: &str,
        since: i64,
    ) -> Result<bool, StateError> {
        let (s, a) = (throttle_key(subject), throttle_key(address));
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT last_success FROM known_addresses WHERE subject = $1 AND address = $2",
                    args![s.as_str(), a.as_str()],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .is_some_and(|at| at > since))
        })
    }

    /// Forgets known addresses whose last success is at or before `before`.
    pub fn forget_known_addresses(&self, before: i64) -> Result<u64, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM known_addresses WHERE last_success <= $1",
                args![before],
            )?)
        })
    }

    /// Forged tokens seen under `kid`: `(count, first_seen, last_seen)`.
    pub fn forgery_sightings(&self, kid: &str) -> Result<Option<(u64, i64, i64)>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                "SELECT count, first_seen, last_seen FROM forgery_sightings WHERE kid = $1",
                args![kid],
            )?
            else {
                return Ok(None);
            };
            Ok(Some((r.i64(0)?.max(0) as u64, r.i64(1)?, r.i64(2)?)))
        })
    }
}

/// A row count as `usize`.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A stored block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRow {
    /// Id.
    pub id: i64,
    /// `ip`, `device`, `subject` or `token`.
    pub kind: String,
    /// What it matches.
    pub value: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When.
    pub created_at: i64,
    /// Until when, if not forever.
    pub expires_at: Option<i64>,
}

/// A user's sealed TOTP secret and the last accepted time step.
pub type TotpEnrolment = (Vec<u8>, Option<i64>);

/// A login session (a refresh-token family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Family id.
    pub family: String,
    /// Who logged in.
    pub subject: String,
    /// The client it was issued to.
    pub client_id: String,
    /// How the user authenticated.
    pub auth_context: String,
    /// The DPoP key (RFC 7638 thumbprint) the session is bound to, if any:
    /// its refresh tokens are then usable only with a proof by that key.
    pub jkt: Option<String>,
    /// The audience its access tokens are issued for (`None`: the server's).
    pub audience: Option<String>,
}

/// What presenting a refresh token amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now spent: issue the next pair in this session.
    Rotated(Session),
    /// Already spent before: a copy is in someone else's hands. The caller
    /// must revoke the whole family.
    Reused(Session),
    /// Unknown, expired, or its session ended.
    Invalid,
    /// The session is bound to a DPoP key and the request proved another
    /// one, or none. The refresh token is not spent: whoever holds the key
    /// can still use it.
    WrongKey(Session),
}

/// A user row whose MAC verified.
struct UserRow {
    password_hash: String,
    role: String,
    totp_sealed: Option<Vec<u8>>,
    totp_last_step: Option<i64>,
}

/// What a `users` row's MAC covers.
fn user_fields<'a>(
    name: &'a str,
    password_hash: &'a str,
    role: &'a str,
    totp_sealed: Option<&'a [u8]>,
) -> [Field<'a>; 4] {
    [
        name.into(),
        password_hash.into(),
        role.into(),
        totp_sealed.into(),
    ]
}

/// What a `clients` row's MAC covers.
fn client_fields<'a>(id: &'a str, secret_hash: &'a str, created_at: i64) -> [Field<'a>; 3] {
    [id.into(), secret_hash.into(), created_at.into()]
}

/// What a `sessions` row's MAC covers (not `revoked_at`: ending a session
/// is no forgery).
fn session_fields(s: &Session, created_at: i64) -> [Field<'_>; 7] {
    [
        (&s.family).into(),
        (&s.subject).into(),
        (&s.client_id).into(),
        (&s.auth_context).into(),
        created_at.into(),
        s.jkt.as_deref().into(),
        s.audience.as_deref().into(),
    ]
}

/// What a `refresh_tokens` row's MAC covers (not `used_at`).
fn refresh_fields<'a>(
    hash: &'a [u8],
    family: &'a str,
    created_at: i64,
    expires_at: i64,
) -> [Field<'a>; 4] {
    [
        hash.into(),
        family.into(),
        created_at.into(),
        expires_at.into(),
    ]
}

/// The user `name`, if there is one and its MAC verifies.
fn user_row(tx: &mut dyn Tx, mac: &RowMac, name: &str) -> Result<Option<UserRow>, StateError> {
    let Some(r) = tx.query_opt(
        "SELECT password_hash, role, totp_sealed, totp_last_step, mac FROM users WHERE name = $1",
        args![name],
    )?
    else {
        return Ok(None);
    };
    let tampered = || {
        StateError::Tampered(format!(
            "the user row {name:?} (take it back with `tally users reset {name} --password-stdin`)"
        ))
    };
    // A column of the wrong type was not written by tally either.
    let read = || -> Result<(UserRow, Option<Vec<u8>>), SqlError> {
        Ok((
            UserRow {
                password_hash: r.text(0)?,
                role: r.text(1)?,
                totp_sealed: r.opt_blob(2)?,
                totp_last_step: r.opt_i64(3)?,
            },
            r.opt_blob(4)?,
        ))
    };
    let (u, tag) = read().map_err(|_| tampered())?;
    let fields = user_fields(name, &u.password_hash, &u.role, u.totp_sealed.as_deref());
    if !mac.verify("users", &fields, tag.as_deref()) {
        return Err(tampered());
    }
    Ok(Some(u))
}

/// The session columns of `sessions s`, in the order [`session_at`] reads.
const SESSION_COLUMNS: &str = "s.family, s.subject, s.client_id, s.auth_context, s.jkt, s.audience";

/// After [`SESSION_COLUMNS`] and `r.expires_at`: what
/// [`sealed_session`] needs to check both rows' MACs (columns 7 to 11).
const SEAL_COLUMNS: &str = "s.created_at, s.mac, r.family, r.created_at, r.mac";

/// The session and refresh-token expiry of a row of [`SESSION_COLUMNS`],
/// `r.expires_at` and [`SEAL_COLUMNS`], once both MACs verify.
fn sealed_session(
    r: &crate::sql::Row,
    mac: &RowMac,
    hash: &[u8; 32],
) -> Result<(Session, i64), StateError> {
    // A column of the wrong type was not written by tally either.
    let read = || -> Result<_, SqlError> {
        Ok((
            session_at(r, 0)?,
            r.i64(6)?,
            r.i64(7)?,
            r.opt_blob(8)?,
            r.text(9)?,
            r.i64(10)?,
            r.opt_blob(11)?,
        ))
    };
    let (session, expires_at, created_at, session_tag, family, refresh_created_at, refresh_tag) =
        read().map_err(|_| {
            StateError::Tampered("a session or refresh token row of the wrong shape".into())
        })?;
    if !mac.verify(
        "sessions",
        &session_fields(&session, created_at),
        session_tag.as_deref(),
    ) {
        return Err(StateError::Tampered(format!(
            "the session row {:?}",
            session.family
        )));
    }
    // The join paired them; the bytes must agree too (a collation of the
    // database's choosing must not pair a token with another session).
    if !mac.verify(
        "refresh_tokens",
        &refresh_fields(hash, &family, refresh_created_at, expires_at),
        refresh_tag.as_deref(),
    ) || family != session.family
    {
        return Err(StateError::Tampered(format!(
            "a refresh token row of session {family:?}"
        )));
    }
    Ok((session, expires_at))
}

/// Inserts a sealed refresh token.
fn insert_refresh(
    tx: &mut dyn Tx,
    mac: &RowMac,
    hash: &[u8; 32],
    family: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StateError> {
    let tag = mac.tag(
        "refresh_tokens",
        &refresh_fields(hash, family, now, expires_at),
    );
    tx.execute(
        "INSERT INTO refresh_tokens (hash, family, created_at, expires_at, mac) VALUES ($1, $2, $3, $4, $5)",
        args![hash.as_slice(), family, now, expires_at, tag],
    )?;
    Ok(())
}

/// A [`Session`] from six columns starting at `i` (see [`SESSION_COLUMNS`]).
fn session_at(r: &crate::sql::Row, i: usize) -> Result<Session, SqlError> {
    Ok(Session {
        family: r.text(i)?,
        subject: r.text(i + 1)?,
        client_id: r.text(i + 2)?,
        auth_context: r.text(i + 3)?,
        jkt: r.opt_text(i + 4)?,
        audience: r.opt_text(i + 5)?,
    })
}

impl StateStore {
    /// Starts a session with its first refresh token (stored only as a hash).
    pub fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8; 32],
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let mac = self.mac()?;
        let session = session.clone();
        let refresh_hash = *refresh_hash;
        self.db.write(move |tx| {
            let tag = mac.tag("sessions", &session_fields(&session, now));
            tx.execute(
                "INSERT INTO sessions (family, subject, client_id, auth_context, created_at, jkt, audience, mac)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &session.family,
                    &session.subject,
                    &session.client_id,
                    &session.auth_context,
                    now,
                    session.jkt.clone(),
                    session.audience.clone(),
                    tag
                ],
            )?;
            insert_refresh(tx, &mac, &refresh_hash, &session.family, now, refresh_expires_at)
        })
    }

    /// Adds the next refresh token of a live session.
    pub fn add_refresh_token(
        &self,
        family: &str,
        refresh_hash: &[u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let mac = self.mac()?;
        let family = family.to_owned();
        let refresh_hash = *refresh_hash;
        self.db
            .write(move |tx| insert_refresh(tx, &mac, &refresh_hash, &family, now, expires_at))
    }

    /// Records that access token `token_id` belongs to session `family`.
    pub fn add_session_token(
        &self,
        family: &str,
        token_id: &str,
        token_sha256: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StateError> {
        let (family, token_id) = (family.to_owned(), token_id.to_owned());
        let token_sha256 = *token_sha256;
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO session_tokens (token_id, family, token_sha256, expires_at) VALUES ($1, $2, $3, $4)",
                args![token_id, family, token_sha256.as_slice(), expires_at],
            )?;
            Ok(())
        })
    }

    /// Spends a refresh token, atomically: of two concurrent uses of the same
    /// token, exactly one is `Rotated` and the other is `Reused` (also across
    /// nodes sharing a PostgreSQL database: writers are serialised).
    pub fn use_refresh_token(
        &self,
        hash: &[u8; 32],
        proven_jkt: Option<&str>,
        now: i64,
    ) -> Result<RefreshUse, StateError> {
        let mac = self.mac()?;
        let hash = *hash;
        let proven_jkt = proven_jkt.map(str::to_owned);
        self.noticed(self.db.write(move |tx| {
            let Some(r) = tx.query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS}, r.expires_at, {SEAL_COLUMNS}, r.used_at, s.revoked_at
                     FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = $1"
                ),
                args![hash.as_slice()],
            )?
            else {
                return Ok(RefreshUse::Invalid);
            };
            let (session, expires_at) = sealed_session(&r, &mac, &hash)?;
            let used_at = r.opt_i64(12)?;
            let revoked_at = r.opt_i64(13)?;
            if used_at.is_some() {
                return Ok(RefreshUse::Reused(session));
            }
            if revoked_at.is_some() || now >= expires_at {
                return Ok(RefreshUse::Invalid);
            }
            if let Some(bound) = session.jkt.as_deref() {
                // A thumbprint of a public key: nothing secret to time.
                if proven_jkt.as_deref() != Some(bound) {
                    return Ok(RefreshUse::WrongKey(session));
                }
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
                args![hash.as_slice(), now],
            )?;
            Ok(RefreshUse::Rotated(session))
        }))
    }

    /// The session of a refresh token, whether it is still usable.
    pub fn refresh_token_status(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<(Session, i64, bool)>, StateError> {
        let mac = self.mac()?;
        let hash = *hash;
        self.noticed(self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS}, r.expires_at, {SEAL_COLUMNS},
                            CASE WHEN r.used_at IS NULL AND s.revoked_at IS NULL AND r.expires_at > $2
                                 THEN 1 ELSE 0 END
                     FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = $1"
                ),
                args![hash.as_slice(), now],
            )?
            else {
                return Ok(None);
            };
            let (session, expires_at) = sealed_session(&r, &mac, &hash)?;
            Ok(Some((session, expires_at, r.i64(12)? != 0)))
        }))
    }

    /// The session an access token belongs to.
    pub fn session_of_token(&self, token_id: &str) -> Result<Option<String>, StateError> {
        let token_id = token_id.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt(
                    "SELECT family FROM session_tokens WHERE token_id = $1",
                    args![token_id],
                )?
                .map(|r| r.text(0))
                .transpose()?)
        })
    }

    /// Ends a session: its refresh tokens stop working and its unexpired
    /// access tokens are revoked, in one transaction. Returns how many access
    /// tokens were newly revoked (0 if it had already ended).
    pub fn revoke_session(
        &self,
        family: &str,
        reason: &str,
        now: i64,
    ) -> Result<usize, StateError> {
        let (family, reason) = (family.to_owned(), reason.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE family = $1 AND revoked_at IS NULL",
                args![&family, now, &reason],
            )?;
            let n = tx.execute(
                "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                 SELECT token_id, token_sha256, expires_at, $2, $3 FROM session_tokens
                 WHERE family = $1 AND expires_at > $2
                 ON CONFLICT (token_id) DO NOTHING",
                args![family, now, reason],
            )?;
            Ok(count(n))
        })
    }

    /// Registers an API client (for introspection) with an argon2id secret hash.
    pub fn add_client(&self, id: &str, secret_hash: &str, now: i64) -> Result<(), StateError> {
        let mac = self.mac()?;
        let (id, hash) = (id.to_owned(), secret_hash.to_owned());
        self.db.write(move |tx| {
            let tag = mac.tag("clients", &client_fields(&id, &hash, now));
            tx.execute(
                "INSERT INTO clients (id, secret_hash, created_at, mac) VALUES ($1, $2, $3, $4)",
                args![id, hash, now, tag],
            )
            .map_err(|e| unique_as(e, StateError::ClientExists))?;
            Ok(())
        })
    }

    /// The secret hash of a client.
    pub fn client_secret_hash(&self, id: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let id = id.to_owned();
        self.noticed(self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                "SELECT secret_hash, created_at, mac FROM clients WHERE id = $1",
                args![&id],
            )?
            else {
                return Ok(None);
            };
            let tampered = || StateError::Tampered(format!("the client row {id:?}"));
            let read = || -> Result<_, SqlError> { Ok((r.text(0)?, r.i64(1)?, r.opt_blob(2)?)) };
            let (hash, at, tag) = read().map_err(|_| tampered())?;
            if !mac.verify("clients", &client_fields(&id, &hash, at), tag.as_deref()) {
                return Err(tampered());
            }
            Ok(Some(hash))
        }))
    }
}

/// One entry of the key audit log: who did what to which key, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    /// Unix seconds.
    pub at: i64,
    /// The key concerned, if one.
    pub kid: Option<String>,
    /// What happened (`activated`, `rotated`, `compromised`, `custodian_added`, `offboarded`, `retired`).
    pub event: String,
    /// Who did it (operator name, or `tally` for automatic actions).
    pub actor: String,
    /// Details for the record.
    pub detail: String,
}

/// A revoked token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Its `jti`.
    pub token_id: String,
    /// SHA-256 of its bytes (the registry key).
    pub token_sha256: [u8; 32],
    /// Its `exp`.
    pub expires_at: i64,
}

fn insert_event(tx: &mut dyn Tx, e: &KeyEvent) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO key_events (at, kid, event, actor, detail) VALUES ($1, $2, $3, $4, $5)",
        args![e.at, e.kid.clone(), &e.event, &e.actor, &e.detail],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kid: &str) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            alg: "EdDSA".into(),
            purpose: KeyPurpose::Token,
            state: KeyState::Active,
            created_at: 1,
            state_changed_at: 1,
            public: "{}".into(),
            sealed: vec![1, 2, 3],
            source: "generated".into(),
        }
    }

    #[test]
    fn users_and_keys() {
        let dir = tempdir();
        let s = StateStore::open(&dir.join("state.db")).unwrap();
        s.seal_rows(RowMac::new(&[1; 32]), 1, false).unwrap();
        s.add_user("alice", "$argon2id$x", 1).unwrap();
        assert!(matches!(
            s.add_user("alice", "$argon2id$y", 2),
            Err(StateError::UserExists)
        ));
        assert_eq!(
            s.password_hash("alice").unwrap().as_deref(),
            Some("$argon2id$x")
        );
        assert_eq!(s.password_hash("bob").unwrap(), None);

        s.insert_active_token_key(&row("k1")).unwrap();
        s.insert_active_token_key(&row("k2")).unwrap();
        assert!(matches!(
            s.insert_active_token_key(&row("k2")),
            Err(StateError::KeyExists)
        ));
        let keys = s.keys(KeyPurpose::Token).unwrap();
        let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
        assert_eq!(
            states,
            vec![("k1", KeyState::Retiring), ("k2", KeyState::Active)]
        );
        assert!(format!("{:?}", keys[0]).contains("k1"));
        assert!(!format!("{:?}", keys[0]).contains("sealed"));
        let ev = |kid: &str, what: &str| KeyEvent {
            at: 5,
            kid: Some(kid.into()),
            event: what.into(),
            actor: "ops".into(),
            detail: String::new(),
        };
        s.set_key_state("k1", KeyState::Retired, &ev("k1", "retired"))
            .unwrap();
        assert!(matches!(
            s.set_key_state("nope", KeyState::Retired, &ev("nope", "retired")),
            Err(StateError::NoSuchKey)
        ));
        let k1 = &s.keys(KeyPurpose::Token).unwrap()[0];
        assert_eq!((k1.state, k1.state_changed_at), (KeyState::Retired, 5));

        // Custodians follow a rotation, except the one who is leaving.
        assert!(
            s.add_custodian("k2", "ann", &ev("k2", "custodian_added"))
                .unwrap()
        );
        assert!(
            s.add_custodian("k2", "bob", &ev("k2", "custodian_added"))
                .unwrap()
        );
        assert!(
            !s.add_custodian("k2", "bob", &ev("k2", "custodian_added"))
                .unwrap()
        );
        assert!(matches!(
            s.add_custodian("nope", "bob", &ev("nope", "custodian_added")),
            Err(StateError::NoSuchKey)
        ));
        let old = s
            .rotate_in(
                &row("k3"),
                KeyState::Retiring,
                Some("bob"),
                &ev("k3", "rotated"),
            )
            .unwrap();
        assert_eq!(old.as_deref(), Some("k2"));
        assert_eq!(s.custodians("k3").unwrap(), vec!["ann".to_string()]);
        assert_eq!(
            s.keys_of_custodian("bob").unwrap(),
            vec![("k2".to_string(), KeyState::Retiring)]
        );
        assert_eq!(
            s.remove_custodian_everywhere("ann", &ev("k3", "offboarded"))
                .unwrap(),
            2
        );
        assert!(s.custodians("k3").unwrap().is_empty());
        let events: Vec<String> = s
            .events(100)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            events,
            [
                "activated",
                "activated",
                "retired",
                "custodian_added",
                "custodian_added",
                "rotated",
                "offboarded"
            ]
        );

        // Revocations are idempotent and ordered.
        let rev = |id: &str| Revocation {
            token_id: id.into(),
            token_sha256: [1; 32],
            expires_at: 9,
        };
        assert_eq!(s.revoke(&[rev("a"), rev("b")], "test", 7).unwrap(), 2);
        assert_eq!(s.revoke(&[rev("a")], "test", 8).unwrap(), 0);
        assert!(s.is_revoked("a").unwrap() && !s.is_revoked("c").unwrap());
        let after = s.revocations_after(0).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(s.revocations_after(after[0].0).unwrap().len(), 1);

        s.add_forgery_sightings(&[("k2".into(), 3, 100, 120)])
            .unwrap();
        s.add_forgery_sightings(&[("k2".into(), 2, 90, 130)])
            .unwrap();
        assert_eq!(s.forgery_sightings("k2").unwrap(), Some((5, 90, 130)));
        assert_eq!(s.forgery_sightings("k9").unwrap(), None);
        // Reopening applies no migration twice.
        drop(s);
        let s = StateStore::open(&dir.join("state.db")).unwrap();
        s.set_meta("origin", "a").unwrap();
        s.set_meta("origin", "b").unwrap();
        assert_eq!(s.meta("origin").unwrap().as_deref(), Some("b"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signature_counts_of_a_v3_file_become_the_embedded_node_s() {
        let dir = tempdir();
        let path = dir.join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO signature_counts (kid, signed, withheld) VALUES ('k1', 7, 2);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(s.signature_counts("").unwrap()["k1"], (7, 2));
        s.add_signature_counts("", &[("k1".into(), 1, 0)]).unwrap();
        assert_eq!(s.signature_counts("").unwrap()["k1"], (8, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tally-state-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
