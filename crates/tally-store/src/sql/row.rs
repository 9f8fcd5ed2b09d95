//! [`Row`]: one result row, read column by column through getters that
//! fail ([`SqlError::Column`]) rather than panic on a missing column or a
//! value of another kind than expected.

use super::error::SqlError;
use super::value::Value;

/// One result row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of these values.
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Column `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i)
    }

    fn column(&self, i: usize) -> Result<&Value, SqlError> {
        self.values.get(i).ok_or_else(|| {
            SqlError::Column(format!(
                "column {i} requested from a row of {}",
                self.values.len()
            ))
        })
    }

    fn mismatch(&self, i: usize, wanted: &str) -> SqlError {
        let found = self.values.get(i).map_or("nothing", Value::kind);
        SqlError::Column(format!(
            "column {i} holds {found} where {wanted} was expected"
        ))
    }

    /// Column `i` as an integer.
    pub fn i64(&self, i: usize) -> Result<i64, SqlError> {
        match self.column(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    /// Column `i` as an integer or `NULL`.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(self.mismatch(i, "an integer or NULL")),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String, SqlError> {
        match self.column(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    /// Column `i` as text or `NULL`.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            _ => Err(self.mismatch(i, "text or NULL")),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, SqlError> {
        match self.column(i)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "bytes")),
        }
    }

    /// Column `i` as bytes or `NULL`.
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, SqlError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Blob(v) => Ok(Some(v.clone())),
            _ => Err(self.mismatch(i, "bytes or NULL")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_refuse_wrong_types_and_missing_columns() {
        let r = Row::new(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Blob(vec![1]),
        ]);
        assert_eq!(r.i64(0).unwrap(), 7);
        assert_eq!(r.opt_i64(1).unwrap(), None);
        assert_eq!(r.opt_text(1).unwrap(), None);
        assert_eq!(r.opt_blob(1).unwrap(), None);
        assert_eq!(r.text(2).unwrap(), "x");
        assert_eq!(r.blob(3).unwrap(), vec![1]);
        assert!(matches!(r.i64(1), Err(SqlError::Column(_))));
        assert!(matches!(r.text(0), Err(SqlError::Column(_))));
        assert!(matches!(r.blob(2), Err(SqlError::Column(_))));
        assert!(matches!(r.i64(9), Err(SqlError::Column(_))));
    }
}
