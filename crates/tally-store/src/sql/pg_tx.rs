//! A PostgreSQL transaction as a [`Tx`]: statements prepared once per
//! connection (and afresh after any failure, as another node may have
//! changed the schema), parameters converted to the types the server
//! inferred, and rows read back as [`Value`]s; and [`write_postgres`], one
//! such transaction under an advisory lock on a connection a store keeps
//! itself (the fleet's).

use std::collections::HashMap;

use postgres::types::{FromSql, ToSql, Type};
use postgres::{Client, Statement};

use super::error::SqlError;
use super::row::Row;
use super::tx::Tx;
use super::value::Value;

/// A transaction on one of the pool's connections.
pub(super) struct PgTx<'a> {
    pub(super) client: &'a mut Client,
    pub(super) statements: &'a mut HashMap<String, Statement>,
    /// Whether a statement failed in this transaction.
    pub(super) failed: bool,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, SqlError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Converts `params` to the types the server inferred for `stmt`.
fn pg_params(
    stmt: &Statement,
    params: &[Value],
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, SqlError> {
    let types = stmt.params();
    if types.len() != params.len() {
        return Err(SqlError::Database(format!(
            "the statement takes {} parameters, {} were given",
            types.len(),
            params.len()
        )));
    }
    let mut out: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(params.len());
    for (i, (ty, v)) in types.iter().zip(params).enumerate() {
        let wrong = || {
            SqlError::Database(format!(
                "parameter ${} is {} but the statement wants {}",
                i + 1,
                v.kind(),
                ty.name()
            ))
        };
        out.push(match (v, ty) {
            (Value::Null, &Type::INT8) => Box::new(None::<i64>),
            (Value::Null, &Type::INT4) => Box::new(None::<i32>),
            (Value::Null, &Type::INT2) => Box::new(None::<i16>),
            (Value::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
            (Value::Null, &Type::BOOL) => Box::new(None::<bool>),
            (Value::Null, _) => Box::new(None::<String>),
            (Value::Int(n), &Type::INT8) => Box::new(*n),
            (Value::Int(n), &Type::INT4) => Box::new(i32::try_from(*n).map_err(|_| wrong())?),
            (Value::Int(n), &Type::INT2) => Box::new(i16::try_from(*n).map_err(|_| wrong())?),
            (Value::Text(s), t) if <String as ToSql>::accepts(t) => Box::new(s.clone()),
            (Value::Blob(b), &Type::BYTEA) => Box::new(b.clone()),
            _ => return Err(wrong()),
        });
    }
    Ok(out)
}

fn pg_row(r: &postgres::Row) -> Result<Row, SqlError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let ty = c.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::VOID => None,
            _ if <String as FromSql>::accepts(ty) => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => {
                return Err(SqlError::Column(format!(
                    "column {} has type {}, which this layer does not read",
                    c.name(),
                    ty.name()
                )));
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row::new(values))
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PgTx<'_> {
    /// Notes a failure: a schema change by another node can invalidate
    /// prepared statements, so they are prepared afresh after any failure.
    fn noting<T>(&mut self, r: Result<T, SqlError>) -> Result<T, SqlError> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let r = self.statement(sql).and_then(|stmt| {
            let params = pg_params(&stmt, params)?;
            Ok(self.client.execute(&stmt, &refs(&params))?)
        });
        self.noting(r)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let r = self.statement(sql).and_then(|stmt| {
            let params = pg_params(&stmt, params)?;
            self.client
                .query(&stmt, &refs(&params))?
                .iter()
                .map(pg_row)
                .collect()
        });
        self.noting(r)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        let r = self.client.batch_execute(sql).map_err(SqlError::from);
        self.noting(r)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// Runs `f` in one transaction on `client` (a connection the caller keeps,
/// as the fleet does, rather than a [`super::Db`]'s), after taking the
/// transaction-scoped advisory lock `lock_key`; commits if `f` returns
/// `Ok`, rolls back otherwise.
pub(crate) fn write_postgres<T, E, F>(client: &mut Client, lock_key: i64, f: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E>,
    E: From<SqlError>,
{
    client.batch_execute("BEGIN").map_err(SqlError::from)?;
    let mut statements = HashMap::new();
    let mut tx = PgTx {
        client,
        statements: &mut statements,
        failed: false,
    };
    let out = tx
        .execute("SELECT pg_advisory_xact_lock($1)", &[Value::Int(lock_key)])
        .map_err(E::from)
        .and_then(|_| f(&mut tx));
    let end = match &out {
        Ok(_) => tx.client.batch_execute("COMMIT"),
        Err(_) => tx.client.batch_execute("ROLLBACK"),
    };
    match (out, end) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(SqlError::from(e).into()),
        (Err(e), _) => Err(e),
    }
}
