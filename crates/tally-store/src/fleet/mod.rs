//! The fleet ledger on PostgreSQL: many nodes queue issuance records, one
//! sequencer at a time turns them into the Merkle ledger.
//!
//! * [`enqueue`] durably stores a record (one `INSERT`, committed
//!   before it returns): a node hands out a token only after that, and the
//!   token is honoured from then on, before it is sequenced.
//! * [`Sequencer`] holds the PostgreSQL advisory lock [`lock_key`] on
//!   its own connection. While it holds it, it assigns contiguous leaf indexes
//!   to queued records (in queue order), extends the tree and signs a
//!   checkpoint, all in one transaction on that connection. If the leader's
//!   connection dies, PostgreSQL releases the lock and rolls back its open
//!   transaction; another node's sequencer takes over, reloads the tree from
//!   `leaves`, checks it against the latest signed checkpoint, and continues.
//! * [`verify()`] recomputes the whole tree from the stored records and checks
//!   every checkpoint's signature and root.
//!
//! Every queued record carries an HMAC under a key derived from the master
//! key ([`RecordMac`]), which the database never sees: someone with write
//! access to PostgreSQL but not to the master key cannot slip a record into
//! the queue. Nodes refuse such a row at lookup, the follower reports it, and
//! the sequencer sets it aside in `rejected` instead of sequencing it.
//!
//! Tables live in one schema (default `tally`), so that tests and separate
//! deployments can share a database.
//!
//! # Modules
//! * `error`: [`FleetError`] and [`is_unavailable`];
//! * `record`: [`RecordMac`] and [`QueuedRecord`], the MAC check of a row;
//! * `schema`: the tables ([`migrate`]), [`lock_key`] and [`channel`];
//! * `connect`: connections ([`connect()`], [`connect_named`], …) and [`listen`];
//! * `queue`: [`enqueue`], [`lookup`], [`since`], [`backlog`], [`leaf_index`];
//! * `roster`: nodes' heartbeats ([`heartbeat`], [`nodes`]) and [`lock_holder`];
//! * `sequencer`: the [`Sequencer`];
//! * `verify`: [`verify()`] and the leaf check the follower shares;
//! * [`node`]: one node's view of the fleet ledger, [`node::FleetLedger`].

pub mod node;

mod connect;
mod error;
mod queue;
mod record;
mod roster;
mod schema;
mod sequencer;
mod verify;

pub use connect::{REQUEST_PATH_TIMEOUT, connect, connect_for, connect_named, connect_to, listen};
pub use error::{FleetError, is_unavailable};
pub use queue::{FollowedRow, backlog, enqueue, leaf_index, lookup, since};
pub use record::{QueuedRecord, RecordMac};
pub use roster::{NodeRow, SEQUENCER_APP, heartbeat, lock_holder, nodes};
pub use schema::{SEQUENCER_LOCK, channel, lock_key, migrate, migrate_with};
pub use sequencer::{Rejected, Sequencer, Step};
pub use verify::{FleetReport, latest_checkpoint, verify};
pub(crate) use verify::{LEAF_COLUMNS, check_leaf};
