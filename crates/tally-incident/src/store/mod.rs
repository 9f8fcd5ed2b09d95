//! Detections and incidents, with every incident action also written, in the
//! same transaction, to a hash-chained audit table
//! (`hash = SHA-256(prev || seq || at || body)`) whose head is witnessed
//! outside the database. [`IncidentStore::verify_audit`] recomputes the
//! chain, checks that the witnessed head is still in it, that timeline and
//! audit entries correspond one to one, and that every incident's state,
//! awareness time, materiality and reports to authorities are what its
//! audited timeline says: editing, deleting or inserting any of them is
//! detected.
//!
//! Detections of severity high or critical open an incident, or join the one
//! that is not yet closed: one attack is one incident, however many rules it
//! trips. The incident's `aware_at` is its first such detection's first
//! sighting, the moment the legal clocks start.
//!
//! # Engines
//!
//! The store lives in SQLite (`incidents.db` in a data directory, one server:
//! [`IncidentStore::open`]) or in a PostgreSQL schema shared by a fleet of
//! servers ([`IncidentStore::connect_postgres`]). Both run the same
//! statements through [`tally_store::sql`]; the tables are those of `incidents.db`
//! (`incidents`, `detections`, `timeline`, `audit`, `submissions`, `outbox`,
//! `reminders`), which do not clash with the state store's in the same
//! schema. The schema is versioned through [`tally_store::migrate`]:
//! `PRAGMA user_version` of `incidents.db`, the `incidents` row of
//! `schema_migrations` in PostgreSQL.
//! Every change is one transaction; on PostgreSQL the incident store's
//! writers take an advisory lock of their own ([`tally_store::sql::incident_lock_key`]),
//! so the writers of all nodes are serialised with each other but never wait
//! for the state store's.
//!
//! # A fleet
//!
//! * **One attack, one incident.** Each server's detection book merges its
//!   own findings and hands its cumulative view of a detection to
//!   [`IncidentStore::record`] again and again. The stored detection merges
//!   the views of every server ([`Detection::absorb`](crate::detect::Detection::absorb): earliest first
//!   sighting, latest last sighting, highest severity, actors and evidence
//!   within their caps), and its count is the fleet-wide total: each handle
//!   remembers, per detection, how much of the caller's count it has already
//!   stored (a detection new to the book starts from zero; one restored from
//!   [`IncidentStore::detections_since`] from the count returned), and adds
//!   only the difference. Racing nodes open or join an incident exactly once,
//!   as the write lock serialises them.
//! * **One audit chain.** Appends from every node form one chain, serialised
//!   by the write lock.
//! * **Witnessed heads.** With SQLite the head is the file `incidents.head`
//!   beside the database. With PostgreSQL each node keeps, in a directory of
//!   its own (`incidents-<schema>.head`), the highest `(seq, hash)` it has
//!   seen: written after each of its own commits and after each successful
//!   verification, never moved backwards. Verification fails unless the
//!   stored chain still holds that exact entry, so cutting off or rewriting
//!   what a node has witnessed is detected by that node, whatever the
//!   database now says. Entries no node has witnessed yet can only be
//!   checked for consistency.
//! * **Alert outbox.** On PostgreSQL [`IncidentStore::due`] claims what it
//!   returns for [`OUTBOX_LEASE_SECS`]: no other node gets those items, nor
//!   any other of the same sink (deliveries to a sink stay in order), until
//!   they are settled ([`IncidentStore::delivered`],
//!   [`IncidentStore::attempt_failed`]) or the lease runs out, after which a
//!   node that died mid-round is taken over. Delivery is at least once:
//!   receivers deduplicate on the item id. With SQLite (one server)
//!   nothing is claimed.
//!
//! # Inside
//!
//! `schema` (the tables of both engines, their versions and the
//! append-only guards), `handle` (opening or connecting, witnessing the audit head),
//! `detections` (recording detections, opening and joining incidents),
//! `incidents` (incidents, their timelines, states, submissions and
//! reminders), `audit` (appending to the audit chain), `verify` (checking
//! it), `outbox` (the alert outbox) and `error`.

mod audit;
mod detections;
mod error;
mod handle;
mod incidents;
mod outbox;
mod schema;
mod verify;

pub use detections::{Recorded, StoredDetection};
pub use error::IncidentError;
pub use handle::IncidentStore;
pub use incidents::{Incident, Submission, TimelineEntry};
pub use outbox::{OUTBOX_LEASE_SECS, OutboxItem};
