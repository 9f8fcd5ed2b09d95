//! [`Tx`]: a transaction on either engine, as closures see it, and the
//! three things a transaction can be for (read, read on one snapshot,
//! write under the lock).

use super::error::SqlError;
use super::row::Row;
use super::value::Value;

/// A transaction on either engine.
///
/// Statements use `$1, $2, …` placeholders and must be valid on both engines.
/// A statement that fails aborts a PostgreSQL transaction: return its error
/// from the closure (the transaction then rolls back) rather than carry on.
pub trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;

    /// Runs a query (or a statement with `RETURNING`); returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;

    /// Runs several `;`-separated statements without parameters (schema
    /// changes).
    fn batch(&mut self, sql: &str) -> Result<(), SqlError>;

    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query; [`SqlError::NoRow`] if there is none.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, params)?.ok_or(SqlError::NoRow)
    }
}

/// What a PostgreSQL transaction is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Read only, each statement seeing what is committed when it starts.
    Read,
    /// Read only, on one snapshot.
    Snapshot,
    /// Read and write, under the advisory write lock.
    Write,
}
