//! The incident store behaves the same on SQLite and on PostgreSQL: every
//! conformance test below runs once on each.
//!
//! PostgreSQL is the server at 127.0.0.1:5432, database `test` (or
//! `TALLY_TEST_PG_URL`). Each test works in a fresh schema of its own and
//! drops it afterwards, even when it fails. Without a reachable server the
//! PostgreSQL tests say they are skipped; with `CI=true` they must run.

use std::sync::{Arc, Barrier};

use serde_json::json;
use tally_incident::clocks::IncidentState;
use tally_incident::detect::{Actor, ActorKind, Detection, Rule, Severity};
use tally_incident::store::{IncidentError, IncidentStore, OUTBOX_LEASE_SECS};
use tally_store::fleet;

#[macro_use]
#[path = "../../tally-store/tests/support/mod.rs"]
mod support;

use support::{Backend, TempDir, url};

/// The database of one test (and the nodes' witness directories), removed
/// when it goes.
type Fixture = Backend;

impl Backend {
    /// A new handle on the test's database (node 0).
    fn open(&self) -> IncidentStore {
        self.node(0)
    }

    /// A new handle on the test's database as node `n`: on PostgreSQL with
    /// a witness directory of its own (SQLite has one witness file).
    fn node(&self, n: usize) -> IncidentStore {
        match self {
            Backend::Sqlite(dir) => IncidentStore::open(dir.path()).unwrap(),
            Backend::Postgres { schema, dir } => IncidentStore::connect_postgres(
                &url(),
                &schema.0,
                &dir.path().join(format!("node-{n}")),
            )
            .unwrap(),
        }
    }

    /// Runs statements on the database directly, as someone with write
    /// access to it would.
    fn raw(&self, sql: &str) {
        self.run_sql("incidents.db", sql).unwrap();
    }

    /// Whether a raw statement fails.
    fn raw_fails(&self, sql: &str) -> bool {
        self.run_sql("incidents.db", sql).is_err()
    }

    /// Statements that drop the append-only guards of the timeline and the
    /// audit table.
    fn unguard(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => {
                "DROP TRIGGER IF EXISTS timeline_append_only; DROP TRIGGER IF EXISTS timeline_no_delete;
                 DROP TRIGGER IF EXISTS audit_append_only; DROP TRIGGER IF EXISTS audit_no_delete;"
            }
            Backend::Postgres { .. } => {
                "DROP TRIGGER IF EXISTS timeline_append_only ON timeline;
                 DROP TRIGGER IF EXISTS audit_append_only ON audit;"
            }
        }
    }
}

conformance!(
    backend_name,
    record_opens_joins_closes_and_reopens,
    low_severity_opens_nothing,
    timeline_and_notes,
    state_transitions,
    materiality,
    submissions,
    reminders,
    outbox,
    incidents_listing,
    detection_queries,
    counts_add_up_across_handles,
    audit_verifies_and_survives_reopening,
    tampered_timeline_row_is_detected,
    deleted_audit_row_is_detected,
    truncated_audit_is_detected,
    a_defaced_witness_is_reported,
    tampered_incident_fields_are_detected,
    edited_audit_row_is_detected,
);

fn det(key: &str, rule: Rule, first: i64, last: i64, count: u64, ip: &str) -> Detection {
    Detection {
        key: key.into(),
        rule,
        severity: rule.severity(),
        first_seen: first,
        last_seen: last,
        count,
        actors: vec![Actor {
            kind: ActorKind::Ip,
            value: ip.into(),
        }],
        samples: vec![json!({"ip": ip})],
        suggested: vec![],
        summary: format!("{key} from {ip}"),
    }
}

fn high(key: &str, first: i64, last: i64, count: u64) -> Detection {
    det(key, Rule::MassAccess, first, last, count, "203.0.113.7")
}

fn critical(key: &str, first: i64, last: i64) -> Detection {
    det(key, Rule::ForgedToken, first, last, 1, "198.51.100.1")
}

fn tamper_says(e: IncidentError, says: &str) {
    assert_eq!(e.code(), "access_log_tampered", "{e}");
    assert!(e.to_string().contains(says), "{e} (wanted {says:?})");
}

/// One incident with a varied timeline: opened, joined, noted, contained,
/// material, reported. Returns its id.
fn busy_incident(s: &IncidentStore) -> i64 {
    let rec = s
        .record(
            &[
                (high("a", 100, 110, 2), true),
                (critical("b", 105, 120), true),
            ],
            130,
        )
        .unwrap();
    let id = rec.opened[0];
    s.append(id, 140, "soc-1", "note", &json!({"text": "looking"}))
        .unwrap();
    s.set_state(id, IncidentState::Contained, "soc-1", 150, "blocked")
        .unwrap();
    s.set_materiality(id, 160, "cfo").unwrap();
    s.submit(id, "gdpr_art33", "dpo", 170, "REF-1").unwrap();
    s.append(id, 180, "soc-2", "note", &json!({"text": "done"}))
        .unwrap();
    id
}

fn backend_name(f: &Fixture) {
    let s = f.open();
    let want = f.name();
    assert_eq!(s.backend(), want);
    assert_eq!(s.verify_audit().unwrap(), 0, "an empty store verifies");
}

fn record_opens_joins_closes_and_reopens(f: &Fixture) {
    let s = f.open();
    // A high detection opens an incident, aware from its first sighting.
    let rec = s.record(&[(high("a", 100, 110, 3), true)], 120).unwrap();
    assert_eq!(rec.opened.len(), 1);
    let id = rec.opened[0];
    assert_eq!(rec.assigned, vec![("a".to_string(), id)]);
    let inc = s.incident(id).unwrap().unwrap();
    assert_eq!(
        (inc.aware_at, inc.opened_at, inc.state, inc.severity),
        (100, 120, IncidentState::Open, Severity::High)
    );
    assert_eq!(inc.title, "a from 203.0.113.7");
    // The same detection again stays where it is.
    let rec = s.record(&[(high("a", 100, 130, 5), false)], 135).unwrap();
    assert_eq!(rec, Default::default());
    // Another, critical and seen earlier, joins: severity and awareness move.
    let rec = s.record(&[(critical("b", 90, 140), true)], 145).unwrap();
    assert!(rec.opened.is_empty());
    assert_eq!(rec.assigned, vec![("b".to_string(), id)]);
    let inc = s.incident(id).unwrap().unwrap();
    assert_eq!((inc.aware_at, inc.severity), (90, Severity::Critical));
    assert_eq!(inc.updated_at, 145);
    assert_eq!(s.incidents().unwrap().len(), 1, "one attack, one incident");
    // Closed: a sighting from before the close brings nothing back.
    s.set_state(id, IncidentState::Closed, "soc", 200, "over")
        .unwrap();
    let rec = s.record(&[(high("a", 100, 190, 6), false)], 210).unwrap();
    assert_eq!(rec, Default::default());
    // A sighting after it opens a new incident, aware from that sighting.
    let rec = s.record(&[(high("a", 100, 250, 7), false)], 260).unwrap();
    assert_eq!(rec.opened.len(), 1);
    let again = rec.opened[0];
    assert_ne!(again, id);
    assert_eq!(rec.assigned, vec![("a".to_string(), again)]);
    let inc = s.incident(again).unwrap().unwrap();
    assert_eq!((inc.aware_at, inc.state), (250, IncidentState::Open));
    let dets = s.detections(again).unwrap();
    assert_eq!(dets.len(), 1);
    assert_eq!(dets[0].detection.count, 7);
    assert_eq!(s.detections(id).unwrap().len(), 1, "b stays with the first");
    let kinds: Vec<String> = s
        .timeline(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["opened", "detection", "detection", "state"]);
    assert_eq!(s.verify_audit().unwrap(), 6);
}

fn low_severity_opens_nothing(f: &Fixture) {
    let s = f.open();
    let medium = Detection {
        severity: Severity::Medium,
        ..det("key_too_old:kid=k", Rule::KeyTooOld, 10, 10, 1, "x")
    };
    let rec = s.record(&[(medium, true)], 20).unwrap();
    assert_eq!(rec, Default::default());
    assert!(s.incidents().unwrap().is_empty());
    let recent = s.recent_detections(10).unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].incident_id, None);
    assert_eq!(s.verify_audit().unwrap(), 0);
}

fn timeline_and_notes(f: &Fixture) {
    let s = f.open();
    let id = s
        .record(&[(high("a", 100, 100, 1), true)], 100)
        .unwrap()
        .opened[0];
    s.append(id, 150, "soc-1", "note", &json!({"text": "first"}))
        .unwrap();
    s.append(id, 160, "tally", "action", &json!({"blocked": "ip"}))
        .unwrap();
    let t = s.timeline(id).unwrap();
    let got: Vec<(&str, &str, i64)> = t
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str(), e.at))
        .collect();
    assert_eq!(
        got,
        [
            ("opened", "tally", 100),
            ("detection", "tally", 100),
            ("note", "soc-1", 150),
            ("action", "tally", 160)
        ]
    );
    assert_eq!(t[2].body, json!({"text": "first"}));
    assert!(t.iter().all(|e| e.incident_id == id));
    assert!(t.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.incident(id).unwrap().unwrap().updated_at, 160);
    assert!(matches!(
        s.append(999, 1, "x", "note", &json!({})),
        Err(IncidentError::NotFound(999))
    ));
    assert!(s.timeline(999).unwrap().is_empty());
    // The timeline is append-only in the database itself.
    assert!(f.raw_fails("UPDATE timeline SET actor = 'nobody'"));
    assert!(f.raw_fails("DELETE FROM timeline"));
    assert!(f.raw_fails("UPDATE audit SET at = at + 1"));
    assert!(f.raw_fails("DELETE FROM audit"));
    assert_eq!(s.verify_audit().unwrap(), 4);
}

fn state_transitions(f: &Fixture) {
    let s = f.open();
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    let inc = s
        .set_state(id, IncidentState::Contained, "soc", 10, "blocked")
        .unwrap();
    assert_eq!((inc.state, inc.updated_at), (IncidentState::Contained, 10));
    match s.set_state(id, IncidentState::Open, "soc", 11, "") {
        Err(e @ IncidentError::BadTransition { .. }) => {
            assert_eq!(e.code(), "bad_transition");
            assert!(e.to_string().contains("contained"), "{e}");
        }
        other => panic!("moved back: {other:?}"),
    }
    s.set_state(id, IncidentState::Reported, "soc", 12, "")
        .unwrap();
    s.set_state(id, IncidentState::Closed, "soc", 13, "")
        .unwrap();
    assert!(matches!(
        s.set_state(id, IncidentState::Closed, "soc", 14, ""),
        Err(IncidentError::BadTransition { .. })
    ));
    assert!(matches!(
        s.set_state(404, IncidentState::Closed, "soc", 14, ""),
        Err(IncidentError::NotFound(404))
    ));
    let states: Vec<_> = s
        .timeline(id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "state")
        .map(|e| e.body["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["contained", "reported", "closed"]);
    assert_eq!(
        s.incident(id).unwrap().unwrap().state,
        IncidentState::Closed
    );
    s.verify_audit().unwrap();
}

fn materiality(f: &Fixture) {
    let s = f.open();
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    assert_eq!(s.incident(id).unwrap().unwrap().materiality_at, None);
    s.set_materiality(id, 50, "cfo").unwrap();
    let inc = s.incident(id).unwrap().unwrap();
    assert_eq!((inc.materiality_at, inc.updated_at), (Some(50), 50));
    assert!(matches!(
        s.set_materiality(77, 50, "cfo"),
        Err(IncidentError::NotFound(77))
    ));
    let last = s.timeline(id).unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.actor.as_str()),
        ("materiality", "cfo")
    );
    s.verify_audit().unwrap();
}

fn submissions(f: &Fixture) {
    let s = f.open();
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    assert!(s.submissions(id).unwrap().is_empty());
    s.submit(id, "gdpr_art33", "dpo", 20, "REF-1").unwrap();
    s.submit(id, "sec_8k", "cfo", 30, "0001-23").unwrap();
    let subs = s.submissions(id).unwrap();
    let got: Vec<(&str, i64, &str, &str)> = subs
        .iter()
        .map(|x| {
            (
                x.regime.as_str(),
                x.submitted_at,
                x.actor.as_str(),
                x.reference.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("gdpr_art33", 20, "dpo", "REF-1"),
            ("sec_8k", 30, "cfo", "0001-23")
        ]
    );
    assert!(matches!(
        s.submit(5, "gdpr_art33", "dpo", 20, "x"),
        Err(IncidentError::NotFound(5))
    ));
    s.verify_audit().unwrap();
}

fn reminders(f: &Fixture) {
    let s = f.open();
    assert!(s.mark_reminder(1, "gdpr_art33", "24h", 10).unwrap());
    assert!(!s.mark_reminder(1, "gdpr_art33", "24h", 11).unwrap());
    assert!(s.mark_reminder(1, "gdpr_art33", "1h", 12).unwrap());
    assert!(s.mark_reminder(2, "gdpr_art33", "24h", 12).unwrap());
    // Another handle (another node) sees it sent.
    assert!(!f.node(1).mark_reminder(1, "gdpr_art33", "1h", 13).unwrap());
}

fn outbox(f: &Fixture) {
    let s = f.open();
    assert_eq!(s.outbox_counts().unwrap(), (0, 0, 0));
    let a = s
        .enqueue("webhook:soc", "application/json", b"{\"n\":1}", 100)
        .unwrap();
    let b = s
        .enqueue("webhook:soc", "application/json", b"{\"n\":2}", 101)
        .unwrap();
    let c = s
        .enqueue("set", "application/secevent+jwt", b"e.y.j", 102)
        .unwrap();
    assert!(a < b && b < c);
    assert!(
        s.due(99, 10).unwrap().is_empty(),
        "nothing due before it was queued"
    );
    let due = s.due(200, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b, c]);
    assert_eq!(due[0].body, b"{\"n\":1}");
    assert_eq!(
        (
            due[2].sink.as_str(),
            due[2].content_type.as_str(),
            due[2].created_at,
            due[2].attempts
        ),
        ("set", "application/secevent+jwt", 102, 0)
    );
    // The first webhook fails and is retried later; the SET is delivered.
    s.attempt_failed(a, 201, Some(260), "receiver answered 503")
        .unwrap();
    s.delivered(c, 202).unwrap();
    assert_eq!(s.outbox_counts().unwrap(), (2, 1, 0));
    if s.backend() == "postgres" {
        // b is still claimed until the lease runs out... unless released by
        // a's failure, as it was: a round for a sink ends at its first failure.
        let again = s.due(210, 10).unwrap();
        assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), [b]);
        // Claimed now: nobody gets it (nor the rest of its sink) meanwhile.
        assert!(s.due(211, 10).unwrap().is_empty());
        assert!(f.node(1).due(211, 10).unwrap().is_empty());
        // Not settled within the lease: it comes back.
        let late = 210 + OUTBOX_LEASE_SECS;
        assert_eq!(
            f.node(1)
                .due(late, 10)
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect::<Vec<_>>(),
            [a, b]
        );
    } else {
        let again = s.due(210, 10).unwrap();
        assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), [b]);
    }
    let due = s.due(1000, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(due[0].attempts, 1);
    // a is given up, b delivered.
    s.attempt_failed(a, 1001, None, "receiver answered 410")
        .unwrap();
    s.delivered(b, 1002).unwrap();
    assert_eq!(s.outbox_counts().unwrap(), (0, 2, 1));
    assert!(s.due(5000, 10).unwrap().is_empty());
    // The limit holds.
    for i in 0..5 {
        s.enqueue("set", "text/plain", format!("{i}").as_bytes(), 6000)
            .unwrap();
    }
    assert_eq!(s.due(6000, 3).unwrap().len(), 3);
}

fn incidents_listing(f: &Fixture) {
    let s = f.open();
    assert!(s.incidents().unwrap().is_empty());
    assert_eq!(s.incident(1).unwrap(), None);
    let first = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    s.set_state(first, IncidentState::Closed, "soc", 2, "")
        .unwrap();
    let second = s.record(&[(high("b", 3, 3, 1), true)], 3).unwrap().opened[0];
    let all = s.incidents().unwrap();
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        [second, first]
    );
    assert_eq!(all[1].state, IncidentState::Closed);
    assert_eq!(s.incident(second).unwrap().as_ref(), Some(&all[0]));
}

fn detection_queries(f: &Fixture) {
    let s = f.open();
    let id = s
        .record(
            &[
                (high("a", 100, 150, 1), true),
                (critical("b", 90, 120), true),
            ],
            160,
        )
        .unwrap()
        .opened[0];
    let medium = Detection {
        severity: Severity::Medium,
        ..det("c", Rule::KeyTooOld, 10, 300, 1, "x")
    };
    s.record(&[(medium, true)], 300).unwrap();
    let of_incident: Vec<String> = s
        .detections(id)
        .unwrap()
        .into_iter()
        .map(|d| d.detection.key)
        .collect();
    assert_eq!(of_incident, ["b", "a"], "first seen first");
    let recent: Vec<(String, Option<i64>)> = s
        .recent_detections(10)
        .unwrap()
        .into_iter()
        .map(|d| (d.detection.key, d.incident_id))
        .collect();
    assert_eq!(
        recent,
        [
            ("c".to_string(), None),
            ("a".to_string(), Some(id)),
            ("b".to_string(), Some(id))
        ]
    );
    assert_eq!(s.recent_detections(1).unwrap().len(), 1);
    let since: Vec<String> = s
        .detections_since(130)
        .unwrap()
        .into_iter()
        .map(|d| d.detection.key)
        .collect();
    assert_eq!(since, ["a", "c"]);
    let stored = &s.detections(id).unwrap()[1];
    assert_eq!(stored.detection, high("a", 100, 150, 1));
}

/// Two handles (two nodes) with books of their own, and a restarted one.
fn counts_add_up_across_handles(f: &Fixture) {
    let n1 = f.node(1);
    let n2 = f.node(2);
    let d1 = det(
        "mass_access:ip=x",
        Rule::MassAccess,
        100,
        110,
        3,
        "192.0.2.1",
    );
    n1.record(&[(d1.clone(), true)], 111).unwrap();
    let d2 = det(
        "mass_access:ip=x",
        Rule::MassAccess,
        95,
        120,
        2,
        "192.0.2.2",
    );
    let rec = n2.record(&[(d2, true)], 121).unwrap();
    assert_eq!(rec, Default::default(), "it joined its incident already");
    // Node 1's book grows to 4: one more finding.
    let d1 = Detection {
        count: 4,
        last_seen: 130,
        ..d1
    };
    n1.record(&[(d1, false)], 131).unwrap();
    let got = &n1.recent_detections(1).unwrap()[0].detection;
    assert_eq!(got.count, 6, "3 + 2 + 1");
    assert_eq!((got.first_seen, got.last_seen), (95, 130));
    let ips: Vec<&str> = got.actors.iter().map(|a| a.value.as_str()).collect();
    assert_eq!(ips, ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(got.samples.len(), 2);
    assert_eq!(
        got.summary, "mass_access:ip=x from 192.0.2.2",
        "the earliest"
    );
    // A restarted node restores its book from the store and carries on.
    drop(n2);
    let n2 = f.node(2);
    let mut restored = n2.detections_since(0).unwrap().pop().unwrap().detection;
    assert_eq!(restored.count, 6);
    restored.count += 2;
    restored.last_seen = 140;
    n2.record(&[(restored, false)], 141).unwrap();
    assert_eq!(n1.recent_detections(1).unwrap()[0].detection.count, 8);
    // A view from a book this handle knows nothing of never counts twice.
    let stranger = f.node(3);
    let old = det(
        "mass_access:ip=x",
        Rule::MassAccess,
        95,
        150,
        8,
        "192.0.2.1",
    );
    stranger.record(&[(old, false)], 151).unwrap();
    let got = &n1.recent_detections(1).unwrap()[0].detection;
    assert_eq!((got.count, got.last_seen), (8, 150));
    // The same key twice in one call adds only the difference.
    let d = det("k2", Rule::MassAccess, 1, 1, 2, "192.0.2.9");
    n1.record(
        &[
            (d.clone(), true),
            (
                Detection {
                    count: 5,
                    ..d.clone()
                },
                false,
            ),
        ],
        2,
    )
    .unwrap();
    let k2 = n1
        .recent_detections(10)
        .unwrap()
        .into_iter()
        .find(|s| s.detection.key == "k2")
        .unwrap();
    assert_eq!(k2.detection.count, 5);
    assert_eq!(n1.incidents().unwrap().len(), 1);
    n1.verify_audit().unwrap();
}

fn audit_verifies_and_survives_reopening(f: &Fixture) {
    let s = f.open();
    let id = busy_incident(&s);
    let n = s.verify_audit().unwrap();
    assert_eq!(n, s.timeline(id).unwrap().len() as u64);
    drop(s);
    let s = f.open();
    assert_eq!(s.verify_audit().unwrap(), n);
    assert_eq!(
        s.incident(id).unwrap().unwrap().state,
        IncidentState::Contained
    );
    assert_eq!(s.submissions(id).unwrap().len(), 1);
    // Appending carries the chain on.
    s.append(id, 500, "soc", "note", &json!({})).unwrap();
    assert_eq!(s.verify_audit().unwrap(), n + 1);
}

fn tampered_timeline_row_is_detected(f: &Fixture) {
    let s = f.open();
    busy_incident(&s);
    s.verify_audit().unwrap();
    f.raw(&format!(
        "{} UPDATE timeline SET actor = 'nobody' WHERE actor = 'soc-1'",
        f.unguard()
    ));
    tamper_says(s.verify_audit().unwrap_err(), "differs from the audit log");
    f.raw("UPDATE timeline SET actor = 'soc-1' WHERE actor = 'nobody'");
    s.verify_audit().unwrap();
    f.raw("DELETE FROM timeline WHERE kind = 'note' AND actor = 'soc-2'");
    tamper_says(s.verify_audit().unwrap_err(), "was deleted");
}

fn deleted_audit_row_is_detected(f: &Fixture) {
    let s = f.open();
    busy_incident(&s);
    f.raw(&format!("{} DELETE FROM audit WHERE seq = 2", f.unguard()));
    tamper_says(s.verify_audit().unwrap_err(), "audit entry 2 is missing");
}

fn edited_audit_row_is_detected(f: &Fixture) {
    let s = f.open();
    busy_incident(&s);
    f.raw(&format!(
        "{} UPDATE audit SET at = at + 1 WHERE seq = 1",
        f.unguard()
    ));
    tamper_says(s.verify_audit().unwrap_err(), "audit entry 1 was edited");
}

fn truncated_audit_is_detected(f: &Fixture) {
    let s = f.open();
    let id = busy_incident(&s);
    let n = s.verify_audit().unwrap() as i64;
    // Another handle (on PostgreSQL another node, with its own witness)
    // verifies: it has then witnessed the head as well.
    let other = f.node(1);
    other.verify_audit().unwrap();
    // Cut off the two newest entries, timeline and audit alike, and put
    // the incident back as those entries found it: the chain itself is
    // consistent, only the witnesses know it was longer.
    f.raw(&format!(
        "{} DELETE FROM timeline WHERE audit_seq > {}; DELETE FROM audit WHERE seq > {};
         DELETE FROM submissions WHERE incident_id = {id};",
        f.unguard(),
        n - 2,
        n - 2
    ));
    for h in [&s, &other] {
        let e = h.verify_audit().unwrap_err();
        tamper_says(e, &format!("the audit log ends before entry {n}"));
    }
    // Appending over the cut does not hide it: the witness does not go back.
    s.append(id, 900, "soc", "note", &json!({})).unwrap();
    let e = s.verify_audit().unwrap_err();
    tamper_says(e, &format!("entry {n}"));
}

fn a_defaced_witness_is_reported(f: &Fixture) {
    let s = f.open();
    busy_incident(&s);
    s.verify_audit().unwrap();
    // The witness file, where each backend keeps it for node 0.
    let witness = match f {
        Backend::Sqlite(dir) => dir.path().join("incidents.head"),
        Backend::Postgres { schema, dir } => dir
            .path()
            .join("node-0")
            .join(format!("incidents-{}.head", schema.0)),
    };
    assert!(witness.exists(), "{}", witness.display());
    std::fs::write(&witness, "not a witness\n").unwrap();
    let e = s.verify_audit().unwrap_err();
    tamper_says(e, "is not a head witness");
}

fn tampered_incident_fields_are_detected(f: &Fixture) {
    let s = f.open();
    let id = busy_incident(&s);
    let cases = [
        (
            format!("UPDATE incidents SET aware_at = aware_at + 86400 WHERE id = {id}"),
            format!("UPDATE incidents SET aware_at = aware_at - 86400 WHERE id = {id}"),
            "aware_at differs",
        ),
        (
            format!("UPDATE incidents SET state = 'open' WHERE id = {id}"),
            format!("UPDATE incidents SET state = 'contained' WHERE id = {id}"),
            "audited timeline says contained",
        ),
        (
            format!("UPDATE incidents SET materiality_at = NULL WHERE id = {id}"),
            format!("UPDATE incidents SET materiality_at = 160 WHERE id = {id}"),
            "materiality differs",
        ),
        (
            format!(
                "INSERT INTO submissions (incident_id, regime, submitted_at, actor, reference) \
                 VALUES ({id}, 'gdpr_art33', 1, 'x', 'backdated')"
            ),
            "DELETE FROM submissions WHERE reference = 'backdated'".to_string(),
            "reports to authorities differ",
        ),
    ];
    for (tamper, undo, says) in cases {
        f.raw(&tamper);
        tamper_says(s.verify_audit().unwrap_err(), says);
        f.raw(&undo);
        s.verify_audit()
            .unwrap_or_else(|e| panic!("after undoing {tamper}: {e}"));
    }
}

// ------------------------------------------------------ PostgreSQL only

#[test]
fn postgres_nodes_racing_on_one_attack_make_one_incident() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let a = Arc::new(f.node(1));
    let b = Arc::new(f.node(2));
    const ROUNDS: u64 = 10;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [
        (a.clone(), "192.0.2.1", 1000),
        (b.clone(), "192.0.2.2", 1001),
    ]
    .into_iter()
    .map(|(s, ip, first)| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let mut opened = Vec::new();
            for round in 1..=ROUNDS {
                // Each node's book: its own findings, cumulative.
                let d = det(
                    "forged_token:kid=k1",
                    Rule::ForgedToken,
                    first,
                    first + round as i64,
                    round,
                    ip,
                );
                let other = det(
                    &format!("token_replay:jti={ip}"),
                    Rule::TokenReplay,
                    first,
                    first + round as i64,
                    round,
                    ip,
                );
                barrier.wait();
                let rec = s
                    .record(&[(d, round == 1), (other, round == 1)], 2000 + round as i64)
                    .unwrap();
                opened.extend(rec.opened);
            }
            opened
        })
    })
    .collect();
    let opened: Vec<i64> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert_eq!(opened.len(), 1, "opened exactly once: {opened:?}");
    let incidents = a.incidents().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].aware_at, 1000);
    let dets = b.detections(incidents[0].id).unwrap();
    assert_eq!(dets.len(), 3, "one forged token, two replays, all in it");
    let forged = dets
        .iter()
        .find(|d| d.detection.key == "forged_token:kid=k1")
        .unwrap();
    assert_eq!(forged.detection.count, 2 * ROUNDS, "the fleet-wide total");
    assert_eq!(forged.detection.first_seen, 1000);
    assert_eq!(forged.detection.last_seen, 1001 + ROUNDS as i64);
    assert_eq!(forged.detection.actors.len(), 2);
    // Every detection joined once; one chain from both nodes.
    let joined = a
        .timeline(incidents[0].id)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "detection")
        .count();
    assert_eq!(joined, 3);
    a.verify_audit().unwrap();
    b.verify_audit().unwrap();
}

#[test]
fn postgres_concurrent_due_never_hands_out_one_item_twice() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let a = Arc::new(f.node(1));
    let b = Arc::new(f.node(2));
    let mut all = Vec::new();
    for i in 0..60 {
        all.push(
            a.enqueue(
                &format!("webhook:w{}", i % 7),
                "application/json",
                b"{}",
                10,
            )
            .unwrap(),
        );
    }
    // Two nodes deliver concurrently, each settling what it claimed.
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                for _ in 0..500 {
                    let items = s.due(100, 4).unwrap();
                    if items.is_empty() && s.outbox_counts().unwrap().0 == 0 {
                        break;
                    }
                    for i in items {
                        s.delivered(i.id, 100).unwrap();
                        got.push(i.id);
                    }
                }
                got
            })
        })
        .collect();
    let got: Vec<Vec<i64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut every: Vec<i64> = got.concat();
    every.sort();
    assert_eq!(every, all, "every item handed out exactly once");
    assert_eq!(a.outbox_counts().unwrap(), (0, 60, 0));
    // While a claim holds, nobody else gets the item; when it runs out
    // unsettled, another node takes it over (at least once).
    let late = a.enqueue("set", "text/plain", b"x", 200).unwrap();
    assert_eq!(a.due(200, 10).unwrap()[0].id, late);
    assert!(b.due(201, 10).unwrap().is_empty());
    assert!(a.due(202, 10).unwrap().is_empty());
    assert_eq!(b.due(200 + OUTBOX_LEASE_SECS, 10).unwrap()[0].id, late);
}

#[test]
fn postgres_incident_writes_do_not_wait_for_the_state_lock() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let schema = f.schema().unwrap().to_owned();
    let s = f.open();
    // Someone holds the state store's write lock of this schema.
    let mut holder = fleet::connect(&url()).unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&tally_store::sql::write_lock_key(&schema)],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    s.append(id, 2, "soc", "note", &json!({})).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "blocked by the state store's lock"
    );
    tx.rollback().unwrap();
    // And the state store shares the schema without a clash.
    let state = tally_store::StateStore::connect_postgres(&url(), &schema).unwrap();
    state
        .seal_rows(tally_store::RowMac::new(&[42; 32]), 1, false)
        .unwrap();
    state.add_user("alice", "$h", 1).unwrap();
    assert_eq!(state.users().unwrap(), ["alice"]);
    assert_eq!(s.incidents().unwrap().len(), 1);
    s.verify_audit().unwrap();
}

#[test]
fn postgres_nodes_starting_together_migrate_once_and_guards_come_back() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let Backend::Postgres { schema, dir } = &f else {
        unreachable!()
    };
    let nodes: Vec<_> = (0..4)
        .map(|n| {
            let (schema, dir) = (schema.0.clone(), dir.path().join(format!("n{n}")));
            std::thread::spawn(move || {
                IncidentStore::connect_postgres(&url(), &schema, &dir).map(|_| ())
            })
        })
        .collect();
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    let s = f.open();
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    f.raw("DROP TRIGGER timeline_append_only ON timeline; DROP TRIGGER audit_append_only ON audit");
    // Unguarded, a real row can be changed...
    assert!(!f.raw_fails(&format!(
        "UPDATE timeline SET actor = actor WHERE incident_id = {id}"
    )));
    drop(s);
    let s = f.open();
    assert!(f.raw_fails("UPDATE timeline SET actor = 'x'"));
    assert!(f.raw_fails("DELETE FROM audit"));
    assert!(f.raw_fails("TRUNCATE audit CASCADE"));
    assert_eq!(s.timeline(id).unwrap().len(), 2);
}

#[test]
fn postgres_newer_schema_is_refused() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    drop(f.open());
    f.raw("UPDATE schema_migrations SET version = 99 WHERE store = 'incidents'");
    let Backend::Postgres { schema, dir } = &f else {
        unreachable!()
    };
    match IncidentStore::connect_postgres(&url(), &schema.0, dir.path()) {
        Err(e) => {
            assert_eq!(e.code(), "schema_too_new");
            assert!(e.to_string().contains("upgrade tally"), "{e}");
        }
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_works_from_inside_a_tokio_runtime() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let s = Arc::new(f.open());
    let id = s.record(&[(high("a", 1, 1, 1), true)], 1).unwrap().opened[0];
    let t = s.clone();
    let n = tokio::spawn(async move { t.verify_audit() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(s.timeline(id).unwrap().len(), 2);
    drop(s);
}

#[test]
fn postgres_bad_configuration_is_refused() {
    let dir = TempDir::new("tally-incidents-bad-config");
    let dir = dir.path();
    for schema in ["", "1abc", "Tally", "a;drop table x"] {
        match IncidentStore::connect_postgres(&url(), schema, dir) {
            Err(e) => assert_eq!(e.code(), "bad_config", "{schema:?}: {e}"),
            Ok(_) => panic!("schema {schema:?} accepted"),
        }
    }
    let e =
        match IncidentStore::connect_postgres("postgres://postgres@127.0.0.1:1/test", "t_x", dir) {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
    assert_eq!(e.code(), "store_unavailable");
}
