//! Registry memory per entry at 1,000,000 random digests, two ways:
//!
//! * computed: [`Registry::heap_bytes`] / len (capacity times layout);
//! * measured: growth of the process's resident set (`/proc/self/statm`) / len,
//!   plus the peak (`VmHWM` in `/proc/self/status`) while the tables grew.
//!
//! The measured figures include whatever the allocator keeps resident after the
//! tables double (the old, freed tables), which the computed figure does not.
//!
//! Run: `cargo bench -p tally-core --bench registry_memory` (Linux only: it
//! reads `/proc`). Without `--bench` (as under `cargo test --benches`) it runs a
//! 20,000-entry smoke version.
#![forbid(unsafe_code)]

use std::time::Instant;

use tally_core::digest::TokenDigest;
use tally_core::registry::Registry;

const GOAL_BYTES_PER_ENTRY: f64 = 64.0;

/// Resident set size in bytes, from `/proc/self/statm` (second field, pages).
fn rss_bytes(page: u64) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// A `kB` field of `/proc/self/status` (e.g. `VmHWM`, `VmRSS`), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The kernel page size, from `/proc/self/smaps` (4096 if unreadable).
fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("KernelPageSize:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(4096)
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0). False if not permitted.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn per_entry(bytes: Option<u64>, base: Option<u64>, n: usize) -> Option<f64> {
    Some(bytes?.saturating_sub(base?) as f64 / n as f64)
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}"))
}

fn met(v: Option<f64>) -> &'static str {
    match v {
        Some(x) if x <= GOAL_BYTES_PER_ENTRY => "yes",
        Some(_) => "NO",
        None => "n/a",
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = if bench { 1_000_000 } else { 20_000 };
    let page = page_size();
    if !bench {
        println!("SMOKE RUN (no --bench): {n} entries, not a measurement; use `cargo bench`");
    }

    // Random digests, generated in chunks into one reused buffer so that the
    // only growing allocation during the run is the registry itself.
    let mut chunk = vec![0u8; 32 * 4096];
    // Touch the buffer now, so its pages are resident before the baseline.
    aws_lc_rs::rand::fill(&mut chunk).expect("system random source");
    let registry = Registry::new();

    let peak_reset = reset_peak();
    let rss_before = rss_bytes(page);
    let hwm_before = status_bytes("VmHWM:");

    let mut worst_computed = 0.0f64;
    let mut worst_at = 0usize;
    let mut worst_measured = 0.0f64;
    let mut worst_measured_at = 0usize;
    let started = Instant::now();
    let mut inserted = 0usize;
    while inserted < n {
        aws_lc_rs::rand::fill(&mut chunk).expect("system random source");
        for d in chunk.chunks_exact(32) {
            if inserted == n {
                break;
            }
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(d);
            registry.insert(&TokenDigest::from_bytes(bytes), 2_000_000_000);
            inserted += 1;
            // Track the worst bytes/entry once the table is non-trivial (right
            // after the shards double is the worst moment).
            if inserted >= n / 10 && inserted.is_multiple_of(1000) {
                let r = registry.heap_bytes() as f64 / inserted as f64;
                if r > worst_computed {
                    worst_computed = r;
                    worst_at = inserted;
                }
                if let Some(m) = per_entry(rss_bytes(page), rss_before, inserted)
                    && m > worst_measured
                {
                    worst_measured = m;
                    worst_measured_at = inserted;
                }
            }
        }
    }
    let elapsed = started.elapsed();

    let rss_after = rss_bytes(page);
    let hwm_after = status_bytes("VmHWM:");
    let len = registry.len();
    assert_eq!(
        len, n,
        "random 256-bit digests collided (or a 128-bit prefix did)"
    );

    let heap = registry.heap_bytes();
    let computed = Some(heap as f64 / len as f64);
    let measured = per_entry(rss_after, rss_before, len);
    // The peak is only meaningful relative to the RSS it was reset to.
    let peak = if peak_reset {
        per_entry(hwm_after, rss_before, len)
    } else {
        None
    };

    println!("registry memory: {len} random digests inserted in {elapsed:.2?}");
    println!("  (16 shards, key = 128-bit digest prefix, 21-byte packed slot; page size {page} B)");
    println!();
    let rows = [
        ("computed: heap_bytes() / len".to_string(), computed),
        ("measured: RSS delta (statm) / len".to_string(), measured),
        ("measured: peak RSS (VmHWM) delta / len".to_string(), peak),
        (
            format!("computed worst while growing (n >= {})", n / 10),
            Some(worst_computed),
        ),
        (
            format!("measured worst while growing (n >= {})", n / 10),
            Some(worst_measured),
        ),
    ];
    println!("| {:<44} | bytes/entry | <= 64? |", "measure");
    println!("| {:-<44} | ----------- | ------ |", "");
    for (label, v) in &rows {
        println!("| {label:<44} | {:>11} | {:>6} |", show(*v), met(*v));
    }
    println!();
    println!("  heap_bytes = {heap} B at n = {len}");
    println!(
        "  RSS before {} B, after {} B; VmHWM before {} B, after {} B (peak reset: {peak_reset})",
        show_u(rss_before),
        show_u(rss_after),
        show_u(hwm_before),
        show_u(hwm_after),
    );
    println!(
        "  worst computed at n = {worst_at}, worst measured at n = {worst_measured_at} \
         (sampled every 1,000 inserts)"
    );
    // Keep the registry alive until after the measurements.
    drop(registry);
}

fn show_u(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| x.to_string())
}
