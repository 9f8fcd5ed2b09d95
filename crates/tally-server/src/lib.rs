//! The HTTP services of tally: issuer, gate decision endpoint, ledger API,
//! health and metrics, wired to the pure core and the store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod accounting;
pub mod admin;
pub mod alerts;
pub mod app;
pub mod config;
pub mod datadir;
pub mod demo;
pub mod error;
pub mod external;
pub mod fleet_counts;
pub mod gate_http;
pub mod guard;
pub mod issuer;
pub mod keys;
pub mod ledger_http;
pub mod lifecycle;
pub mod listener;
pub mod meta_http;
pub mod metrics;
pub mod passwords;
pub mod pkcs11;
pub mod proxy;
pub mod redis;
pub mod report;
pub mod sessions;
pub mod timefmt;
pub mod ui;
pub mod watch;

pub use app::{App, router, serve, serve_with_gate};
pub use config::{Config, Overrides};
