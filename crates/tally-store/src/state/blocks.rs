//! Blocks: an address, device, subject or token refused until lifted or
//! expired. Lifting keeps the row (`removed_at`), so the record stays.

use super::error::StateError;
use super::store::StateStore;
use crate::sql::args;

/// A stored block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRow {
    /// Id.
    pub id: i64,
    /// `ip`, `device`, `subject` or `token`.
    pub kind: String,
    /// What it matches.
    pub value: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// When.
    pub created_at: i64,
    /// Until when, if not forever.
    pub expires_at: Option<i64>,
}

impl StateStore {
    /// Adds a block (`kind`: `ip`, `device`, `subject` or `token`); returns its id.
    pub fn add_block(
        &self,
        kind: &str,
        value: &str,
        reason: &str,
        actor: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StateError> {
        let (kind, value) = (kind.to_owned(), value.to_owned());
        let (reason, actor) = (reason.to_owned(), actor.to_owned());
        self.db.write(move |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO blocks (kind, value, reason, actor, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    args![kind, value, reason, actor, now, expires_at],
                )?
                .i64(0)?)
        })
    }

    /// Lifts a block. Returns false if there is no such block in force.
    pub fn remove_block(&self, id: i64, now: i64) -> Result<bool, StateError> {
        self.db.write(move |tx| {
            Ok(tx.execute(
                "UPDATE blocks SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL",
                args![id, now],
            )? == 1)
        })
    }

    /// Blocks not lifted and not expired at `now`.
    pub fn blocks(&self, now: i64) -> Result<Vec<BlockRow>, StateError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT id, kind, value, reason, actor, created_at, expires_at FROM blocks
                 WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > $1) ORDER BY id",
                args![now],
            )?
            .iter()
            .map(|r| {
                Ok(BlockRow {
                    id: r.i64(0)?,
                    kind: r.text(1)?,
                    value: r.text(2)?,
                    reason: r.text(3)?,
                    actor: r.text(4)?,
                    created_at: r.i64(5)?,
                    expires_at: r.opt_i64(6)?,
                })
            })
            .collect()
        })
    }
}
