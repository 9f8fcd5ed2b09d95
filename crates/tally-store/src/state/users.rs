//! Users: name, password hash (PHC string), role, and TOTP enrolment. A
//! user row is sealed ([`crate::rows`]) over its name, hash, role and TOTP
//! secret; every read that feeds a decision verifies it and refuses a row
//! that fails. Resetting a user takes the row back and ends its sessions.

use super::error::{StateError, unique_as};
use super::store::StateStore;
use crate::rows::{Field, RowMac};
use crate::sql::{SqlError, Tx, args};

/// A user row whose MAC verified.
pub(super) struct UserRow {
    pub(super) password_hash: String,
    pub(super) role: String,
    pub(super) totp_sealed: Option<Vec<u8>>,
    pub(super) totp_last_step: Option<i64>,
}

/// What a `users` row's MAC covers.
pub(super) fn user_fields<'a>(
    name: &'a str,
    password_hash: &'a str,
    role: &'a str,
    totp_sealed: Option<&'a [u8]>,
) -> [Field<'a>; 4] {
    [
        name.into(),
        password_hash.into(),
        role.into(),
        totp_sealed.into(),
    ]
}

/// The user `name`, if there is one and its MAC verifies.
pub(super) fn user_row(
    tx: &mut dyn Tx,
    mac: &RowMac,
    name: &str,
) -> Result<Option<UserRow>, StateError> {
    let Some(r) = tx.query_opt(
        "SELECT password_hash, role, totp_sealed, totp_last_step, mac FROM users WHERE name = $1",
        args![name],
    )?
    else {
        return Ok(None);
    };
    let tampered = || {
        StateError::Tampered(format!(
            "the user row {name:?} (take it back with `tally users reset {name} --password-stdin`)"
        ))
    };
    // A column of the wrong type was not written by tally either.
    let read = || -> Result<(UserRow, Option<Vec<u8>>), SqlError> {
        Ok((
            UserRow {
                password_hash: r.text(0)?,
                role: r.text(1)?,
                totp_sealed: r.opt_blob(2)?,
                totp_last_step: r.opt_i64(3)?,
            },
            r.opt_blob(4)?,
        ))
    };
    let (u, tag) = read().map_err(|_| tampered())?;
    let fields = user_fields(name, &u.password_hash, &u.role, u.totp_sealed.as_deref());
    if !mac.verify("users", &fields, tag.as_deref()) {
        return Err(tampered());
    }
    Ok(Some(u))
}

impl StateStore {
    /// Adds a user with an already-computed password hash (PHC string).
    pub fn add_user(&self, name: &str, password_hash: &str, now: i64) -> Result<(), StateError> {
        self.add_users(&[(name.to_owned(), password_hash.to_owned())], now)
    }

    /// Adds many users in one transaction (bulk import); all or none.
    pub fn add_users(&self, users: &[(String, String)], now: i64) -> Result<(), StateError> {
        let mac = self.mac()?;
        let users = users.to_vec();
        self.db.write(move |tx| {
            for (name, hash) in users {
                let tag = mac.tag("users", &user_fields(&name, &hash, "user", None));
                tx.execute(
                    "INSERT INTO users (name, password_hash, created_at, role, mac)
                     VALUES ($1, $2, $3, 'user', $4)",
                    args![name, hash, now, tag],
                )
                .map_err(|e| unique_as(e, StateError::UserExists))?;
            }
            Ok(())
        })
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(
            self.db
                .read(move |tx| Ok(user_row(tx, &mac, &name)?.map(|u| u.password_hash))),
        )
    }

    /// A user's role (`user` or `admin`), if the user exists.
    pub fn user_role(&self, name: &str) -> Result<Option<String>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(
            self.db
                .read(move |tx| Ok(user_row(tx, &mac, &name)?.map(|u| u.role))),
        )
    }

    /// Sets a user's role (`user` or `admin`); false if there is no such user.
    pub fn set_role(&self, name: &str, role: &str) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, role) = (name.to_owned(), role.to_owned());
        self.noticed(self.db.write(move |tx| {
            let Some(u) = user_row(tx, &mac, &name)? else {
                return Ok(false);
            };
            let tag = mac.tag(
                "users",
                &user_fields(&name, &u.password_hash, &role, u.totp_sealed.as_deref()),
            );
            Ok(tx.execute(
                "UPDATE users SET role = $2, mac = $3 WHERE name = $1",
                args![name, role, tag],
            )? == 1)
        }))
    }

    /// Gives a user a new password hash, the `user` role and no TOTP
    /// enrolment, sealed afresh, whatever the row held, and ends every
    /// session of the user (their refresh tokens stop working, their
    /// unexpired access tokens are revoked), in one transaction: how an
    /// operator holding the master key takes back an account someone else
    /// had the use of. False if there is no such user.
    pub fn reset_user(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.db.write(move |tx| {
            let tag = mac.tag("users", &user_fields(&name, &hash, "user", None));
            let found = tx.execute(
                "UPDATE users SET password_hash = $2, role = 'user', totp_sealed = NULL,
                     totp_last_step = NULL, mac = $3
                 WHERE name = $1",
                args![&name, hash, tag],
            )? == 1;
            if found {
                tx.execute(
                    "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                     SELECT t.token_id, t.token_sha256, t.expires_at, $2, 'user_reset'
                     FROM session_tokens t JOIN sessions s ON s.family = t.family
                     WHERE s.subject = $1 AND t.expires_at > $2
                     ON CONFLICT (token_id) DO NOTHING",
                    args![&name, now],
                )?;
                tx.execute(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'user_reset'
                     WHERE subject = $1 AND revoked_at IS NULL",
                    args![name, now],
                )?;
            }
            Ok(found)
        })
    }

    /// Removes a user and ends every session of theirs (refresh tokens stop
    /// working; unexpired access tokens issued in a session are revoked), in
    /// one transaction. False if there is no such user.
    pub fn remove_user(&self, name: &str, now: i64) -> Result<bool, StateError> {
        let name = name.to_owned();
        self.db.write(move |tx| {
            let found = tx.execute("DELETE FROM users WHERE name = $1", args![&name])? == 1;
            if found {
                tx.execute(
                    "INSERT INTO revocations (token_id, token_sha256, expires_at, revoked_at, reason)
                     SELECT t.token_id, t.token_sha256, t.expires_at, $2, 'user_removed'
                     FROM session_tokens t JOIN sessions s ON s.family = t.family
                     WHERE s.subject = $1 AND t.expires_at > $2
                     ON CONFLICT (token_id) DO NOTHING",
                    args![&name, now],
                )?;
                tx.execute(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'user_removed'
                     WHERE subject = $1 AND revoked_at IS NULL",
                    args![name, now],
                )?;
            }
            Ok(found)
        })
    }

    /// Names of all users.
    pub fn users(&self) -> Result<Vec<String>, StateError> {
        self.db.read(|tx| {
            tx.query("SELECT name FROM users ORDER BY name", &[])?
                .iter()
                .map(|r| Ok(r.text(0)?))
                .collect()
        })
    }
}
