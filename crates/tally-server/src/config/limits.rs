//! `[access_log]` and `[connections]`: how much a flood may write to the
//! access log, and what a client may hold open.

use serde::Deserialize;

/// `[access_log]`: refusals beyond these are counted in aggregate rows
/// instead of written one by one (allowed requests always get a row).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// Refusals of one actor, verdict and token written in full per second
    /// (default 4).
    pub samples_per_actor: Option<u32>,
    /// Bytes of refusal rows written per second, sustained (default 1 MiB).
    pub refusal_bytes_per_sec: Option<u64>,
    /// Bytes of refusal rows written at once (default 16 MiB).
    pub refusal_burst_bytes: Option<u64>,
    /// Actors tracked per second; beyond, refusals are counted per verdict
    /// (default 10,000).
    pub max_actors_per_sec: Option<usize>,
}

/// `[connections]`: what a client may hold open (defaults as nginx's).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsFile {
    /// Seconds a client has to send a request's headers (default 60).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open (default 75).
    pub idle_timeout_secs: Option<u64>,
    /// Connections one client address may hold open at once (default 256).
    pub max_per_address: Option<usize>,
    /// Connections open at once, all clients together (default 16,384).
    pub max_total: Option<usize>,
}

/// Limits on client connections (see [`ConnectionsFile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// Time to send a request's headers.
    pub header_read_timeout: std::time::Duration,
    /// Time an idle keep-alive connection stays open.
    pub idle_timeout: std::time::Duration,
    /// Connections per client address.
    pub max_per_address: usize,
    /// Connections in all.
    pub max_total: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            header_read_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(75),
            max_per_address: 256,
            max_total: 16_384,
        }
    }
}
