//! Durable ledger appends through [`tally_store::Ledger`]: many concurrent
//! appenders (so the writer's group commit can batch), then one appender at a
//! time (one fsync per record) for contrast.
//!
//! Every append returns only once its transaction (rows + a signed checkpoint)
//! is committed with WAL and `synchronous = FULL`. The ledger lives in a fresh
//! directory under `TALLY_BENCH_DIR` (default: the system temp dir), removed at
//! the end; fsync cost depends entirely on that file system.
//!
//! Run: `cargo bench -p tally-store --bench append`. Knobs (environment):
//! `TALLY_BENCH_RECORDS` (50000), `TALLY_BENCH_THREADS` (64),
//! `TALLY_BENCH_SERIAL` (300). Without `--bench` (as under
//! `cargo test --benches`) it runs a small smoke version.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally_core::note::NoteSigner;
use tally_core::record::IssuanceRecord;
use tally_store::Ledger;

mod common;

use common::{env_usize, now_unix, record};

const GOAL_RECORDS_PER_SEC: f64 = 20_000.0;

fn fresh_dir() -> PathBuf {
    let base = std::env::var_os("TALLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("tally-append-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn open(path: &Path) -> Ledger {
    let (signer, _seed) = NoteSigner::generate("bench/ledger").expect("note signer");
    Ledger::open(path, signer, &mut |_, _| {}, &mut |_, _| {}).expect("open ledger")
}

/// Sizes of the stored checkpoints, in order (the first is the empty tree).
fn checkpoint_sizes(path: &Path) -> Vec<u64> {
    let conn = tally_store::ledger::open_read_only(path).expect("open read-only");
    let mut stmt = conn
        .prepare("SELECT size FROM checkpoints ORDER BY size")
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, i64>(0))
        .expect("query")
        .map(|r| r.expect("row").max(0) as u64)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Concurrent {
    records: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn run_concurrent(ledger: &Arc<Ledger>, threads: usize, records: usize, now: i64) -> Concurrent {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ledger = ledger.clone();
            let barrier = barrier.clone();
            // Thread t appends records t, t + threads, t + 2 * threads, ...
            let mine: Vec<IssuanceRecord> = (t..records)
                .step_by(threads)
                .map(|s| record(s as u64, now))
                .collect();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(mine.len());
                barrier.wait();
                for r in mine {
                    let t0 = Instant::now();
                    ledger.append_blocking(r).expect("append");
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(records);
    for h in handles {
        latencies.extend(h.join().expect("appender thread"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Concurrent {
        records,
        elapsed,
        latencies,
    }
}

/// One concurrent phase on a fresh ledger, verified end to end afterwards.
struct Phase {
    threads: usize,
    run: Concurrent,
    batches: Vec<u64>,
    checkpoints: u64,
    verify: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.run.records as f64 / self.run.elapsed.as_secs_f64()
    }
}

fn concurrent_phase(dir: &Path, name: &str, threads: usize, records: usize, now: i64) -> Phase {
    let path = dir.join(name);
    let ledger = Arc::new(open(&path));
    let run = run_concurrent(&ledger, threads, records, now);
    assert_eq!(ledger.size(), records as u64);
    let verifier = ledger.verifier().clone();
    ledger.close();
    drop(ledger);

    // Batch sizes: differences between consecutive checkpoint sizes (the first
    // checkpoint is the empty tree written when the ledger was created).
    let sizes = checkpoint_sizes(&path);
    let mut batches: Vec<u64> = sizes.windows(2).map(|w| w[1] - w[0]).collect();
    batches.sort_unstable();

    // The ledger the bench wrote must verify end to end.
    let conn = tally_store::ledger::open_read_only(&path).expect("open read-only");
    let started = Instant::now();
    let (_, report) = tally_store::verify_ledger(&conn, &verifier, &mut |_, _| {}, &mut |_, _| {})
        .expect("the benchmarked ledger verifies");
    let verify = started.elapsed();
    assert_eq!(report.size, records as u64);
    assert_eq!(report.checkpoints, sizes.len() as u64);
    Phase {
        threads,
        run,
        batches,
        checkpoints: report.checkpoints,
        verify,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let records = env_usize("TALLY_BENCH_RECORDS", if bench { 50_000 } else { 500 });
    let threads = env_usize("TALLY_BENCH_THREADS", if bench { 64 } else { 8 }).max(1);
    let serial = env_usize("TALLY_BENCH_SERIAL", if bench { 300 } else { 20 }).max(1);
    // Context: how throughput depends on the number of concurrent appenders.
    let sweep: &[usize] = if bench { &[8, 256] } else { &[] };
    let sweep_records = (records / 2).max(1);
    let now = now_unix();
    let dir = fresh_dir();
    if !bench {
        println!("SMOKE RUN (no --bench): {records} records, not a measurement; use `cargo bench`");
    }

    println!(
        "ledger append: SQLite in {} (WAL, synchronous=FULL: one fsync per committed batch)",
        dir.display()
    );

    // 1. The headline: `threads` concurrent appenders, group commit.
    let head = concurrent_phase(&dir, "concurrent.db", threads, records, now);
    let mut phases = vec![head];
    for (i, &t) in sweep.iter().enumerate() {
        phases.push(concurrent_phase(
            &dir,
            &format!("sweep-{i}.db"),
            t,
            sweep_records,
            now,
        ));
    }

    // 2. One appender, one record at a time: one commit (fsync) per record.
    let path = dir.join("serial.db");
    let ledger = open(&path);
    let mut serial_lat = Vec::with_capacity(serial);
    let serial_started = Instant::now();
    for i in 0..serial {
        let t0 = Instant::now();
        ledger
            .append_blocking(record(i as u64, now))
            .expect("append");
        serial_lat.push(t0.elapsed());
    }
    let serial_elapsed = serial_started.elapsed();
    serial_lat.sort_unstable();
    assert_eq!(ledger.size(), serial as u64);
    ledger.close();
    drop(ledger);
    let serial_commits = checkpoint_sizes(&path).len() - 1;

    let head = &phases[0];
    let rate = head.rate();
    println!();
    println!(
        "concurrent: {} records from {} threads (append_blocking) in {:.3} s",
        head.run.records,
        head.threads,
        head.run.elapsed.as_secs_f64()
    );
    println!(
        "  throughput {rate:.0} records/s (goal >= {GOAL_RECORDS_PER_SEC:.0}: {})",
        if rate >= GOAL_RECORDS_PER_SEC {
            "met"
        } else {
            "NOT met"
        }
    );
    println!();
    println!(
        "| threads | records | seconds | records/s | commits | commits/s | batch mean | batch median | batch max | p50 ms | p99 ms |"
    );
    println!(
        "| ------- | ------- | ------- | --------- | ------- | --------- | ---------- | ------------ | --------- | ------ | ------ |"
    );
    for p in &phases {
        let commits = p.batches.len();
        let secs = p.run.elapsed.as_secs_f64();
        println!(
            "| {:>7} | {:>7} | {:>7.3} | {:>9.0} | {:>7} | {:>9.0} | {:>10.1} | {:>12} | {:>9} | {:>6.2} | {:>6.2} |",
            p.threads,
            p.run.records,
            secs,
            p.rate(),
            commits,
            commits as f64 / secs,
            p.run.records as f64 / commits.max(1) as f64,
            p.batches.get(commits / 2).copied().unwrap_or(0),
            p.batches.last().copied().unwrap_or(0),
            ms(percentile(&p.run.latencies, 0.50)),
            ms(percentile(&p.run.latencies, 0.99)),
        );
    }
    println!();
    println!(
        "serial: {serial} appends one at a time in {:.3} s ({serial_commits} commits): {:.0} records/s",
        serial_elapsed.as_secs_f64(),
        serial as f64 / serial_elapsed.as_secs_f64()
    );
    println!(
        "  latency: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(serial_elapsed) / serial as f64,
        ms(percentile(&serial_lat, 0.50)),
        ms(percentile(&serial_lat, 0.99)),
        ms(percentile(&serial_lat, 1.0)),
    );
    println!();
    for p in &phases {
        println!(
            "verify_ledger ({} threads): {} entries, {} checkpoints checked in {:.3} s",
            p.threads,
            p.run.records,
            p.checkpoints,
            p.verify.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove bench dir");
}
