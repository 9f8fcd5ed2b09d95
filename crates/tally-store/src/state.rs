//! Operational state on SQLite: users, signing keys (sealed), and settings.
//!
//! Private key material is stored only sealed under the master key (see
//! `tally_core::seal`); this module never sees it in the clear.

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
}

impl KeyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Token => "token",
            KeyPurpose::Ledger => "ledger",
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
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    kid        TEXT PRIMARY KEY,
    alg        TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    public     TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    source     TEXT NOT NULL
);
";

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
        conn.execute_batch(SCHEMA)?;
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
            "INSERT INTO keys (kid, alg, purpose, state, created_at, public, sealed, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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

    /// Makes `row` the one active token key: any other active token key becomes
    /// `retiring`, in the same transaction.
    pub fn insert_active_token_key(&self, row: &KeyRow) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
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
        tx.execute(
            "UPDATE keys SET state = 'retiring' WHERE purpose = 'token' AND state = 'active'",
            [],
        )?;
        tx.execute(
            "INSERT INTO keys (kid, alg, purpose, state, created_at, public, sealed, source)
             VALUES (?1, ?2, 'token', 'active', ?3, ?4, ?5, ?6)",
            params![
                row.kid,
                row.alg,
                row.created_at,
                row.public,
                row.sealed,
                row.source
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every key with this purpose, oldest first.
    pub fn keys(&self, purpose: KeyPurpose) -> Result<Vec<KeyRow>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kid, alg, state, created_at, public, sealed, source FROM keys
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
                public: r.get(4)?,
                sealed: r.get(5)?,
                source: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Changes a key's state.
    pub fn set_key_state(&self, kid: &str, state: KeyState) -> Result<(), StateError> {
        let n = self.conn().execute(
            "UPDATE keys SET state = ?2 WHERE kid = ?1",
            params![kid, state.as_str()],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchKey);
        }
        Ok(())
    }
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
        s.set_key_state("k1", KeyState::Retired).unwrap();
        assert!(matches!(
            s.set_key_state("nope", KeyState::Retired),
            Err(StateError::NoSuchKey)
        ));
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
