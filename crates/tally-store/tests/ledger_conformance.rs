//! One conformance suite for both ledgers behind [`LedgerStore`]: the
//! embedded SQLite `Ledger` and a fleet node on PostgreSQL (127.0.0.1:5432,
//! database `test`, or `TALLY_TEST_PG_URL`; a schema of its own, dropped at
//! the end). Without a reachable PostgreSQL the fleet half says it was
//! skipped; with `CI=true` it must run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_core::merkle;
use tally_core::note::SignedCheckpoint;
use tally_core::record::MAX_FIELD_LEN;
use tally_store::fleet::node::{FleetConfig, FleetLedger};
use tally_store::fleet::{self, RecordMac};
use tally_store::store::append_blocking;
use tally_store::{Ledger, LedgerError, LedgerStore};

mod support;

use support::{Schema, TempDir, record, signer, url};

/// Waits until every submitted record is in a published checkpoint (at
/// once for the embedded ledger; after the sequencer for a fleet).
fn settled(l: &dyn LedgerStore, size: u64) {
    let start = Instant::now();
    while l.size() < size {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}: {} of {size} sequenced",
            l.backend(),
            l.size()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What every ledger store promises.
fn conforms(l: &dyn LedgerStore) {
    let be = l.backend();
    assert_eq!(l.size(), 0, "{be}");
    assert!(l.is_healthy() && l.is_reachable() && l.tampered().is_none());
    let empty = l.checkpoint();
    SignedCheckpoint::verify(empty.note(), l.verifier()).unwrap();
    assert_eq!(empty.checkpoint().size, 0);

    // Durable on acknowledgement, found by token id at once.
    for i in 0..20 {
        append_blocking(l, record(i)).unwrap();
        assert_eq!(l.record_of(&format!("jti-{i}")).unwrap(), Some(record(i)));
    }
    assert_eq!(l.record_of("jti-never").unwrap(), None, "{be}");
    // A token id is recorded once; an invalid record is refused.
    assert!(matches!(
        append_blocking(l, record(3)),
        Err(LedgerError::DuplicateTokenId)
    ));
    let mut bad = record(99);
    bad.subject = "x".repeat(MAX_FIELD_LEN + 1);
    assert!(matches!(
        append_blocking(l, bad),
        Err(LedgerError::InvalidRecord(_))
    ));
    assert_eq!(l.record_of("jti-99").unwrap(), None, "{be}");

    settled(l, 20);
    let first = l.checkpoint();
    let c1 = first.checkpoint().clone();
    assert_eq!(c1.size, 20, "{be}");
    SignedCheckpoint::verify(first.note(), l.verifier()).unwrap();
    assert_eq!(l.root_at(20).unwrap(), c1.root_hash);

    // Every record is provably in the checkpoint, and the entries are the
    // records (in some order of the ledger's choosing).
    let entries = l.entries(0, 20).unwrap();
    assert_eq!(entries.len(), 20);
    for i in 0..20 {
        let p = l
            .inclusion_proof(&format!("jti-{i}"), None)
            .unwrap()
            .unwrap();
        let leaf = merkle::leaf_hash(&record(i).encode().unwrap());
        merkle::verify_inclusion(&leaf, p.leaf_index, p.tree_size, &p.hashes, &c1.root_hash)
            .unwrap_or_else(|e| panic!("{be}: inclusion of {i}: {e}"));
        assert_eq!(entries[p.leaf_index as usize], record(i).encode().unwrap());
    }
    assert!(l.inclusion_proof("jti-never", None).unwrap().is_none());

    // The ledger only grows: the next checkpoint is consistent with this one.
    for i in 20..33 {
        append_blocking(l, record(i)).unwrap();
    }
    settled(l, 33);
    let c2 = l.checkpoint().checkpoint().clone();
    let proof = l.consistency_proof(20, c2.size).unwrap();
    merkle::verify_consistency(20, c2.size, &proof, &c1.root_hash, &c2.root_hash)
        .unwrap_or_else(|e| panic!("{be}: consistency: {e}"));

    // Out-of-range questions get an error, never a wrong answer.
    assert!(matches!(
        l.consistency_proof(0, 5),
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.consistency_proof(5, c2.size + 1),
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.entries(0, c2.size + 1),
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.root_at(c2.size + 1),
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.inclusion_proof("jti-1", Some(c2.size + 1)),
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(l.tampered().is_none() && l.is_healthy(), "{be}");
    l.close();
    assert!(append_blocking(l, record(500)).is_err(), "{be}: closed");
}

#[test]
fn the_embedded_ledger_conforms() {
    let dir = TempDir::new("tally-conf-ledger");
    let ledger = Ledger::open(
        &dir.path().join("ledger.db"),
        signer(),
        &mut |_, _| {},
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(LedgerStore::backend(&ledger), "sqlite");
    conforms(&ledger);
}

#[test]
fn a_fleet_node_conforms() {
    let Some(schema) = Schema::new("conf_ledger") else {
        return;
    };
    let node = FleetLedger::open(
        FleetConfig::new(&url(), &schema.0, "conformance"),
        signer(),
        RecordMac::new(&[12u8; 32]),
        &mut |_, _| {},
        Arc::new(|_: &fleet::QueuedRecord| {}),
        Arc::new(|_: &fleet::FleetError| {}),
    )
    .unwrap();
    assert_eq!(LedgerStore::backend(&node), "postgres");
    conforms(&node);
}
