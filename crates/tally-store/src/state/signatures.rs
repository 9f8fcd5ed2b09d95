//! Per-key accounts: how many tokens each key signed and how many were
//! withheld, per node (a node cannot see another's signatures as they are
//! made, so only per-node accounts balance; `""` is an embedded store's one
//! node), and forged tokens seen under each key id.

use std::collections::HashMap;

use super::error::StateError;
use super::store::StateStore;
use crate::sql::args;

impl StateStore {
    /// Adds to `node`'s durable signature counts (`""` when embedded):
    /// `(kid, signed, withheld)` deltas.
    pub fn add_signature_counts(
        &self,
        node: &str,
        deltas: &[(String, u64, u64)],
    ) -> Result<(), StateError> {
        let (node, deltas) = (node.to_owned(), deltas.to_vec());
        self.db.write(move |tx| {
            for (kid, s, w) in deltas {
                tx.execute(
                    "INSERT INTO signature_counts (kid, node, signed, withheld) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kid, node) DO UPDATE SET signed = signature_counts.signed + excluded.signed,
                       withheld = signature_counts.withheld + excluded.withheld",
                    args![kid, node.as_str(), s as i64, w as i64],
                )?;
            }
            Ok(())
        })
    }

    /// Durable signature counts per key of `node` (`""` when embedded):
    /// `kid -> (signed, withheld)`.
    pub fn signature_counts(&self, node: &str) -> Result<HashMap<String, (u64, u64)>, StateError> {
        let node = node.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT kid, signed, withheld FROM signature_counts WHERE node = $1",
                args![node.as_str()],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.text(0)?,
                    (r.i64(1)?.max(0) as u64, r.i64(2)?.max(0) as u64),
                ))
            })
            .collect()
        })
    }

    /// Adds forged-token sightings per key (`(kid, count, first_seen, last_seen)`).
    pub fn add_forgery_sightings(
        &self,
        sightings: &[(String, u64, i64, i64)],
    ) -> Result<(), StateError> {
        let sightings = sightings.to_vec();
        self.db.write(move |tx| {
            for (kid, count, first, last) in sightings {
                tx.execute(
                    "INSERT INTO forgery_sightings (kid, count, first_seen, last_seen) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (kid) DO UPDATE SET count = forgery_sightings.count + excluded.count,
                       first_seen = CASE WHEN excluded.first_seen < forgery_sightings.first_seen
                                         THEN excluded.first_seen ELSE forgery_sightings.first_seen END,
                       last_seen = CASE WHEN excluded.last_seen > forgery_sightings.last_seen
                                        THEN excluded.last_seen ELSE forgery_sightings.last_seen END",
                    args![kid, count as i64, first, last],
                )?;
            }
            Ok(())
        })
    }

    /// Forged tokens seen under `kid`: `(count, first_seen, last_seen)`.
    pub fn forgery_sightings(&self, kid: &str) -> Result<Option<(u64, i64, i64)>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            let Some(r) = tx.query_opt(
                "SELECT count, first_seen, last_seen FROM forgery_sightings WHERE kid = $1",
                args![kid],
            )?
            else {
                return Ok(None);
            };
            Ok(Some((r.i64(0)?.max(0) as u64, r.i64(1)?, r.i64(2)?)))
        })
    }
}
