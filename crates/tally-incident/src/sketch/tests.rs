//! Tests of the sketches through their API: exact counts, HyperLogLog
//! error and bias against theory and against textbook estimators, merges,
//! and windows (slices, eviction, late observations, memory, clamping).
//! The helpers that make streams of hashes are shared with the white-box
//! tests beside the code.

use super::distinct::Repr;
use super::hll::REGISTERS;
use super::*;

/// SplitMix64: a fast, well-mixed stand-in for subject hashes in bulk tests.
pub(super) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sketch_of(hashes: impl IntoIterator<Item = u64>) -> DistinctSketch {
    let mut s = DistinctSketch::new();
    for h in hashes {
        s.insert_hash(h);
    }
    s
}

fn rel_err(est: u64, n: u64) -> f64 {
    (est as f64 - n as f64) / n as f64
}

fn registers(s: &DistinctSketch) -> &[u8; REGISTERS] {
    match &s.repr {
        Repr::Dense(r) => r,
        Repr::Exact(_) => panic!("expected a dense sketch"),
    }
}

/// Linear counting: the textbook small-range estimate.
fn linear_counting(regs: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let zeros = regs.iter().filter(|&&r| r == 0).count() as f64;
    m * (m / zeros).ln()
}

/// The textbook HyperLogLog raw estimate, `α_m m² / Σ 2^−M[j]`.
fn classic_raw(regs: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    alpha * m * m / sum
}

#[test]
fn exact_below_the_limit() {
    let mut s = DistinctSketch::new();
    assert_eq!(s.estimate(), 0);
    assert!(s.is_empty());
    assert_eq!(s.heap_bytes(), 0);
    for i in 1..=EXACT_LIMIT as u64 {
        s.insert_hash(subject_hash(&format!("acct-{i}")));
        s.insert_hash(subject_hash(&format!("acct-{i}")));
        s.insert_hash(subject_hash("acct-1"));
        assert_eq!(s.estimate(), i);
        assert!(s.is_exact());
    }
    assert!(s.heap_bytes() <= EXACT_LIMIT * 8);
    s.insert_hash(subject_hash("acct-33"));
    assert!(!s.is_exact());
    assert_eq!(s.heap_bytes(), 2048);
    assert!(s.estimate().abs_diff(33) <= 1, "got {}", s.estimate());
}

#[test]
fn duplicates_are_not_counted() {
    let mut seed = 7;
    let hashes: Vec<u64> = (0..20_000).map(|_| splitmix(&mut seed)).collect();
    let mut s = sketch_of(hashes.iter().copied());
    let once = s.clone();
    for &h in hashes.iter().rev() {
        s.insert_hash(h);
    }
    assert_eq!(s, once);
}

#[test]
fn hll_within_5_percent_at_10k_100k_1m() {
    // 1M debug-build inserts take well under a second: the hash dominates.
    let mut s = DistinctSketch::new();
    let mut next = 0u64;
    for n in [10_000u64, 100_000, 1_000_000] {
        while next < n {
            s.insert_hash(subject_hash(&format!("acct-{next}")));
            next += 1;
        }
        let err = rel_err(s.estimate(), n);
        assert!(
            err.abs() < 0.05,
            "n={n} estimate={} err={err}",
            s.estimate()
        );
    }
}

#[test]
fn hll_error_and_bias_match_theory_over_a_sweep() {
    // 16 independent streams, checked at cardinalities across the exact limit, the
    // linear-counting range and the classic estimator's switch-over (~5120).
    const TRIALS: usize = 16;
    let checkpoints = [
        40u64, 100, 300, 1_000, 2_000, 4_000, 5_000, 6_000, 8_000, 12_000, 20_000, 50_000,
    ];
    let mut errs = vec![Vec::new(); checkpoints.len()];
    for trial in 0..TRIALS {
        let mut seed = 1_000 + trial as u64;
        let mut s = DistinctSketch::new();
        let mut n = 0;
        for (c, &target) in checkpoints.iter().enumerate() {
            while n < target {
                s.insert_hash(splitmix(&mut seed));
                n += 1;
            }
            errs[c].push(rel_err(s.estimate(), n));
        }
    }
    // Standard error 1.04/sqrt(2048) = 2.3 %; the mean of 16 has 0.58 %.
    for (c, e) in errs.iter().enumerate() {
        let mean = e.iter().sum::<f64>() / TRIALS as f64;
        let rms = (e.iter().map(|x| x * x).sum::<f64>() / TRIALS as f64).sqrt();
        let n = checkpoints[c];
        assert!(mean.abs() < 0.02, "bias {mean} at {n}");
        assert!(rms < 0.035, "rms error {rms} at {n}");
    }
}

#[test]
fn estimator_agrees_with_linear_counting_and_classic_hll() {
    let mut seed = 99;
    let mut s = DistinctSketch::new();
    let mut n = 0;
    for target in [100u64, 500, 1_000, 30_000, 100_000] {
        while n < target {
            s.insert_hash(splitmix(&mut seed));
            n += 1;
        }
        let regs = registers(&s);
        let reference = if n <= 1_000 {
            linear_counting(regs)
        } else {
            classic_raw(regs)
        };
        let ours = s.estimate() as f64;
        assert!(
            (ours - reference).abs() / reference < 0.01,
            "n={n}: ours {ours}, reference {reference}"
        );
    }
}

#[test]
fn merge_equals_union() {
    let mut seed = 5;
    let pool: Vec<u64> = (0..30_000).map(|_| splitmix(&mut seed)).collect();
    // (a-range, b-range) pairs: small+small under and over the limit, small+dense,
    // dense+small, dense+dense, overlapping and not.
    let cases: [((usize, usize), (usize, usize)); 7] = [
        ((0, 10), (5, 20)),
        ((0, 20), (20, 40)),
        ((0, 5), (0, 5)),
        ((0, 10), (10, 5_000)),
        ((0, 5_000), (4_990, 5_010)),
        ((0, 20_000), (10_000, 30_000)),
        ((0, 0), (0, 3_000)),
    ];
    for ((a0, a1), (b0, b1)) in cases {
        let a = sketch_of(pool[a0..a1].iter().copied());
        let b = sketch_of(pool[b0..b1].iter().copied());
        let union = sketch_of(pool[a0.min(b0)..a1.max(b1)].iter().copied());
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, union, "a={a0}..{a1} b={b0}..{b1}");
        assert_eq!(ba, union, "b={b0}..{b1} a={a0}..{a1}");
    }
    let mut a = sketch_of([1, 2, 3]);
    a.merge(&DistinctSketch::new());
    assert_eq!(a, sketch_of([3, 2, 1]));
    assert_eq!(a.estimate(), 3);
}

#[test]
fn window_counts_expire_at_slice_boundaries() {
    // 60 s window in six 10 s slices.
    let mut w = WindowedDistinct::new(60, 6, 100);
    assert_eq!((w.window_secs(), w.slices()), (60, 6));
    assert_eq!(w.observe(&"ip", 1, 0), 1);
    assert_eq!(w.observe(&"ip", 1, 5), 1, "repeat");
    assert_eq!(w.observe(&"ip", 2, 25), 2);
    assert_eq!(w.estimate(&"ip", 59), 2);
    assert_eq!(w.estimate(&"ip", 60), 1, "slice 0 left at t=60");
    assert_eq!(w.estimate(&"ip", 79), 1);
    assert_eq!(w.estimate(&"ip", 80), 0, "slice 2 left at t=80");
    assert_eq!(w.estimate(&"other", 0), 0);
    // A subject seen again moves to the newer slice.
    assert_eq!(w.observe(&"ip", 1, 55), 2);
    assert_eq!(w.estimate(&"ip", 80), 1);
    assert_eq!(w.estimate(&"ip", 109), 1);
    assert_eq!(w.estimate(&"ip", 110), 0);
    assert_eq!(w.expire(109), 0);
    assert_eq!(w.expire(110), 1);
    assert!(w.is_empty());
    // Negative times slice by floor division.
    assert_eq!(w.observe(&"ip", 1, -1), 1);
    assert_eq!(w.estimate(&"ip", 49), 1);
    assert_eq!(w.estimate(&"ip", 50), 0);
}

#[test]
fn heavy_actor_slides_out_slice_by_slice() {
    let mut w = WindowedDistinct::new(60, 6, 100);
    let mut seed = 3;
    for _ in 0..3_000 {
        w.observe(&"bot", splitmix(&mut seed), 1_000);
    }
    for _ in 0..2_000 {
        w.observe(&"bot", splitmix(&mut seed), 1_030);
    }
    let at = |t| w.estimate(&"bot", t);
    assert!(rel_err(at(1_059), 5_000).abs() < 0.05, "{}", at(1_059));
    assert!(rel_err(at(1_060), 2_000).abs() < 0.05, "{}", at(1_060));
    assert!(rel_err(at(1_089), 2_000).abs() < 0.05, "{}", at(1_089));
    assert_eq!(at(1_090), 0);
    let heavy = w.heap_bytes();
    // Dense in two slices: about 2 × 2 KiB for this actor.
    assert!(heavy > 4_096 && heavy < 6_000, "{heavy}");
    // Back to one subject, no per-slice sketches, once the window has passed.
    assert_eq!(w.observe(&"bot", 1, 1_090), 1);
    assert!(w.heap_bytes() < 500, "{}", w.heap_bytes());
    assert_eq!(w.sketch(&"bot", 1_090), Some(sketch_of([1])));
}

#[test]
fn sliced_actor_stays_exact_while_slices_are_small() {
    let mut w = WindowedDistinct::new(60, 6, 10);
    let h = |s: u64| subject_hash(&format!("acct-{s}"));
    // 60 subjects, 10 per slice: beyond the per-actor list, within per-slice sets.
    for s in 0..60u64 {
        assert_eq!(w.observe(&1u8, h(s), (s / 10 * 10) as i64), s + 1);
    }
    assert_eq!(w.estimate(&1u8, 59), 60);
    assert_eq!(w.estimate(&1u8, 60), 50);
    // One merged sketch of 50 hashes is past the exact limit.
    let merged = w.sketch(&1u8, 60).expect("tracked");
    assert!(!merged.is_exact() && merged.estimate().abs_diff(50) <= 2);
    // At t=90 slices 4 and 5 remain: expire turns them back into a list.
    let before = w.heap_bytes();
    assert_eq!(w.expire(90), 0);
    assert_eq!(w.estimate(&1u8, 90), 20);
    assert!(w.heap_bytes() < before);
    assert_eq!(w.observe(&1u8, h(100), 90), 21);
    assert_eq!(w.expire(109), 0);
    assert_eq!(w.estimate(&1u8, 109), 11);
}

#[test]
fn late_observations_count_inside_the_window() {
    let mut w = WindowedDistinct::new(60, 6, 10);
    w.observe(&"a", 1, 100);
    assert_eq!(w.observe(&"a", 2, 95), 2, "a few seconds late still counts");
    assert_eq!(
        w.observe(&"a", 3, 20),
        3,
        "far in the past: counted at its own time"
    );
    assert_eq!(w.estimate(&"a", 100), 2);
}

#[test]
fn eviction_keeps_the_most_recently_seen() {
    // Recency counts per slice (600 s here): each step is a new slice.
    let mut w = WindowedDistinct::new(3600, 6, 3);
    w.observe(&"a", 1, 0);
    w.observe(&"b", 1, 0);
    w.observe(&"c", 1, 0);
    w.observe(&"a", 2, 600);
    w.observe(&"d", 1, 1200);
    assert_eq!(w.len(), 3);
    assert_eq!(w.estimate(&"b", 1200), 0, "b was least recently seen");
    assert_eq!(w.estimate(&"a", 1200), 2);
    assert_eq!(w.estimate(&"c", 1200), 1);
    w.observe(&"e", 1, 1800);
    assert_eq!(w.estimate(&"c", 1800), 0);
    assert_eq!(w.estimate(&"a", 1800), 2);
    w.observe(&"f", 1, 2400);
    assert_eq!(w.estimate(&"a", 2400), 0);
    assert_eq!(w.estimate(&"d", 2400), 1);
    // Evicted actors start again from nothing.
    assert_eq!(w.observe(&"a", 9, 3000), 1);
    assert_eq!(w.len(), 3);
}

#[test]
fn memory_per_single_subject_actor() {
    // Measured: u64 keys 74.7 bytes per actor (a 40-byte node and a 17-byte hash
    // table bucket, plus growth slack); IpAddr keys 106.2 bytes (56 + 25 + slack).
    const ACTORS: u64 = 100_000;
    let mut w = WindowedDistinct::new(3600, 6, 1_000_000);
    for a in 0..ACTORS {
        w.observe(
            &a,
            subject_hash(&format!("acct-{a}")),
            1_700_000_000 + a as i64 % 600,
        );
    }
    for a in 0..ACTORS {
        w.observe(&a, subject_hash(&format!("acct-{a}")), 1_700_000_700);
    }
    let per_actor = w.heap_bytes() as f64 / ACTORS as f64;
    assert!(per_actor < 100.0, "{per_actor} bytes per actor");

    let mut ips = WindowedDistinct::new(3600, 6, 1_000_000);
    for a in 0..ACTORS as u32 {
        let ip = std::net::IpAddr::from(a.to_be_bytes());
        ips.observe(&ip, u64::from(a), 1_700_000_000);
    }
    let per_ip = ips.heap_bytes() as f64 / ACTORS as f64;
    assert!(per_ip < 128.0, "{per_ip} bytes per IP actor");

    // Everything leaves the window; the table shrinks back.
    assert_eq!(w.expire(1_700_010_000), ACTORS as usize);
    assert!(w.heap_bytes() < 1_000, "{}", w.heap_bytes());
}

#[test]
fn arguments_are_clamped() {
    let w = WindowedDistinct::<u8>::new(0, 0, 0);
    assert_eq!((w.window_secs(), w.slices(), w.max_actors()), (1, 1, 1));
    let w = WindowedDistinct::<u8>::new(10, 1_000, 5);
    assert_eq!((w.window_secs(), w.slices()), (10, 10));
    let w = WindowedDistinct::<u8>::new(100, 6, 5);
    assert_eq!(w.window_secs(), 96, "slices of 16 s");
    let mut w = WindowedDistinct::new(60, 6, 1);
    w.observe(&1u8, 1, i64::MIN);
    w.observe(&1u8, 2, i64::MAX);
    w.observe(&2u8, 2, i64::MAX);
    assert_eq!(w.len(), 1);
    assert_eq!(w.estimate(&2u8, i64::MAX), 1);
    w.expire(i64::MIN);
    w.expire(i64::MAX);
}
