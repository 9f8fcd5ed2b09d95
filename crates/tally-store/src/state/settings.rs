//! Settings: the `meta` table of key-value pairs (the issuer's origin,
//! markers such as `rows_sealed_at`). Setting one only if absent returns the
//! value in force, so that nodes starting at once agree on one.

use super::error::StateError;
use super::store::StateStore;
use crate::sql::args;

impl StateStore {
    /// Reads a setting.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let key = key.to_owned();
        self.db.read(move |tx| {
            Ok(tx
                .query_opt("SELECT value FROM meta WHERE key = $1", args![key])?
                .map(|r| r.text(0))
                .transpose()?)
        })
    }

    /// Writes a setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, value],
            )?;
            Ok(())
        })
    }

    /// Writes a setting unless it is already set; returns the value in force
    /// (so that nodes starting at once agree on one value).
    pub fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StateError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.db.write(move |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                args![key.clone(), value],
            )?;
            tx.query_one("SELECT value FROM meta WHERE key = $1", args![key])?
                .text(0)
                .map_err(Into::into)
        })
    }
}
