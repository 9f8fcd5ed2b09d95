//! The mechanism on SQLite (PostgreSQL's side is in `tests/migrate.rs`).

use super::*;

const TWO: Migrations = Migrations {
    name: "demo",
    steps: &[
        Step::both(1, "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);"),
        Step::each(
            2,
            "ALTER TABLE a ADD COLUMN y TEXT;",
            "ALTER TABLE a ADD y TEXT;",
        ),
    ],
    legacy: &[
        Legacy::Table {
            table: "a",
            column: Some("y"),
            version: 2,
        },
        Legacy::Table {
            table: "a",
            column: None,
            version: 1,
        },
    ],
};

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn rows(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM a", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_file_gets_every_step_once() {
    let mut conn = Connection::open_in_memory().unwrap();
    let done = TWO.apply_sqlite(&mut conn).unwrap();
    assert_eq!(
        done,
        Applied {
            from: 0,
            to: 2,
            adopted: false
        }
    );
    assert_eq!(user_version(&conn), 2);
    let again = TWO.apply_sqlite(&mut conn).unwrap();
    assert_eq!((again.from, again.to), (2, 2));
    assert_eq!(rows(&conn), 1, "no step ran twice");
    TWO.check_sqlite(&conn).unwrap();
}

#[test]
fn an_unversioned_file_is_adopted_at_the_version_its_tables_show() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (7), (8);")
        .unwrap();
    let done = TWO.apply_sqlite(&mut conn).unwrap();
    assert_eq!(
        done,
        Applied {
            from: 1,
            to: 2,
            adopted: true
        }
    );
    assert_eq!(user_version(&conn), 2);
    assert_eq!(rows(&conn), 2, "rows kept, step 1 not run again");
    conn.execute("UPDATE a SET y = 'ok'", []).unwrap();

    // At the last version already: only the version is recorded.
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE a (x INTEGER, y TEXT)")
        .unwrap();
    let done = TWO.apply_sqlite(&mut conn).unwrap();
    assert_eq!((done.from, done.to, done.adopted), (2, 2, true));
    assert_eq!(user_version(&conn), 2);
}

#[test]
fn a_newer_file_is_refused_and_left_alone() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA user_version = 9").unwrap();
    let e = TWO.apply_sqlite(&mut conn).unwrap_err();
    assert_eq!(e.code(), "schema_too_new");
    assert!(
        matches!(
            e,
            MigrateError::NewerSchema {
                store: "demo",
                found: 9,
                known: 2
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade tally"), "{e}");
    assert_eq!(
        TWO.check_sqlite(&conn).unwrap_err().code(),
        "schema_too_new"
    );
    assert_eq!(user_version(&conn), 9);
}

#[test]
fn a_failing_step_leaves_the_file_as_it_was() {
    const BAD: Migrations = Migrations {
        name: "bad",
        steps: &[
            Step::both(1, "CREATE TABLE a (x INTEGER);"),
            Step::both(2, "ALTER TABLE missing ADD COLUMN y TEXT;"),
        ],
        legacy: &[],
    };
    let mut conn = Connection::open_in_memory().unwrap();
    let e = BAD.apply_sqlite(&mut conn).unwrap_err();
    assert_eq!(e.code(), "store_unavailable");
    assert_eq!(user_version(&conn), 0);
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "step 1 rolled back with step 2");
}

#[test]
fn a_store_of_the_other_engine_or_misnumbered_steps_are_refused() {
    const PG_ONLY: Migrations = Migrations {
        name: "pg_only",
        steps: &[Step::postgres(1, "CREATE TABLE a (x BIGINT);")],
        legacy: &[],
    };
    const GAP: Migrations = Migrations {
        name: "gap",
        steps: &[Step::sqlite(1, "SELECT 1;"), Step::sqlite(3, "SELECT 1;")],
        legacy: &[],
    };
    for m in [&PG_ONLY, &GAP] {
        let mut conn = Connection::open_in_memory().unwrap();
        let e = m.apply_sqlite(&mut conn).unwrap_err();
        assert_eq!(e.code(), "bad_config", "{e}");
        assert_eq!(user_version(&conn), 0);
    }
}
