//! `tally demo` end to end, small: signature-only verification exposes the
//! scraped records, tally exposes none, refuses every forged request
//! (including those for members who do not exist), and detects the attack.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn the_demo_shows_the_breach_and_tally_stopping_it() {
    let tmp = TempDir::new("demo");
    let out = tmp.path().join("out");
    let keep = tmp.path().join("data");
    // 300 customers, seed 7, JSON, reports under `out`.
    let demo = |extra: &[&str]| -> Value {
        let mut args = vec![
            "demo",
            "--customers",
            "300",
            "--seed",
            "7",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&tally_ok(&args, None)).unwrap()
    };
    let doc = demo(&["--keep", keep.to_str().unwrap()]);
    let (a, b) = (&doc["signature_only"], &doc["tally"]);
    // 300 customers, 3 routes each: everything the insider asked for.
    assert_eq!(a["records_exposed"], 900, "{a:#}");
    assert_eq!(a["customers_exposed"], 300);
    assert_eq!(b["records_exposed"], 0, "{b:#}");
    assert_eq!(b["customers_exposed"], 0);
    assert_eq!(b["forged_tokens"], 330);
    assert_eq!(b["ghost_tokens"], 30);
    let sent = b["attack_requests"].as_u64().unwrap();
    assert_eq!(sent, 990);
    assert_eq!(b["attack_let_through"], 0);
    let refused: u64 = b["attack_refused"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(refused, sent);
    assert_eq!(b["ghost_requests_refused"], 90);
    assert!(b["attack_refused"]["not_issued"].as_u64().unwrap() >= 1);
    // Ordinary customers were never refused, in either run.
    for p in [a, b] {
        assert_eq!(p["legit_allowed"], p["legit_requests"], "{p:#}");
        assert!(p["legit_requests"].as_u64().unwrap() > 0);
        assert!(p["detection_ms"].as_f64().is_some());
        assert!(p["incident"].as_i64().is_some());
        let report = std::fs::read_to_string(p["report"].as_str().unwrap()).unwrap();
        assert!(report.contains("shop-2026-1"), "the report names the key");
    }
    // (a): every customer exposed; the invented member ids are evidence of
    // minting, not affected people, and stay out of the list. (b): every customer tried,
    // none exposed.
    let csv_a = std::fs::read_to_string(a["affected"].as_str().unwrap()).unwrap();
    assert_eq!(
        csv_a.lines().filter(|l| l.contains(",exposed,")).count(),
        300
    );
    assert_eq!(csv_a.lines().count(), 1 + 300, "{csv_a}");
    let csv_b = std::fs::read_to_string(b["affected"].as_str().unwrap()).unwrap();
    assert!(!csv_b.contains(",exposed,"), "{csv_b}");
    for csv in [&csv_a, &csv_b] {
        assert!(
            !csv.contains("\"m9"),
            "a member id that does not exist is listed:\n{csv}"
        );
    }
    // (a)'s report says what monitor mode did: every forged request was
    // allowed (monitor mode), none blocked, and its counts are the demo's.
    let report_a = std::fs::read_to_string(a["report"].as_str().unwrap()).unwrap();
    assert!(
        report_a.contains(
            "990 attack requests it judged invalid were allowed (monitor mode), not blocked"
        ),
        "{report_a}"
    );
    assert!(!report_a.contains("attempted (blocked)"), "{report_a}");
    assert!(
        report_a.contains("30 tokens named 30 member ids that do not exist (90 requests)"),
        "{report_a}"
    );
    assert_eq!(a["report_allowed_monitor"], a["attack_requests"], "{a:#}");
    assert_eq!(a["report_forged_requests"], a["attack_requests"]);
    assert_eq!(a["report_refused"], 0);
    assert_eq!(a["report_ghost_members"], a["ghost_tokens"]);
    assert_eq!(a["report_ghost_tokens"], a["ghost_tokens"]);
    assert_eq!(a["report_ghost_requests"], 90);
    // (b)'s report: nothing allowed; every attack request carried a forged
    // token and is counted as one, those refused not_issued and those the
    // blocked address sent after the automatic block alike (the gate
    // examined their tokens for the record); every customer tried is listed
    // as attempted, and the invented member ids apart.
    let report_b = std::fs::read_to_string(b["report"].as_str().unwrap()).unwrap();
    assert!(
        !report_b.contains("were allowed (monitor mode)"),
        "{report_b}"
    );
    assert_eq!(b["report_allowed_monitor"], 0, "{b:#}");
    assert_eq!(b["report_forged_requests"], b["attack_requests"], "{b:#}");
    assert_eq!(b["report_refused"], b["attack_requests"], "{b:#}");
    assert_eq!(b["customers_attempted_only"], 300, "{b:#}");
    assert_eq!(csv_b.lines().count(), 1 + 300, "{csv_b}");
    assert_eq!(b["report_ghost_members"], b["ghost_tokens"]);
    assert_eq!(b["report_ghost_tokens"], b["ghost_tokens"]);
    assert_eq!(b["report_ghost_requests"], 90);
    assert!(
        report_b.contains("990 requests carried forged tokens ("),
        "{report_b}"
    );
    assert!(!report_b.contains("were not examined"), "{report_b}");
    assert_eq!(b["customers_exposed"], 0);
    let kr = b["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[0].as_str().unwrap().starts_with("KR Network Act"));
    assert!(kr.is_some(), "{:?}", b["deadlines"]);
    // Deterministic figures for a seed: the same run gives the same numbers.
    let again = demo(&[]);
    for k in [
        "records_exposed",
        "customers_exposed",
        "customers_attempted_only",
        "forged_tokens",
        "attack_requests",
        "legit_requests",
        "report_forged_requests",
        "report_refused",
        "report_allowed_monitor",
        "report_ghost_members",
        "report_ghost_requests",
    ] {
        assert_eq!(again["signature_only"][k], a[k], "{k}");
        assert_eq!(again["tally"][k], b[k], "{k}");
    }
}
