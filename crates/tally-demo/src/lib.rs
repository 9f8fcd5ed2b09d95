//! `tally demo`: the breach replayed against a small shop, twice.
//!
//! A shop API (profiles, addresses, order histories of N synthetic customers)
//! verifies tokens the way the breached company did: by signature only. It
//! sits behind tally's gate. Customers log in through tally's issuer and
//! browse; then an insider who kept a copy of the signing key mints tokens for
//! real customer ids and for member ids that do not exist, and scrapes every
//! record as fast as the machine allows.
//!
//! * (a) the gate in `monitor` mode: tally decides and records every request
//!   but lets it through, so the shop's signature check is all that stands in
//!   the way (what the breached company had);
//! * (b) the gate in `enforce` mode.
//!
//! Every figure comes from the real code paths: verdict counters of the gate
//! (`/metrics`), detections and incidents from the incident store, exposed
//! records from the incident's report over the access log (a request exposed
//! data when the gate let it through and the shop answered 200). The demo
//! keeps no tally of its own beyond what it sent and how long it waited.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod options;
mod run;
mod shop;

pub use options::{Options, Phase, Progress};
pub use run::phase;
pub use shop::customer_id;
