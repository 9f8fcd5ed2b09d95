//! The HTTP services of tally: issuer, gate decision endpoint, ledger API,
//! health and metrics, wired to the pure core and the store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounting;
pub mod admin;
pub mod app;
pub mod config;
pub mod contain;
pub mod datadir;
pub mod demo;
pub mod error;
pub mod external;
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
pub mod sessions;
pub mod ui;

pub use app::{App, router, serve, serve_with_gate};
pub use config::{Config, Overrides};
