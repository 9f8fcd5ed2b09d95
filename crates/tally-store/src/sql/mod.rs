//! A small SQL layer that runs the same statements on SQLite or PostgreSQL.
//!
//! Statements are written once, in the dialect both engines accept, with
//! PostgreSQL placeholders `$1, $2, …` (SQLite gets them as `?1, ?2, …`).
//! Values cross the boundary as [`Value`]s and come back as [`Row`]s whose
//! getters fail, rather than panic, on a missing column or a wrong type.
//!
//! All access goes through [`Db::read`] and [`Db::write`], which hand a
//! [`Tx`] to a closure:
//!
//! * [`Db::write`] is one transaction, and writers are serialised: SQLite
//!   takes its write lock up front (`BEGIN IMMEDIATE`); PostgreSQL first
//!   takes a transaction-scoped advisory lock, so a read-modify-write
//!   closure is atomic across every node sharing the database. Each store
//!   has a lock of its own in a schema ([`write_lock_key`] for the state,
//!   [`incident_lock_key`] for the incident store, see
//!   [`Db::postgres_with_lock`]): the writers of one store never wait for
//!   those of another. The transaction commits when the closure returns
//!   `Ok` and rolls back when it returns `Err`.
//! * [`Db::read`] takes no write lock (PostgreSQL: a read-only transaction).
//! * [`Db::read_snapshot`] neither, but all its statements see one snapshot
//!   (for reads that compare tables with each other while others write).
//!
//! The synchronous `postgres` client must not block on a tokio worker
//! thread, and callers may well be async handlers. So each PostgreSQL
//! connection lives on a thread of its own; closures are sent to a free
//! connection thread and the caller waits for the answer. That is why
//! closures and their results are `Send + 'static`: they own their data.
//!
//! Closures return the error type of their store (anything that a
//! [`SqlError`] converts into), so a store keeps its own domain errors.
//!
//! # Modules
//! * `value`: [`Value`] and the `args!` macro;
//! * `row`: [`Row`];
//! * `error`: [`SqlError`];
//! * `tx`: the [`Tx`] trait;
//! * `schema`: [`check_schema`] and the lock keys;
//! * `db`: [`Db`];
//! * `sqlite`: the SQLite engine, also on a connection a store keeps
//!   itself;
//! * `pool` and `pg_tx`: the PostgreSQL connection threads and
//!   transactions, and one transaction on a client a store keeps itself.

mod db;
mod error;
mod pg_tx;
mod pool;
mod row;
mod schema;
mod sqlite;
mod tx;
mod value;

pub use crate::args;
pub use db::Db;
pub use error::SqlError;
pub(crate) use pg_tx::write_postgres;
pub use row::Row;
pub(crate) use schema::schema_hash;
pub use schema::{check_schema, incident_lock_key, migrate_lock_key, write_lock_key};
pub(crate) use sqlite::{read_sqlite, write_sqlite};
pub use tx::Tx;
pub use value::Value;
