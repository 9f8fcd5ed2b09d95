//! Detection and response: what tally does once a token has been refused or
//! a pattern of access looks wrong.
//!
//! * [`detect`]: the detector, pure (no I/O, no clock): observations and
//!   signals in, [`detect::Detection`]s out, with the containment it suggests;
//! * [`sketch`]: the bounded-memory distinct counters the detector uses;
//! * [`clocks`]: reporting regimes and their legal clocks, pure;
//! * [`facts`]: the facts about an incident that decide which clocks run;
//! * [`store`]: detections and incidents, with a hash-chained audit table and
//!   the alert outbox ([`store::IncidentStore`], SQLite or PostgreSQL);
//! * [`access`]: the hash-chained access log of every gate decision, with
//!   retention and legal holds ([`access::AccessLog`]);
//! * [`report`]: what an incident did, from the access log: affected
//!   customers, requests per minute, the regulator-ready report;
//! * [`act`]: responders acting on an incident (acknowledge, note,
//!   contain), for the command line and the dashboard alike;
//! * [`watch`]: the detector at work: decisions and signals in, incidents
//!   opened, containment taken through the server's [`watch::Responder`],
//!   reminders as the legal clocks run;
//! * [`alerts`]: the durable alert outbox: webhooks and signed security
//!   event tokens (CAEP/RISC), delivered at least once;
//! * [`fleet_counts`]: distinct counts across a fleet, in Redis
//!   HyperLogLogs, over the small client in [`redis`];
//! * [`timefmt`]: UTC formatting for people;
//! * `chain` (private): the SHA-256 hash chain and head witness the access
//!   log and the incident audit share.
//!
//! The gate and the ledger do not depend on this crate; the server feeds it
//! every decision and acts on what it finds.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod access;
pub mod act;
pub mod alerts;
mod chain;
pub mod clocks;
pub mod detect;
pub mod facts;
pub mod fleet_counts;
pub mod redis;
pub mod report;
pub mod sketch;
pub mod store;
pub mod timefmt;
pub mod watch;
