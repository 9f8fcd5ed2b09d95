//! API clients (for introspection): an id and an argon2id secret hash,
//! sealed together with the creation time; a row that fails its MAC is
//! refused.

use super::error::{StateError, unique_as};
use super::store::StateStore;
use crate::rows::Field;
use crate::sql::{SqlError, args};

/// What a `clients` row's MAC covers.
pub(super) fn client_fields<'a>(
    id: &'a str,
    secret_hash: &'a str,
    created_at: i64,
) -> [Field<'a>; 3] {
    [id.into(), secret_hash.into(), created_at.into()]
}

impl StateStore {
    /// Registers an API client (for introspection) with an argon2id secret hash.
    pub fn add_client(&self, id: &str, secret_hash: &str, now: i64) -> Result<(), StateError> {
        let mac = self.mac()?;
        let (id, hash) = (id.to_owned(), secret_hash.to_owned());
        self.db.write(move |tx| {
            let tag = mac.tag("clients", &client_fields(&id, &hash, now));
            tx.execute(
                "INSERT INTO clients (id, secret_hash, created_at, mac) VALUES ($1, $2, $3, $4)",
                args![id, hash, now, tag],
            )
            .map_err(|e| unique_as(e, StateError::ClientExists))?;
            Ok(())
        })
    }

    /// Every client: id and when it was registered, by id.
    pub fn clients(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.db.read(|tx| {
            tx.query("SELECT id, created_at FROM clients ORDER BY id", &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.i64(1)?)))
                .collect()
        })
    }

    /// Removes a client: it can no longer authenticate. False if there is no
    /// such client.
    pub fn remove_client(&self, id: &str) -> Result<bool, StateError> {
        let id = id.to_owned();
        self.db
            .write(move |tx| Ok(tx.execute("DELETE FROM clients WHERE id = $1", args![id])? == 1))
    }

    /// The secret hash of a client.
    pub fn client_secret_hash(&self, id: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let id = id.to_owned();
        self.noticed(self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                "SELECT secret_hash, created_at, mac FROM clients WHERE id = $1",
                args![&id],
            )?
            else {
                return Ok(None);
            };
            let tampered = || StateError::Tampered(format!("the client row {id:?}"));
            let read = || -> Result<_, SqlError> { Ok((r.text(0)?, r.i64(1)?, r.opt_blob(2)?)) };
            let (hash, at, tag) = read().map_err(|_| tampered())?;
            if !mac.verify("clients", &client_fields(&id, &hash, at), tag.as_deref()) {
                return Err(tampered());
            }
            Ok(Some(hash))
        }))
    }
}
