//! The incident store's and the access log's schemas through
//! `tally_store::migrate`: created afresh as the previous release made
//! them, adopted from a database that release wrote, refused when newer.
//!
//! The previous release's databases are made here as that release made
//! them: its schema statements are kept verbatim in `fixtures/previous/`,
//! its PostgreSQL migration routine is `support::previous_migrate_schema`
//! and its append-only guards [`previous_guards`]; it kept no version in
//! SQLite files. PostgreSQL is the server at 127.0.0.1:5432, database
//! `test` (or `TALLY_TEST_PG_URL`); without it those tests say they are
//! skipped, with `CI=true` they must run.

use std::path::Path;
use std::sync::{Arc, Barrier};

use serde_json::json;
use tally_incident::access::AccessLog;
use tally_incident::detect::{Actor, ActorKind, Detection, Rule};
use tally_incident::store::IncidentStore;
use tally_store::StateStore;

#[macro_use]
#[path = "../../tally-store/tests/support/mod.rs"]
mod support;

use support::{
    Schema, TempDir, pg_exec, pg_i64, pg_objects, pg_version, previous_migrate_schema, sqlite_exec,
    sqlite_objects, url, user_version,
};

const INCIDENTS_SQLITE: &str = include_str!("fixtures/previous/incidents.sqlite.sql");
const INCIDENTS_POSTGRES: &str = include_str!("fixtures/previous/incidents.postgres.sql");
const ACCESS_SQLITE: &str = include_str!("fixtures/previous/access.sqlite.sql");

/// The append-only guards the previous release put back at every
/// connection to PostgreSQL (`pg_guards` of
/// crates/tally-incident/src/store/schema.rs at 1a7ff94).
fn previous_guards(schema: &str) -> String {
    let mut body = String::new();
    for (table, what) in [("timeline", "timeline"), ("audit", "audit log")] {
        for (name, event, level) in [
            ("append_only", "UPDATE OR DELETE", "ROW"),
            ("no_truncate", "TRUNCATE", "STATEMENT"),
        ] {
            body.push_str(&format!(
                "    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = '{schema}.{table}'::regclass AND tgname = '{table}_{name}') THEN
        CREATE TRIGGER {table}_{name} BEFORE {event} ON {schema}.{table}
            FOR EACH {level} EXECUTE FUNCTION {schema}.incidents_append_only('{what}');
    END IF;
"
            ));
        }
    }
    format!("DO $guard$\nBEGIN\n{body}END\n$guard$;")
}

/// A PostgreSQL incident schema as the previous release left it.
fn previous_incidents_schema(schema: &str) {
    previous_migrate_schema(schema, "incidents_schema_version", &[INCIDENTS_POSTGRES]);
    pg_exec(None, &previous_guards(schema));
}

fn high(key: &str, first: i64) -> Detection {
    Detection {
        key: key.into(),
        rule: Rule::MassAccess,
        severity: Rule::MassAccess.severity(),
        first_seen: first,
        last_seen: first + 10,
        count: 3,
        actors: vec![Actor {
            kind: ActorKind::Ip,
            value: "203.0.113.7".into(),
        }],
        samples: vec![json!({"ip": "203.0.113.7"})],
        suggested: vec![],
        summary: format!("{key} from 203.0.113.7"),
    }
}

/// Opens an incident with a note; returns its id.
fn incident_with_a_note(s: &IncidentStore) -> i64 {
    let id = s.record(&[(high("a", 100), true)], 120).unwrap().opened[0];
    s.append(id, 130, "soc-1", "note", &json!({"text": "looking"}))
        .unwrap();
    id
}

/// What a test reads back of incident `id`: the incidents, its awareness
/// time, its timeline and the audit entries verified.
fn read_back(s: &IncidentStore, id: i64) -> (usize, i64, usize, u64) {
    (
        s.incidents().unwrap().len(),
        s.incident(id).unwrap().unwrap().aware_at,
        s.timeline(id).unwrap().len(),
        s.verify_audit().unwrap(),
    )
}

// --------------------------------------------------- incidents, SQLite --

#[test]
fn sqlite_incidents_are_created_as_the_previous_release_made_them() {
    let dir = TempDir::new("tally-mig-incidents");
    let (new, old) = (dir.path().join("new"), dir.path().join("old"));
    std::fs::create_dir_all(&new).unwrap();
    std::fs::create_dir_all(&old).unwrap();
    drop(IncidentStore::open(&new).unwrap());
    sqlite_exec(&old.join("incidents.db"), INCIDENTS_SQLITE);
    let (new, old) = (new.join("incidents.db"), old.join("incidents.db"));
    assert_eq!(sqlite_objects(&new), sqlite_objects(&old));
    assert_eq!((user_version(&new), user_version(&old)), (1, 0));
}

#[test]
fn sqlite_incidents_of_the_previous_release_open_without_loss() {
    let dir = TempDir::new("tally-mig-incidents");
    let file = dir.path().join("incidents.db");
    sqlite_exec(&file, INCIDENTS_SQLITE);
    let s = IncidentStore::open(dir.path()).unwrap();
    let id = incident_with_a_note(&s);
    let written = read_back(&s, id);
    assert_eq!((written.0, written.1), (1, 100));
    drop(s);
    // Rows written, and no version kept, as by the previous release.
    sqlite_exec(&file, "PRAGMA user_version = 0");
    let before = sqlite_objects(&file);
    let s = IncidentStore::open(dir.path()).unwrap();
    assert_eq!(read_back(&s, id), written);
    drop(s);
    assert_eq!(user_version(&file), 1);
    assert_eq!(sqlite_objects(&file), before, "nothing rewritten");
    // The guards still come back at every opening.
    sqlite_exec(&file, "DROP TRIGGER timeline_append_only");
    drop(IncidentStore::open(dir.path()).unwrap());
    assert_eq!(sqlite_objects(&file), before);
}

#[test]
fn sqlite_incidents_newer_than_this_code_are_refused() {
    let dir = TempDir::new("tally-mig-incidents");
    drop(IncidentStore::open(dir.path()).unwrap());
    let file = dir.path().join("incidents.db");
    sqlite_exec(&file, "PRAGMA user_version = 2");
    let e = IncidentStore::open(dir.path())
        .err()
        .expect("a newer file was opened");
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert!(e.to_string().contains("upgrade tally"), "{e}");
    assert_eq!(user_version(&file), 2);
}

// ----------------------------------------------- incidents, PostgreSQL --

fn connect(schema: &str, node: &Path) -> IncidentStore {
    IncidentStore::connect_postgres(&url(), schema, node).unwrap()
}

#[test]
fn postgres_incidents_are_created_as_the_previous_release_made_them() {
    let (Some(new), Some(old)) = (Schema::new("mig_inc_new"), Schema::new("mig_inc_old")) else {
        return;
    };
    let dir = TempDir::new("tally-mig-incidents");
    drop(connect(&new.0, dir.path()));
    previous_incidents_schema(&old.0);
    let fresh = pg_objects(&new.0);
    assert!(fresh.iter().any(|o| o.starts_with("trigger ")), "{fresh:?}");
    assert!(fresh.len() > 60, "{fresh:?}");
    assert_eq!(fresh, pg_objects(&old.0));
    assert_eq!(pg_version(&new.0, "incidents"), Some(1));
}

#[test]
fn postgres_incidents_of_the_previous_release_are_adopted_without_loss() {
    let Some(schema) = Schema::new("mig_inc_prev") else {
        return;
    };
    let s = &schema.0;
    let dir = TempDir::new("tally-mig-incidents");
    previous_incidents_schema(s);
    let store = connect(s, dir.path());
    let id = incident_with_a_note(&store);
    let written = read_back(&store, id);
    assert_eq!((written.0, written.1), (1, 100));
    drop(store);
    // Rows written, and only the previous release's count kept.
    pg_exec(
        Some(s),
        "DELETE FROM schema_migrations WHERE store = 'incidents'",
    );
    let before = pg_objects(s);
    let store = connect(s, dir.path());
    assert_eq!(read_back(&store, id), written);
    drop(store);
    assert_eq!(pg_version(s, "incidents"), Some(1));
    assert_eq!(
        pg_i64(&format!("SELECT version FROM {s}.incidents_schema_version")),
        Some(1),
        "the previous release's count is left as it was"
    );
    assert_eq!(pg_objects(s), before, "nothing rewritten");
}

#[test]
fn postgres_incidents_newer_than_the_previous_release_counted_are_refused() {
    let Some(schema) = Schema::new("mig_inc_newer") else {
        return;
    };
    let s = &schema.0;
    let dir = TempDir::new("tally-mig-incidents");
    previous_incidents_schema(s);
    pg_exec(Some(s), "UPDATE incidents_schema_version SET version = 2");
    let e = IncidentStore::connect_postgres(&url(), s, dir.path())
        .err()
        .expect("a newer schema was accepted");
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert_eq!(pg_version(s, "incidents"), None);
}

#[test]
fn postgres_incidents_and_state_sharing_a_new_schema_migrate_concurrently() {
    let Some(schema) = Schema::new("mig_inc_state") else {
        return;
    };
    let dir = TempDir::new("tally-mig-incidents");
    let start = Arc::new(Barrier::new(4));
    let nodes: Vec<_> = (0..4)
        .map(|n| {
            let (s, start) = (schema.0.clone(), start.clone());
            let witness = dir.path().join(format!("n{n}"));
            std::thread::spawn(move || {
                start.wait();
                if n % 2 == 0 {
                    IncidentStore::connect_postgres(&url(), &s, &witness)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    StateStore::connect_postgres(&url(), &s)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            })
        })
        .collect();
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    assert_eq!(pg_version(&schema.0, "incidents"), Some(1));
    assert_eq!(pg_version(&schema.0, "state"), Some(6));
}

// --------------------------------------------------------- access log --

fn events(n: i64) -> Vec<(i64, Vec<u8>)> {
    (0..n)
        .map(|i| (1000 * i, format!("{{\"i\":{i}}}").into_bytes()))
        .collect()
}

#[test]
fn sqlite_access_log_is_created_as_the_previous_release_made_it() {
    let dir = TempDir::new("tally-mig-access");
    let (new, old) = (dir.path().join("new.db"), dir.path().join("old.db"));
    drop(AccessLog::open(&new).unwrap());
    sqlite_exec(&old, ACCESS_SQLITE);
    assert_eq!(sqlite_objects(&new), sqlite_objects(&old));
    assert_eq!((user_version(&new), user_version(&old)), (2, 0));
}

#[test]
fn sqlite_access_log_of_the_previous_release_opens_without_loss() {
    let dir = TempDir::new("tally-mig-access");
    let file = dir.path().join("access.db");
    sqlite_exec(&file, ACCESS_SQLITE);
    let log = AccessLog::open(&file).unwrap();
    log.append(&events(6)).unwrap();
    let hold = log.hold(0, 2000, "case 7", "legal", 1).unwrap();
    drop(log);
    // Rows written, and no version kept, as by the previous release.
    sqlite_exec(&file, "PRAGMA user_version = 0");
    let before = sqlite_objects(&file);
    let log = AccessLog::open(&file).unwrap();
    assert_eq!(log.verify().unwrap().events, 6);
    assert_eq!(log.holds().unwrap()[0].reason, "case 7");
    assert!(log.release(hold, 2, "legal", "case closed").unwrap());
    drop(log);
    assert_eq!(user_version(&file), 2);
    assert_eq!(sqlite_objects(&file), before, "nothing rewritten");
}

#[test]
fn sqlite_access_log_from_before_release_reasons_is_adopted_and_brought_up_to_date() {
    let dir = TempDir::new("tally-mig-access");
    let (file, fresh) = (dir.path().join("access.db"), dir.path().join("fresh.db"));
    let (first, _) = ACCESS_SQLITE
        .split_once("-- added after the first schema")
        .unwrap();
    sqlite_exec(&file, first);
    sqlite_exec(
        &file,
        "INSERT INTO holds (from_ms, until_ms, reason, actor, created_at)
         VALUES (0, 10, 'case 3', 'legal', 1)",
    );
    let log = AccessLog::open(&file).unwrap();
    assert!(log.release(1, 2, "legal", "case closed").unwrap());
    drop(log);
    assert_eq!(user_version(&file), 2);
    drop(AccessLog::open(&fresh).unwrap());
    assert_eq!(sqlite_objects(&file), sqlite_objects(&fresh));
}

#[test]
fn sqlite_access_log_newer_than_this_code_is_refused() {
    let dir = TempDir::new("tally-mig-access");
    let file = dir.path().join("access.db");
    drop(AccessLog::open(&file).unwrap());
    sqlite_exec(&file, "PRAGMA user_version = 3");
    let e = AccessLog::open(&file)
        .err()
        .expect("a newer file was opened");
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert!(e.to_string().contains("upgrade tally"), "{e}");
}
