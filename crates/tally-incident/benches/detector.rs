//! Detector throughput and memory (issue goals: `mass_access` at >= 1,000,000
//! events/s on one core; memory with 1,000,000 distinct actors).
//!
//! * throughput: 2,000,000 pre-built observations (100,000 client addresses,
//!   each with its own token, reading subjects drawn from 1,000,000 members,
//!   two signing keys; one scraper address reading a new member on every 50th
//!   event) fed to one [`Detector`] on one thread, 5 rounds, median events/s;
//! * memory: 1,000,000 distinct addresses, one request each (the common
//!   case: ordinary customers), [`Detector::heap_bytes`] / actors and RSS
//!   growth / actors.
//!
//! Run: `cargo bench -p tally-core --bench detector`. Without `--bench` (as
//! under `cargo test --benches`) it runs a small smoke version that measures
//! nothing.
#![forbid(unsafe_code)]

use std::time::Instant;

use tally_incident::detect::{Detector, DetectorConfig, Observation};

struct Ev {
    ip: String,
    token: String,
    subject: String,
    kid: &'static str,
}

fn rng(state: &mut u64) -> u64 {
    // xorshift64*: deterministic, good enough to spread test data.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (mut events, mut actors, members, mut rounds, mut mem_actors) = if full {
        (2_000_000usize, 100_000u64, 1_000_000u64, 5, 1_000_000u64)
    } else {
        (20_000, 1_000, 10_000, 1, 10_000)
    };
    // For profiling under valgrind: TALLY_BENCH_EVENTS, TALLY_BENCH_ROUNDS.
    if let Some(n) = std::env::var("TALLY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        events = n;
        mem_actors = 1000;
    }
    if let Some(n) = std::env::var("TALLY_BENCH_ACTORS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        actors = n;
    }
    if let Some(n) = std::env::var("TALLY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rounds = n;
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let evs: Vec<Ev> = (0..events)
        .map(|i| {
            if i.is_multiple_of(50) {
                Ev {
                    ip: "203.0.113.66".into(),
                    token: format!("scraper-{}", i / 5000),
                    subject: format!("member-{}", i),
                    kid: "k1",
                }
            } else {
                let a = rng(&mut s) % actors;
                Ev {
                    ip: format!("10.{}.{}.{}", a >> 16, (a >> 8) & 255, a & 255),
                    token: format!("t-{a}"),
                    subject: format!("member-{}", rng(&mut s) % members),
                    kid: if a.is_multiple_of(2) { "k1" } else { "k2" },
                }
            }
        })
        .collect();
    let cfg = DetectorConfig {
        mass_access_threshold: 1000,
        ..Default::default()
    };
    let mut rates = Vec::new();
    let mut findings = 0usize;
    for _ in 0..rounds {
        let mut d = Detector::new(cfg.clone());
        let start = Instant::now();
        for (i, e) in evs.iter().enumerate() {
            let o = Observation {
                at: 1_800_000_000 + (i / 10_000) as i64,
                client_ip: Some(&e.ip),
                device: None,
                subject: Some(&e.subject),
                token_id: Some(&e.token),
                kid: Some(e.kid),
                route: "/profile/",
                verdict: "ok",
                detail: None,
                examined: None,
                inquiry: false,
            };
            findings += d.observe(&o).len();
        }
        let secs = start.elapsed().as_secs_f64();
        rates.push(events as f64 / secs);
    }
    rates.sort_by(f64::total_cmp);
    if std::env::var("TALLY_BENCH_PARTS").is_ok() {
        let t = Instant::now();
        let mut x = 0u64;
        for e in &evs {
            x ^= tally_incident::sketch::subject_hash(&e.subject);
        }
        println!(
            "part: subject_hash {:.1} ns/event ({x})",
            t.elapsed().as_nanos() as f64 / events as f64
        );
        let rs = std::collections::hash_map::RandomState::new();
        let t = Instant::now();
        for e in &evs {
            use std::hash::{BuildHasher, Hasher};
            for v in [&e.ip, &e.token, &e.token, &e.ip, &e.ip] {
                let mut h = rs.build_hasher();
                h.write_u8(1);
                h.write(v.as_bytes());
                x ^= h.finish();
            }
        }
        println!(
            "part: 5 keyed actor hashes {:.1} ns/event ({x})",
            t.elapsed().as_nanos() as f64 / events as f64
        );
    }
    let median = rates[rates.len() / 2];
    println!(
        "detector throughput: {events} events (address, token, key, subject each), {rounds} rounds: median {:.0} events/s (min {:.0}, max {:.0}); findings {findings}",
        median,
        rates[0],
        rates[rates.len() - 1]
    );
    println!(
        "goal >= 1,000,000 events/s: {}",
        if median >= 1_000_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // Memory: one request from each of `mem_actors` distinct addresses.
    let base = rss_bytes();
    let mut d = Detector::new(DetectorConfig {
        max_actors: mem_actors as usize,
        ..Default::default()
    });
    for a in 0..mem_actors {
        let ip = format!("10.{}.{}.{}", a >> 16, (a >> 8) & 255, a & 255);
        let sub = format!("member-{a}");
        d.observe(&Observation {
            at: 1_800_000_000,
            client_ip: Some(&ip),
            subject: Some(&sub),
            route: "/profile/",
            verdict: "ok",
            ..Default::default()
        });
    }
    let after = rss_bytes();
    let n = d.tracked_actors() as f64;
    println!(
        "detector memory: {} actors tracked; heap_bytes {:.1} B/actor; RSS growth {} B/actor",
        d.tracked_actors(),
        d.heap_bytes() as f64 / n,
        match (base, after) {
            (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n),
            _ => "n/a".into(),
        }
    );
}
