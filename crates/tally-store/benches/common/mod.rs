//! What the store's benchmarks share: knobs from the environment, the clock,
//! and a record shaped like the issuer's.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use tally_core::digest::TokenDigest;
use tally_core::record::IssuanceRecord;

/// The number in the environment variable `name`, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(1_795_000_000)
}

/// Record `seq`, issued at `now`, shaped like the issuer's: 22-character
/// jti, token digest, subject, 43-character kid (an RFC 7638 thumbprint),
/// issuer, times, auth context.
pub fn record(seq: u64, now: i64) -> IssuanceRecord {
    let d = TokenDigest::of(&seq.to_be_bytes());
    let hex = d.to_hex();
    IssuanceRecord {
        token_id: hex[..22].to_string(),
        token_sha256: TokenDigest::of(hex.as_bytes()),
        subject: format!("user-{:06}@corp.example.com", seq % 1_000_000),
        kid: "Xk3Yt0s9Qm1Z8vLw2pR7nB4cD6eF5gH0jK1lM2nO3pQ".to_string(),
        issuer: "https://auth.example.com".to_string(),
        issued_at: now,
        expires_at: now + 900,
        auth_context: "pwd".to_string(),
    }
}
