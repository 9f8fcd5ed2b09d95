//! [`IncidentError`], the one error type of the incident store, and its
//! stable codes (what the admin API and the command line report).
//!
//! Every failure of the store maps to one variant; the codes never change
//! with the message, and a tampered audit trail reports the access log's
//! own `access_log_tampered` error, with the first bad entry.

use tally_store::sql::SqlError;

use crate::access::AccessError;

/// Incident store failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncidentError {
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(i64),
    /// The state change is not allowed.
    #[error("incident {id} is {from}; it cannot become {to}")]
    BadTransition {
        /// Incident.
        id: i64,
        /// Current state.
        from: &'static str,
        /// Asked for.
        to: &'static str,
    },
    /// The audit log failed or was tampered with.
    #[error(transparent)]
    Audit(#[from] AccessError),
    /// Database failure (SQLite or PostgreSQL), or a bad PostgreSQL URL,
    /// schema name or witness directory.
    #[error("incident store error: {0}")]
    Store(#[from] SqlError),
    /// A stored document does not parse.
    #[error("incident store holds an unreadable record: {0}")]
    Corrupt(String),
    /// The PostgreSQL schema was written by a newer version of tally.
    #[error(
        "the incident store has schema version {found}, this tally knows up to {known}: upgrade tally"
    )]
    NewerSchema {
        /// Version in the database.
        found: usize,
        /// Highest version this code knows.
        known: usize,
    },
}

impl From<rusqlite::Error> for IncidentError {
    fn from(e: rusqlite::Error) -> IncidentError {
        IncidentError::Store(e.into())
    }
}

impl IncidentError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            IncidentError::NotFound(_) => "not_found",
            IncidentError::BadTransition { .. } => "bad_transition",
            IncidentError::Audit(e) => e.code(),
            IncidentError::Store(SqlError::Config(_)) => "bad_config",
            IncidentError::Store(_) => "store_unavailable",
            IncidentError::Corrupt(_) => "store_corrupt",
            IncidentError::NewerSchema { .. } => "schema_too_new",
        }
    }
}
