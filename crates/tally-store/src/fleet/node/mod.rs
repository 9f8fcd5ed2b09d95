//! One node's view of the fleet ledger: [`FleetLedger`].
//!
//! A node runs four kinds of threads, each with its own PostgreSQL
//! connection (the sync client must never run on an async runtime's worker):
//!
//! * the **writer** drains appends into one transaction per batch (group
//!   commit) and answers each caller once its record is durable;
//! * **readers** answer lookups (a registry miss asks PostgreSQL before a
//!   token is called forged);
//! * the **follower** LISTENs for new rows, catches up by queue sequence
//!   number (and re-asks for numbers it saw skipped, which a transaction
//!   committing late leaves behind), hands every authentic record to the
//!   node's registry, and extends a verified copy of the Merkle tree to the
//!   latest signed checkpoint;
//! * the **sequencer** competes for the advisory lock; the leader sequences.
//!
//! Reachability is tracked from every round trip: [`FleetLedger::is_reachable`]
//! turns false at the first failure and true again at the next success, with
//! no restart.
//!
//! # Modules
//! * `config`: [`FleetConfig`], [`OnRecord`], [`OnTamper`];
//! * `ledger`: the [`FleetLedger`] handle and its `LedgerStore` impl;
//! * `shared`: what the handle and the threads share, and their helpers;
//! * `client`: a thread's connection slot (reconnecting, tracking reachability);
//! * `workers`: the writer and reader threads;
//! * `follower`: the follower thread;
//! * `sequencer`: the sequencer thread ([`LEADER_POLL`]).

mod client;
mod config;
mod follower;
mod ledger;
mod sequencer;
mod shared;
mod workers;

pub use config::{FleetConfig, OnRecord, OnTamper};
pub use ledger::FleetLedger;
pub use sequencer::LEADER_POLL;
