//! [`StateError`]: the state store's failures, with stable codes. A
//! uniqueness violation becomes the domain error of what was being added
//! (a user, a key, a client); a row failing its MAC is
//! [`StateError::Tampered`], never a row.

use crate::sql::SqlError;

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
    ///
    /// [`StateStore::seal_rows`]: crate::StateStore::seal_rows
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
pub(super) fn unique_as(e: SqlError, domain: StateError) -> StateError {
    if e.is_unique_violation() {
        domain
    } else {
        e.into()
    }
}
