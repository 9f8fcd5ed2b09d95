//! The state store behaves the same on SQLite and on PostgreSQL: every
//! conformance test below runs once on each.
//!
//! PostgreSQL is the server at 127.0.0.1:5432, database `test` (or
//! `TALLY_TEST_PG_URL`). Each test works in a fresh schema of its own and
//! drops it afterwards, even when it fails. Without a reachable server the
//! PostgreSQL tests say they are skipped; with `CI=true` they must run.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tally_store::fleet;
use tally_store::rows::RowMac;
use tally_store::state::{
    BlockRow, KeyEvent, KeyPurpose, KeyRow, KeyState, RefreshUse, Revocation, Session, StateError,
    StateStore,
};

#[macro_use]
mod support;

use support::{Backend, unique, url};

/// The row key of the tests (in tally, derived from the master key).
fn row_mac() -> RowMac {
    RowMac::new(&[42; 32])
}

/// The database of one test, removed when it goes.
type Fixture = Backend;

impl Backend {
    /// A new handle on the test's database, its rows sealed.
    fn open(&self) -> StateStore {
        let s = self.open_unsealed();
        s.seal_rows(row_mac(), 1, false).unwrap();
        s
    }

    /// A new handle on the test's database, no row key installed.
    fn open_unsealed(&self) -> StateStore {
        match self {
            Backend::Sqlite(dir) => StateStore::open(&dir.path().join("state.db")).unwrap(),
            Backend::Postgres { schema, .. } => {
                StateStore::connect_postgres(&url(), &schema.0).unwrap()
            }
        }
    }

    /// Runs `sql` on the test's database behind the store's back, as
    /// someone with database access (and no master key) would.
    fn behind_the_back(&self, sql: &str) {
        self.run_sql("state.db", sql).unwrap();
    }
}

conformance!(
    backend_name,
    users_and_roles,
    totp_enrolment_and_replay,
    keys_and_rotation,
    custodians,
    key_events,
    revocations,
    signature_counts,
    blocks,
    forgery_sightings,
    sessions_and_refresh_tokens,
    refresh_tokens_bound_to_a_key,
    revoking_a_session,
    clients,
    meta,
    login_failures_are_shared,
    known_addresses_are_shared,
    login_failures_with_a_policy_per_key,
    data_version_moves_for_another_handle,
    reopening_keeps_everything,
    rows_that_grant_access_are_sealed,
    rows_from_before_seals_are_sealed_once,
);

fn key(kid: &str, created_at: i64) -> KeyRow {
    KeyRow {
        kid: kid.into(),
        alg: "EdDSA".into(),
        purpose: KeyPurpose::Token,
        state: KeyState::Active,
        created_at,
        state_changed_at: created_at,
        public: format!("{{\"kid\":\"{kid}\"}}"),
        sealed: vec![0, 1, 2, 0xff, kid.len() as u8],
        source: "generated".into(),
    }
}

fn ev(kid: &str, what: &str, at: i64) -> KeyEvent {
    KeyEvent {
        at,
        kid: Some(kid.into()),
        event: what.into(),
        actor: "ops".into(),
        detail: format!("{what} {kid}"),
    }
}

fn rev(id: &str, expires_at: i64) -> Revocation {
    let mut d = [0u8; 32];
    d[..id.len().min(32)].copy_from_slice(&id.as_bytes()[..id.len().min(32)]);
    Revocation {
        token_id: id.into(),
        token_sha256: d,
        expires_at,
    }
}

fn session(family: &str, jkt: Option<&str>) -> Session {
    Session {
        family: family.into(),
        subject: "alice".into(),
        client_id: "web".into(),
        auth_context: "pwd".into(),
        jkt: jkt.map(str::to_owned),
        audience: Some("https://api.example".into()),
    }
}

fn backend_name(f: &Fixture) {
    let s = f.open();
    assert_eq!(s.backend(), f.name());
}

fn users_and_roles(f: &Fixture) {
    let s = f.open();
    assert!(s.users().unwrap().is_empty());
    s.add_user("alice", "$argon2id$a", 1).unwrap();
    let dup = s.add_user("alice", "$argon2id$other", 2);
    assert!(matches!(dup, Err(StateError::UserExists)), "{dup:?}");
    assert_eq!(dup.unwrap_err().code(), "user_exists");
    assert_eq!(
        s.password_hash("alice").unwrap().as_deref(),
        Some("$argon2id$a")
    );
    assert_eq!(s.password_hash("nobody").unwrap(), None);

    // Bulk import: all or none.
    let batch = vec![
        ("carol".to_string(), "$h$c".to_string()),
        ("alice".to_string(), "$h$a2".to_string()),
    ];
    assert!(matches!(
        s.add_users(&batch, 3),
        Err(StateError::UserExists)
    ));
    assert_eq!(s.password_hash("carol").unwrap(), None, "rolled back");
    let batch = vec![
        ("carol".to_string(), "$h$c".to_string()),
        ("Zed".to_string(), "$h$z".to_string()),
        ("bob".to_string(), "$h$b".to_string()),
    ];
    s.add_users(&batch, 3).unwrap();
    // Byte order, whatever the database's collation.
    assert_eq!(s.users().unwrap(), ["Zed", "alice", "bob", "carol"]);

    assert_eq!(s.user_role("alice").unwrap().as_deref(), Some("user"));
    assert_eq!(s.user_role("nobody").unwrap(), None);
    assert!(s.set_role("alice", "admin").unwrap());
    assert!(!s.set_role("nobody", "admin").unwrap());
    assert_eq!(s.user_role("alice").unwrap().as_deref(), Some("admin"));
    assert_eq!(s.user_role("bob").unwrap().as_deref(), Some("user"));

    // Removing a user ends their sessions too.
    let sess = Session {
        subject: "bob".into(),
        ..session("fam-bob", None)
    };
    s.create_session(&sess, &[7u8; 32], 1_000, 10).unwrap();
    assert!(s.remove_user("bob", 20).unwrap());
    assert!(!s.remove_user("bob", 21).unwrap());
    assert_eq!(s.password_hash("bob").unwrap(), None);
    assert_eq!(s.users().unwrap(), ["Zed", "alice", "carol"]);
    assert!(matches!(
        s.refresh_token_status(&[7u8; 32], 30).unwrap(),
        Some((_, _, false))
    ));
}

fn totp_enrolment_and_replay(f: &Fixture) {
    let s = f.open();
    s.add_user("alice", "$h", 1).unwrap();
    assert_eq!(s.totp("alice").unwrap(), None, "not enrolled");
    assert!(!s.set_totp("nobody", &[1, 2]).unwrap());
    assert!(s.set_totp("alice", &[9, 0, 8]).unwrap());
    assert_eq!(s.totp("alice").unwrap(), Some((vec![9, 0, 8], None)));

    assert!(s.use_totp_step("alice", 100).unwrap());
    assert!(
        !s.use_totp_step("alice", 100).unwrap(),
        "a code is used once"
    );
    assert!(!s.use_totp_step("alice", 99).unwrap(), "no going back");
    assert!(s.use_totp_step("alice", 101).unwrap());
    assert!(!s.use_totp_step("nobody", 1).unwrap());
    assert_eq!(s.totp("alice").unwrap(), Some((vec![9, 0, 8], Some(101))));

    // Re-enrolment forgets the last step.
    assert!(s.set_totp("alice", &[7]).unwrap());
    assert_eq!(s.totp("alice").unwrap(), Some((vec![7], None)));
    assert!(s.use_totp_step("alice", 5).unwrap());
}

fn keys_and_rotation(f: &Fixture) {
    let s = f.open();
    // A ledger key, stored as is.
    let mut ledger = key("L1", 1);
    ledger.purpose = KeyPurpose::Ledger;
    ledger.alg = "note-ed25519".into();
    s.insert_key(&ledger).unwrap();
    let dup = s.insert_key(&ledger);
    assert!(matches!(dup, Err(StateError::KeyExists)), "{dup:?}");
    let got = s.keys(KeyPurpose::Ledger).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].kid.as_str(), got[0].alg.as_str(), got[0].state),
        ("L1", "note-ed25519", KeyState::Active)
    );
    assert_eq!(got[0].sealed, ledger.sealed);
    assert_eq!(got[0].public, ledger.public);
    assert!(s.keys(KeyPurpose::Events).unwrap().is_empty());
    assert!(s.keys(KeyPurpose::Token).unwrap().is_empty());

    s.insert_active_token_key(&key("k1", 10)).unwrap();
    s.add_custodian("k1", "ann", &ev("k1", "custodian_added", 11))
        .unwrap();
    s.add_custodian("k1", "bob", &ev("k1", "custodian_added", 11))
        .unwrap();
    s.add_custodian("k1", "cy", &ev("k1", "custodian_added", 11))
        .unwrap();

    // The new key becomes active; the old one retiring; custodians follow
    // except the one leaving.
    let old = s
        .rotate_in(
            &key("k2", 20),
            KeyState::Retiring,
            Some("bob"),
            &ev("k2", "rotated", 21),
        )
        .unwrap();
    assert_eq!(old.as_deref(), Some("k1"));
    assert_eq!(s.custodians("k2").unwrap(), ["ann", "cy"]);
    let dup = s.rotate_in(
        &key("k2", 30),
        KeyState::Retiring,
        None,
        &ev("k2", "rotated", 31),
    );
    assert!(matches!(dup, Err(StateError::KeyExists)), "{dup:?}");

    // Compromise: the old key becomes compromised, everyone follows.
    let old = s
        .rotate_in(
            &key("k3", 40),
            KeyState::Compromised,
            None,
            &ev("k3", "rotated", 41),
        )
        .unwrap();
    assert_eq!(old.as_deref(), Some("k2"));
    assert_eq!(s.custodians("k3").unwrap(), ["ann", "cy"]);
    let keys = s.keys(KeyPurpose::Token).unwrap();
    let states: Vec<_> = keys
        .iter()
        .map(|k| (k.kid.as_str(), k.state, k.state_changed_at))
        .collect();
    assert_eq!(
        states,
        [
            ("k1", KeyState::Retiring, 21),
            ("k2", KeyState::Compromised, 41),
            ("k3", KeyState::Active, 40),
        ]
    );
    assert!(keys.iter().all(|k| k.purpose == KeyPurpose::Token));

    s.set_key_state("k1", KeyState::Retired, &ev("k1", "retired", 50))
        .unwrap();
    let missing = s.set_key_state("nope", KeyState::Retired, &ev("nope", "retired", 51));
    assert!(matches!(missing, Err(StateError::NoSuchKey)), "{missing:?}");
    let k1 = &s.keys(KeyPurpose::Token).unwrap()[0];
    assert_eq!((k1.state, k1.state_changed_at), (KeyState::Retired, 50));
    // Another handle sees the same three keys.
    assert_eq!(f.open().keys(KeyPurpose::Token).unwrap().len(), 3);
}

fn custodians(f: &Fixture) {
    let s = f.open();
    s.insert_active_token_key(&key("k1", 10)).unwrap();
    assert!(
        s.add_custodian("k1", "ann", &ev("k1", "custodian_added", 11))
            .unwrap()
    );
    assert!(
        !s.add_custodian("k1", "ann", &ev("k1", "custodian_added", 12))
            .unwrap(),
        "already a custodian"
    );
    let missing = s.add_custodian("nope", "ann", &ev("nope", "custodian_added", 12));
    assert!(matches!(missing, Err(StateError::NoSuchKey)), "{missing:?}");
    s.add_custodian("k1", "bob", &ev("k1", "custodian_added", 13))
        .unwrap();
    s.rotate_in(
        &key("k2", 20),
        KeyState::Retiring,
        None,
        &ev("k2", "rotated", 21),
    )
    .unwrap();
    assert_eq!(
        s.keys_of_custodian("ann").unwrap(),
        [
            ("k1".to_string(), KeyState::Retiring),
            ("k2".to_string(), KeyState::Active)
        ]
    );
    assert!(s.keys_of_custodian("nobody").unwrap().is_empty());

    assert_eq!(
        s.remove_custodian_everywhere("ann", &ev("k2", "offboarded", 30))
            .unwrap(),
        2
    );
    assert_eq!(
        s.remove_custodian_everywhere("ann", &ev("k2", "offboarded", 31))
            .unwrap(),
        0
    );
    assert_eq!(s.custodians("k1").unwrap(), ["bob"]);
    assert_eq!(s.former_custodians("k1").unwrap(), ["ann"]);
    assert_eq!(s.former_custodians("k2").unwrap(), ["ann"]);
    assert!(s.keys_of_custodian("ann").unwrap().is_empty());

    // Coming back: a custodian again, no longer a former one.
    assert!(
        s.add_custodian("k2", "ann", &ev("k2", "custodian_added", 40))
            .unwrap()
    );
    assert_eq!(s.custodians("k2").unwrap(), ["ann", "bob"]);
    assert!(s.former_custodians("k2").unwrap().is_empty());
}

fn key_events(f: &Fixture) {
    let s = f.open();
    assert!(s.events(10).unwrap().is_empty());
    s.insert_active_token_key(&key("k1", 10)).unwrap();
    s.record_event(&KeyEvent {
        at: 11,
        kid: None,
        event: "note".into(),
        actor: "ops".into(),
        detail: "no key concerned".into(),
    })
    .unwrap();
    s.set_key_state("k1", KeyState::Retiring, &ev("k1", "retiring", 12))
        .unwrap();
    // A refused change records nothing.
    assert!(matches!(
        s.set_key_state("nope", KeyState::Retired, &ev("nope", "retired", 13)),
        Err(StateError::NoSuchKey)
    ));
    let all = s.events(100).unwrap();
    let names: Vec<_> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["activated", "note", "retiring"]);
    assert_eq!(all[0].kid.as_deref(), Some("k1"));
    assert_eq!(all[0].actor, "tally");
    assert_eq!(all[0].detail, "EdDSA key (generated)");
    assert_eq!(all[1].kid, None);
    assert_eq!(all[2], ev("k1", "retiring", 12));
    // The newest two, oldest first.
    let last: Vec<_> = s.events(2).unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(last, ["note", "retiring"]);
    assert!(s.events(0).unwrap().is_empty());
    assert_eq!(s.events(usize::MAX).unwrap().len(), 3);
}

fn revocations(f: &Fixture) {
    let s = f.open();
    assert!(s.revocations_after(0).unwrap().is_empty());
    assert_eq!(
        s.revoke(&[rev("a", 100), rev("b", 200)], "test", 7)
            .unwrap(),
        2
    );
    assert_eq!(s.revoke(&[rev("a", 100)], "again", 8).unwrap(), 0);
    assert_eq!(
        s.revoke(&[rev("b", 200), rev("c", 300)], "test", 9)
            .unwrap(),
        1
    );
    assert_eq!(s.revoke(&[], "nothing", 9).unwrap(), 0);
    assert!(s.is_revoked("a").unwrap());
    assert!(s.is_revoked("c").unwrap());
    assert!(!s.is_revoked("d").unwrap());

    let after = s.revocations_after(0).unwrap();
    let ids: Vec<_> = after.iter().map(|(_, r)| r.token_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "ordered by seq");
    assert_eq!(after[0].1, rev("a", 100));
    assert_eq!(after[2].1, rev("c", 300));
    let rest = s.revocations_after(after[0].0).unwrap();
    assert_eq!(rest, after[1..]);
    assert!(s.revocations_after(after[2].0).unwrap().is_empty());
}

fn signature_counts(f: &Fixture) {
    let s = f.open();
    assert!(s.signature_counts("").unwrap().is_empty());
    s.add_signature_counts("", &[("k1".into(), 3, 1), ("k2".into(), 5, 0)])
        .unwrap();
    s.add_signature_counts("", &[("k1".into(), 4, 2)]).unwrap();
    s.add_signature_counts("", &[]).unwrap();
    let c = s.signature_counts("").unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c["k1"], (7, 3));
    assert_eq!(c["k2"], (5, 0));
    // In a fleet each node keeps its own account of the same key.
    s.add_signature_counts("gate-2", &[("k1".into(), 10, 0)])
        .unwrap();
    assert_eq!(s.signature_counts("gate-2").unwrap()["k1"], (10, 0));
    assert_eq!(s.signature_counts("").unwrap()["k1"], (7, 3));
}

fn login_failures_are_shared(f: &Fixture) {
    let policy = tally_core::throttle::ThrottlePolicy::default();
    let (a, b) = (f.open(), f.open());
    let keys = ["user:alice", "ip:192.0.2.7"];
    assert_eq!(a.login_locked_for(&keys, 1000).unwrap(), 0);
    // Five free failures, spread over two handles (two nodes).
    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(s.login_failed(&keys[..1], 1000, policy).unwrap(), 0);
    }
    assert_eq!(
        a.login_locked_for(&keys, 999).unwrap(),
        0,
        "free failures lock nothing"
    );
    // The sixth locks for 1 s, the seventh for 2 s, as one node would.
    assert_eq!(b.login_failed(&keys[..1], 1000, policy).unwrap(), 1);
    assert_eq!(a.login_failed(&keys[..1], 1000, policy).unwrap(), 2);
    assert_eq!(b.login_locked_for(&keys, 1000).unwrap(), 2);
    assert_eq!(b.login_locked_for(&keys, 1002).unwrap(), 0);
    // The address key is separate; a success forgets the user only.
    assert_eq!(a.login_failed(&keys[1..], 1000, policy).unwrap(), 0);
    a.login_succeeded("user:alice").unwrap();
    assert_eq!(b.login_locked_for(&keys[..1], 1000).unwrap(), 0);
    assert_eq!(
        a.login_failed(&keys[..1], 1000, policy).unwrap(),
        0,
        "counting starts again"
    );
    // An hour of quiet forgets; cleanup removes only what locks nothing.
    for _ in 0..7 {
        a.login_failed(&keys[..1], 2000, policy).unwrap();
    }
    assert!(a.login_locked_for(&keys[..1], 2000).unwrap() > 0);
    assert_eq!(
        a.forget_login_failures(1500, 2000).unwrap(),
        1,
        "the address entry"
    );
    assert_eq!(
        a.login_failed(&keys[..1], 2000 + 3600 + 10, policy)
            .unwrap(),
        0
    );
}

fn known_addresses_are_shared(f: &Fixture) {
    let (a, b) = (f.open(), f.open());
    assert!(!a.address_known("user:alice", "ip:192.0.2.7", 0).unwrap());
    // Remembered on one node, known on the other, after `since` only.
    a.remember_address("user:alice", "ip:192.0.2.7", 1000, 2)
        .unwrap();
    assert!(b.address_known("user:alice", "ip:192.0.2.7", 999).unwrap());
    assert!(!b.address_known("user:alice", "ip:192.0.2.7", 1000).unwrap());
    assert!(!b.address_known("user:bob", "ip:192.0.2.7", 0).unwrap());
    assert!(!b.address_known("user:alice", "ip:192.0.2.8", 0).unwrap());
    // A later success moves it forward, an earlier one (another node's
    // clock) does not move it back.
    b.remember_address("user:alice", "ip:192.0.2.7", 1100, 2)
        .unwrap();
    a.remember_address("user:alice", "ip:192.0.2.7", 1050, 2)
        .unwrap();
    assert!(a.address_known("user:alice", "ip:192.0.2.7", 1099).unwrap());
    // Only the most recent `keep` addresses of a subject stay.
    a.remember_address("user:alice", "ip:192.0.2.8", 1200, 2)
        .unwrap();
    a.remember_address("user:alice", "ip:192.0.2.9", 1300, 2)
        .unwrap();
    a.remember_address("user:bob", "ip:192.0.2.7", 900, 2)
        .unwrap();
    let known = |s: &str, ip: &str| b.address_known(s, ip, 0).unwrap();
    assert!(!known("user:alice", "ip:192.0.2.7"));
    assert!(known("user:alice", "ip:192.0.2.8") && known("user:alice", "ip:192.0.2.9"));
    assert!(known("user:bob", "ip:192.0.2.7"));
    // Cleanup forgets what is older than the cut, nothing else.
    assert_eq!(a.forget_known_addresses(1200).unwrap(), 2);
    assert!(!known("user:bob", "ip:192.0.2.7") && !known("user:alice", "ip:192.0.2.8"));
    assert!(known("user:alice", "ip:192.0.2.9"));
    // Neither user names nor addresses are stored in the clear.
    drop((a, b));
    f.behind_the_back(
        "DELETE FROM known_addresses WHERE subject = 'user:alice' OR address = 'ip:192.0.2.9'",
    );
    assert!(
        f.open()
            .address_known("user:alice", "ip:192.0.2.9", 0)
            .unwrap()
    );
}

fn login_failures_with_a_policy_per_key(f: &Fixture) {
    use tally_core::throttle::ThrottlePolicy;
    let s = f.open();
    let tight = ThrottlePolicy::default();
    let loose = ThrottlePolicy {
        free_failures: 20,
        ..tight
    };
    let entries = [("pair:x", tight), ("user:x", loose), ("pair:x", loose)];
    for _ in 0..5 {
        assert_eq!(s.login_failed_each(&entries, 1000).unwrap(), 0);
    }
    // The sixth failure locks the pair (its first policy), not the subject.
    assert_eq!(s.login_failed_each(&entries, 1000).unwrap(), 1);
    assert_eq!(s.login_locked_for(&["pair:x"], 1000).unwrap(), 1);
    assert_eq!(s.login_locked_for(&["user:x"], 1000).unwrap(), 0);
    for _ in 0..14 {
        s.login_failed_each(&entries[1..2], 1000).unwrap();
    }
    assert_eq!(s.login_locked_for(&["user:x"], 1000).unwrap(), 0);
    assert_eq!(s.login_failed_each(&entries[1..2], 1000).unwrap(), 1);
}

fn blocks(f: &Fixture) {
    let s = f.open();
    let a = s
        .add_block("ip", "192.0.2.1", "scan", "ops", 100, None)
        .unwrap();
    let b = s
        .add_block("subject", "mallory", "abuse", "watch", 101, Some(200))
        .unwrap();
    let c = s
        .add_block("device", "d-1", "lost", "ops", 102, None)
        .unwrap();
    assert!(a < b && b < c, "ids grow: {a} {b} {c}");
    assert_eq!(
        s.blocks(150).unwrap(),
        [
            BlockRow {
                id: a,
                kind: "ip".into(),
                value: "192.0.2.1".into(),
                reason: "scan".into(),
                actor: "ops".into(),
                created_at: 100,
                expires_at: None,
            },
            BlockRow {
                id: b,
                kind: "subject".into(),
                value: "mallory".into(),
                reason: "abuse".into(),
                actor: "watch".into(),
                created_at: 101,
                expires_at: Some(200),
            },
            BlockRow {
                id: c,
                kind: "device".into(),
                value: "d-1".into(),
                reason: "lost".into(),
                actor: "ops".into(),
                created_at: 102,
                expires_at: None,
            },
        ]
    );
    // Expired at 200.
    let ids: Vec<_> = s.blocks(200).unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, [a, c]);
    assert!(s.remove_block(a, 300).unwrap());
    assert!(!s.remove_block(a, 301).unwrap(), "already lifted");
    assert!(!s.remove_block(c + 1000, 301).unwrap(), "no such block");
    let ids: Vec<_> = s.blocks(300).unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, [c]);
}

fn forgery_sightings(f: &Fixture) {
    let s = f.open();
    assert_eq!(s.forgery_sightings("k1").unwrap(), None);
    s.add_forgery_sightings(&[("k1".into(), 3, 100, 120), ("k2".into(), 1, 5, 5)])
        .unwrap();
    s.add_forgery_sightings(&[("k1".into(), 2, 90, 110)])
        .unwrap();
    assert_eq!(s.forgery_sightings("k1").unwrap(), Some((5, 90, 120)));
    s.add_forgery_sightings(&[("k1".into(), 1, 95, 130)])
        .unwrap();
    assert_eq!(s.forgery_sightings("k1").unwrap(), Some((6, 90, 130)));
    assert_eq!(s.forgery_sightings("k2").unwrap(), Some((1, 5, 5)));
}

fn sessions_and_refresh_tokens(f: &Fixture) {
    let s = f.open();
    let fam = session("fam-1", None);
    s.create_session(&fam, &[1; 32], 1000, 10).unwrap();
    assert_eq!(
        s.refresh_token_status(&[1; 32], 20).unwrap(),
        Some((fam.clone(), 1000, true))
    );
    assert_eq!(s.refresh_token_status(&[9; 32], 20).unwrap(), None);
    assert_eq!(
        s.use_refresh_token(&[9; 32], None, 20).unwrap(),
        RefreshUse::Invalid
    );

    assert_eq!(
        s.use_refresh_token(&[1; 32], None, 20).unwrap(),
        RefreshUse::Rotated(fam.clone())
    );
    assert_eq!(
        s.refresh_token_status(&[1; 32], 21).unwrap(),
        Some((fam.clone(), 1000, false))
    );
    // A second use of a spent token is a reuse: a copy is elsewhere.
    assert_eq!(
        s.use_refresh_token(&[1; 32], None, 22).unwrap(),
        RefreshUse::Reused(fam.clone())
    );

    s.add_refresh_token("fam-1", &[2; 32], 100, 20).unwrap();
    assert_eq!(
        s.refresh_token_status(&[2; 32], 99).unwrap(),
        Some((fam.clone(), 100, true))
    );
    assert_eq!(
        s.refresh_token_status(&[2; 32], 100).unwrap(),
        Some((fam.clone(), 100, false)),
        "expired"
    );
    assert_eq!(
        s.use_refresh_token(&[2; 32], None, 100).unwrap(),
        RefreshUse::Invalid
    );
    s.add_refresh_token("fam-1", &[3; 32], 1000, 30).unwrap();
    assert_eq!(
        s.use_refresh_token(&[3; 32], None, 40).unwrap(),
        RefreshUse::Rotated(fam.clone())
    );

    // A session without an audience.
    let bare = Session {
        audience: None,
        ..session("fam-2", None)
    };
    s.create_session(&bare, &[4; 32], 1000, 10).unwrap();
    assert_eq!(
        s.use_refresh_token(&[4; 32], Some("any"), 20).unwrap(),
        RefreshUse::Rotated(bare)
    );

    s.add_session_token("fam-1", "jti-1", &[5; 32], 500)
        .unwrap();
    assert_eq!(
        s.session_of_token("jti-1").unwrap().as_deref(),
        Some("fam-1")
    );
    assert_eq!(s.session_of_token("jti-none").unwrap(), None);
}

fn refresh_tokens_bound_to_a_key(f: &Fixture) {
    let s = f.open();
    let fam = session("fam-k", Some("thumb-1"));
    s.create_session(&fam, &[1; 32], 1000, 10).unwrap();
    assert_eq!(
        s.use_refresh_token(&[1; 32], None, 20).unwrap(),
        RefreshUse::WrongKey(fam.clone())
    );
    assert_eq!(
        s.use_refresh_token(&[1; 32], Some("thumb-2"), 20).unwrap(),
        RefreshUse::WrongKey(fam.clone())
    );
    // Not spent by a wrong proof.
    assert_eq!(
        s.refresh_token_status(&[1; 32], 20).unwrap(),
        Some((fam.clone(), 1000, true))
    );
    assert_eq!(
        s.use_refresh_token(&[1; 32], Some("thumb-1"), 20).unwrap(),
        RefreshUse::Rotated(fam.clone())
    );
    assert_eq!(
        s.use_refresh_token(&[1; 32], Some("thumb-1"), 21).unwrap(),
        RefreshUse::Reused(fam)
    );
}

fn revoking_a_session(f: &Fixture) {
    let s = f.open();
    let fam = session("fam-r", None);
    s.create_session(&fam, &[1; 32], 1000, 10).unwrap();
    s.create_session(&session("fam-other", None), &[2; 32], 1000, 10)
        .unwrap();
    s.add_session_token("fam-r", "t-live", &[7; 32], 500)
        .unwrap();
    s.add_session_token("fam-r", "t-live2", &[8; 32], 600)
        .unwrap();
    s.add_session_token("fam-r", "t-expired", &[9; 32], 50)
        .unwrap();
    s.add_session_token("fam-other", "t-other", &[6; 32], 500)
        .unwrap();
    // One of them was already revoked on its own.
    assert_eq!(s.revoke(&[rev("t-live2", 600)], "single", 90).unwrap(), 1);

    assert_eq!(s.revoke_session("fam-r", "logout", 100).unwrap(), 1);
    assert!(s.is_revoked("t-live").unwrap());
    assert!(
        !s.is_revoked("t-expired").unwrap(),
        "expired: nothing to revoke"
    );
    assert!(!s.is_revoked("t-other").unwrap());
    let live = s
        .revocations_after(0)
        .unwrap()
        .into_iter()
        .find(|(_, r)| r.token_id == "t-live")
        .unwrap()
        .1;
    assert_eq!((live.token_sha256, live.expires_at), ([7; 32], 500));

    // The refresh token no longer works; the status says so.
    assert_eq!(
        s.use_refresh_token(&[1; 32], None, 110).unwrap(),
        RefreshUse::Invalid
    );
    assert_eq!(
        s.refresh_token_status(&[1; 32], 110).unwrap(),
        Some((fam, 1000, false))
    );
    // Ending it again changes nothing.
    assert_eq!(s.revoke_session("fam-r", "again", 120).unwrap(), 0);
    assert_eq!(s.revoke_session("fam-none", "none", 120).unwrap(), 0);
    // The other session lives on.
    assert!(matches!(
        s.use_refresh_token(&[2; 32], None, 130).unwrap(),
        RefreshUse::Rotated(_)
    ));
}

fn clients(f: &Fixture) {
    let s = f.open();
    assert_eq!(s.client_secret_hash("api").unwrap(), None);
    s.add_client("api", "$argon2id$s", 1).unwrap();
    let dup = s.add_client("api", "$argon2id$t", 2);
    assert!(matches!(dup, Err(StateError::ClientExists)), "{dup:?}");
    assert_eq!(dup.unwrap_err().code(), "client_exists");
    assert_eq!(
        s.client_secret_hash("api").unwrap().as_deref(),
        Some("$argon2id$s")
    );
    s.add_client("billing", "$argon2id$b", 3).unwrap();
    assert_eq!(
        s.clients().unwrap(),
        [("api".to_string(), 1), ("billing".to_string(), 3)]
    );
    assert!(s.remove_client("api").unwrap());
    assert!(!s.remove_client("api").unwrap());
    assert_eq!(s.client_secret_hash("api").unwrap(), None);
    assert_eq!(s.clients().unwrap(), [("billing".to_string(), 3)]);
}

/// `r` is a refusal for a row that fails its MAC.
fn tampered<T: std::fmt::Debug>(r: Result<T, StateError>) {
    match r {
        Err(e @ StateError::Tampered(_)) => {
            assert_eq!(e.code(), "state_tampered");
            assert!(e.to_string().contains("fails its MAC"), "{e}");
        }
        other => panic!("expected a refusal for a tampered row, got {other:?}"),
    }
}

fn rows_that_grant_access_are_sealed(f: &Fixture) {
    let s = f.open();
    let told = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let t = told.clone();
    s.on_tamper(move |what| t.lock().unwrap().push(what.to_string()));
    for name in ["alice", "bob", "carol"] {
        s.add_user(name, &format!("$argon2id${name}"), 1).unwrap();
    }
    s.set_totp("carol", b"sealed-secret").unwrap();
    s.set_role("carol", "admin").unwrap();
    s.add_client("api", "$argon2id$api", 1).unwrap();
    for (fam, h) in [("fam-1", 1u8), ("fam-2", 2), ("fam-3", 3)] {
        s.create_session(&session(fam, None), &[h; 32], 1000, 10)
            .unwrap();
    }
    s.create_session(&session("fam-4", Some("jkt-of-alice")), &[4; 32], 1000, 10)
        .unwrap();

    // Someone with write access to the database, without the master key:
    // a password of his own for alice, the admin role for bob, a user of
    // his own, carol's seal on a copy of her row, the API client's secret,
    // fam-1 moved to bob, fam-2's refresh token made to last.
    f.behind_the_back(
        "UPDATE users SET password_hash = '$argon2id$mallory' WHERE name = 'alice';
         UPDATE users SET role = 'admin' WHERE name = 'bob';
         INSERT INTO users (name, password_hash, created_at, role)
             VALUES ('mallory', '$argon2id$m', 1, 'admin');
         INSERT INTO users (name, password_hash, created_at, role, totp_sealed, mac)
             SELECT 'eve', password_hash, created_at, role, totp_sealed, mac
             FROM users WHERE name = 'carol';
         UPDATE clients SET secret_hash = '$argon2id$mallory' WHERE id = 'api';
         UPDATE sessions SET subject = 'bob' WHERE family = 'fam-1';
         UPDATE refresh_tokens SET expires_at = 999999999 WHERE family = 'fam-2';
         UPDATE sessions SET jkt = 'jkt-of-mallory' WHERE family = 'fam-4';",
    );
    tampered(s.password_hash("alice"));
    tampered(s.totp("alice"));
    tampered(s.user_role("bob"));
    // A tampered row is not sealed again by a later change.
    tampered(s.set_role("bob", "user"));
    tampered(s.set_totp("bob", b"x"));
    tampered(s.password_hash("mallory"));
    tampered(s.user_role("eve"));
    tampered(s.client_secret_hash("api"));
    tampered(s.refresh_token_status(&[1; 32], 20));
    tampered(s.use_refresh_token(&[1; 32], None, 20));
    tampered(s.refresh_token_status(&[2; 32], 20));
    tampered(s.use_refresh_token(&[2; 32], None, 20));
    tampered(s.use_refresh_token(&[4; 32], Some("jkt-of-mallory"), 20));
    // Every refusal was told, naming the row.
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 13, "{told:?}");
    assert!(told.iter().any(|w| w.contains("\"alice\"")), "{told:?}");
    assert!(told.iter().any(|w| w.contains("fam-2")), "{told:?}");

    // The rows nobody touched work as before; so does what changes in
    // normal use outside the MAC (a spent refresh token, an ended session).
    assert_eq!(
        s.user_role("carol").unwrap().as_deref(),
        Some("admin"),
        "carol's own row"
    );
    assert_eq!(
        s.totp("carol").unwrap().map(|t| t.0),
        Some(b"sealed-secret".to_vec())
    );
    assert_eq!(s.password_hash("nobody").unwrap(), None);
    assert_eq!(
        s.use_refresh_token(&[3; 32], None, 20).unwrap(),
        RefreshUse::Rotated(session("fam-3", None))
    );
    s.revoke_session("fam-3", "logout", 21).unwrap();
    assert_eq!(
        s.refresh_token_status(&[3; 32], 22).unwrap(),
        Some((session("fam-3", None), 1000, false))
    );
    // The operator, holding the master key, takes alice's row back, and
    // every session opened while someone else had her password ends.
    let mut alice = session("fam-5", None);
    alice.subject = "alice".into();
    s.create_session(&alice, &[5; 32], 1000, 10).unwrap();
    s.add_session_token("fam-5", "jti-of-fam-5", &[55; 32], 900)
        .unwrap();
    assert!(s.reset_user("alice", "$argon2id$new", 30).unwrap());
    assert_eq!(
        s.password_hash("alice").unwrap().as_deref(),
        Some("$argon2id$new")
    );
    assert_eq!(s.user_role("alice").unwrap().as_deref(), Some("user"));
    assert_eq!(
        s.refresh_token_status(&[5; 32], 31).unwrap(),
        Some((alice.clone(), 1000, false)),
        "the session ended"
    );
    assert!(
        s.revocations_after(0)
            .unwrap()
            .iter()
            .any(|(_, r)| r.token_id == "jti-of-fam-5"),
        "its access token revoked"
    );
    assert!(!s.reset_user("nobody", "$argon2id$x", 30).unwrap());
    // Another handle, with another key (another master key), trusts none
    // of the rows.
    let other = f.open_unsealed();
    other.seal_rows(RowMac::new(&[43; 32]), 2, true).unwrap();
    tampered(other.password_hash("carol"));
}

fn rows_from_before_seals_are_sealed_once(f: &Fixture) {
    let s = f.open_unsealed();
    // Without the row key, nothing that grants access is read or written.
    let e = s.add_user("alice", "$h", 1).unwrap_err();
    assert!(matches!(e, StateError::Unsealed), "{e:?}");
    assert_eq!(e.code(), "state_unsealed");
    assert!(matches!(
        s.password_hash("alice"),
        Err(StateError::Unsealed)
    ));
    // Rows written before seals existed (an upgraded store).
    f.behind_the_back(
        "INSERT INTO users (name, password_hash, created_at, role) VALUES ('old', '$argon2id$old', 1, 'admin');
         INSERT INTO clients (id, secret_hash, created_at) VALUES ('old-api', '$argon2id$c', 1);
         INSERT INTO sessions (family, subject, client_id, auth_context, created_at)
             VALUES ('old-fam', 'old', 'web', 'pwd', 5);",
    );
    // They are not sealed without an operator's say.
    let e = s.seal_rows(row_mac(), 7, false).unwrap_err();
    assert!(matches!(e, StateError::Unadopted { rows: 3 }), "{e:?}");
    assert_eq!(e.code(), "state_unadopted");
    assert!(e.to_string().contains("tally state seal"), "{e}");
    tampered(s.user_role("old"));
    let listed = s.unsealed_rows().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed.contains(&("users".into(), "old (role admin)".into())),
        "{listed:?}"
    );
    assert_eq!(s.adopt_unsealed(7).unwrap(), 3, "the three old rows");
    assert_eq!(s.user_role("old").unwrap().as_deref(), Some("admin"));
    assert_eq!(
        s.client_secret_hash("old-api").unwrap().as_deref(),
        Some("$argon2id$c")
    );
    assert_eq!(s.meta("rows_sealed_at").unwrap().as_deref(), Some("7"));
    // Once sealed, a row without a seal is refused, now and after a restart.
    f.behind_the_back(
        "INSERT INTO users (name, password_hash, created_at, role) VALUES ('late', '$argon2id$l', 1, 'admin');",
    );
    tampered(s.user_role("late"));
    let again = f.open();
    tampered(again.user_role("late"));
    assert_eq!(again.user_role("old").unwrap().as_deref(), Some("admin"));
    // Made to look unsealed again, so that "late" would be sealed: a node
    // that has seen the store sealed refuses, and seals nothing.
    f.behind_the_back("DELETE FROM meta WHERE key = 'rows_sealed_at';");
    let witness = f.open_unsealed();
    tampered(witness.seal_rows(row_mac(), 8, true));
    tampered(witness.user_role("late"));
    // Without a witness, the late row waits for an operator's say.
    let fresh = f.open_unsealed();
    assert!(matches!(
        fresh.seal_rows(row_mac(), 8, false),
        Err(StateError::Unadopted { rows: 1 })
    ));
    tampered(fresh.user_role("late"));
}

fn meta(f: &Fixture) {
    let s = f.open();
    assert_eq!(s.meta("origin").unwrap(), None);
    s.set_meta("origin", "a").unwrap();
    s.set_meta("origin", "b").unwrap();
    s.set_meta("other", "it's \"quoted\" $1").unwrap();
    assert_eq!(s.meta("origin").unwrap().as_deref(), Some("b"));
    assert_eq!(
        s.meta("other").unwrap().as_deref(),
        Some("it's \"quoted\" $1")
    );
}

fn data_version_moves_for_another_handle(f: &Fixture) {
    let a = f.open();
    let b = f.open();
    let v0 = a.data_version().unwrap();
    assert_eq!(a.data_version().unwrap(), v0, "stable without writes");
    b.add_block("ip", "192.0.2.9", "scan", "ops", 1, None)
        .unwrap();
    let v1 = a.data_version().unwrap();
    assert_ne!(v1, v0, "a block added through another handle");
    b.revoke(&[rev("x", 10)], "test", 1).unwrap();
    let v2 = a.data_version().unwrap();
    assert_ne!(v2, v1, "a revocation through another handle");
    b.insert_active_token_key(&key("k1", 1)).unwrap();
    assert_ne!(
        a.data_version().unwrap(),
        v2,
        "a key through another handle"
    );
}

fn reopening_keeps_everything(f: &Fixture) {
    {
        let s = f.open();
        s.add_user("alice", "$h", 1).unwrap();
        s.insert_active_token_key(&key("k1", 1)).unwrap();
    }
    // Opening again applies no migration twice and finds the data.
    let s = f.open();
    assert_eq!(s.users().unwrap(), ["alice"]);
    assert_eq!(s.keys(KeyPurpose::Token).unwrap().len(), 1);
    let again = f.open();
    assert_eq!(again.users().unwrap(), ["alice"]);
}

// ------------------------------------------------------ PostgreSQL only

#[test]
fn postgres_two_nodes_racing_for_one_refresh_token_one_wins() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let a = Arc::new(f.open());
    let b = Arc::new(f.open());
    for i in 0..20u8 {
        let fam = format!("fam-{i}");
        a.create_session(&session(&fam, None), &[i; 32], 1000, 10)
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    s.use_refresh_token(&[i; 32], None, 20).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshUse::Rotated(_)))
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshUse::Reused(_)))
            .count();
        assert_eq!((rotated, reused), (1, 1), "round {i}: {outcomes:?}");
    }
}

#[test]
fn postgres_nodes_starting_together_migrate_once() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let schema = f.schema().unwrap().to_owned();
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            std::thread::spawn(move || StateStore::connect_postgres(&url(), &schema).map(|_| ()))
        })
        .collect();
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    let s = f.open();
    s.add_user("alice", "$h", 1).unwrap();
    assert_eq!(s.users().unwrap(), ["alice"]);
}

#[test]
fn postgres_sessions_do_not_move_data_version_and_changes_are_notified() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let schema = f.schema().unwrap().to_owned();
    let a = f.open();
    let b = f.open();
    let mut listener = fleet::connect(&url()).unwrap();
    listener
        .batch_execute(&format!("LISTEN tally_state_{schema}"))
        .unwrap();

    let v0 = a.data_version().unwrap();
    b.create_session(&session("fam", None), &[1; 32], 1000, 10)
        .unwrap();
    b.use_refresh_token(&[1; 32], None, 20).unwrap();
    b.add_session_token("fam", "jti", &[2; 32], 100).unwrap();
    b.add_user("alice", "$h", 1).unwrap();
    let v1 = a.data_version().unwrap();
    assert_ne!(v1, v0, "a new user moves it");
    b.set_totp("alice", &[1]).unwrap();
    let v2 = a.data_version().unwrap();
    b.use_totp_step("alice", 7).unwrap();
    b.set_meta("k", "v").unwrap();
    b.add_signature_counts("", &[("k1".into(), 1, 0)]).unwrap();
    assert_eq!(
        a.data_version().unwrap(),
        v2,
        "logins and accounting do not move it"
    );
    // On PostgreSQL a node's own writes move it too.
    a.add_block("ip", "192.0.2.1", "x", "ops", 1, None).unwrap();
    assert_ne!(a.data_version().unwrap(), v2);

    use postgres::fallible_iterator::FallibleIterator;
    let mut notes = listener.notifications();
    let first = notes
        .timeout_iter(Duration::from_secs(30))
        .next()
        .unwrap()
        .expect("a change is notified");
    assert_eq!(first.channel(), format!("tally_state_{schema}"));
}

#[test]
fn postgres_broken_connections_are_replaced() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let schema = f.schema().unwrap().to_owned();
    let app = unique("tally_reconnect");
    let sep = if url().contains('?') { '&' } else { '?' };
    let s = StateStore::connect_postgres(&format!("{}{sep}application_name={app}", url()), &schema)
        .unwrap();
    // Open a few connections.
    for _ in 0..8 {
        s.data_version().unwrap();
    }
    let mut admin = fleet::connect(&url()).unwrap();
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    assert!(!killed.is_empty(), "the store's connections were found");
    let gone = Instant::now();
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "connections linger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every request still succeeds: dead connections are replaced.
    for i in 0..8 {
        s.add_block("ip", &format!("192.0.2.{i}"), "x", "ops", 1, None)
            .unwrap();
    }
    assert_eq!(s.blocks(2).unwrap().len(), 8);
}

#[test]
fn postgres_newer_schema_is_refused() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let schema = f.schema().unwrap().to_owned();
    drop(f.open());
    let mut admin = fleet::connect(&url()).unwrap();
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.schema_migrations SET version = 99 WHERE store = 'state'"
        ))
        .unwrap();
    match StateStore::connect_postgres(&url(), &schema) {
        Err(e @ StateError::NewerSchema { found: 99, .. }) => {
            assert_eq!(e.code(), "schema_too_new")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_works_from_inside_a_tokio_runtime() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    // Connecting, querying and dropping the store on a runtime thread.
    let s = f.open();
    s.add_user("alice", "$h", 1).unwrap();
    assert_eq!(s.users().unwrap(), ["alice"]);
    let s = Arc::new(s);
    let t = s.clone();
    let from_task = tokio::spawn(async move { t.password_hash("alice") })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_task.as_deref(), Some("$h"));
    drop(s);
}

#[test]
fn postgres_unreachable_fails_promptly() {
    let started = Instant::now();
    // Nothing listens on port 1.
    let e = match StateStore::connect_postgres("postgres://postgres@127.0.0.1:1/test", "t_x") {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    assert_eq!(e.code(), "store_unavailable");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn postgres_bad_configuration_is_refused() {
    for schema in ["", "1abc", "Tally", "a-b", "a;drop table x"] {
        match StateStore::connect_postgres(&url(), schema) {
            Err(e) => {
                assert_eq!(e.code(), "bad_config", "{schema:?}: {e}");
                assert!(e.to_string().contains("schema name"), "{e}");
            }
            Ok(_) => panic!("schema {schema:?} accepted"),
        }
    }
    match StateStore::connect_postgres("not a url at all", "tally") {
        Err(e) => assert_eq!(e.code(), "bad_config", "{e}"),
        Ok(_) => panic!("a bad URL was accepted"),
    }
}
