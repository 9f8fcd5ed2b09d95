//! Signing keys: stored with their private part sealed under the master
//! key (never in the clear here), their purpose and lifecycle state, and
//! the key audit log ([`KeyEvent`]) that every change writes in the same
//! transaction. Exactly one token key is active; rotating one in demotes the
//! previous one and hands its custodians over.

use super::error::{StateError, unique_as};
use super::store::StateStore;
use crate::sql::{Tx, args};

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

pub(super) fn insert_event(tx: &mut dyn Tx, e: &KeyEvent) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO key_events (at, kid, event, actor, detail) VALUES ($1, $2, $3, $4, $5)",
        args![e.at, e.kid.clone(), &e.event, &e.actor, &e.detail],
    )?;
    Ok(())
}

impl StateStore {
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
}
