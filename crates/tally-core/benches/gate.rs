//! The gate's hot path: a registry HIT on a realistic EdDSA access token that
//! the gate has already seen, against the floor it cannot beat (SHA-256 of the
//! token plus one registry lookup), measured in the same run.
//!
//! Also, for reference: the first-sight paths (signature verification) and raw
//! `jose::verify` of an Ed25519 and an ES256 token.
//!
//! Run: `cargo bench -p tally-core --bench gate` (see BENCHMARKS.md and
//! `bench/run.sh`, which also computes the hit/baseline ratio from the medians).
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value};
use tally_core::digest::TokenDigest;
use tally_core::gate::{Gate, Step};
use tally_core::jose::{self, Algorithm, ClaimsPolicy, KeySet, SigningKey};
use tally_core::registry::Registry;

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "tally";
const TTL_SECS: i64 = 900;

/// Entries in the registry besides the token under test.
fn other_entries() -> u32 {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then
    // criterion runs every routine once: keep that smoke run cheap.
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(1_795_000_000)
}

/// Claims shaped like the issuer's (tally-server `issue`): iss, sub, aud, exp,
/// iat, jti (16 random bytes, base64url), client_id.
fn claims(now: i64, jti: &str) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), Value::from(ISSUER));
    c.insert("sub".into(), Value::from("alice.example@corp.example.com"));
    c.insert("aud".into(), Value::from(AUDIENCE));
    c.insert("exp".into(), Value::from(now + TTL_SECS));
    c.insert("iat".into(), Value::from(now));
    c.insert("jti".into(), Value::from(jti));
    c.insert("client_id".into(), Value::from("web-console"));
    c
}

fn token(key: &SigningKey, now: i64, jti: &str) -> Vec<u8> {
    let kid = key.verifying_key().kid().to_string();
    key.sign_jwt(&kid, "at+jwt", &claims(now, jti))
        .expect("sign")
        .into_bytes()
}

fn one_key_set(key: &SigningKey) -> KeySet {
    let mut ks = KeySet::new();
    ks.insert(key.verifying_key());
    ks
}

fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn gate_benches(c: &mut Criterion) {
    let now = now_unix();
    let ed = SigningKey::generate(Algorithm::EdDSA).expect("ed25519 key");
    let hot = token(&ed, now, "q1Wv3sXbTn2mK8fA0yZp4g");
    let fresh = token(&ed, now, "Hc7LJr0uN5eQd2tVb9wYkA");

    let registry = Arc::new(Registry::new());
    let others = other_entries();
    for i in 0..others {
        // Distinct uniform digests, none equal to a real token's.
        let mut seed = [0u8; 12];
        seed[..8].copy_from_slice(b"registry");
        seed[8..].copy_from_slice(&i.to_be_bytes());
        registry.insert(&TokenDigest::of(&seed), now + TTL_SECS);
    }
    registry.insert(&TokenDigest::of(&hot), now + TTL_SECS);
    assert_eq!(registry.len(), others as usize + 1);
    assert!(registry.lookup(&TokenDigest::of(&fresh)).is_none());

    let policy = ClaimsPolicy::new(ISSUER, AUDIENCE);
    let gate = Gate::new(one_key_set(&ed), policy.clone(), registry.clone());
    // First check: verifies and remembers the token ("seen").
    assert!(matches!(gate.check(&hot, now), Step::Decided(Ok(_))));
    assert_eq!(gate.seen_len(), 1);
    // The timed path must be the hit path and must allow.
    assert!(matches!(gate.check(&hot, now), Step::Decided(Ok(_))));

    // A gate that remembers nothing: every check of a registered token verifies.
    let forgetful = Gate::new(one_key_set(&ed), policy, registry.clone()).with_seen_capacity(0);
    assert!(matches!(forgetful.check(&hot, now), Step::Decided(Ok(_))));
    assert_eq!(forgetful.seen_len(), 0);
    // A valid token the registry does not hold: verify, then ask the ledger.
    assert!(matches!(gate.check(&fresh, now), Step::AskLedger(_)));

    println!(
        "gate bench: token {} bytes, registry {} entries",
        hot.len(),
        registry.len()
    );

    let mut g = c.benchmark_group("gate");
    g.bench_function("hit_seen", |b| {
        b.iter(|| gate.check(black_box(&hot), black_box(now)))
    });
    g.bench_function("baseline_sha256_lookup", |b| {
        b.iter(|| registry.lookup(&TokenDigest::of(black_box(&hot))))
    });
    g.bench_function("first_sight_hit_verify", |b| {
        b.iter(|| forgetful.check(black_box(&hot), black_box(now)))
    });
    g.bench_function("first_sight_miss_verify", |b| {
        b.iter(|| gate.check(black_box(&fresh), black_box(now)))
    });
    g.finish();
    // Nothing in the timed loops changed what the gate decides.
    assert!(matches!(gate.check(&hot, now), Step::Decided(Ok(_))));
    assert_eq!(gate.seen_len(), 1);
}

/// Distinct live tokens cycled through by the `gate_many` group.
fn many_tokens() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        50_000
    } else {
        1_000
    }
}

/// The same hit-versus-baseline comparison, but cycling through many distinct
/// seen tokens, so registry and seen-cache lookups mostly miss the CPU caches
/// (the single-token group above measures the all-cached best case).
fn gate_many_benches(c: &mut Criterion) {
    let now = now_unix();
    let ed = SigningKey::generate(Algorithm::EdDSA).expect("ed25519 key");
    let registry = Arc::new(Registry::new());
    for i in 0..other_entries() {
        let mut seed = [0u8; 12];
        seed[..8].copy_from_slice(b"registry");
        seed[8..].copy_from_slice(&i.to_be_bytes());
        registry.insert(&TokenDigest::of(&seed), now + TTL_SECS);
    }
    let n = many_tokens();
    let tokens: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| {
            let jti = &TokenDigest::of(&i.to_be_bytes()).to_hex()[..22];
            token(&ed, now, jti)
        })
        .collect();
    let gate = Gate::new(
        one_key_set(&ed),
        ClaimsPolicy::new(ISSUER, AUDIENCE),
        registry.clone(),
    );
    for t in &tokens {
        registry.insert(&TokenDigest::of(t), now + TTL_SECS);
        assert!(matches!(gate.check(t, now), Step::Decided(Ok(_))));
    }
    assert_eq!(gate.seen_len(), n);
    println!(
        "gate_many bench: {n} distinct seen tokens cycled, registry {} entries",
        registry.len()
    );

    let mut g = c.benchmark_group("gate_many");
    let mut i = 0usize;
    g.bench_function("hit_seen", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            gate.check(black_box(&tokens[i]), black_box(now))
        })
    });
    let mut j = 0usize;
    g.bench_function("baseline_sha256_lookup", |b| {
        b.iter(|| {
            j = (j + 1) % n;
            registry.lookup(&TokenDigest::of(black_box(&tokens[j])))
        })
    });
    g.finish();
    assert!(
        tokens
            .iter()
            .all(|t| matches!(gate.check(t, now), Step::Decided(Ok(_))))
    );
}

fn verify_benches(c: &mut Criterion) {
    let now = now_unix();
    let ed = SigningKey::generate(Algorithm::EdDSA).expect("ed25519 key");
    let es = SigningKey::generate(Algorithm::ES256).expect("p-256 key");
    let ed_token = token(&ed, now, "q1Wv3sXbTn2mK8fA0yZp4g");
    let es_token = token(&es, now, "q1Wv3sXbTn2mK8fA0yZp4g");
    let ed_keys = one_key_set(&ed);
    let es_keys = one_key_set(&es);
    assert!(jose::verify(&ed_token, &ed_keys).is_ok());
    assert!(jose::verify(&es_token, &es_keys).is_ok());
    println!(
        "verify bench: EdDSA token {} bytes, ES256 token {} bytes",
        ed_token.len(),
        es_token.len()
    );

    let mut g = c.benchmark_group("verify");
    g.bench_function("ed25519", |b| {
        b.iter(|| jose::verify(black_box(&ed_token), &ed_keys))
    });
    g.bench_function("es256", |b| {
        b.iter(|| jose::verify(black_box(&es_token), &es_keys))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = gate_benches, gate_many_benches, verify_benches
}
criterion_main!(benches);
