//! The SQLite side: placeholders rewritten from `$N` to `?N`, values bound
//! and read back, and a closure run in the transaction its mode asks for
//! (none for a plain read, `DEFERRED` for a snapshot, `IMMEDIATE` for a
//! write, so that the write lock is taken up front), on a [`super::Db`]'s
//! connection or on one a store keeps itself ([`read_sqlite`],
//! [`write_sqlite`]).

use std::borrow::Cow;
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::error::SqlError;
use super::row::Row;
use super::tx::{Mode, Tx};
use super::value::Value;

/// Rewrites `$N` placeholders to SQLite's `?N`, outside string literals.
fn sqlite_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut in_literal = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A doubled quote inside a literal toggles twice: still inside.
            '\'' => in_literal = !in_literal,
            '$' if !in_literal && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Cow::Owned(out)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// Runs `f` on `conn` in the transaction `mode` asks for (a plain read in
/// none); a write commits if `f` returns `Ok`, anything else rolls back.
pub(super) fn run<T, E, F>(conn: &Mutex<Connection>, mode: Mode, f: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E>,
    E: From<SqlError>,
{
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    match mode {
        // Plain reads run outside a transaction, as before.
        Mode::Read => read_sqlite(&conn, f),
        Mode::Write => write_sqlite(&mut conn, f),
        Mode::Snapshot => {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)
                .map_err(SqlError::from)?;
            // A snapshot only reads: dropping its transaction rolls it back.
            f(&mut SqliteTx { conn: &tx })
        }
    }
}

/// Runs `f` on `conn` outside a transaction, for a store that keeps a
/// connection of its own rather than a [`super::Db`].
pub(crate) fn read_sqlite<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E>,
{
    f(&mut SqliteTx { conn })
}

/// Runs `f` on `conn` in an `IMMEDIATE` transaction (the write lock taken
/// up front), for a store that keeps a connection of its own rather than a
/// [`super::Db`]; commits if `f` returns `Ok`, rolls back otherwise.
pub(crate) fn write_sqlite<T, E, F>(conn: &mut Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E>,
    E: From<SqlError>,
{
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(SqlError::from)?;
    let out = f(&mut SqliteTx { conn: &tx })?;
    tx.commit().map_err(SqlError::from)?;
    Ok(out)
}

struct SqliteTx<'a> {
    conn: &'a Connection,
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let n = stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let mut stmt = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(_) => {
                        return Err(SqlError::Column(format!(
                            "column {i} holds a floating-point number"
                        )));
                    }
                    ValueRef::Text(t) => {
                        Value::Text(String::from_utf8(t.to_vec()).map_err(|_| {
                            SqlError::Column(format!("column {i} holds text that is not UTF-8"))
                        })?)
                    }
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row::new(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(
            sqlite_placeholders("SELECT $1, '$2', 'it''s $3', $10 FROM t WHERE a = $2"),
            "SELECT ?1, '$2', 'it''s $3', ?10 FROM t WHERE a = ?2"
        );
        assert_eq!(sqlite_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(sqlite_placeholders("SELECT '$' || $1"), "SELECT '$' || ?1");
    }
}
