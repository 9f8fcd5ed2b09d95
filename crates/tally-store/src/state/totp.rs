//! TOTP enrolment: a user's secret, stored sealed under the master key (and
//! covered by the user row's MAC), and the last time step accepted, moved
//! forward atomically so that one code is accepted once.

use super::error::StateError;
use super::store::StateStore;
use super::users::{user_fields, user_row};
use crate::sql::args;

/// A user's sealed TOTP secret and the last accepted time step.
pub type TotpEnrolment = (Vec<u8>, Option<i64>);

impl StateStore {
    /// Enrols (or re-enrols) a user in TOTP with a sealed secret.
    pub fn set_totp(&self, name: &str, sealed: &[u8]) -> Result<bool, StateError> {
        let mac = self.mac()?;
        let (name, sealed) = (name.to_owned(), sealed.to_vec());
        self.noticed(self.db.write(move |tx| {
            let Some(u) = user_row(tx, &mac, &name)? else {
                return Ok(false);
            };
            let tag = mac.tag(
                "users",
                &user_fields(&name, &u.password_hash, &u.role, Some(&sealed)),
            );
            let n = tx.execute(
                "UPDATE users SET totp_sealed = $2, totp_last_step = NULL, mac = $3 WHERE name = $1",
                args![name, sealed, tag],
            )?;
            Ok(n == 1)
        }))
    }

    /// A user's sealed TOTP secret and the last time step accepted, if enrolled.
    pub fn totp(&self, name: &str) -> Result<Option<TotpEnrolment>, StateError> {
        let mac = self.mac()?;
        let name = name.to_owned();
        self.noticed(self.db.read(move |tx| {
            Ok(user_row(tx, &mac, &name)?
                .and_then(|u| u.totp_sealed.map(|t| (t, u.totp_last_step))))
        }))
    }

    /// Records that time step `step` was used, only if it is later than the
    /// last one (so one code is accepted once, even by concurrent logins).
    pub fn use_totp_step(&self, name: &str, step: i64) -> Result<bool, StateError> {
        let name = name.to_owned();
        self.db.write(move |tx| {
            let n = tx.execute(
                "UPDATE users SET totp_last_step = $2
                 WHERE name = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
                args![name, step],
            )?;
            Ok(n == 1)
        })
    }
}
