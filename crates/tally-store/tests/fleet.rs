//! The fleet ledger against the real PostgreSQL server (127.0.0.1:5432,
//! database `test`, or `TALLY_TEST_PG_URL`). Each test works in a schema of
//! its own and drops it afterwards. Without a reachable server the tests say
//! they are skipped; with `CI=true` they must run.

use std::time::{Duration, Instant};

use tally_core::digest::TokenDigest;
use tally_core::merkle;
use tally_core::note::{NoteSigner, SignedCheckpoint};
use tally_core::record::IssuanceRecord;
use tally_store::fleet::{self, FleetError, Queue, Sequencer, Step};

fn url() -> String {
    std::env::var("TALLY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema for one test, dropped when the guard goes.
struct Schema(String);

impl Schema {
    fn new(name: &str) -> Option<Schema> {
        match fleet::connect(&url()) {
            Ok(_) => Some(Schema(format!("t_{name}_{}", std::process::id()))),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but PostgreSQL at {} is unreachable: {e}",
                    url()
                );
                eprintln!("skipping: PostgreSQL at {} is unreachable ({e})", url());
                None
            }
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = fleet::connect(&url()) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
        }
    }
}

fn record(i: usize) -> IssuanceRecord {
    let token = format!("token-bytes-{i}");
    IssuanceRecord {
        token_id: format!("jti-{i}"),
        token_sha256: TokenDigest::of(token.as_bytes()),
        subject: format!("member-{i}"),
        kid: "k1".into(),
        issuer: "https://shop.example".into(),
        issued_at: 1_800_000_000 + i as i64,
        expires_at: 1_800_000_900 + i as i64,
        auth_context: "pwd".into(),
    }
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("tally.example/fleet", &[7u8; 32]).unwrap()
}

fn drain(s: &mut Sequencer) -> u64 {
    let mut size = 0;
    loop {
        match s.step(64, 1_800_000_000).unwrap() {
            Step::Sequenced { size: n, .. } => size = n,
            Step::Idle => return size,
            Step::NotLeader => panic!("expected to lead"),
        }
    }
}

#[test]
fn records_queued_on_many_nodes_are_honoured_at_once_and_sequenced_contiguously() {
    let Some(schema) = Schema::new("queue") else {
        return;
    };
    let s = schema.0.clone();
    // Three nodes queue concurrently.
    let nodes: Vec<_> = (0..3)
        .map(|n| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut q = Queue::new(fleet::connect(&url()).unwrap(), &s).unwrap();
                for i in 0..100 {
                    q.enqueue(&record(n * 1000 + i), 1_800_000_000).unwrap();
                }
            })
        })
        .collect();
    for n in nodes {
        n.join().unwrap();
    }
    // Durable and visible before any sequencing: a node's registry miss finds it.
    let mut q = Queue::new(fleet::connect(&url()).unwrap(), &s).unwrap();
    assert_eq!(q.lookup("jti-2042").unwrap().unwrap(), record(2042));
    assert!(q.lookup("jti-never").unwrap().is_none());
    let caught_up = q.since(0, 10_000).unwrap();
    assert_eq!(caught_up.len(), 300);
    assert!(caught_up.windows(2).all(|w| w[0].0 < w[1].0));
    // A token id is queued once.
    assert!(q.enqueue(&record(0), 1_800_000_000).is_err());

    let mut seq = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer()).unwrap();
    assert_eq!(drain(&mut seq), 300);
    let mut c = fleet::connect(&url()).unwrap();
    let report = fleet::verify(&mut c, &s, &signer().verifier()).unwrap();
    assert_eq!(report.tree.len(), 300);
    assert!(report.checkpoints >= 5, "one checkpoint per batch of 64");
    // The latest checkpoint commits to exactly the queued records.
    let note = seq.checkpoint().unwrap().unwrap();
    let cp = SignedCheckpoint::verify(&note, &signer().verifier()).unwrap();
    assert_eq!(cp.checkpoint().size, 300);
    let mut leaves: Vec<_> = caught_up
        .iter()
        .map(|(_, r)| merkle::leaf_hash(&r.encode().unwrap()))
        .collect();
    let mut tree_leaves: Vec<_> = (0..300).map(|i| report.tree.leaf(i).unwrap()).collect();
    leaves.sort();
    tree_leaves.sort();
    assert_eq!(leaves, tree_leaves);

    // An edited record is found.
    c.batch_execute(&format!(
        "UPDATE {s}.queue SET record = set_byte(record, 10, get_byte(record, 10) # 1) WHERE token_id = 'jti-1007'"
    ))
    .unwrap();
    match fleet::verify(&mut c, &s, &signer().verifier()) {
        Err(FleetError::Tampered { .. }) => {}
        other => panic!("tampering not found: {:?}", other.map(|r| r.tree.len())),
    }
}

#[test]
fn the_sequencer_fails_over_and_the_ledger_stays_consistent() {
    let Some(schema) = Schema::new("failover") else {
        return;
    };
    let s = schema.0.clone();
    let mut q = Queue::new(fleet::connect(&url()).unwrap(), &s).unwrap();
    for i in 0..50 {
        q.enqueue(&record(i), 1_800_000_000).unwrap();
    }
    let mut a = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer()).unwrap();
    let mut b = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer()).unwrap();
    assert_eq!(drain(&mut a), 50);
    assert!(a.is_leader());
    assert_eq!(
        b.step(64, 0).unwrap(),
        Step::NotLeader,
        "one sequencer at a time"
    );
    let before =
        SignedCheckpoint::verify(&a.checkpoint().unwrap().unwrap(), &signer().verifier()).unwrap();

    // The leader dies (its connection with it); records keep arriving.
    drop(a);
    let died = Instant::now();
    for i in 50..120 {
        q.enqueue(&record(i), 1_800_000_000).unwrap();
    }
    let mut took_over = None;
    while died.elapsed() < Duration::from_secs(5) {
        if let Step::Sequenced { .. } = b.step(64, 0).unwrap() {
            took_over = Some(died.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took_over = took_over.expect("no fail-over within 5 s");
    eprintln!("sequencer fail-over after {took_over:?}");
    assert_eq!(drain(&mut b), 120);
    let after =
        SignedCheckpoint::verify(&b.checkpoint().unwrap().unwrap(), &signer().verifier()).unwrap();

    // The checkpoints before and after are consistent (RFC 6962 proof).
    let mut c = fleet::connect(&url()).unwrap();
    let report = fleet::verify(&mut c, &s, &signer().verifier()).unwrap();
    let proof = report
        .tree
        .consistency_proof(before.checkpoint().size, after.checkpoint().size)
        .unwrap();
    merkle::verify_consistency(
        before.checkpoint().size,
        after.checkpoint().size,
        &proof,
        &before.checkpoint().root_hash,
        &after.checkpoint().root_hash,
    )
    .unwrap();
}
