//! The ledger on SQLite: an append-only table of encoded issuance records, the
//! signed checkpoints that commit to it, one writer thread doing group commit,
//! and the verification that both the writer and `tally ledger verify` run.
//!
//! # Durability and checkpoints
//! Appends travel over a channel to one writer thread. It takes every request
//! waiting (up to [`MAX_BATCH`]), and in ONE transaction inserts the rows and a
//! checkpoint signed over the new tree head, then commits (WAL, `synchronous =
//! FULL`: one fsync per batch). Only then are the callers answered. Every row is
//! therefore covered by a signed checkpoint committed with it, a checkpoint is
//! signed whenever entries arrive (far more often than once a second), and the
//! writer signs heads only of the tree it extends, so it never signs two
//! inconsistent checkpoints.
//!
//! # Tamper evidence
//! [`verify_ledger`] recomputes every leaf from the stored record bytes and every
//! stored checkpoint's root and signature. The writer runs it when it opens the
//! ledger and again whenever SQLite's `data_version` shows that another
//! connection committed to the ledger file; on failure it refuses to extend the
//! tree and answers `ledger_tampered`. Reads that feed decisions (a token-id
//! lookup) are checked against the writer's in-memory tree, never trusted raw.
//!
//! # Modules
//! * `types`: [`LedgerError`], [`InclusionProof`], [`LocatedRecord`], shared
//!   by every backend and by [`crate::store::LedgerStore`];
//! * `embedded`: the [`Ledger`] handle and its `LedgerStore` impl;
//! * `writer`: the writer thread (group commit, [`MAX_BATCH`]);
//! * `db`: the SQLite file (schema, connections, checkpoint rows,
//!   [`open_read_only`], [`latest_checkpoint_note`]);
//! * `verify`: [`verify_ledger`];
//! * `witness`: the head witness file ([`witness_path`], [`write_witness`],
//!   [`check_witness`]), also used by fleet nodes;
//! * `tree`: signed heads and proofs from a verified tree, for both backends.

mod db;
mod embedded;
mod tree;
mod types;
mod verify;
mod witness;
mod writer;

pub use db::{latest_checkpoint_note, open_read_only};
pub use embedded::Ledger;
pub(crate) use tree::{check_entries, consistency_in, inclusion_in, root_in, sign_head};
pub use types::{InclusionProof, LedgerError, LocatedRecord};
pub use verify::{VerifyReport, verify_ledger};
pub use witness::{check_witness, witness_path, write_witness};
pub use writer::MAX_BATCH;
