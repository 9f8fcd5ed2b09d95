//! The running server's shared state ([`App`]): the data directory, the
//! ledger, the gate, the key ring, the detector's watch, and what every
//! handler reads. This module knows no handler and no route.

mod respond;
mod state;

pub use state::{App, StartError};
