//! Operational state on SQLite: users, signing keys (sealed), and settings.
//!
//! Private key material is stored only sealed under the master key (see
//! `tally_core::seal`); this module never sees it in the clear.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

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
    #[error("state.db has schema version {found}, this tally knows up to {known}: upgrade tally")]
    NewerSchema {
        /// Version in the file.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
    /// Database failure.
    #[error("state store error: {0}")]
    Store(#[from] rusqlite::Error),
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
            StateError::Store(_) => "store_unavailable",
        }
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

/// The state database.
pub struct StateStore {
    conn: Mutex<Connection>,
}

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
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A counter that changes whenever another connection (another process,
    /// such as an admin command) commits to the state database.
    pub fn data_version(&self) -> Result<i64, StateError> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Reads a setting.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Writes a setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Adds a user with an already-computed password hash (PHC string).
    pub fn add_user(&self, name: &str, password_hash: &str, now: i64) -> Result<(), StateError> {
        match self.conn().execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![name, password_hash, now],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StateError::UserExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds many users in one transaction (bulk import); all or none.
    pub fn add_users(&self, users: &[(String, String)], now: i64) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
            )?;
            for (name, hash) in users {
                match stmt.execute(params![name, hash, now]) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Err(StateError::UserExists);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Enrols (or re-enrols) a user in TOTP with a sealed secret.
    pub fn set_totp(&self, name: &str, sealed: &[u8]) -> Result<bool, StateError> {
        let n = self.conn().execute(
            "UPDATE users SET totp_sealed = ?2, totp_last_step = NULL WHERE name = ?1",
            params![name, sealed],
        )?;
        Ok(n == 1)
    }

    /// A user's sealed TOTP secret and the last time step accepted, if enrolled.
    pub fn totp(&self, name: &str) -> Result<Option<TotpEnrolment>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT totp_sealed, totp_last_step FROM users WHERE name = ?1 AND totp_sealed IS NOT NULL",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records that time step `step` was used, only if it is later than the
    /// last one (so one code is accepted once, even by concurrent logins).
    pub fn use_totp_step(&self, name: &str, step: i64) -> Result<bool, StateError> {
        let n = self.conn().execute(
            "UPDATE users SET totp_last_step = ?2
             WHERE name = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            params![name, step],
        )?;
        Ok(n == 1)
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT password_hash FROM users WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A user's role (`user` or `admin`), if the user exists.
    pub fn user_role(&self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT role FROM users WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets a user's role (`user` or `admin`); false if there is no such user.
    pub fn set_role(&self, name: &str, role: &str) -> Result<bool, StateError> {
        Ok(self.conn().execute(
            "UPDATE users SET role = ?2 WHERE name = ?1",
            params![name, role],
        )? == 1)
    }

    /// Names of all users.
    pub fn users(&self) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a new key.
    pub fn insert_key(&self, row: &KeyRow) -> Result<(), StateError> {
        match self.conn().execute(
            "INSERT INTO keys (kid, alg, purpose, state, created_at, state_changed_at, public, sealed, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
            params![
                row.kid,
                row.alg,
                row.purpose.as_str(),
                row.state.as_str(),
                row.created_at,
                row.public,
                row.sealed,
                row.source
            ],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StateError::KeyExists)
            }
            Err(e) => Err(e.into()),
        }
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if tx
            .query_row(
                "SELECT 1 FROM keys WHERE kid = ?1",
                params![row.kid],
                |_| Ok(()),
            )
            .optional()?
            .is_some()
        {
            return Err(StateError::KeyExists);
        }
        let old: Option<String> = tx
            .query_row(
                "SELECT kid FROM keys WHERE purpose = 'token' AND state = 'active'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "UPDATE keys SET state = ?1, state_changed_at = ?2
             WHERE purpose = 'token' AND state = 'active'",
            params![old_state.as_str(), event.at],
        )?;
        tx.execute(
            "INSERT INTO keys (kid, alg, purpose, state, created_at, state_changed_at, public, sealed, source)
             VALUES (?1, ?2, 'token', 'active', ?3, ?3, ?4, ?5, ?6)",
            params![
                row.kid,
                row.alg,
                row.created_at,
                row.public,
                row.sealed,
                row.source
            ],
        )?;
        if let Some(old) = &old {
            tx.execute(
                "INSERT INTO key_custodians (kid, person, added_at)
                 SELECT ?1, person, ?3 FROM key_custodians
                 WHERE kid = ?2 AND removed_at IS NULL AND person IS NOT ?4",
                params![row.kid, old, event.at, drop_custodian],
            )?;
        }
        insert_event(&tx, event)?;
        tx.commit()?;
        Ok(old)
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
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kid, alg, state, created_at, state_changed_at, public, sealed, source FROM keys
             WHERE purpose = ?1 ORDER BY created_at, kid",
        )?;
        let rows = stmt.query_map(params![purpose.as_str()], |r| {
            let state: String = r.get(2)?;
            Ok(KeyRow {
                kid: r.get(0)?,
                alg: r.get(1)?,
                purpose,
                // Unknown states fail closed: treated as compromised (never used).
                state: KeyState::parse(&state).unwrap_or(KeyState::Compromised),
                created_at: r.get(3)?,
                state_changed_at: r.get(4)?,
                public: r.get(5)?,
                sealed: r.get(6)?,
                source: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Changes a key's state and records `event`, in one transaction.
    pub fn set_key_state(
        &self,
        kid: &str,
        state: KeyState,
        event: &KeyEvent,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE keys SET state = ?2, state_changed_at = ?3 WHERE kid = ?1",
            params![kid, state.as_str(), event.at],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchKey);
        }
        insert_event(&tx, event)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds `person` as a custodian of `kid`. Returns false if they already are.
    pub fn add_custodian(
        &self,
        kid: &str,
        person: &str,
        event: &KeyEvent,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if tx
            .query_row(
                "SELECT 1 FROM keys WHERE kid = ?1",
                params![kid],
                |_| Ok(()),
            )
            .optional()?
            .is_none()
        {
            return Err(StateError::NoSuchKey);
        }
        let n = tx.execute(
            "INSERT INTO key_custodians (kid, person, added_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(kid, person) DO UPDATE SET removed_at = NULL, added_at = excluded.added_at
             WHERE removed_at IS NOT NULL",
            params![kid, person, event.at],
        )?;
        if n > 0 {
            insert_event(&tx, event)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Current custodians of `kid`.
    pub fn custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT person FROM key_custodians WHERE kid = ?1 AND removed_at IS NULL ORDER BY person",
        )?;
        let rows = stmt.query_map(params![kid], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Former custodians of `kid` (offboarded from it).
    pub fn former_custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT person FROM key_custodians WHERE kid = ?1 AND removed_at IS NOT NULL ORDER BY person",
        )?;
        let rows = stmt.query_map(params![kid], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Token keys `person` is a current custodian of, with their states.
    pub fn keys_of_custodian(&self, person: &str) -> Result<Vec<(String, KeyState)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT k.kid, k.state FROM key_custodians c JOIN keys k ON k.kid = c.kid
             WHERE c.person = ?1 AND c.removed_at IS NULL ORDER BY k.created_at",
        )?;
        let rows = stmt.query_map(params![person], |r| {
            let state: String = r.get(1)?;
            Ok((
                r.get(0)?,
                KeyState::parse(&state).unwrap_or(KeyState::Compromised),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ends `person`'s custody of every key and records `event`.
    pub fn remove_custodian_everywhere(
        &self,
        person: &str,
        event: &KeyEvent,
    ) -> Result<usize, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE key_custodians SET removed_at = ?2 WHERE person = ?1 AND removed_at IS NULL",
            params![person, event.at],
        )?;
        insert_event(&tx, event)?;
        tx.commit()?;
        Ok(n)
    }

    /// Records an event in the key audit log.
    pub fn record_event(&self, event: &KeyEvent) -> Result<(), StateError> {
        insert_event(&self.conn(), event)
    }

    /// The newest `limit` key events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<KeyEvent>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at, kid, event, actor, detail FROM
               (SELECT * FROM key_events ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(KeyEvent {
                at: r.get(0)?,
                kid: r.get(1)?,
                event: r.get(2)?,
                actor: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes tokens (idempotent per token id). Returns how many were new.
    pub fn revoke(
        &self,
        tokens: &[Revocation],
        reason: &str,
        now: i64,
    ) -> Result<usize, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(token_id) DO NOTHING",
            )?;
            for t in tokens {
                n += stmt.execute(params![
                    t.token_id,
                    t.token_sha256.as_slice(),
                    t.expires_at,
                    now,
                    reason
                ])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Revocations recorded after sequence number `after`, in order.
    pub fn revocations_after(&self, after: i64) -> Result<Vec<(i64, Revocation)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, token_id, token_sha256, expires_at FROM revocations WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![after], |r| {
            let digest: Vec<u8> = r.get(2)?;
            let mut d = [0u8; 32];
            if digest.len() == 32 {
                d.copy_from_slice(&digest);
            }
            Ok((
                r.get(0)?,
                Revocation {
                    token_id: r.get(1)?,
                    token_sha256: d,
                    expires_at: r.get(3)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `token_id` is revoked.
    pub fn is_revoked(&self, token_id: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM revocations WHERE token_id = ?1",
                params![token_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Adds to the durable signature counts: `(kid, signed, withheld)` deltas.
    pub fn add_signature_counts(&self, deltas: &[(String, u64, u64)]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO signature_counts (kid, signed, withheld) VALUES (?1, ?2, ?3)
                 ON CONFLICT(kid) DO UPDATE SET signed = signed + excluded.signed,
                   withheld = withheld + excluded.withheld",
            )?;
            for (kid, s, w) in deltas {
                stmt.execute(params![kid, *s as i64, *w as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Durable signature counts per key: `kid -> (signed, withheld)`.
    pub fn signature_counts(&self) -> Result<HashMap<String, (u64, u64)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT kid, signed, withheld FROM signature_counts")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        let conn = self.conn();
        conn.execute(
            "INSERT INTO blocks (kind, value, reason, actor, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![kind, value, reason, actor, now, expires_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Lifts a block. Returns false if there is no such block in force.
    pub fn remove_block(&self, id: i64, now: i64) -> Result<bool, StateError> {
        Ok(self.conn().execute(
            "UPDATE blocks SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL",
            params![id, now],
        )? == 1)
    }

    /// Blocks not lifted and not expired at `now`.
    pub fn blocks(&self, now: i64) -> Result<Vec<BlockRow>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, kind, value, reason, actor, created_at, expires_at FROM blocks
             WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok(BlockRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                value: r.get(2)?,
                reason: r.get(3)?,
                actor: r.get(4)?,
                created_at: r.get(5)?,
                expires_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds forged-token sightings per key (`(kid, count, first_seen, last_seen)`).
    pub fn add_forgery_sightings(
        &self,
        sightings: &[(String, u64, i64, i64)],
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO forgery_sightings (kid, count, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kid) DO UPDATE SET count = count + excluded.count,
                   first_seen = min(first_seen, excluded.first_seen),
                   last_seen = max(last_seen, excluded.last_seen)",
            )?;
            for (kid, count, first, last) in sightings {
                stmt.execute(params![kid, *count as i64, first, last])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forged tokens seen under `kid`: `(count, first_seen, last_seen)`.
    pub fn forgery_sightings(&self, kid: &str) -> Result<Option<(u64, i64, i64)>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT count, first_seen, last_seen FROM forgery_sightings WHERE kid = ?1",
                params![kid],
                |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }
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

impl StateStore {
    /// Starts a session with its first refresh token (stored only as a hash).
    pub fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8; 32],
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO sessions (family, subject, client_id, auth_context, created_at, jkt, audience)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                session.family,
                session.subject,
                session.client_id,
                session.auth_context,
                now,
                session.jkt,
                session.audience
            ],
        )?;
        tx.execute(
            "INSERT INTO refresh_tokens (hash, family, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![refresh_hash.as_slice(), session.family, now, refresh_expires_at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds the next refresh token of a live session.
    pub fn add_refresh_token(
        &self,
        family: &str,
        refresh_hash: &[u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO refresh_tokens (hash, family, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![refresh_hash.as_slice(), family, now, expires_at],
        )?;
        Ok(())
    }

    /// Records that access token `token_id` belongs to session `family`.
    pub fn add_session_token(
        &self,
        family: &str,
        token_id: &str,
        token_sha256: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO session_tokens (token_id, family, token_sha256, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_id, family, token_sha256.as_slice(), expires_at],
        )?;
        Ok(())
    }

    /// Spends a refresh token, atomically: of two concurrent uses of the same
    /// token, exactly one is `Rotated` and the other is `Reused`.
    pub fn use_refresh_token(
        &self,
        hash: &[u8; 32],
        proven_jkt: Option<&str>,
        now: i64,
    ) -> Result<RefreshUse, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT r.family, r.expires_at, r.used_at, s.subject, s.client_id, s.auth_context, s.revoked_at, s.jkt, s.audience
                 FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = ?1",
                params![hash.as_slice()],
                |r| {
                    let session = Session {
                        family: r.get(0)?,
                        subject: r.get(3)?,
                        client_id: r.get(4)?,
                        auth_context: r.get(5)?,
                        jkt: r.get(7)?,
                        audience: r.get(8)?,
                    };
                    let expires_at: i64 = r.get(1)?;
                    let used_at: Option<i64> = r.get(2)?;
                    let revoked_at: Option<i64> = r.get(6)?;
                    Ok((session, expires_at, used_at, revoked_at))
                },
            )
            .optional()?;
        let Some((session, expires_at, used_at, revoked_at)) = row else {
            return Ok(RefreshUse::Invalid);
        };
        if used_at.is_some() {
            return Ok(RefreshUse::Reused(session));
        }
        if revoked_at.is_some() || now >= expires_at {
            return Ok(RefreshUse::Invalid);
        }
        if let Some(bound) = session.jkt.as_deref() {
            // A thumbprint of a public key: nothing secret to time.
            if proven_jkt != Some(bound) {
                return Ok(RefreshUse::WrongKey(session));
            }
        }
        tx.execute(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
            params![hash.as_slice(), now],
        )?;
        tx.commit()?;
        Ok(RefreshUse::Rotated(session))
    }

    /// The session of a refresh token, whether it is still usable.
    pub fn refresh_token_status(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<(Session, i64, bool)>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT r.family, s.subject, s.client_id, s.auth_context, r.expires_at,
                        r.used_at IS NULL AND s.revoked_at IS NULL AND r.expires_at > ?2, s.jkt, s.audience
                 FROM refresh_tokens r JOIN sessions s ON s.family = r.family WHERE r.hash = ?1",
                params![hash.as_slice(), now],
                |r| {
                    Ok((
                        Session {
                            family: r.get(0)?,
                            subject: r.get(1)?,
                            client_id: r.get(2)?,
                            auth_context: r.get(3)?,
                            jkt: r.get(6)?,
                            audience: r.get(7)?,
                        },
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?)
    }

    /// The session an access token belongs to.
    pub fn session_of_token(&self, token_id: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT family FROM session_tokens WHERE token_id = ?1",
                params![token_id],
                |r| r.get(0),
            )
            .optional()?)
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3 WHERE family = ?1 AND revoked_at IS NULL",
            params![family, now, reason],
        )?;
        let n = tx.execute(
            "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
             SELECT token_id, token_sha256, expires_at, ?2, ?3 FROM session_tokens
             WHERE family = ?1 AND expires_at > ?2
             ON CONFLICT(token_id) DO NOTHING",
            params![family, now, reason],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Registers an API client (for introspection) with an argon2id secret hash.
    pub fn add_client(&self, id: &str, secret_hash: &str, now: i64) -> Result<(), StateError> {
        match self.conn().execute(
            "INSERT INTO clients (id, secret_hash, created_at) VALUES (?1, ?2, ?3)",
            params![id, secret_hash, now],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StateError::ClientExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The secret hash of a client.
    pub fn client_secret_hash(&self, id: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT secret_hash FROM clients WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
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

fn insert_event(conn: &Connection, e: &KeyEvent) -> Result<(), StateError> {
    conn.execute(
        "INSERT INTO key_events (at, kid, event, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.at, e.kid, e.event, e.actor, e.detail],
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
