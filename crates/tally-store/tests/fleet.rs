//! The fleet ledger against the real PostgreSQL server (127.0.0.1:5432,
//! database `test`, or `TALLY_TEST_PG_URL`). Each test works in a schema of
//! its own and drops it afterwards. Without a reachable server the tests say
//! they are skipped; with `CI=true` they must run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_core::merkle;
use tally_core::note::SignedCheckpoint;
use tally_core::record::IssuanceRecord;
use tally_store::fleet::node::{FleetConfig, FleetLedger};
use tally_store::fleet::{self, FleetError, RecordMac, Sequencer, Step};
use tally_store::{LedgerError, LedgerStore};

mod support;

use support::{Schema, record, signer, url};

fn mac() -> RecordMac {
    RecordMac::new(&[9u8; 32])
}

fn enqueue(c: &mut postgres::Client, s: &str, r: &IssuanceRecord) -> Result<i64, FleetError> {
    fleet::enqueue(c, s, &mac(), "test", std::slice::from_ref(r), 1_800_000_000)?
        .pop()
        .unwrap()
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
                let mut c = fleet::migrate_with(fleet::connect(&url()).unwrap(), &s).unwrap();
                for i in 0..100 {
                    enqueue(&mut c, &s, &record(n * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for n in nodes {
        n.join().unwrap();
    }
    // Durable and visible before any sequencing: a node's registry miss finds it.
    let mut q = fleet::connect(&url()).unwrap();
    assert_eq!(
        fleet::lookup(&mut q, &s, &mac(), "jti-2042")
            .unwrap()
            .unwrap()
            .record,
        record(2042)
    );
    assert!(
        fleet::lookup(&mut q, &s, &mac(), "jti-never")
            .unwrap()
            .is_none()
    );
    let caught_up: Vec<_> = fleet::since(&mut q, &s, &mac(), 0, &[], 10_000)
        .unwrap()
        .into_iter()
        .map(|(seq, r)| (seq, r.unwrap().record))
        .collect();
    assert_eq!(caught_up.len(), 300);
    assert!(caught_up.windows(2).all(|w| w[0].0 < w[1].0));
    // A token id is queued once.
    assert!(matches!(
        enqueue(&mut q, &s, &record(0)),
        Err(FleetError::Duplicate)
    ));
    assert_eq!(fleet::backlog(&mut q, &s).unwrap(), 300);

    let mut seq = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer(), mac()).unwrap();
    assert_eq!(drain(&mut seq), 300);
    assert_eq!(fleet::backlog(&mut q, &s).unwrap(), 0);
    let mut c = fleet::connect(&url()).unwrap();
    let report = fleet::verify(&mut c, &s, &signer().verifier(), &mac()).unwrap();
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

    // Twice in one batch: queued once.
    let twice =
        fleet::enqueue(&mut q, &s, &mac(), "test", &[record(7777), record(7777)], 0).unwrap();
    assert!(
        matches!(twice[..], [Ok(_), Err(FleetError::Duplicate)]),
        "{twice:?}"
    );
    assert_eq!(fleet::backlog(&mut q, &s).unwrap(), 1);

    // An edited record is found.
    c.batch_execute(&format!(
        "UPDATE {s}.queue SET record = set_byte(record, 10, get_byte(record, 10) # 1) WHERE token_id = 'jti-1007'"
    ))
    .unwrap();
    match fleet::verify(&mut c, &s, &signer().verifier(), &mac()) {
        Err(FleetError::Tampered { .. }) => {}
        other => panic!("tampering not found: {:?}", other.map(|r| r.tree.len())),
    }
}

#[test]
fn a_record_slipped_into_the_database_is_refused_and_never_sequenced() {
    let Some(schema) = Schema::new("slipped") else {
        return;
    };
    let s = schema.0.clone();
    let mut c = fleet::migrate_with(fleet::connect(&url()).unwrap(), &s).unwrap();
    enqueue(&mut c, &s, &record(1)).unwrap();
    // Someone with write access to PostgreSQL, but not the master key, queues
    // a record for a token they minted: with a made-up MAC, or one copied
    // from a genuine row.
    let forged = record(666).encode().unwrap();
    for (jti, tag) in [
        ("jti-666", vec![0u8; 32]),
        ("jti-667", mac().tag(&record(1).encode().unwrap())),
    ] {
        c.execute(
            &format!(
                "WITH q AS (INSERT INTO {s}.queue (token_id, record, token_sha256, expires_at, queued_at, mac)
                 VALUES ($1, $2, $3, 0, 0, $4) RETURNING seq) INSERT INTO {s}.pending SELECT seq FROM q"
            ),
            &[&jti, &forged, &vec![0u8; 32], &tag],
        )
        .unwrap();
    }
    enqueue(&mut c, &s, &record(2)).unwrap();
    for jti in ["jti-666", "jti-667"] {
        assert!(
            matches!(
                fleet::lookup(&mut c, &s, &mac(), jti),
                Err(FleetError::Tampered { .. })
            ),
            "{jti}"
        );
    }
    // The sequencer sets both aside, says so, and goes on.
    let mut seq = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer(), mac()).unwrap();
    assert_eq!(drain(&mut seq), 2);
    let rejected = seq.take_rejected();
    // The two forged rows (queued 2nd and 3rd), for their MACs.
    assert_eq!(
        rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3],
        "{rejected:?}"
    );
    assert!(
        rejected.iter().all(|r| r.reason.contains("MAC")),
        "{rejected:?}"
    );
    let report = fleet::verify(&mut c, &s, &signer().verifier(), &mac()).unwrap();
    assert_eq!(report.tree.len(), 2);
    assert_eq!(fleet::backlog(&mut c, &s).unwrap(), 0);
    // Under another MAC key (another master key) nothing verifies.
    assert!(matches!(
        fleet::verify(
            &mut c,
            &s,
            &signer().verifier(),
            &RecordMac::new(&[8u8; 32])
        ),
        Err(FleetError::Tampered { .. })
    ));
}

fn open_node(s: &str, name: &str, seen: Arc<Mutex<Vec<String>>>) -> FleetLedger {
    let mut cfg = FleetConfig::new(&url(), s, name);
    cfg.readers = 2;
    FleetLedger::open(
        cfg,
        signer(),
        mac(),
        &mut |_, _| {},
        Arc::new(move |q: &fleet::QueuedRecord| {
            seen.lock().unwrap().push(q.record.token_id.clone())
        }),
        // Findings are read back with tampered(): a panic here would only
        // end a background thread.
        Arc::new(|_: &FleetError| {}),
    )
    .unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_follow_each_others_records_and_checkpoints() {
    let Some(schema) = Schema::new("nodes") else {
        return;
    };
    let s = schema.0.clone();
    let seen_a = Arc::new(Mutex::new(Vec::new()));
    let seen_b = Arc::new(Mutex::new(Vec::new()));
    let a = open_node(&s, "a", seen_a.clone());
    let b = open_node(&s, "b", seen_b.clone());
    assert_eq!(a.size(), 0);
    assert_eq!(LedgerStore::backend(&a), "postgres");
    for i in 0..40 {
        tally_store::store::append_blocking(&a, record(i)).unwrap();
    }
    // Durable means visible to every node at once, sequenced or not.
    assert_eq!(b.record_of("jti-39").unwrap().unwrap(), record(39));
    assert!(b.record_of("jti-40").unwrap().is_none());
    assert!(matches!(
        tally_store::store::append_blocking(&b, record(3)),
        Err(LedgerError::DuplicateTokenId)
    ));
    // B's follower hands every record to its registry, exactly once.
    wait_for("b follows a", || seen_b.lock().unwrap().len() == 40);
    let mut ids = seen_b.lock().unwrap().clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    // Exactly one sequencer; both nodes reach the same verified checkpoint.
    wait_for("sequenced", || a.size() == 40 && b.size() == 40);
    assert!(a.is_sequencer() ^ b.is_sequencer(), "exactly one leader");
    assert_eq!(a.checkpoint().note(), b.checkpoint().note());
    let proof = b.inclusion_proof("jti-7", None).unwrap().unwrap();
    merkle::verify_inclusion(
        &merkle::leaf_hash(&record(7).encode().unwrap()),
        proof.leaf_index,
        proof.tree_size,
        &proof.hashes,
        &b.checkpoint().checkpoint().root_hash,
    )
    .unwrap();
    assert_eq!(b.entries(0, 40).unwrap().len(), 40);
    assert!(a.tampered().is_none() && b.tampered().is_none());
    a.close();
    b.close();
}

#[test]
fn the_sequencer_fails_over_and_the_ledger_stays_consistent() {
    let Some(schema) = Schema::new("failover") else {
        return;
    };
    let s = schema.0.clone();
    let mut q = fleet::migrate_with(fleet::connect(&url()).unwrap(), &s).unwrap();
    for i in 0..50 {
        enqueue(&mut q, &s, &record(i)).unwrap();
    }
    let mut a = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer(), mac()).unwrap();
    let mut b = Sequencer::new(fleet::connect(&url()).unwrap(), &s, signer(), mac()).unwrap();
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
        enqueue(&mut q, &s, &record(i)).unwrap();
    }
    // Fail-over takes one poll once PostgreSQL has ended the dead session
    // (BENCHMARKS.md measures it); the deadline here only catches a fleet
    // that never fails over.
    let mut took_over = None;
    while died.elapsed() < Duration::from_secs(30) {
        if let Step::Sequenced { .. } = b.step(64, 0).unwrap() {
            took_over = Some(died.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took_over = took_over.expect("no fail-over within 30 s");
    eprintln!("sequencer fail-over after {took_over:?}");
    assert_eq!(drain(&mut b), 120);
    let after =
        SignedCheckpoint::verify(&b.checkpoint().unwrap().unwrap(), &signer().verifier()).unwrap();

    // The checkpoints before and after are consistent (RFC 6962 proof).
    let mut c = fleet::connect(&url()).unwrap();
    let report = fleet::verify(&mut c, &s, &signer().verifier(), &mac()).unwrap();
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

#[test]
fn a_node_refuses_a_ledger_rolled_back_behind_what_it_verified() {
    let Some(schema) = Schema::new("rollback") else {
        return;
    };
    let s = schema.0.clone();
    let dir = std::env::temp_dir().join(format!("tally-witness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let witness = dir.join("ledger.head");
    let open = || {
        let mut cfg = FleetConfig::new(&url(), &s, "a");
        cfg.witness = Some(witness.clone());
        FleetLedger::open(
            cfg,
            signer(),
            mac(),
            &mut |_, _| {},
            Arc::new(|_: &fleet::QueuedRecord| {}),
            Arc::new(|_: &FleetError| {}),
        )
    };
    let a = open().unwrap();
    for i in 0..5 {
        tally_store::store::append_blocking(&a, record(i)).unwrap();
    }
    wait_for("sequenced and witnessed", || a.size() == 5);
    assert!(a.tampered().is_none());
    a.close();
    drop(a);
    // Reopening the same ledger is fine.
    open().unwrap().close();
    // Someone restores an old backup (here: the empty ledger).
    let mut c = fleet::connect(&url()).unwrap();
    c.batch_execute(&format!(
        "TRUNCATE {s}.leaves, {s}.checkpoints, {s}.pending, {s}.rejected, {s}.queue"
    ))
    .unwrap();
    match open() {
        Err(LedgerError::Tampered { reason, .. }) => {
            assert!(reason.contains("rolled back"), "{reason}")
        }
        Ok(_) => panic!("a rolled-back ledger was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
