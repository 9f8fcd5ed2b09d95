//! Fleet store failures ([`FleetError`], with stable codes) and the one
//! question every caller asks of them: whether the database cannot be used
//! now ([`is_unavailable`]), as opposed to a refused statement.

/// Fleet store failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// PostgreSQL failed or is unreachable.
    #[error("PostgreSQL: {}", crate::pg::describe(.0))]
    Db(#[from] postgres::Error),
    /// A schema name that is not a plain identifier.
    #[error("schema name {0:?} must be 1-48 of a-z, 0-9, _ and start with a letter")]
    BadSchema(String),
    /// A record that does not encode.
    #[error("issuance record: {0}")]
    Record(String),
    /// The stored ledger does not match what was signed.
    #[error("fleet ledger tampered at index {index}: {reason}")]
    Tampered {
        /// First bad index (or tree size for a checkpoint).
        index: u64,
        /// What was found.
        reason: String,
    },
    /// Signing failed.
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
    /// A record with this token id is already queued.
    #[error("token id already recorded")]
    Duplicate,
    /// The node is shutting down.
    #[error("the fleet ledger is closed")]
    Closed,
    /// The storage URL or its TLS settings are not usable.
    #[error("{0}")]
    Config(String),
    /// The fleet's schema was written by a newer version of tally.
    #[error(
        "the fleet ledger has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// Version in the database.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
    /// Creating or upgrading the fleet's schema failed.
    #[error("fleet schema: {0}")]
    Store(crate::sql::SqlError),
}

impl FleetError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            FleetError::Db(_) => "store_unavailable",
            FleetError::BadSchema(_) => "bad_config",
            FleetError::Record(_) => "bad_record",
            FleetError::Tampered { .. } => "ledger_tampered",
            FleetError::Signing(_) => "signing_failed",
            FleetError::Duplicate => "duplicate_token_id",
            FleetError::Closed => "store_unavailable",
            FleetError::Config(_) => "bad_config",
            FleetError::NewerSchema { .. } => "schema_too_new",
            FleetError::Store(crate::sql::SqlError::Config(_)) => "bad_config",
            FleetError::Store(_) => "store_unavailable",
        }
    }
}

/// Whether `e` means the database cannot be used now (as opposed to a
/// refused statement): the connection is gone, or the server is shutting
/// down, out of resources, timing statements out or not granting locks.
pub fn is_unavailable(e: &FleetError) -> bool {
    match e {
        FleetError::Db(db) => crate::pg::is_unavailable(db),
        FleetError::Store(e) => matches!(e, crate::sql::SqlError::Unavailable(_)),
        _ => false,
    }
}
