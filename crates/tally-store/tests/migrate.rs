//! Schemas through `tally_store::migrate`, on both engines: the mechanism
//! itself on PostgreSQL (its SQLite side is unit-tested), and the state,
//! ledger and fleet stores created afresh, adopted from the previous
//! release, refused when newer, and migrated once by concurrent openers.
//!
//! The previous release's databases are made here as that release made
//! them: its schema statements are kept verbatim in
//! `fixtures/previous/`, its PostgreSQL migration routine is
//! `support::previous_migrate_schema`, and its version markers are written
//! as it wrote them. A fresh database made by this code must have exactly the
//! tables, columns, indexes, triggers and functions of one made by the
//! previous release.
//!
//! PostgreSQL is the server at 127.0.0.1:5432, database `test` (or
//! `TALLY_TEST_PG_URL`); each test works in schemas of its own, dropped
//! afterwards. Without a reachable server those tests say they are skipped;
//! with `CI=true` they must run.

use std::path::Path;
use std::sync::{Arc, Barrier};

use tally_store::fleet::{self, RecordMac};
use tally_store::migrate::{Applied, Legacy, MigrateError, Migrations, Step};
use tally_store::sql::Db;
use tally_store::{KeyPurpose, Ledger, StateError, StateStore};

mod support;

use support::{
    Schema, TempDir, fixture_migrations as migrations, pg_exec, pg_i64, pg_objects,
    pg_version as recorded, previous_migrate_schema, record, signer, sqlite_exec, sqlite_objects,
    url, user_version,
};

const STATE_SQLITE: &str = include_str!("fixtures/previous/state.sqlite.sql");
const STATE_POSTGRES: &str = include_str!("fixtures/previous/state.postgres.sql");
const LEDGER_SQLITE: &str = include_str!("fixtures/previous/ledger.sqlite.sql");
const FLEET_POSTGRES: &str = include_str!("fixtures/previous/fleet.postgres.sql");

// ---------------------------------------------- the mechanism on PostgreSQL --

/// A store for the mechanism's tests: its steps count the times they ran.
const DEMO: Migrations = Migrations {
    name: "demo",
    steps: &[
        Step::both(
            1,
            "CREATE TABLE runs (step BIGINT NOT NULL); INSERT INTO runs VALUES (1);",
        ),
        Step::each(2, "", "INSERT INTO {schema}.runs VALUES (2);"),
        Step::postgres(3, "INSERT INTO runs VALUES (3);"),
    ],
    legacy: &[Legacy::Counter {
        table: "demo_version",
        versions: &[0, 1, 3],
    }],
};

fn demo_db(schema: &str, lock: i64) -> Db {
    Db::postgres_with_lock(&url(), schema, 1, "tally-test", lock).unwrap()
}

fn apply(db: &Db, m: &'static Migrations, schema: &str) -> Result<Applied, MigrateError> {
    let s = schema.to_owned();
    db.write(move |tx| m.apply_postgres(tx, &s))
}

fn runs(schema: &str) -> Vec<i64> {
    fleet::connect(&url())
        .unwrap()
        .query(
            &format!("SELECT step FROM {schema}.runs ORDER BY step"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn postgres_a_new_schema_gets_every_step_once() {
    let Some(schema) = Schema::new("mig_new") else {
        return;
    };
    let s = &schema.0;
    let db = demo_db(s, 1);
    let first = apply(&db, &DEMO, s).unwrap();
    assert_eq!(
        first,
        Applied {
            from: 0,
            to: 3,
            adopted: false
        }
    );
    let again = apply(&db, &DEMO, s).unwrap();
    assert_eq!((again.from, again.to, again.adopted), (3, 3, false));
    assert_eq!(runs(s), [1, 2, 3], "each step ran once");
    assert_eq!(recorded(s, "demo"), Some(3));
}

#[test]
fn postgres_a_count_of_the_earlier_routine_is_adopted_then_continued() {
    let Some(schema) = Schema::new("mig_count") else {
        return;
    };
    let s = &schema.0;
    previous_migrate_schema(
        s,
        "demo_version",
        &["CREATE TABLE runs (step BIGINT NOT NULL); INSERT INTO runs VALUES (1);"],
    );
    let done = apply(&demo_db(s, 1), &DEMO, s).unwrap();
    assert_eq!(
        done,
        Applied {
            from: 1,
            to: 3,
            adopted: true
        }
    );
    assert_eq!(runs(s), [1, 2, 3]);
    assert_eq!(recorded(s, "demo"), Some(3));
    // The old count is left as it was.
    assert_eq!(
        pg_i64(&format!("SELECT version FROM {s}.demo_version")),
        Some(1)
    );
}

#[test]
fn postgres_tables_of_an_unversioned_schema_give_its_version() {
    // Steps that fail if run again: only a right guess of the version works.
    const TABLES: Migrations = Migrations {
        name: "tables",
        steps: &[
            Step::postgres(1, "CREATE TABLE runs (step BIGINT NOT NULL);"),
            Step::postgres(2, "ALTER TABLE runs ADD COLUMN note TEXT;"),
            Step::postgres(3, "INSERT INTO runs (step) VALUES (3);"),
        ],
        legacy: &[
            Legacy::Table {
                table: "runs",
                column: Some("note"),
                version: 2,
            },
            Legacy::Table {
                table: "runs",
                column: None,
                version: 1,
            },
        ],
    };
    for (made, from) in [
        ("CREATE TABLE runs (step BIGINT NOT NULL);", 1),
        ("CREATE TABLE runs (step BIGINT NOT NULL, note TEXT);", 2),
    ] {
        let Some(schema) = Schema::new("mig_tables") else {
            return;
        };
        let s = &schema.0;
        pg_exec(None, &format!("CREATE SCHEMA {s}"));
        pg_exec(Some(s), made);
        let done = apply(&demo_db(s, 1), &TABLES, s).unwrap();
        assert_eq!(
            done,
            Applied {
                from,
                to: 3,
                adopted: true
            }
        );
        assert_eq!(runs(s), [3]);
        assert_eq!(recorded(s, "tables"), Some(3));
    }
}

#[test]
fn postgres_a_newer_schema_is_refused_and_left_alone() {
    let Some(schema) = Schema::new("mig_newer") else {
        return;
    };
    let s = &schema.0;
    let db = demo_db(s, 1);
    apply(&db, &DEMO, s).unwrap();
    pg_exec(
        Some(s),
        "UPDATE schema_migrations SET version = 7 WHERE store = 'demo'",
    );
    let e = apply(&db, &DEMO, s).unwrap_err();
    assert_eq!(e.code(), "schema_too_new");
    assert!(
        matches!(
            e,
            MigrateError::NewerSchema {
                found: 7,
                known: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade tally"), "{e}");
    assert_eq!(recorded(s, "demo"), Some(7));

    // A count of the earlier routine beyond what it could have counted.
    let Some(schema) = Schema::new("mig_newer_count") else {
        return;
    };
    let s = &schema.0;
    previous_migrate_schema(s, "demo_version", &["SELECT 1;", "SELECT 1;", "SELECT 1;"]);
    let e = apply(&demo_db(s, 1), &DEMO, s).unwrap_err();
    assert!(
        matches!(e, MigrateError::NewerSchema { found: 3, .. }),
        "{e}"
    );
    assert_eq!(recorded(s, "demo"), None);
}

#[test]
fn postgres_concurrent_openers_both_succeed_and_migrate_once() {
    let Some(schema) = Schema::new("mig_race") else {
        return;
    };
    let s = schema.0.clone();
    let start = Arc::new(Barrier::new(2));
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let (s, start) = (s.clone(), start.clone());
            std::thread::spawn(move || {
                let db = demo_db(&s, 1);
                start.wait();
                apply(&db, &DEMO, &s)
            })
        })
        .collect();
    let mut done: Vec<_> = openers
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    done.sort_by_key(|a| a.from);
    assert_eq!(
        done.iter().map(|a| (a.from, a.to)).collect::<Vec<_>>(),
        [(0, 3), (3, 3)],
        "one migrated, the other found it done"
    );
    assert_eq!(runs(&s), [1, 2, 3]);
}

#[test]
fn postgres_stores_sharing_a_new_schema_migrate_side_by_side() {
    const OTHER: Migrations = Migrations {
        name: "other",
        steps: &[Step::postgres(1, "CREATE TABLE other_rows (x BIGINT);")],
        legacy: &[],
    };
    let Some(schema) = Schema::new("mig_shared") else {
        return;
    };
    let s = schema.0.clone();
    let start = Arc::new(Barrier::new(2));
    // Different stores, different write locks: the schema's migration lock
    // keeps them from creating `schema_migrations` at the same time.
    let openers: Vec<_> = [(&DEMO, 1), (&OTHER, 2)]
        .into_iter()
        .map(|(m, lock)| {
            let (s, start) = (s.clone(), start.clone());
            std::thread::spawn(move || {
                let db = demo_db(&s, lock);
                start.wait();
                apply(&db, m, &s)
            })
        })
        .collect();
    for t in openers {
        t.join().unwrap().unwrap();
    }
    assert_eq!(recorded(&s, "demo"), Some(3));
    assert_eq!(recorded(&s, "other"), Some(1));
}

// ------------------------------------------------------------- state --

/// Rows of every kind the tests read back, as the previous release stored
/// them (in SQLite's dialect; the blob is written otherwise in PostgreSQL).
const STATE_ROWS: &str = "
INSERT INTO meta (key, value) VALUES ('origin', 'tally.example');
INSERT INTO keys (kid, alg, purpose, state, created_at, state_changed_at, public, sealed, source)
    VALUES ('k1', 'EdDSA', 'token', 'active', 5, 5, '{}', x'010203', 'generated');
INSERT INTO blocks (kind, value, reason, actor, created_at)
    VALUES ('ip', '192.0.2.1', 'abuse', 'ops', 7);
INSERT INTO signature_counts (kid, node, signed, withheld) VALUES ('k1', '', 12, 1);
";

fn check_state_rows(s: &StateStore) {
    assert_eq!(s.meta("origin").unwrap().as_deref(), Some("tally.example"));
    let keys = s.keys(KeyPurpose::Token).unwrap();
    assert_eq!(
        (keys.len(), keys[0].kid.as_str(), keys[0].sealed.as_slice()),
        (1, "k1", &[1u8, 2, 3][..])
    );
    assert_eq!(s.blocks(8).unwrap()[0].value, "192.0.2.1");
    assert_eq!(s.signature_counts("").unwrap()["k1"], (12, 1));
}

#[test]
fn sqlite_state_is_created_as_the_previous_release_made_it() {
    let dir = TempDir::new("tally-mig-state");
    let (new, old) = (dir.path().join("new.db"), dir.path().join("old.db"));
    drop(StateStore::open(&new).unwrap());
    sqlite_exec(&old, STATE_SQLITE);
    assert_eq!(sqlite_objects(&new), sqlite_objects(&old));
    assert_eq!((user_version(&new), user_version(&old)), (6, 6));
}

#[test]
fn sqlite_state_of_the_previous_release_opens_without_loss() {
    let dir = TempDir::new("tally-mig-state");
    let path = dir.path().join("state.db");
    sqlite_exec(&path, STATE_SQLITE);
    sqlite_exec(&path, STATE_ROWS);
    let before = sqlite_objects(&path);
    let s = StateStore::open(&path).unwrap();
    check_state_rows(&s);
    drop(s);
    assert_eq!(sqlite_objects(&path), before);
    assert_eq!(user_version(&path), 6);

    sqlite_exec(&path, "PRAGMA user_version = 7");
    match StateStore::open(&path) {
        Err(e @ StateError::NewerSchema { found: 7, known: 6 }) => {
            assert_eq!(e.code(), "schema_too_new")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a newer file was accepted"),
    }
}

#[test]
fn postgres_state_is_created_as_the_previous_release_made_it() {
    let (Some(new), Some(old)) = (Schema::new("mig_state_new"), Schema::new("mig_state_old"))
    else {
        return;
    };
    drop(StateStore::connect_postgres(&url(), &new.0).unwrap());
    previous_migrate_schema(&old.0, "schema_version", &migrations(STATE_POSTGRES));
    let fresh = pg_objects(&new.0);
    assert!(fresh.len() > 80, "{fresh:?}");
    assert_eq!(fresh, pg_objects(&old.0));
    assert_eq!(recorded(&new.0, "state"), Some(6));
}

#[test]
fn postgres_state_of_the_previous_release_is_adopted_without_loss() {
    let Some(schema) = Schema::new("mig_state_prev") else {
        return;
    };
    let s = &schema.0;
    previous_migrate_schema(s, "schema_version", &migrations(STATE_POSTGRES));
    pg_exec(
        Some(s),
        &STATE_ROWS.replace("x'010203'", "'\\x010203'::bytea"),
    );
    let before = pg_objects(s);
    let store = StateStore::connect_postgres(&url(), s).unwrap();
    check_state_rows(&store);
    // The triggers still move the change counter.
    let v = store.data_version().unwrap();
    store
        .add_block("ip", "192.0.2.2", "abuse", "ops", 9, None)
        .unwrap();
    assert_ne!(store.data_version().unwrap(), v);
    drop(store);
    assert_eq!(recorded(s, "state"), Some(6));
    assert_eq!(
        pg_i64(&format!("SELECT version FROM {s}.schema_version")),
        Some(4),
        "the previous release's count is left as it was"
    );
    assert_eq!(pg_objects(s), before, "nothing rewritten");
    // Opening again changes nothing.
    drop(StateStore::connect_postgres(&url(), s).unwrap());
    assert_eq!(recorded(s, "state"), Some(6));
}

#[test]
fn postgres_state_two_migrations_behind_is_adopted_and_brought_up_to_date() {
    let (Some(old), Some(new)) = (Schema::new("mig_state_v2"), Schema::new("mig_state_v6")) else {
        return;
    };
    previous_migrate_schema(&old.0, "schema_version", &migrations(STATE_POSTGRES)[..2]);
    pg_exec(
        Some(&old.0),
        "INSERT INTO signature_counts (kid, node, signed, withheld) VALUES ('k1', '', 3, 0)",
    );
    let store = StateStore::connect_postgres(&url(), &old.0).unwrap();
    assert_eq!(store.signature_counts("").unwrap()["k1"], (3, 0));
    drop(store);
    assert_eq!(recorded(&old.0, "state"), Some(6));
    drop(StateStore::connect_postgres(&url(), &new.0).unwrap());
    assert_eq!(pg_objects(&old.0), pg_objects(&new.0));
}

#[test]
fn postgres_state_newer_than_the_previous_release_counted_is_refused() {
    let Some(schema) = Schema::new("mig_state_99") else {
        return;
    };
    let s = &schema.0;
    previous_migrate_schema(s, "schema_version", &migrations(STATE_POSTGRES));
    pg_exec(Some(s), "UPDATE schema_version SET version = 99");
    match StateStore::connect_postgres(&url(), s) {
        Err(e @ StateError::NewerSchema { found: 99, .. }) => {
            assert_eq!(e.code(), "schema_too_new")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    assert_eq!(recorded(s, "state"), None);
}

#[test]
fn postgres_state_concurrent_connects_both_succeed_and_migrate_once() {
    let Some(schema) = Schema::new("mig_state_race") else {
        return;
    };
    let s = schema.0.clone();
    let start = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (s, start) = (s.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                StateStore::connect_postgres(&url(), &s).map(drop)
            })
        })
        .collect();
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    // Migration 1 inserts the change counter's one row.
    assert_eq!(
        pg_i64(&format!("SELECT count(*) FROM {s}.changes")),
        Some(1),
        "version 1 ran once"
    );
    assert_eq!(recorded(&s, "state"), Some(6));
}

// ------------------------------------------------------------ ledger --

fn open_ledger(path: &Path) -> Result<Ledger, tally_store::LedgerError> {
    Ledger::open(path, signer(), &mut |_, _| {}, &mut |_, _| {})
}

#[test]
fn sqlite_ledger_is_created_as_the_previous_release_made_it() {
    let dir = TempDir::new("tally-mig-ledger");
    let (new, old) = (dir.path().join("new.db"), dir.path().join("old.db"));
    drop(open_ledger(&new).unwrap());
    sqlite_exec(&old, LEDGER_SQLITE);
    assert_eq!(sqlite_objects(&new), sqlite_objects(&old));
    assert_eq!((user_version(&new), user_version(&old)), (1, 0));
}

#[test]
fn sqlite_ledger_of_the_previous_release_opens_without_loss() {
    let dir = TempDir::new("tally-mig-ledger");
    let path = dir.path().join("ledger.db");
    sqlite_exec(&path, LEDGER_SQLITE);
    // The previous release's file, adopted: the schema is the same.
    let ledger = open_ledger(&path).unwrap();
    for i in 0..5 {
        ledger.append_blocking(record(i)).unwrap();
    }
    drop(ledger);
    assert_eq!(user_version(&path), 1);
    // Entries written, and no version kept, as by the previous release.
    sqlite_exec(&path, "PRAGMA user_version = 0");
    let before = sqlite_objects(&path);
    let ledger = open_ledger(&path).unwrap();
    assert_eq!(ledger.size(), 5);
    assert_eq!(ledger.lookup("jti-3").unwrap().unwrap().record, record(3));
    ledger.append_blocking(record(5)).unwrap();
    drop(ledger);
    assert_eq!(user_version(&path), 1);
    assert_eq!(sqlite_objects(&path), before);
    tally_store::ledger::open_read_only(&path).unwrap();
}

#[test]
fn sqlite_ledger_newer_than_this_code_is_refused() {
    let dir = TempDir::new("tally-mig-ledger");
    let path = dir.path().join("ledger.db");
    drop(open_ledger(&path).unwrap());
    sqlite_exec(&path, "PRAGMA user_version = 2");
    let e = open_ledger(&path).err().expect("a newer ledger was opened");
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert!(e.to_string().contains("upgrade tally"), "{e}");
    let e = tally_store::ledger::open_read_only(&path).unwrap_err();
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert_eq!(user_version(&path), 2);
}

// ------------------------------------------------------------- fleet --

#[test]
fn postgres_fleet_is_created_as_the_previous_release_made_it() {
    let (Some(new), Some(old)) = (Schema::new("mig_fleet_new"), Schema::new("mig_fleet_old"))
    else {
        return;
    };
    let mut c = fleet::connect(&url()).unwrap();
    fleet::migrate(&mut c, &new.0).unwrap();
    c.batch_execute(&FLEET_POSTGRES.replace("{schema}", &old.0))
        .unwrap();
    let fresh = pg_objects(&new.0);
    assert!(fresh.len() > 20, "{fresh:?}");
    assert_eq!(fresh, pg_objects(&old.0));
    assert_eq!(recorded(&new.0, "fleet"), Some(1));
}

#[test]
fn postgres_fleet_of_the_previous_release_is_adopted_without_loss() {
    let Some(schema) = Schema::new("mig_fleet_prev") else {
        return;
    };
    let s = &schema.0;
    let mac = RecordMac::new(&[9u8; 32]);
    let mut c = fleet::connect(&url()).unwrap();
    c.batch_execute(&FLEET_POSTGRES.replace("{schema}", s))
        .unwrap();
    fleet::enqueue(&mut c, s, &mac, "n1", &[record(1)], 1_800_000_000).unwrap();
    let before = pg_objects(s);
    fleet::migrate(&mut c, s).unwrap();
    assert_eq!(recorded(s, "fleet"), Some(1));
    assert_eq!(pg_objects(s), before);
    let found = fleet::lookup(&mut c, s, &mac, "jti-1").unwrap().unwrap();
    assert_eq!(found.record, record(1));

    pg_exec(
        Some(s),
        "UPDATE schema_migrations SET version = 2 WHERE store = 'fleet'",
    );
    let e = fleet::migrate(&mut c, s).unwrap_err();
    assert_eq!(e.code(), "schema_too_new", "{e}");
    assert!(e.to_string().contains("upgrade tally"), "{e}");
}

#[test]
fn postgres_fleet_and_state_in_one_new_schema_migrate_concurrently() {
    let Some(schema) = Schema::new("mig_fleet_state") else {
        return;
    };
    let s = schema.0.clone();
    let start = Arc::new(Barrier::new(4));
    let mut nodes = Vec::new();
    for n in 0..4 {
        let (s, start) = (s.clone(), start.clone());
        nodes.push(std::thread::spawn(move || {
            start.wait();
            if n % 2 == 0 {
                fleet::migrate(&mut fleet::connect(&url()).unwrap(), &s).map_err(|e| e.to_string())
            } else {
                StateStore::connect_postgres(&url(), &s)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }));
    }
    for n in nodes {
        n.join().unwrap().unwrap();
    }
    assert_eq!(recorded(&s, "fleet"), Some(1));
    assert_eq!(recorded(&s, "state"), Some(6));
}
