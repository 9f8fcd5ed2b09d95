//! Row seals over the state's lifetime: installing the row key
//! ([`StateStore::seal_rows`], which sets the `rows_sealed_at` marker on a
//! new store, and refuses a store whose marker has gone once the caller has
//! seen it sealed), listing rows from before seals, and sealing them on an
//! operator's say. What each sealed
//! row's MAC covers is defined beside its table's methods.

use std::sync::Arc;

use super::clients::client_fields;
use super::error::StateError;
use super::sessions::{SESSION_COLUMNS, refresh_fields, session_at, session_fields};
use super::store::{StateStore, count};
use super::users::user_fields;
use crate::rows::RowMac;
use crate::sql::args;

/// The tables whose rows carry a MAC.
const SEALED_TABLES: [&str; 4] = ["users", "clients", "sessions", "refresh_tokens"];

impl StateStore {
    /// Installs the key that seals the rows granting access (users, clients,
    /// sessions, refresh tokens; see [`crate::rows`]); until then the
    /// methods that read or write them answer [`StateError::Unsealed`].
    /// Call it once the master key is known to be the right one.
    ///
    /// A store whose marker `rows_sealed_at` is set is ready. Without the
    /// marker: a store with no unsealed row (a new one) gets the marker; one
    /// holding rows from before seals answers [`StateError::Unadopted`]
    /// (the key is installed all the same, so that
    /// [`StateStore::unsealed_rows`] and [`StateStore::adopt_unsealed`]
    /// work). Rows are never sealed without an operator's say: someone who
    /// can write to the database could delete the marker and clear the
    /// MACs to have rows of his own sealed. A caller that has seen this
    /// store sealed before (it keeps a witness of its own) passes
    /// `seen_sealed`, and a missing marker is then [`StateError::Tampered`].
    pub fn seal_rows(&self, mac: RowMac, now: i64, seen_sealed: bool) -> Result<(), StateError> {
        self.rows.get_or_init(|| Arc::new(mac));
        self.db.write(move |tx| {
            if tx
                .query_opt("SELECT value FROM meta WHERE key = 'rows_sealed_at'", &[])?
                .is_some()
            {
                return Ok(());
            }
            if seen_sealed {
                return Err(StateError::Tampered(
                    "the state store's seal marker (meta rows_sealed_at) is gone though this node has \
                     seen the store sealed: someone made it look unsealed so that rows of his own \
                     would be sealed. Nothing was sealed. If a backup from before row seals was \
                     restored on purpose, remove this node's rows.sealed file and start again"
                        .into(),
                ));
            }
            let mut rows = 0;
            for table in SEALED_TABLES {
                rows += tx
                    .query_one(
                        &format!("SELECT COUNT(*) FROM {table} WHERE mac IS NULL"),
                        &[],
                    )?
                    .i64(0)?;
            }
            if rows > 0 {
                return Err(StateError::Unadopted {
                    rows: usize::try_from(rows).unwrap_or(usize::MAX),
                });
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('rows_sealed_at', $1)",
                args![now.to_string()],
            )?;
            Ok(())
        })
    }

    /// The rows without a MAC, as `(table, what)`: a user with its role, a
    /// client, a session with its subject, a refresh token with its session.
    pub fn unsealed_rows(&self) -> Result<Vec<(String, String)>, StateError> {
        self.db.read(|tx| {
            let mut out = Vec::new();
            for r in tx.query(
                "SELECT name, role FROM users WHERE mac IS NULL ORDER BY name",
                &[],
            )? {
                out.push((
                    "users".into(),
                    format!("{} (role {})", r.text(0)?, r.text(1)?),
                ));
            }
            for r in tx.query("SELECT id FROM clients WHERE mac IS NULL ORDER BY id", &[])? {
                out.push(("clients".into(), r.text(0)?));
            }
            for r in tx.query(
                "SELECT family, subject FROM sessions WHERE mac IS NULL ORDER BY family",
                &[],
            )? {
                out.push((
                    "sessions".into(),
                    format!("{} (subject {})", r.text(0)?, r.text(1)?),
                ));
            }
            for r in tx.query(
                "SELECT family FROM refresh_tokens WHERE mac IS NULL ORDER BY family",
                &[],
            )? {
                out.push((
                    "refresh_tokens".into(),
                    format!("a token of session {}", r.text(0)?),
                ));
            }
            Ok(out)
        })
    }

    /// Seals every row without a MAC as it stands and sets the marker, on an
    /// operator's say (after reading [`StateStore::unsealed_rows`]): the
    /// step that upgrades a store from before row seals. Returns how many
    /// rows were sealed.
    pub fn adopt_unsealed(&self, now: i64) -> Result<usize, StateError> {
        let mac = self.mac()?;
        self.db.write(move |tx| {
            let mut sealed = 0u64;
            for r in tx.query(
                "SELECT name, password_hash, role, totp_sealed FROM users WHERE mac IS NULL",
                &[],
            )? {
                let (name, hash, role, totp) = (r.text(0)?, r.text(1)?, r.text(2)?, r.opt_blob(3)?);
                let tag = mac.tag("users", &user_fields(&name, &hash, &role, totp.as_deref()));
                sealed += tx.execute(
                    "UPDATE users SET mac = $2 WHERE name = $1",
                    args![name, tag],
                )?;
            }
            for r in tx.query(
                "SELECT id, secret_hash, created_at FROM clients WHERE mac IS NULL",
                &[],
            )? {
                let (id, hash, at) = (r.text(0)?, r.text(1)?, r.i64(2)?);
                let tag = mac.tag("clients", &client_fields(&id, &hash, at));
                sealed +=
                    tx.execute("UPDATE clients SET mac = $2 WHERE id = $1", args![id, tag])?;
            }
            for r in tx.query(
                &format!(
                    "SELECT {SESSION_COLUMNS}, s.created_at FROM sessions s WHERE s.mac IS NULL"
                ),
                &[],
            )? {
                let session = session_at(&r, 0)?;
                let tag = mac.tag("sessions", &session_fields(&session, r.i64(6)?));
                sealed += tx.execute(
                    "UPDATE sessions SET mac = $2 WHERE family = $1",
                    args![session.family, tag],
                )?;
            }
            for r in tx.query(
                "SELECT hash, family, created_at, expires_at FROM refresh_tokens WHERE mac IS NULL",
                &[],
            )? {
                let (hash, family) = (r.blob(0)?, r.text(1)?);
                let tag = mac.tag(
                    "refresh_tokens",
                    &refresh_fields(&hash, &family, r.i64(2)?, r.i64(3)?),
                );
                sealed += tx.execute(
                    "UPDATE refresh_tokens SET mac = $2 WHERE hash = $1",
                    args![hash, tag],
                )?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('rows_sealed_at', $1)
                 ON CONFLICT (key) DO NOTHING",
                args![now.to_string()],
            )?;
            Ok(count(sealed))
        })
    }
}
