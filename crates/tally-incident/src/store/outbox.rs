//! The alert outbox: alerts queued durably, claimed for delivery, settled.
//!
//! Invariants: an item is delivered at least once (receivers deduplicate on
//! its id); on PostgreSQL an item returned by [`IncidentStore::due`] is
//! claimed by that handle for [`OUTBOX_LEASE_SECS`], and while any item of a
//! sink is claimed no other handle gets an item of that sink, so deliveries
//! to a sink stay in order.

use tally_store::sql::{Row, args};

use super::error::IncidentError;
use super::handle::IncidentStore;

/// How long (seconds, on the clock of the `now` passed in) an item returned
/// by [`IncidentStore::due`] stays claimed by the node that got it, on
/// PostgreSQL. Longer than a round of deliveries normally takes (each
/// attempt times out well within it); a node that dies mid-round delays its
/// items by this much at most.
pub const OUTBOX_LEASE_SECS: i64 = 120;

/// An alert waiting to be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Id (also the delivery id receivers can deduplicate on).
    pub id: i64,
    /// Sink name (`webhook:NAME` or `set`).
    pub sink: String,
    /// Content type of the body.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: i64,
}

impl IncidentStore {
    /// Queues an alert durably (delivered at least once, even across restarts).
    pub fn enqueue(
        &self,
        sink: &str,
        content_type: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64, IncidentError> {
        let (sink, content_type, body) = (sink.to_owned(), content_type.to_owned(), body.to_vec());
        self.db.write(move |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO outbox (sink, content_type, body, created_at, next_at) VALUES ($1, $2, $3, $4, $4) RETURNING id",
                    args![sink, content_type, body, now],
                )?
                .i64(0)?)
        })
    }

    /// Alerts due for (another) delivery attempt, oldest first.
    ///
    /// On PostgreSQL the items returned are claimed by this handle for
    /// [`OUTBOX_LEASE_SECS`] after `now`: until they are settled
    /// ([`IncidentStore::delivered`], [`IncidentStore::attempt_failed`]) or
    /// the lease runs out, no other caller gets them, nor any other item of
    /// the same sinks. With SQLite (one server) nothing is claimed.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>, IncidentError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claimant = self.claimant.clone();
        let item = |r: &Row| -> Result<OutboxItem, IncidentError> {
            Ok(OutboxItem {
                id: r.i64(0)?,
                sink: r.text(1)?,
                content_type: r.text(2)?,
                body: r.blob(3)?,
                attempts: r.i64(4)?,
                created_at: r.i64(5)?,
            })
        };
        if self.db.backend() == "postgres" {
            let mut items = self.db.write(move |tx| {
                tx.query(
                    "UPDATE outbox SET claimed_until = $2, claimed_by = $3
                     WHERE id IN (
                         SELECT id FROM outbox
                         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= $1
                           AND (claimed_until IS NULL OR claimed_until <= $1)
                           AND sink NOT IN (
                               SELECT sink FROM outbox
                               WHERE delivered_at IS NULL AND failed_at IS NULL
                                 AND claimed_until > $1)
                         ORDER BY id LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     RETURNING id, sink, content_type, body, attempts, created_at",
                    args![now, now.saturating_add(OUTBOX_LEASE_SECS), claimant, limit],
                )?
                .iter()
                .map(item)
                .collect::<Result<Vec<_>, _>>()
            })?;
            items.sort_by_key(|i| i.id);
            return Ok(items);
        }
        self.db.read(move |tx| {
            tx.query(
                "SELECT id, sink, content_type, body, attempts, created_at FROM outbox
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= $1 ORDER BY id LIMIT $2",
                args![now, limit],
            )?
            .iter()
            .map(item)
            .collect()
        })
    }

    /// Records a delivery.
    pub fn delivered(&self, id: i64, now: i64) -> Result<(), IncidentError> {
        self.db.write(move |tx| {
            let sql = if tx.backend() == "postgres" {
                "UPDATE outbox SET delivered_at = $2, attempts = attempts + 1, last_error = NULL,
                 claimed_until = NULL, claimed_by = NULL WHERE id = $1"
            } else {
                "UPDATE outbox SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1"
            };
            tx.execute(sql, args![id, now])?;
            Ok(())
        })
    }

    /// Records a failed attempt: retried at `next_at`, or given up when `None`.
    ///
    /// On PostgreSQL a failure also ends this handle's round for the item's
    /// sink (deliveries to a sink go in order): its other claims on that
    /// sink are released, so they come back at the next [`IncidentStore::due`].
    pub fn attempt_failed(
        &self,
        id: i64,
        now: i64,
        next_at: Option<i64>,
        error: &str,
    ) -> Result<(), IncidentError> {
        let error = error.to_owned();
        let claimant = self.claimant.clone();
        self.db.write(move |tx| {
            match next_at {
                Some(t) => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = $2, last_error = $3 WHERE id = $1",
                    args![id, t, error],
                )?,
                None => tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, failed_at = $2, last_error = $3 WHERE id = $1",
                    args![id, now, error],
                )?,
            };
            if tx.backend() == "postgres" {
                tx.execute(
                    "UPDATE outbox SET claimed_until = NULL, claimed_by = NULL
                     WHERE id = $1
                        OR (claimed_by = $2 AND sink = (SELECT sink FROM outbox WHERE id = $1))",
                    args![id, claimant],
                )?;
            }
            Ok(())
        })
    }

    /// (pending, delivered, failed) alert counts.
    pub fn outbox_counts(&self) -> Result<(i64, i64, i64), IncidentError> {
        self.db.read(|tx| {
            let r = tx.query_one(
                "SELECT COUNT(CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN 1 END),
                        COUNT(delivered_at), COUNT(failed_at) FROM outbox",
                &[],
            )?;
            Ok((r.i64(0)?, r.i64(1)?, r.i64(2)?))
        })
    }
}
