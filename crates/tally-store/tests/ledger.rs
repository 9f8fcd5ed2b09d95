//! Integration tests of the SQLite ledger: group commit, signed checkpoints,
//! proofs, duplicate and invalid records, reopen, and tamper evidence (with a
//! second, raw SQLite connection to the same file, as an insider would use).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use tally_core::digest::TokenDigest;
use tally_core::merkle::{self, Hash, MerkleTree};
use tally_core::note::{Checkpoint, NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::{IssuanceRecord, MAX_FIELD_LEN};
use tally_store::{Ledger, LedgerError, VerifyReport, verify_ledger};

const ORIGIN: &str = "test.tally/ledger";

// ---------------------------------------------------------------- helpers --

/// A unique directory under the system temp dir (`tempfile`), removed on drop.
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tally-store-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir.path().to_path_buf(), dir)
    }

    fn ledger(&self) -> PathBuf {
        self.0.join("ledger.db")
    }
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[7u8; 32]).expect("signer")
}

fn verifier() -> NoteVerifier {
    signer().verifier()
}

fn record(tag: &str, i: usize) -> IssuanceRecord {
    IssuanceRecord {
        token_id: format!("{tag}-{i:05}"),
        token_sha256: TokenDigest::of(format!("header.{tag}.{i}.sig").as_bytes()),
        subject: format!("user{}", i % 7),
        kid: "kid-1".into(),
        issuer: "https://tally.test".into(),
        issued_at: 1_700_000_000 + i as i64,
        expires_at: 1_700_000_900 + i as i64,
        auth_context: "pwd".into(),
    }
}

fn open(path: &Path) -> Ledger {
    Ledger::open(path, signer(), &mut |_, _| {}, &mut |_, _| {}).expect("open ledger")
}

/// A ledger with `n` records appended one by one (one batch, one checkpoint each).
fn populated(path: &Path, tag: &str, n: usize) -> (Ledger, Vec<IssuanceRecord>) {
    let ledger = open(path);
    let mut records = Vec::new();
    for i in 0..n {
        let r = record(tag, i);
        assert_eq!(ledger.append_blocking(r.clone()).expect("append"), i as u64);
        records.push(r);
    }
    (ledger, records)
}

/// A second, independent read-write connection to the ledger file.
fn raw(path: &Path) -> Connection {
    let c = Connection::open(path).expect("raw connection");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn raw_read_only(path: &Path) -> Connection {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("read-only connection");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Runs `verify_ledger` over the file, as `tally ledger verify` does.
fn verify_file(path: &Path) -> Result<VerifyReport, LedgerError> {
    let conn = raw_read_only(path);
    verify_ledger(&conn, &verifier(), &mut |_, _| {}, &mut |_, _| {}).map(|(_, report)| report)
}

fn expect_tampered<T: std::fmt::Debug>(
    result: Result<T, LedgerError>,
    what: &str,
) -> (u64, String) {
    match result {
        Err(LedgerError::Tampered { index, reason }) => (index, reason),
        other => panic!("{what}: expected Tampered, got {other:?}"),
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn stored_record(conn: &Connection, idx: u64) -> Vec<u8> {
    conn.query_row(
        "SELECT record FROM ledger WHERE idx = ?1",
        params![idx as i64],
        |r| r.get(0),
    )
    .expect("stored record")
}

/// The running ledger must refuse the next append as `ledger_tampered`, report
/// the finding, write nothing, and keep refusing.
fn assert_running_writer_refuses(ledger: &Ledger, path: &Path, tag: &str) -> LedgerError {
    let rows_before = count(&raw_read_only(path), "SELECT count(*) FROM ledger");
    let size_before = ledger.size();
    let err = ledger
        .append_blocking(record(tag, 90_000))
        .expect_err("append on a tampered ledger must be refused");
    assert_eq!(err.code(), "ledger_tampered", "{err:?}");
    let finding = ledger.tampered().expect("tampered() reports the finding");
    assert_eq!(finding.code(), "ledger_tampered");
    assert!(!ledger.is_healthy());
    // Refused again at once, and nothing was written or acknowledged.
    let again = ledger.append_blocking(record(tag, 90_001)).unwrap_err();
    assert_eq!(again.code(), "ledger_tampered");
    assert_eq!(ledger.size(), size_before);
    let rows_after = count(&raw_read_only(path), "SELECT count(*) FROM ledger");
    assert_eq!(
        rows_after, rows_before,
        "the writer wrote to a tampered ledger"
    );
    finding
}

fn assert_reopen_refused(path: &Path) -> (u64, String) {
    let result = Ledger::open(path, signer(), &mut |_, _| {}, &mut |_, _| {});
    expect_tampered(result.map(|_| ()), "reopen")
}

/// Root of the tree over `entries(0, size)`, recomputed from the record bytes.
fn recomputed_root(ledger: &Ledger, size: u64) -> Hash {
    if size == 0 {
        return merkle::empty_root();
    }
    let mut tree = MerkleTree::new();
    let mut start = 0;
    while start < size {
        let end = (start + 1000).min(size);
        for bytes in ledger.entries(start, end).expect("entries") {
            tree.push(merkle::leaf_hash(&bytes));
        }
        start = end;
    }
    assert_eq!(tree.len(), size);
    tree.root()
}

/// An `append` future polled once with a no-op waker (it submits on first poll).
struct Started<F: Future> {
    fut: Pin<Box<F>>,
    done: Option<F::Output>,
}

fn start<F: Future>(f: F) -> Started<F> {
    let mut fut = Box::pin(f);
    let mut cx = Context::from_waker(Waker::noop());
    let done = match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    };
    Started { fut, done }
}

/// Polls until ready (10 s at most).
fn finish<F: Future>(mut s: Started<F>) -> F::Output {
    if let Some(out) = s.done.take() {
        return out;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = s.fut.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(Instant::now() < deadline, "append did not resolve");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Blocks the ledger writer's next transaction by holding the file's write lock
/// (without committing, so no tamper signal) until the guard is released.
struct WriteLock(Connection);

impl WriteLock {
    fn take(path: &Path) -> WriteLock {
        let c = raw(path);
        c.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        WriteLock(c)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("rollback");
    }
}

// ------------------------------------------------------------ group commit --

#[test]
fn concurrent_appends_are_group_committed_durably_and_read_back_exactly() {
    let dir = TempDir::new("group");
    let path = dir.ledger();
    let ledger = Arc::new(open(&path));
    const THREADS: usize = 8;
    const PER_THREAD: usize = 60;
    let barrier = Arc::new(Barrier::new(THREADS));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let ledger = ledger.clone();
        let barrier = barrier.clone();
        let path = path.clone();
        handles.push(std::thread::spawn(move || {
            // An independent reader: what was acknowledged must already be
            // committed, together with a checkpoint covering it.
            let reader = raw_read_only(&path);
            barrier.wait();
            let mut acked = Vec::new();
            for i in 0..PER_THREAD {
                let r = record(&format!("t{t}"), i);
                let index = ledger.append_blocking(r.clone()).expect("append");
                let bytes = stored_record(&reader, index);
                assert_eq!(bytes, r.encode().unwrap(), "acknowledged row {index}");
                let covered: i64 = count(&reader, "SELECT max(size) FROM checkpoints");
                assert!(
                    covered as u64 > index,
                    "index {index} acknowledged before a checkpoint covering it committed"
                );
                acked.push((index, r));
            }
            acked
        }));
    }
    let mut acked: Vec<(u64, IssuanceRecord)> = Vec::new();
    for h in handles {
        acked.extend(h.join().expect("appender thread"));
    }
    let n = (THREADS * PER_THREAD) as u64;
    acked.sort_by_key(|(i, _)| *i);
    let indices: Vec<u64> = acked.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indices,
        (0..n).collect::<Vec<_>>(),
        "indices unique and contiguous"
    );
    assert_eq!(ledger.size(), n);

    for (index, r) in &acked {
        let found = ledger
            .lookup(&r.token_id)
            .expect("lookup")
            .expect("record present");
        assert_eq!(found.index, *index);
        assert_eq!(&found.record, r);
        let bytes = ledger.entries(*index, index + 1).expect("entries");
        assert_eq!(
            bytes,
            vec![r.encode().unwrap()],
            "entry {index} byte-identical"
        );
    }

    let conn = raw_read_only(&path);
    // One checkpoint row for the empty tree at open, then one per batch.
    let batches = count(&conn, "SELECT count(*) FROM checkpoints WHERE size > 0") as u64;
    eprintln!("{n} records in {batches} batches");
    assert!(batches >= 1);
    assert!(
        batches < n,
        "group commit formed no batch: {batches} checkpoints for {n} records"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM ledger") as u64, n);
    let cp = ledger.checkpoint();
    assert_eq!(cp.checkpoint().size, n);
    assert_eq!(cp.checkpoint().root_hash, recomputed_root(&ledger, n));
    let report = verify_file(&path).expect("verifies");
    assert_eq!(report.size, n);
    assert_eq!(report.checkpoints, batches + 1);
}

#[test]
fn appends_queued_behind_a_held_write_lock_wait_and_commit_as_one_batch() {
    // Deterministic group commit: while the writer waits on the file lock,
    // everything submitted queues up and is committed as ONE batch.
    let dir = TempDir::new("batch");
    let path = dir.ledger();
    let ledger = open(&path);
    let lock = WriteLock::take(&path);
    let plug = start(ledger.append(record("plug", 0)));
    std::thread::sleep(Duration::from_millis(300));
    let queued: Vec<_> = (0..20)
        .map(|i| start(ledger.append(record("q", i))))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    lock.release();
    assert_eq!(finish(plug).expect("plug"), 0);
    let indices: Vec<u64> = queued.into_iter().map(|f| finish(f).unwrap()).collect();
    assert_eq!(indices, (1..=20).collect::<Vec<u64>>());
    let conn = raw_read_only(&path);
    let sizes: Vec<i64> = conn
        .prepare("SELECT size FROM checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // The plug is normally alone in its batch (the writer took it before the
    // others queued); on a starved machine it may lead the one batch.
    assert!(
        sizes == vec![0, 1, 21] || sizes == vec![0, 21],
        "the 20 queued appends must form one batch: {sizes:?}"
    );
    verify_file(&path).expect("verifies");
}

// ------------------------------------------------------------- checkpoints --

#[test]
fn every_checkpoint_verifies_matches_the_recomputed_root_and_extends_the_previous() {
    let dir = TempDir::new("cp");
    let path = dir.ledger();
    let ledger = open(&path);
    let verifier = verifier();

    let empty = ledger.checkpoint();
    assert_eq!(empty.checkpoint().size, 0);
    assert_eq!(empty.checkpoint().root_hash, merkle::empty_root());
    assert_eq!(empty.checkpoint().origin, ORIGIN);
    SignedCheckpoint::verify(empty.note(), &verifier).expect("empty checkpoint verifies");

    let mut heads = vec![empty];
    let mut records = Vec::new();
    // Batches of various sizes: 1, 2, 3, ... appended concurrently per batch.
    let mut i = 0;
    for batch in 1..=7usize {
        let futs: Vec<_> = (0..batch)
            .map(|_| {
                let r = record("cp", i);
                i += 1;
                records.push(r.clone());
                start(ledger.append(r))
            })
            .collect();
        for f in futs {
            finish(f).expect("append");
        }
        heads.push(ledger.checkpoint());
    }
    let n = records.len() as u64;
    assert_eq!(ledger.size(), n);

    for head in &heads {
        let verified = SignedCheckpoint::verify(head.note(), &verifier).expect("verifies");
        assert_eq!(verified.checkpoint(), head.checkpoint());
        let size = head.checkpoint().size;
        assert_eq!(
            head.checkpoint().root_hash,
            recomputed_root(&ledger, size),
            "checkpoint at size {size}"
        );
        assert_eq!(ledger.root_at(size).unwrap(), head.checkpoint().root_hash);
    }
    // Checkpoints are not valid under another key, even with the same name.
    let other = NoteSigner::from_seed(ORIGIN, &[8u8; 32])
        .unwrap()
        .verifier();
    assert!(SignedCheckpoint::verify(heads.last().unwrap().note(), &other).is_err());

    // Consecutive (and all later) checkpoints are consistent.
    for (a_i, a) in heads.iter().enumerate() {
        for b in &heads[a_i..] {
            let (from, to) = (a.checkpoint().size, b.checkpoint().size);
            if from == 0 {
                continue;
            }
            let proof = ledger
                .consistency_proof(from, to)
                .expect("consistency proof");
            merkle::verify_consistency(
                from,
                to,
                &proof,
                &a.checkpoint().root_hash,
                &b.checkpoint().root_hash,
            )
            .unwrap_or_else(|e| panic!("consistency {from} -> {to}: {e}"));
        }
    }
    // A consistency proof is not accepted against a wrong new root.
    let last = heads.last().unwrap().checkpoint();
    let proof = ledger.consistency_proof(3, n).unwrap();
    assert!(
        merkle::verify_consistency(3, n, &proof, &heads[2].checkpoint().root_hash, &[0u8; 32])
            .is_err()
    );
    assert!(ledger.consistency_proof(0, n).is_err());
    assert!(ledger.consistency_proof(1, n + 1).is_err());

    // Inclusion proofs against the latest checkpoint and against older ones.
    for (idx, r) in records.iter().enumerate() {
        let idx = idx as u64;
        let leaf = merkle::leaf_hash(&r.encode().unwrap());
        let proof = ledger
            .inclusion_proof(&r.token_id, None)
            .unwrap()
            .expect("present");
        assert_eq!(proof.leaf_index, idx);
        assert_eq!(proof.tree_size, n);
        merkle::verify_inclusion(&leaf, idx, n, &proof.hashes, &last.root_hash)
            .unwrap_or_else(|e| panic!("inclusion of {idx}: {e}"));
        assert!(
            merkle::verify_inclusion(
                &leaf,
                idx,
                n,
                &proof.hashes,
                &heads[3].checkpoint().root_hash
            )
            .is_err()
        );
        for head in heads.iter().filter(|h| h.checkpoint().size > idx) {
            let size = head.checkpoint().size;
            let p = ledger
                .inclusion_proof(&r.token_id, Some(size))
                .unwrap()
                .unwrap();
            merkle::verify_inclusion(&leaf, idx, size, &p.hashes, &head.checkpoint().root_hash)
                .unwrap_or_else(|e| panic!("inclusion of {idx} in {size}: {e}"));
        }
        // Not in a tree that ends before it.
        assert!(ledger.inclusion_proof(&r.token_id, Some(idx)).is_err());
    }
    assert_eq!(ledger.inclusion_proof("no-such-token", None).unwrap(), None);

    // The stored checkpoint rows (one per batch) are signed heads of this tree;
    // each verifies, matches the recomputed root, and extends the previous one.
    let conn = raw_read_only(&path);
    let mut stmt = conn
        .prepare("SELECT size, root, note FROM checkpoints ORDER BY size")
        .unwrap();
    let rows: Vec<(i64, Vec<u8>, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let sizes: Vec<u64> = rows.iter().map(|r| r.0 as u64).collect();
    for head in &heads {
        assert!(sizes.contains(&head.checkpoint().size), "head stored");
    }
    assert_eq!(sizes.first(), Some(&0));
    assert_eq!(sizes.last(), Some(&n));
    let mut prev: Option<Checkpoint> = None;
    for (size, root, note) in &rows {
        let size = *size as u64;
        let cp = SignedCheckpoint::verify(note, &verifier)
            .expect("stored checkpoint verifies")
            .checkpoint()
            .clone();
        assert_eq!(cp.size, size);
        assert_eq!(root.as_slice(), cp.root_hash.as_slice());
        assert_eq!(cp.root_hash, recomputed_root(&ledger, size));
        if let Some(p) = prev.filter(|p| p.size > 0) {
            let proof = ledger.consistency_proof(p.size, size).unwrap();
            merkle::verify_consistency(p.size, size, &proof, &p.root_hash, &cp.root_hash)
                .unwrap_or_else(|e| panic!("stored {} -> {size}: {e}", p.size));
        }
        prev = Some(cp);
    }
}

// -------------------------------------------------- duplicates and invalid --

#[test]
fn duplicate_token_ids_are_refused_without_failing_the_rest_of_the_batch() {
    let dir = TempDir::new("dup");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "old", 3);

    // A duplicate of a committed record, alone in its batch: refused, no checkpoint.
    let conn = raw_read_only(&path);
    let cps_before = count(&conn, "SELECT count(*) FROM checkpoints");
    let mut dup = record("other", 0);
    dup.token_id = records[1].token_id.clone();
    let err = ledger.append_blocking(dup).unwrap_err();
    assert!(matches!(err, LedgerError::DuplicateTokenId), "{err:?}");
    assert_eq!(err.code(), "duplicate_token_id");
    assert_eq!(count(&conn, "SELECT count(*) FROM checkpoints"), cps_before);
    assert_eq!(ledger.size(), 3);
    assert!(ledger.is_healthy());

    // One batch holding new records, an in-batch duplicate and a duplicate of a
    // committed record (the write lock makes them queue into one batch).
    let lock = WriteLock::take(&path);
    let plug = start(ledger.append(record("plug", 0)));
    std::thread::sleep(Duration::from_millis(300));
    let a = record("new", 0);
    let b = record("new", 1);
    let mut a_again = record("evil", 0);
    a_again.token_id = a.token_id.clone();
    let mut old_again = record("evil", 1);
    old_again.token_id = records[2].token_id.clone();
    let c = record("new", 2);
    let futs = vec![
        start(ledger.append(a.clone())),
        start(ledger.append(a_again)),
        start(ledger.append(b.clone())),
        start(ledger.append(old_again)),
        start(ledger.append(c.clone())),
    ];
    std::thread::sleep(Duration::from_millis(100));
    lock.release();
    assert_eq!(finish(plug).unwrap(), 3);
    let outcomes: Vec<Result<u64, LedgerError>> = futs.into_iter().map(finish).collect();
    assert_eq!(outcomes[0].as_ref().unwrap(), &4);
    assert!(matches!(outcomes[1], Err(LedgerError::DuplicateTokenId)));
    assert_eq!(outcomes[2].as_ref().unwrap(), &5);
    assert!(matches!(outcomes[3], Err(LedgerError::DuplicateTokenId)));
    assert_eq!(outcomes[4].as_ref().unwrap(), &6);
    assert_eq!(ledger.size(), 7);
    // One checkpoint for the mixed batch (and normally one for the plug's).
    let new_cps = count(&conn, "SELECT count(*) FROM checkpoints") - cps_before;
    assert!(
        new_cps == 1 || new_cps == 2,
        "the mixed appends were split over batches: {new_cps} new checkpoints"
    );
    // The first writer of a token id wins; the committed record is untouched.
    assert_eq!(ledger.lookup(&a.token_id).unwrap().unwrap().record, a);
    assert_eq!(ledger.lookup(&c.token_id).unwrap().unwrap().index, 6);
    assert_eq!(
        ledger.lookup(&records[2].token_id).unwrap().unwrap().record,
        records[2]
    );
    verify_file(&path).expect("verifies");
    assert!(ledger.is_healthy());
    assert_eq!(ledger.append_blocking(record("after", 0)).unwrap(), 7);
}

#[test]
fn invalid_records_are_refused() {
    let dir = TempDir::new("invalid");
    let path = dir.ledger();
    let ledger = open(&path);

    let mut at_limit = record("limit", 0);
    at_limit.subject = "s".repeat(MAX_FIELD_LEN);
    at_limit.token_id = "t".repeat(MAX_FIELD_LEN);
    assert_eq!(ledger.append_blocking(at_limit.clone()).unwrap(), 0);
    assert_eq!(
        ledger.lookup(&at_limit.token_id).unwrap().unwrap().record,
        at_limit
    );

    let cases: Vec<(&str, IssuanceRecord)> = vec![
        ("subject", {
            let mut r = record("bad", 1);
            r.subject = "s".repeat(MAX_FIELD_LEN + 1);
            r
        }),
        ("token_id", {
            let mut r = record("bad", 2);
            r.token_id = "t".repeat(MAX_FIELD_LEN + 1);
            r
        }),
        ("kid", {
            let mut r = record("bad", 3);
            r.kid = "k".repeat(MAX_FIELD_LEN + 1);
            r
        }),
        ("issuer", {
            let mut r = record("bad", 4);
            r.issuer = "i".repeat(MAX_FIELD_LEN + 1);
            r
        }),
        ("auth_context", {
            let mut r = record("bad", 5);
            r.auth_context = "a".repeat(MAX_FIELD_LEN + 1);
            r
        }),
        ("empty token_id", {
            let mut r = record("bad", 6);
            r.token_id.clear();
            r
        }),
        ("NUL", {
            let mut r = record("bad", 7);
            r.subject = "a\0b".into();
            r
        }),
    ];
    for (what, r) in cases {
        let err = ledger.append_blocking(r.clone()).unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidRecord(_)),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), "invalid_record");
        if !r.token_id.is_empty() {
            assert_eq!(ledger.lookup(&r.token_id).unwrap(), None, "{what}");
        }
    }
    assert_eq!(ledger.size(), 1);
    assert!(ledger.is_healthy());
    assert_eq!(ledger.append_blocking(record("ok", 1)).unwrap(), 1);
    let report = verify_file(&path).unwrap();
    assert_eq!(report.size, 2);
}

// ------------------------------------------------------------------ reopen --

#[test]
fn reopen_preserves_size_root_and_every_record_in_order() {
    let dir = TempDir::new("reopen");
    let path = dir.ledger();
    let ledger = Arc::new(open(&path));
    // Some concurrent batches, then some single appends.
    let mut handles = Vec::new();
    for t in 0..4 {
        let ledger = ledger.clone();
        handles.push(std::thread::spawn(move || {
            (0..10)
                .map(|i| {
                    let r = record(&format!("r{t}"), i);
                    (ledger.append_blocking(r.clone()).unwrap(), r)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut acked: Vec<(u64, IssuanceRecord)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    for i in 0..5 {
        let r = record("single", i);
        acked.push((ledger.append_blocking(r.clone()).unwrap(), r));
    }
    acked.sort_by_key(|(i, _)| *i);
    let n = acked.len() as u64;
    let size = ledger.size();
    let root = ledger.root_at(size).unwrap();
    let head = ledger.checkpoint();
    assert_eq!(size, n);
    ledger.close();
    // Closed: appends are refused, not lost silently.
    assert_eq!(
        ledger
            .append_blocking(record("late", 0))
            .unwrap_err()
            .code(),
        "store_unavailable"
    );
    drop(ledger);

    for round in 0..2 {
        let mut seen = Vec::new();
        let mut last_progress = None;
        let reopened = Ledger::open(
            &path,
            signer(),
            &mut |done, total| last_progress = Some((done, total)),
            &mut |i, r| seen.push((i, r.clone())),
        )
        .expect("reopen");
        assert_eq!(
            seen, acked,
            "on_record sees every record in order (round {round})"
        );
        assert_eq!(last_progress, Some((n, n)));
        assert_eq!(reopened.size(), size);
        assert_eq!(reopened.root_at(size).unwrap(), root);
        assert_eq!(reopened.checkpoint(), head);
        for (index, r) in &acked {
            let found = reopened.lookup(&r.token_id).unwrap().unwrap();
            assert_eq!((found.index, &found.record), (*index, r));
        }
        assert_eq!(recomputed_root(&reopened, size), root);
        if round == 0 {
            // Dropped without an explicit close.
            drop(reopened);
        } else {
            // It goes on from where it was, consistently with the old head.
            let r = record("after", 0);
            assert_eq!(reopened.append_blocking(r).unwrap(), n);
            let new_head = reopened.checkpoint();
            let proof = reopened.consistency_proof(size, n + 1).unwrap();
            merkle::verify_consistency(
                size,
                n + 1,
                &proof,
                &root,
                &new_head.checkpoint().root_hash,
            )
            .expect("consistent with the head before reopen");
        }
    }
}

#[test]
fn reopen_with_another_ledger_key_is_refused() {
    let dir = TempDir::new("otherkey");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "k", 3);
    drop(ledger);
    let other = NoteSigner::from_seed(ORIGIN, &[9u8; 32]).unwrap();
    let result = Ledger::open(&path, other, &mut |_, _| {}, &mut |_, _| {});
    expect_tampered(result.map(|_| ()), "open with another key");
    // The right key still opens it.
    assert_eq!(open(&path).size(), 3);
}

// --------------------------------------------------------- tamper evidence --

const N: usize = 10;
const K: u64 = 4;

/// Record bytes of `r` with its subject changed (still a valid record).
fn forged_bytes(r: &IssuanceRecord) -> Vec<u8> {
    let mut f = r.clone();
    f.subject = "mallory".into();
    f.encode().unwrap()
}

#[test]
fn edited_record_is_found_by_verify_the_running_writer_and_reopen() {
    let dir = TempDir::new("edit");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "e", N);
    verify_file(&path).expect("clean ledger verifies");

    raw(&path)
        .execute(
            "UPDATE ledger SET record = ?1 WHERE idx = ?2",
            params![forged_bytes(&records[K as usize]), K as i64],
        )
        .unwrap();
    let (index, reason) = expect_tampered(verify_file(&path), "verify");
    assert_eq!(index, K, "{reason}");

    let finding = assert_running_writer_refuses(&ledger, &path, "e");
    assert!(
        matches!(finding, LedgerError::Tampered { index, .. } if index == K),
        "{finding:?}"
    );
    drop(ledger);
    let (index, _) = assert_reopen_refused(&path);
    assert_eq!(index, K);
}

#[test]
fn undecodable_record_bytes_are_tampering() {
    let dir = TempDir::new("garble");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "g", N);
    let mut bytes = records[K as usize].encode().unwrap();
    bytes.push(0); // trailing byte: no longer a record
    raw(&path)
        .execute(
            "UPDATE ledger SET record = ?1 WHERE idx = ?2",
            params![bytes, K as i64],
        )
        .unwrap();
    assert_eq!(expect_tampered(verify_file(&path), "verify").0, K);
    assert_running_writer_refuses(&ledger, &path, "g");
    drop(ledger);
    assert_eq!(assert_reopen_refused(&path).0, K);
}

#[test]
fn consistent_edit_of_record_and_leaf_hash_is_caught_by_the_signed_checkpoints() {
    let dir = TempDir::new("consistent");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "c", N);
    let forged = forged_bytes(&records[K as usize]);
    let leaf = merkle::leaf_hash(&forged);
    raw(&path)
        .execute(
            "UPDATE ledger SET record = ?1, leaf_hash = ?2 WHERE idx = ?3",
            params![forged, leaf.as_slice(), K as i64],
        )
        .unwrap();
    let (index, reason) = expect_tampered(verify_file(&path), "verify");
    assert!(index <= K, "index {index} > {K}: {reason}");
    assert!(reason.contains("checkpoint"), "{reason}");
    assert_running_writer_refuses(&ledger, &path, "c");
    drop(ledger);
    let (index, _) = assert_reopen_refused(&path);
    assert!(index <= K);
}

#[test]
fn deleted_middle_row_is_tampering_at_its_index() {
    let dir = TempDir::new("delmid");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "d", N);
    raw(&path)
        .execute("DELETE FROM ledger WHERE idx = ?1", params![K as i64])
        .unwrap();
    assert_eq!(expect_tampered(verify_file(&path), "verify").0, K);
    let finding = assert_running_writer_refuses(&ledger, &path, "d");
    assert!(matches!(finding, LedgerError::Tampered { index, .. } if index == K));
    drop(ledger);
    assert_eq!(assert_reopen_refused(&path).0, K);
}

#[test]
fn deleted_last_row_is_tampering() {
    let dir = TempDir::new("dellast");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "l", N);
    raw(&path)
        .execute("DELETE FROM ledger WHERE idx = ?1", params![N as i64 - 1])
        .unwrap();
    let (index, reason) = expect_tampered(verify_file(&path), "verify");
    assert!(index < N as u64, "{index}: {reason}");
    assert_running_writer_refuses(&ledger, &path, "l");
    drop(ledger);
    assert_reopen_refused(&path);
}

#[test]
fn truncation_with_its_checkpoint_is_caught_by_the_running_writer_and_the_witness() {
    // Rolling the file back to an earlier, validly signed state passes a
    // stand-alone verify of the file, but the running writer knows what it
    // committed, and the head witness beside the file remembers it on reopen.
    let dir = TempDir::new("rollback");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "rb", N);
    let c = raw(&path);
    c.execute("DELETE FROM ledger WHERE idx = ?1", params![N as i64 - 1])
        .unwrap();
    c.execute("DELETE FROM checkpoints WHERE size = ?1", params![N as i64])
        .unwrap();
    assert_eq!(verify_file(&path).unwrap().size, N as u64 - 1);
    let finding = assert_running_writer_refuses(&ledger, &path, "rb");
    assert!(matches!(finding, LedgerError::Tampered { index, .. } if index == N as u64 - 1));
    drop(ledger);
    let (index, reason) = assert_reopen_refused(&path);
    assert_eq!(index, N as u64 - 1);
    assert!(reason.contains("rolled back"), "{reason}");
}

/// Regression: a rollback while no server runs must not be reopened and then
/// extended, which would sign a second checkpoint at the same size with
/// another root (a split view) and turn real tokens into false forgeries.
#[test]
fn rollback_while_stopped_is_refused_at_reopen() {
    let dir = TempDir::new("rollback-stopped");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "rs", 5);
    let published = ledger.checkpoint();
    drop(ledger);
    let c = raw(&path);
    c.execute("DELETE FROM ledger WHERE idx = 4", []).unwrap();
    c.execute("DELETE FROM checkpoints WHERE size = 5", [])
        .unwrap();
    drop(c);
    let (index, _) = assert_reopen_refused(&path);
    assert_eq!(index, 4);
    // The witness is a signed note: a forged or foreign one is refused too.
    let witness = tally_store::ledger::witness_path(&path);
    let text = std::fs::read_to_string(&witness).unwrap();
    assert_eq!(text, published.note());
    std::fs::write(&witness, text.replacen("\n5\n", "\n4\n", 1)).unwrap();
    let (_, reason) = assert_reopen_refused(&path);
    assert!(reason.contains("does not verify"), "{reason}");
    // Without a witness (a pre-witness data directory) the ledger opens, and
    // the witness is written again.
    std::fs::remove_file(&witness).unwrap();
    let ledger = open(&path);
    assert_eq!(ledger.size(), 4);
    assert!(witness.exists());
    assert_eq!(
        ledger.lookup(&records[3].token_id).unwrap().unwrap().index,
        3
    );
}

/// A well-formed record with a correct leaf hash, inserted at idx = size.
fn insert_forged_row(path: &Path, idx: u64) -> IssuanceRecord {
    let forged = record("forged", 0);
    let bytes = forged.encode().unwrap();
    raw(path)
        .execute(
            "INSERT INTO ledger (idx, token_id, record, leaf_hash, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                idx as i64,
                forged.token_id,
                bytes,
                merkle::leaf_hash(&bytes).as_slice(),
                forged.expires_at
            ],
        )
        .unwrap();
    forged
}

#[test]
fn inserted_row_at_the_end_is_tampering_at_the_old_size() {
    let dir = TempDir::new("insert");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "i", N);
    let forged = insert_forged_row(&path, N as u64);
    let (index, reason) = expect_tampered(verify_file(&path), "verify");
    assert_eq!(index, N as u64, "{reason}");

    // The running ledger never vouches for the inserted row (it lies beyond the
    // committed size: the gate treats it as not issued)...
    assert_eq!(ledger.lookup(&forged.token_id).unwrap(), None);
    assert_eq!(
        ledger.inclusion_proof(&forged.token_id, None).unwrap(),
        None
    );
    // ...and refuses to extend (and so sign over) the tampered file.
    assert_running_writer_refuses(&ledger, &path, "i");
    let conn = raw_read_only(&path);
    assert_eq!(
        count(&conn, "SELECT max(size) FROM checkpoints"),
        N as i64,
        "no checkpoint may cover the inserted row"
    );
    drop(ledger);
    assert_eq!(assert_reopen_refused(&path).0, N as u64);
}

#[test]
fn inserted_row_is_noticed_by_an_idle_writer_at_its_next_append() {
    // Same as above without the lookup first: the data_version check alone.
    let dir = TempDir::new("insert2");
    let path = dir.ledger();
    let (ledger, _) = populated(&path, "j", N);
    insert_forged_row(&path, N as u64);
    let finding = assert_running_writer_refuses(&ledger, &path, "j");
    assert!(
        matches!(finding, LedgerError::Tampered { index, .. } if index == N as u64),
        "{finding:?}"
    );
}

#[test]
fn replaced_checkpoint_signature_or_root_is_tampering() {
    type Edit = fn(&Connection);
    let edits: Vec<(&str, Edit)> = vec![
        ("signature bytes flipped", |c| {
            let note: String = c
                .query_row("SELECT note FROM checkpoints WHERE size = 6", [], |r| {
                    r.get(0)
                })
                .unwrap();
            // The signature line is the last line: "— <name> <base64>\n".
            let sig_start = note.trim_end().rfind(' ').unwrap() + 1;
            let mut bytes = note.into_bytes();
            // Swap one base64 character of the signature for another.
            let p = sig_start + 10;
            bytes[p] = if bytes[p] == b'A' { b'B' } else { b'A' };
            let note = String::from_utf8(bytes).unwrap();
            c.execute(
                "UPDATE checkpoints SET note = ?1 WHERE size = 6",
                params![note],
            )
            .unwrap();
        }),
        ("note signed by another key of the same name", |c| {
            let note: String = c
                .query_row("SELECT note FROM checkpoints WHERE size = 6", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let text = &note[..note.find("\n\n").unwrap() + 1];
            let cp = Checkpoint::parse(text).unwrap();
            let evil = NoteSigner::from_seed(ORIGIN, &[66u8; 32]).unwrap();
            let forged = SignedCheckpoint::sign(cp, &evil).unwrap();
            c.execute(
                "UPDATE checkpoints SET note = ?1 WHERE size = 6",
                params![forged.note()],
            )
            .unwrap();
        }),
        ("root column replaced", |c| {
            c.execute(
                "UPDATE checkpoints SET root = ?1 WHERE size = 6",
                params![vec![0u8; 32]],
            )
            .unwrap();
        }),
        ("latest note replaced by an older valid note", |c| {
            let old: String = c
                .query_row("SELECT note FROM checkpoints WHERE size = 3", [], |r| {
                    r.get(0)
                })
                .unwrap();
            c.execute(
                "UPDATE checkpoints SET note = ?1 WHERE size = 10",
                params![old],
            )
            .unwrap();
        }),
        ("every checkpoint deleted", |c| {
            c.execute("DELETE FROM checkpoints", []).unwrap();
        }),
    ];
    for (what, edit) in edits {
        let dir = TempDir::new("cpedit");
        let path = dir.ledger();
        let (ledger, _) = populated(&path, "x", N);
        edit(&raw(&path));
        let (index, reason) = expect_tampered(verify_file(&path), what);
        assert!(index <= N as u64, "{what}: {index} {reason}");
        let finding = ledger.append_blocking(record("x", 500)).unwrap_err();
        assert_eq!(finding.code(), "ledger_tampered", "{what}: {finding:?}");
        assert!(ledger.tampered().is_some(), "{what}");
        drop(ledger);
        assert_reopen_refused(&path);
    }
}

#[test]
fn lookup_of_a_row_edited_under_a_running_ledger_is_an_error_never_a_wrong_record() {
    let dir = TempDir::new("lookup");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "q", N);
    // Warm the reader pool, so the edit is seen through an already open connection.
    for r in &records {
        assert_eq!(&ledger.lookup(&r.token_id).unwrap().unwrap().record, r);
    }
    let target = &records[K as usize];

    // 1. Record bytes edited (leaf hash left alone).
    raw(&path)
        .execute(
            "UPDATE ledger SET record = ?1 WHERE idx = ?2",
            params![forged_bytes(target), K as i64],
        )
        .unwrap();
    let err = ledger.lookup(&target.token_id).unwrap_err();
    assert!(
        matches!(err, LedgerError::Tampered { index, .. } if index == K),
        "{err:?}"
    );
    assert!(ledger.tampered().is_some());
    assert_eq!(
        ledger.append_blocking(record("q", 99)).unwrap_err().code(),
        "ledger_tampered"
    );
    drop(ledger);

    // 2. Record and leaf hash edited consistently (the tree still knows better).
    let dir = TempDir::new("lookup2");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "q", N);
    let target = &records[K as usize];
    let forged = forged_bytes(target);
    raw(&path)
        .execute(
            "UPDATE ledger SET record = ?1, leaf_hash = ?2 WHERE idx = ?3",
            params![forged, merkle::leaf_hash(&forged).as_slice(), K as i64],
        )
        .unwrap();
    assert_eq!(
        ledger.lookup(&target.token_id).unwrap_err().code(),
        "ledger_tampered"
    );
    drop(ledger);

    // 3. Two rows' contents swapped: each token id now finds the other's record.
    let dir = TempDir::new("lookup3");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "q", N);
    let c = raw(&path);
    c.execute_batch("BEGIN").unwrap();
    c.execute("UPDATE ledger SET idx = -1 WHERE idx = 2", [])
        .unwrap();
    c.execute("UPDATE ledger SET idx = 2 WHERE idx = 3", [])
        .unwrap();
    c.execute("UPDATE ledger SET idx = 3 WHERE idx = -1", [])
        .unwrap();
    c.execute_batch("COMMIT").unwrap();
    for i in [2usize, 3] {
        let r = ledger.lookup(&records[i].token_id);
        assert!(
            matches!(r, Err(LedgerError::Tampered { .. })),
            "swapped row {i}: {r:?}"
        );
    }
    // Rows nobody touched still read fine (the reads are checked per row).
    assert_eq!(
        ledger.lookup(&records[7].token_id).unwrap().unwrap().record,
        records[7]
    );
    drop(ledger);
    assert!(matches!(
        verify_file(&path),
        Err(LedgerError::Tampered { index: 2, .. })
    ));

    // 4. Only the token_id columns of two rows swapped (records and leaf hashes
    //    intact, so each row still matches the tree at its index).
    let dir = TempDir::new("lookup4");
    let path = dir.ledger();
    let (ledger, records) = populated(&path, "q", N);
    let c = raw(&path);
    c.execute_batch(&format!(
        "BEGIN;
         UPDATE ledger SET token_id = 'tmp' WHERE idx = 5;
         UPDATE ledger SET token_id = '{a}' WHERE idx = 6;
         UPDATE ledger SET token_id = '{b}' WHERE idx = 5;
         COMMIT;",
        a = records[5].token_id,
        b = records[6].token_id
    ))
    .unwrap();
    for i in [5usize, 6] {
        let r = ledger.lookup(&records[i].token_id);
        assert!(
            matches!(r, Err(LedgerError::Tampered { .. })),
            "token_id column swapped, row {i}: {r:?}"
        );
    }
    drop(ledger);
    assert!(matches!(
        verify_file(&path),
        Err(LedgerError::Tampered { index: 5, .. })
    ));
}
