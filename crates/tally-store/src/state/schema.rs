//! The state's tables and how they are brought up to date: [`STATE`], six
//! versions through [`crate::migrate`] (`PRAGMA user_version` in SQLite,
//! the `state` row of `schema_migrations` in PostgreSQL, under the state's
//! advisory write lock), both engines defining the same tables and columns
//! so that they run the same statements. A database from a newer tally is
//! refused, never downgraded.
//!
//! Invariants: SQLite's versions are the `user_version` values that
//! `state.db` files already carry. PostgreSQL's first migration created in
//! one go what SQLite's first three did, so its versions 2 and 3 change
//! nothing; a schema from before `schema_migrations` kept its count of
//! migrations in `schema_version`, and count `n` is version `[0, 3, 4, 5,
//! 6][n]`.

use rusqlite::Connection;

use super::error::StateError;
use crate::migrate::{Legacy, MigrateError, Migrations, Step};
use crate::sql::Tx;

/// The state's schema on both engines.
pub(super) const STATE: Migrations = Migrations {
    name: "state",
    steps: &[
        Step::each(1, MIGRATIONS[0], PG_MIGRATIONS[0]),
        // Sessions, clients, blocks, TOTP: in PostgreSQL's version 1.
        Step::each(2, MIGRATIONS[1], ""),
        // Sessions bound to a DPoP key, administrators: in PostgreSQL's version 1.
        Step::each(3, MIGRATIONS[2], ""),
        Step::each(4, MIGRATIONS[3], PG_MIGRATIONS[1]),
        Step::each(5, MIGRATIONS[4], PG_MIGRATIONS[2]),
        Step::each(6, MIGRATIONS[5], PG_MIGRATIONS[3]),
    ],
    legacy: &[Legacy::Counter {
        table: "schema_version",
        versions: &[0, 3, 4, 5, 6],
    }],
};

/// The SQLite statements of versions 1 to 6 (`MIGRATIONS[i]` is version
/// `i + 1`), only ever appended to.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE keys (
    kid              TEXT PRIMARY KEY,
    alg              TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL,
    public           TEXT NOT NULL,
    sealed           BLOB NOT NULL,
    source           TEXT NOT NULL
);
CREATE TABLE key_custodians (
    kid        TEXT NOT NULL REFERENCES keys(kid),
    person     TEXT NOT NULL,
    added_at   INTEGER NOT NULL,
    removed_at INTEGER,
    PRIMARY KEY (kid, person)
);
CREATE TABLE key_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    kid    TEXT,
    event  TEXT NOT NULL,
    actor  TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE revocations (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id     TEXT    NOT NULL UNIQUE,
    token_sha256 BLOB    NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);
CREATE TABLE forgery_sightings (
    kid        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
",
    "
CREATE TABLE sessions (
    family         TEXT PRIMARY KEY,
    subject        TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    auth_context   TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
);
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    family     TEXT NOT NULL REFERENCES sessions(family),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE session_tokens (
    token_id     TEXT PRIMARY KEY,
    family       TEXT NOT NULL REFERENCES sessions(family),
    token_sha256 BLOB NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX session_tokens_family ON session_tokens(family);
CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE signature_counts (
    kid      TEXT PRIMARY KEY,
    signed   INTEGER NOT NULL,
    withheld INTEGER NOT NULL
);
CREATE TABLE blocks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    removed_at INTEGER
);
ALTER TABLE users ADD COLUMN totp_sealed BLOB;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
",
    // v3: sessions bound to a DPoP key; administrators.
    "
ALTER TABLE sessions ADD COLUMN jkt TEXT;
ALTER TABLE sessions ADD COLUMN audience TEXT;
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
",
    // v4: login failures shared by the nodes of a fleet; signature counts
    // per key and node (a node cannot see another's signatures as they are
    // made, so only per-node accounts balance; '' is the only node of an
    // embedded store).
    "
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_failure INTEGER NOT NULL
);
CREATE TABLE signature_counts_by_node (
    kid      TEXT NOT NULL,
    node     TEXT NOT NULL,
    signed   INTEGER NOT NULL,
    withheld INTEGER NOT NULL,
    PRIMARY KEY (kid, node)
);
INSERT INTO signature_counts_by_node (kid, node, signed, withheld)
    SELECT kid, '', signed, withheld FROM signature_counts;
DROP TABLE signature_counts;
ALTER TABLE signature_counts_by_node RENAME TO signature_counts;
",
    // v5: the rows that grant access carry a MAC (see `crate::rows`).
    "
ALTER TABLE users ADD COLUMN mac BLOB;
ALTER TABLE clients ADD COLUMN mac BLOB;
ALTER TABLE sessions ADD COLUMN mac BLOB;
ALTER TABLE refresh_tokens ADD COLUMN mac BLOB;
",
    // v6: the addresses each user or client recently authenticated from,
    // shared by the nodes of a fleet (their per-subject lock does not apply
    // there); subject and address stored as SHA-256 digests.
    "
CREATE TABLE known_addresses (
    subject      TEXT NOT NULL,
    address      TEXT NOT NULL,
    last_success INTEGER NOT NULL,
    PRIMARY KEY (subject, address)
);
",
];

/// Creates or upgrades the SQLite state file.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    STATE.apply_sqlite(conn).map_err(state_error)?;
    Ok(())
}

/// A migration failure as the state store reports it.
fn state_error(e: MigrateError) -> StateError {
    match e {
        MigrateError::NewerSchema { found, known, .. } => StateError::NewerSchema {
            found: usize::try_from(found).unwrap_or(usize::MAX),
            known: known as usize,
        },
        MigrateError::Sql(e) => e.into(),
    }
}

/// The PostgreSQL statements of [`STATE`]'s versions 1, 4, 5 and 6 (its
/// versions 2 and 3 change nothing there), only ever appended to.
/// `{schema}` stands for the schema name. Tables and columns are those of the SQLite schema so that both run
/// the same statements; text compares byte-wise (`COLLATE "C"`), as in
/// SQLite. As in SQLite, where they were never enforced, there are no
/// foreign keys.
///
/// `changes` is a one-row counter that statement-level triggers move on
/// every write to the tables a node caches (keys, custodians, revocations,
/// blocks, users), and that [`StateStore::data_version`] reads; the triggers
/// also `NOTIFY tally_state_{schema}` for nodes that `LISTEN`. Sessions,
/// refresh tokens and a user's last TOTP step, written on every login, do not
/// move it.
///
/// [`StateStore::data_version`]: crate::StateStore::data_version
const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
CREATE TABLE users (
    name           TEXT COLLATE "C" PRIMARY KEY,
    password_hash  TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL,
    totp_sealed    BYTEA,
    totp_last_step BIGINT,
    role           TEXT COLLATE "C" NOT NULL DEFAULT 'user'
);
CREATE TABLE keys (
    kid              TEXT COLLATE "C" PRIMARY KEY,
    alg              TEXT COLLATE "C" NOT NULL,
    purpose          TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL,
    created_at       BIGINT NOT NULL,
    state_changed_at BIGINT NOT NULL,
    public           TEXT COLLATE "C" NOT NULL,
    sealed           BYTEA NOT NULL,
    source           TEXT COLLATE "C" NOT NULL
);
CREATE TABLE key_custodians (
    kid        TEXT COLLATE "C" NOT NULL,
    person     TEXT COLLATE "C" NOT NULL,
    added_at   BIGINT NOT NULL,
    removed_at BIGINT,
    PRIMARY KEY (kid, person)
);
CREATE TABLE key_events (
    seq    BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    kid    TEXT COLLATE "C",
    event  TEXT COLLATE "C" NOT NULL,
    actor  TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL
);
CREATE TABLE revocations (
    seq          BIGSERIAL PRIMARY KEY,
    token_id     TEXT COLLATE "C" NOT NULL UNIQUE,
    token_sha256 BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT NOT NULL,
    reason       TEXT COLLATE "C" NOT NULL
);
CREATE TABLE forgery_sightings (
    kid        TEXT COLLATE "C" PRIMARY KEY,
    count      BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE TABLE sessions (
    family         TEXT COLLATE "C" PRIMARY KEY,
    subject        TEXT COLLATE "C" NOT NULL,
    client_id      TEXT COLLATE "C" NOT NULL,
    auth_context   TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT COLLATE "C",
    jkt            TEXT COLLATE "C",
    audience       TEXT COLLATE "C"
);
CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    family     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE session_tokens (
    token_id     TEXT COLLATE "C" PRIMARY KEY,
    family       TEXT COLLATE "C" NOT NULL,
    token_sha256 BYTEA  NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX session_tokens_family ON session_tokens(family);
CREATE TABLE clients (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE signature_counts (
    kid      TEXT COLLATE "C" PRIMARY KEY,
    signed   BIGINT NOT NULL,
    withheld BIGINT NOT NULL
);
CREATE TABLE blocks (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT COLLATE "C" NOT NULL,
    value      TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    removed_at BIGINT
);
CREATE TABLE changes (
    v BIGINT NOT NULL
);
INSERT INTO changes (v) VALUES (0);
CREATE FUNCTION note_change() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE {schema}.changes SET v = v + 1;
    PERFORM pg_notify('tally_state_{schema}', '');
    RETURN NULL;
END
$body$;
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER key_custodians_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON key_custodians
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER revocations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER blocks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON blocks
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, password_hash, role, totp_sealed ON users
    FOR EACH STATEMENT EXECUTE FUNCTION note_change();
"#,
    r#"
CREATE TABLE login_failures (
    key          TEXT COLLATE "C" PRIMARY KEY,
    failures     BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_failure BIGINT NOT NULL
);
ALTER TABLE signature_counts ADD COLUMN node TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE signature_counts DROP CONSTRAINT signature_counts_pkey;
ALTER TABLE signature_counts ADD PRIMARY KEY (kid, node);
"#,
    // v3: the rows that grant access carry a MAC (see `crate::rows`).
    r#"
ALTER TABLE users ADD COLUMN mac BYTEA;
ALTER TABLE clients ADD COLUMN mac BYTEA;
ALTER TABLE sessions ADD COLUMN mac BYTEA;
ALTER TABLE refresh_tokens ADD COLUMN mac BYTEA;
"#,
    // v4: known addresses (as in SQLite's v6).
    r#"
CREATE TABLE known_addresses (
    subject      TEXT COLLATE "C" NOT NULL,
    address      TEXT COLLATE "C" NOT NULL,
    last_success BIGINT NOT NULL,
    PRIMARY KEY (subject, address)
);
"#,
];

/// The `NOTIFY` channel on which the PostgreSQL state in `schema` announces
/// changes that move [`StateStore::data_version`].
///
/// [`StateStore::data_version`]: crate::StateStore::data_version
pub fn change_channel(schema: &str) -> String {
    format!("tally_state_{schema}")
}

/// Creates or upgrades the PostgreSQL schema. Runs in a [`Db::write`], so
/// under the advisory write lock: nodes starting together migrate one at a
/// time, and the later ones find the work done.
///
/// [`Db::write`]: crate::sql::Db::write
pub(super) fn migrate_pg(tx: &mut dyn Tx, schema: &str) -> Result<(), StateError> {
    STATE.apply_postgres(tx, schema).map_err(state_error)?;
    Ok(())
}
