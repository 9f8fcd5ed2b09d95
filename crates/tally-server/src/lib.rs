//! The running server of tally: the issuer, the gate (decision endpoint and
//! reverse proxy), the ledger API, the admin API and the dashboard, wired to
//! the pure core, the stores and the incident machinery.
//!
//! * [`app`]: the shared state ([`App`]), which knows no handler;
//! * `http` (private): routes and handlers, the request's facts read once,
//!   the gate's decision over HTTP, the reverse proxy;
//! * [`issuance`]: the regular issuance process (mint, record durably,
//!   register, answer);
//! * [`keyring`]: key custody (data directory, master key, signing keys,
//!   PKCS#11, signature accounts, key lifecycle);
//! * [`contain`]: containment against the data directory (blocks,
//!   revocations, compromise), for the watch and for `tally incident contain`;
//! * [`config`]: `tally.toml`, environment and flags, validated;
//! * [`passwords`]: argon2id with bounded, reused memory;
//! * `serve`, `listener`, `metrics`, `blocking`, `external`, `error`
//!   (private): serving with limits, counters, store calls off the runtime,
//!   external issuers' key sets, the one error shape.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod app;
mod blocking;
pub mod config;
pub mod contain;
mod error;
mod external;
mod http;
pub mod issuance;
pub mod keyring;
mod listener;
mod metrics;
pub mod passwords;
mod serve;

pub use app::{App, StartError};
pub use config::{Config, Overrides};
pub use http::router;
pub use serve::{serve, serve_with_gate};
