//! Unit tests of the SQLite state store.

use rusqlite::Connection;

use super::schema::MIGRATIONS;
use super::*;
use crate::rows::RowMac;

fn row(kid: &str) -> KeyRow {
    KeyRow {
        kid: kid.into(),
        alg: "EdDSA".into(),
        purpose: KeyPurpose::Token,
        state: KeyState::Active,
        created_at: 1,
        state_changed_at: 1,
        public: "{}".into(),
        sealed: vec![1, 2, 3],
        source: "generated".into(),
    }
}

#[test]
fn users_and_keys() {
    let dir = tempdir();
    let s = StateStore::open(&dir.join("state.db")).unwrap();
    s.seal_rows(RowMac::new(&[1; 32]), 1, false).unwrap();
    s.add_user("alice", "$argon2id$x", 1).unwrap();
    assert!(matches!(
        s.add_user("alice", "$argon2id$y", 2),
        Err(StateError::UserExists)
    ));
    assert_eq!(
        s.password_hash("alice").unwrap().as_deref(),
        Some("$argon2id$x")
    );
    assert_eq!(s.password_hash("bob").unwrap(), None);

    s.insert_active_token_key(&row("k1")).unwrap();
    s.insert_active_token_key(&row("k2")).unwrap();
    assert!(matches!(
        s.insert_active_token_key(&row("k2")),
        Err(StateError::KeyExists)
    ));
    let keys = s.keys(KeyPurpose::Token).unwrap();
    let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
    assert_eq!(
        states,
        vec![("k1", KeyState::Retiring), ("k2", KeyState::Active)]
    );
    assert!(format!("{:?}", keys[0]).contains("k1"));
    assert!(!format!("{:?}", keys[0]).contains("sealed"));
    let ev = |kid: &str, what: &str| KeyEvent {
        at: 5,
        kid: Some(kid.into()),
        event: what.into(),
        actor: "ops".into(),
        detail: String::new(),
    };
    s.set_key_state("k1", KeyState::Retired, &ev("k1", "retired"))
        .unwrap();
    assert!(matches!(
        s.set_key_state("nope", KeyState::Retired, &ev("nope", "retired")),
        Err(StateError::NoSuchKey)
    ));
    let k1 = &s.keys(KeyPurpose::Token).unwrap()[0];
    assert_eq!((k1.state, k1.state_changed_at), (KeyState::Retired, 5));

    // Custodians follow a rotation, except the one who is leaving.
    assert!(
        s.add_custodian("k2", "ann", &ev("k2", "custodian_added"))
            .unwrap()
    );
    assert!(
        s.add_custodian("k2", "bob", &ev("k2", "custodian_added"))
            .unwrap()
    );
    assert!(
        !s.add_custodian("k2", "bob", &ev("k2", "custodian_added"))
            .unwrap()
    );
    assert!(matches!(
        s.add_custodian("nope", "bob", &ev("nope", "custodian_added")),
        Err(StateError::NoSuchKey)
    ));
    let old = s
        .rotate_in(
            &row("k3"),
            KeyState::Retiring,
            Some("bob"),
            &ev("k3", "rotated"),
        )
        .unwrap();
    assert_eq!(old.as_deref(), Some("k2"));
    assert_eq!(s.custodians("k3").unwrap(), vec!["ann".to_string()]);
    assert_eq!(
        s.keys_of_custodian("bob").unwrap(),
        vec![("k2".to_string(), KeyState::Retiring)]
    );
    assert_eq!(
        s.remove_custodian_everywhere("ann", &ev("k3", "offboarded"))
            .unwrap(),
        2
    );
    assert!(s.custodians("k3").unwrap().is_empty());
    let events: Vec<String> = s
        .events(100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            "activated",
            "activated",
            "retired",
            "custodian_added",
            "custodian_added",
            "rotated",
            "offboarded"
        ]
    );

    // Revocations are idempotent and ordered.
    let rev = |id: &str| Revocation {
        token_id: id.into(),
        token_sha256: [1; 32],
        expires_at: 9,
    };
    assert_eq!(s.revoke(&[rev("a"), rev("b")], "test", 7).unwrap(), 2);
    assert_eq!(s.revoke(&[rev("a")], "test", 8).unwrap(), 0);
    assert!(s.is_revoked("a").unwrap() && !s.is_revoked("c").unwrap());
    let after = s.revocations_after(0).unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(s.revocations_after(after[0].0).unwrap().len(), 1);

    s.add_forgery_sightings(&[("k2".into(), 3, 100, 120)])
        .unwrap();
    s.add_forgery_sightings(&[("k2".into(), 2, 90, 130)])
        .unwrap();
    assert_eq!(s.forgery_sightings("k2").unwrap(), Some((5, 90, 130)));
    assert_eq!(s.forgery_sightings("k9").unwrap(), None);
    // Reopening applies no migration twice.
    drop(s);
    let s = StateStore::open(&dir.join("state.db")).unwrap();
    s.set_meta("origin", "a").unwrap();
    s.set_meta("origin", "b").unwrap();
    assert_eq!(s.meta("origin").unwrap().as_deref(), Some("b"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn signature_counts_of_a_v3_file_become_the_embedded_node_s() {
    let dir = tempdir();
    let path = dir.join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO signature_counts (kid, signed, withheld) VALUES ('k1', 7, 2);
                 PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let s = StateStore::open(&path).unwrap();
    assert_eq!(s.signature_counts("").unwrap()["k1"], (7, 2));
    s.add_signature_counts("", &[("k1".into(), 1, 0)]).unwrap();
    assert_eq!(s.signature_counts("").unwrap()["k1"], (8, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tally-state-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
