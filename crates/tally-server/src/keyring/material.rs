//! Small pieces every key holder shares: random identifiers, and the
//! context a token-signing key is sealed under (bound to its `kid`, so a
//! sealed key cannot be moved to another row).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    // The system RNG failing is unrecoverable for a security product: abort loudly.
    SystemRandom::new()
        .fill(&mut b)
        .expect("system random source failed");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Associated data binding a sealed key to its id.
pub fn seal_context(kid: &str) -> String {
    format!("tally/key/{kid}")
}
