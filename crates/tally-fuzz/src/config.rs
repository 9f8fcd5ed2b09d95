//! Configuration parsing ([`tally_server::config::Config::from_toml`]).
//!
//! A `rediss://` storage URL names PEM files that are read while the
//! configuration loads; inputs naming one are skipped, so that the fuzzer
//! reads no file (a path like `/dev/zero` would be a test of the machine,
//! not of the parser).

use tally_core::target::is_route_prefix;
use tally_server::config::{Config, Overrides};

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("rediss") {
        return;
    }
    let Ok(config) = Config::from_toml(text, Overrides::default()) else {
        return;
    };
    assert!((1..=86_400).contains(&config.token_ttl_secs));
    assert!(!config.issuer.is_empty() && !config.audience.is_empty());
    // No configuration lets a password shorter than NIST's 8 characters be
    // set, nor asks for one that cannot fit in the longest accepted.
    assert!(
        (tally_server::passwords::LEAST_MIN_CHARS..=tally_server::passwords::MOST_MIN_CHARS)
            .contains(&config.passwords.min_chars)
    );
    if let Some(gate) = &config.gate {
        for route in &gate.routes {
            assert!(
                is_route_prefix(&route.prefix),
                "route prefix {:?} is not in normal form",
                route.prefix
            );
        }
    }
}
