//! Persistence for tally: the issuance ledger and operational state.
//!
//! The embedded backend is SQLite, in two files under the data directory:
//! `ledger.db` (written only by the ledger writer, so any other commit to it is
//! a tamper signal) and `state.db` (users, sealed keys, settings, written by the
//! server and by admin commands).
//!
//! A fleet of servers shares one PostgreSQL database instead: the ledger in
//! [`fleet`], the state in a schema of its own
//! ([`StateStore::connect_postgres`]), and the incidents in that schema too
//! ([`incidents::IncidentStore::connect_postgres`]). The state and the
//! incidents run the same statements on both engines through [`sql`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod fleet;
pub mod ledger;
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
