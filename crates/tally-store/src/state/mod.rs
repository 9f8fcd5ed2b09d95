//! Operational state: users, signing keys (sealed), sessions, and settings.
//!
//! The state lives in SQLite (`state.db`, one server) or in a PostgreSQL
//! schema shared by a fleet of servers ([`StateStore::connect_postgres`]).
//! Both run the same statements through [`crate::sql`]; every change is one
//! transaction serialised with the other writers, so read-modify-write
//! methods such as [`StateStore::use_refresh_token`] stay atomic across
//! nodes.
//!
//! Private key material is stored only sealed under the master key (see
//! `tally_core::seal`); this module never sees it in the clear.
//!
//! # Modules
//! Each kind of row has a module, with its types and an `impl StateStore`
//! block of its own:
//! * `store`: the [`StateStore`] handle (opening, the row key, the tamper
//!   hook, [`StateStore::data_version`]);
//! * `error`: [`StateError`];
//! * `schema`: both engines' migrations and [`change_channel`];
//! * `seal`: installing the row key and adopting rows from before seals;
//! * `settings`: the `meta` settings;
//! * `users` and `totp`: users, their roles and TOTP enrolment
//!   ([`TotpEnrolment`]);
//! * `keys` and `custodians`: signing keys ([`KeyRow`], [`KeyPurpose`],
//!   [`KeyState`]), the key audit log ([`KeyEvent`]) and custodians;
//! * `signatures`: signature counts and forgery sightings per key;
//! * `revocations`: revoked tokens ([`Revocation`]);
//! * `blocks`: blocks ([`BlockRow`]);
//! * `throttle`: shared login throttling and known addresses;
//! * `sessions`: sessions ([`Session`]), refresh tokens ([`RefreshUse`]) and
//!   the access tokens of a session;
//! * `clients`: API clients.

mod blocks;
mod clients;
mod custodians;
mod error;
mod keys;
mod revocations;
mod schema;
mod seal;
mod sessions;
mod settings;
mod signatures;
mod store;
mod throttle;
mod totp;
mod users;

#[cfg(test)]
mod tests;

pub use blocks::BlockRow;
pub use error::StateError;
pub use keys::{KeyEvent, KeyPurpose, KeyRow, KeyState};
pub use revocations::Revocation;
pub use schema::change_channel;
pub use sessions::{RefreshUse, Session};
pub use store::StateStore;
pub use totp::TotpEnrolment;
