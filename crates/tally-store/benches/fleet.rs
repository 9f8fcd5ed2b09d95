//! The fleet ledger on the real PostgreSQL server: nodes are
//! [`FleetLedger`]s in this process, each with its own connections (writer,
//! readers, follower, sequencer), exactly as `tally serve` nodes hold them.
//!
//! 1. Durable appends from 64 threads through one node, then spread over
//!    three nodes.
//! 2. Issued on A, known on B: from A's acknowledgement to B's follower
//!    handing the record to its registry; and B's store lookup of a record
//!    acknowledged on A (what a registry miss costs).
//! 3. Sequencer fail-over: the leader's connection closes; time until another
//!    node has sequenced a new record into a signed checkpoint.
//!
//! Run: `cargo bench -p tally-store --bench fleet` (PostgreSQL at
//! `TALLY_BENCH_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! a schema of its own, dropped at the end). Knobs: `TALLY_BENCH_RECORDS`
//! (30000), `TALLY_BENCH_THREADS` (64). Without `--bench` it runs a smoke
//! version.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use tally_core::note::NoteSigner;
use tally_core::record::IssuanceRecord;
use tally_store::LedgerStore;
use tally_store::fleet::node::{FleetConfig, FleetLedger};
use tally_store::fleet::{self, QueuedRecord, RecordMac};
use tally_store::store::append_blocking;

mod common;

use common::{env_usize, now_unix};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The next record of the run, issued now.
fn record() -> IssuanceRecord {
    common::record(NEXT.fetch_add(1, Ordering::SeqCst), now_unix())
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("bench.tally.example/fleet", &[3u8; 32]).expect("signer")
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn node(url: &str, schema: &str, name: &str, seen: Option<Seen>) -> FleetLedger {
    FleetLedger::open(
        FleetConfig::new(url, schema, name),
        signer(),
        RecordMac::new(&[5u8; 32]),
        &mut |_, _| {},
        Arc::new(move |q: &QueuedRecord| {
            if let Some(s) = &seen {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(q.record.token_id.clone(), Instant::now());
            }
        }),
        Arc::new(|e| eprintln!("tamper finding: {e}")),
    )
    .expect("open node")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn appends(nodes: &[Arc<FleetLedger>], threads: usize, total: usize) -> f64 {
    let per = total / threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let n = nodes[t % nodes.len()].clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                for _ in 0..per {
                    append_blocking(&*n, record()).expect("append");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("appender");
    }
    (per * threads) as f64 / start.elapsed().as_secs_f64()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let url = std::env::var("TALLY_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("b_fleet_{}", std::process::id());
    if let Err(e) = fleet::connect(&url) {
        eprintln!("skipping: PostgreSQL at {url} is unreachable ({e})");
        return;
    }
    let total = if full {
        env_usize("TALLY_BENCH_RECORDS", 30_000)
    } else {
        600
    };
    let threads = if full {
        env_usize("TALLY_BENCH_THREADS", 64)
    } else {
        8
    };
    let samples = if full { 500 } else { 20 };

    // 1. Throughput, one node then three.
    let a = Arc::new(node(&url, &schema, "a", None));
    let one = appends(std::slice::from_ref(&a), threads, total);
    let b_seen: Seen = Arc::default();
    let b = Arc::new(node(&url, &schema, "b", Some(b_seen.clone())));
    let c = Arc::new(node(&url, &schema, "c", None));
    let three = appends(&[a.clone(), b.clone(), c.clone()], threads, total);
    println!("fleet appends, {threads} threads, {total} records");
    println!("  one node      {one:>9.0} records/s");
    println!(
        "  three nodes   {three:>9.0} records/s  ({:.2}x)",
        three / one
    );

    // 2. Issued on A, known on B.
    let mut follow = Vec::new();
    let mut lookup = Vec::new();
    for _ in 0..samples {
        let r = record();
        let id = r.token_id.clone();
        append_blocking(&*a, r).expect("append");
        let acked = Instant::now();
        let t = Instant::now();
        assert!(b.record_of(&id).expect("lookup").is_some());
        lookup.push(t.elapsed());
        let seen = wait_until(Duration::from_secs(5), || {
            b_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id)
        });
        if seen.is_some() {
            let at = b_seen.lock().unwrap_or_else(|e| e.into_inner())[&id];
            follow.push(at.saturating_duration_since(acked));
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    follow.sort();
    lookup.sort();
    println!("issued on A, known on B ({samples} records, one at a time)");
    println!(
        "  B's follower has it    p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  ({} of {samples})",
        pct(&follow, 0.5),
        pct(&follow, 0.99),
        pct(&follow, 1.0),
        follow.len()
    );
    println!(
        "  B's store lookup       p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
        pct(&lookup, 0.5),
        pct(&lookup, 0.99),
        pct(&lookup, 1.0)
    );

    // 3. Fail-over: close the leader, time a new record into a checkpoint.
    let mut nodes = vec![a, b, c];
    let mut spare = 0;
    let trials = if full { 3 } else { 1 };
    let mut times = Vec::new();
    for _ in 0..trials {
        wait_until(Duration::from_secs(10), || {
            nodes.iter().any(|n| n.is_sequencer())
        })
        .expect("a leader");
        let i = nodes.iter().position(|n| n.is_sequencer()).expect("leader");
        let leader = nodes.remove(i);
        let size = nodes[0].size();
        leader.close();
        let closed = Instant::now();
        drop(leader);
        append_blocking(&*nodes[0], record()).expect("append during fail-over");
        let took = wait_until(Duration::from_secs(15), || {
            nodes.iter().any(|n| n.size() > size)
        })
        .map(|_| closed.elapsed());
        match took {
            Some(t) => times.push(t),
            None => println!("  no fail-over within 15 s"),
        }
        spare += 1;
        nodes.push(Arc::new(node(
            &url,
            &schema,
            &format!("spare-{spare}"),
            None,
        )));
    }
    println!(
        "sequencer fail-over (leader's connection closed → new record in a signed checkpoint): {:?}",
        times
    );
    for n in &nodes {
        n.close();
    }
    if let Ok(mut c) = fleet::connect(&url) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
