//! Persistence for tally: the issuance ledger and operational state.
//!
//! The embedded backend is SQLite, in two files under the data directory:
//! `ledger.db` (written only by the ledger writer, so any other commit to it is
//! a tamper signal) and `state.db` (users, sealed keys, settings, written by the
//! server and by admin commands).
//!
//! A fleet of servers shares one PostgreSQL database instead: the ledger in
//! [`fleet`], the state in a schema of its own
//! ([`StateStore::connect_postgres`]). The state (and the incident store of
//! `tally-incident`) run the same statements on both engines through [`sql`].
//!
//! # Modules
//! * [`ledger`]: the embedded ledger on SQLite ([`Ledger`]): its writer,
//!   verification ([`verify_ledger`]) and head witness, and the types every
//!   ledger answers with ([`LedgerError`], [`InclusionProof`]);
//! * [`fleet`]: the fleet ledger on PostgreSQL (queue, sequencer,
//!   verification), and in [`fleet::node`] one node's handle on it;
//! * [`store`]: the [`LedgerStore`] trait that both ledgers implement, and
//!   the functions the server drives it through;
//! * [`state`]: the [`StateStore`]: users, keys, custodians, revocations,
//!   blocks, throttling, sessions, clients and settings, on either engine;
//! * [`rows`]: the MAC that seals the state rows granting access
//!   ([`RowMac`]);
//! * [`sql`]: the layer that runs the same statements on SQLite and
//!   PostgreSQL;
//! * [`migrate`]: the one versioned migration mechanism of every store's
//!   schema (state, ledger, fleet, and `tally-incident`'s stores), on
//!   both engines;
//! * [`pg`]: connecting to PostgreSQL (URLs, TLS);
//! * [`clock`]: the one [`clock::Clock`] (system, or fixed in tests).
//!
//! Each module with submodules keeps them private and re-exports what it
//! offers, so every path above is the one callers use; no two files import
//! each other, directly or through a chain.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod clock;
pub mod fleet;
pub mod ledger;
pub mod migrate;
pub mod pg;
pub mod rows;
pub mod sql;
pub mod state;
pub mod store;

pub use ledger::{InclusionProof, Ledger, LedgerError, LocatedRecord, VerifyReport, verify_ledger};
pub use rows::RowMac;
pub use state::{
    BlockRow, KeyEvent, KeyPurpose, KeyRow, KeyState, RefreshUse, Revocation, Session, StateError,
    StateStore,
};
pub use store::LedgerStore;

/// File name of the ledger database inside a data directory.
pub const LEDGER_FILE: &str = "ledger.db";
/// File name of the state database inside a data directory.
pub const STATE_FILE: &str = "state.db";
/// File name of the master key inside a data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
