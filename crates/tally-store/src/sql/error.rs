//! [`SqlError`]: the SQL layer's failures, whichever the engine. Unique
//! violations are told apart (a store turns them into its own domain error),
//! unavailability is told apart from a refused statement, and a PostgreSQL
//! error keeps only its code and primary message (never a DETAIL, which may
//! quote the row's values).

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
