//! The [`Sequencer`]: at most one in the fleet holds the advisory lock. A
//! new leader first verifies the whole stored ledger; then each
//! [`Sequencer::step`] assigns contiguous leaf indexes to queued records in
//! queue order, extends the tree and signs a checkpoint, all in one
//! transaction. A row whose MAC fails is set aside in `rejected`
//! ([`Rejected`]), never sequenced.

use postgres::Client;
use tally_core::merkle::{self, MerkleTree};
use tally_core::note::NoteSigner;

use super::error::FleetError;
use super::record::{RecordMac, authentic};
use super::schema::{channel, lock_key, migrate_with};
use super::verify::{latest_checkpoint, verify};

/// What one sequencing step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Another node holds the sequencer lock.
    NotLeader,
    /// Nothing was waiting.
    Idle,
    /// This many records were sequenced; the tree now has `size` leaves.
    Sequenced {
        /// Records added.
        added: usize,
        /// New tree size.
        size: u64,
    },
}

/// A queue row the sequencer refused to sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Queue sequence number.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// The sequencer: at most one in the fleet holds the lock at a time.
pub struct Sequencer {
    client: Client,
    schema: String,
    signer: NoteSigner,
    mac: RecordMac,
    tree: Option<MerkleTree>,
    leader: bool,
    rejected: Vec<Rejected>,
}

impl Sequencer {
    /// A sequencer in `schema` (migrated first), signing with `signer` and
    /// sequencing only records whose MAC verifies under `mac`.
    pub fn new(
        client: Client,
        schema: &str,
        signer: NoteSigner,
        mac: RecordMac,
    ) -> Result<Sequencer, FleetError> {
        let client = migrate_with(client, schema)?;
        Ok(Sequencer::with_client(client, schema, signer, mac))
    }

    /// A sequencer over an already migrated `client`.
    pub fn with_client(
        client: Client,
        schema: &str,
        signer: NoteSigner,
        mac: RecordMac,
    ) -> Sequencer {
        Sequencer {
            client,
            schema: schema.to_string(),
            signer,
            mac,
            tree: None,
            leader: false,
            rejected: Vec::new(),
        }
    }

    /// Gives the signing key back (to start over on a new connection).
    pub fn into_signer(self) -> NoteSigner {
        self.signer
    }

    /// Rows set aside since the last call (each is evidence of tampering).
    pub fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    /// Whether this sequencer holds the lock.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Tries to become (or stay) the leader. The lock is tied to this
    /// sequencer's connection: it is released when the connection ends.
    fn lead(&mut self) -> Result<bool, FleetError> {
        if !self.leader {
            let got: bool = self
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock($1)",
                    &[&lock_key(&self.schema)],
                )?
                .get(0);
            if !got {
                return Ok(false);
            }
            // A new leader trusts nothing it did not check; it leads only
            // once the stored ledger verified (else the caller drops this
            // connection, and the lock with it).
            self.tree = Some(
                verify(
                    &mut self.client,
                    &self.schema,
                    &self.signer.verifier(),
                    &self.mac,
                )?
                .tree,
            );
            self.leader = true;
        }
        Ok(true)
    }

    /// Sequences up to `batch` queued records in one transaction.
    pub fn step(&mut self, batch: i64, now: i64) -> Result<Step, FleetError> {
        if !self.lead()? {
            return Ok(Step::NotLeader);
        }
        let schema = self.schema.clone();
        let mut tree = self.tree.take().unwrap_or_default();
        let result = (|| -> Result<Step, FleetError> {
            let mut tx = self.client.transaction()?;
            let rows = tx.query(
                &format!(
                    "SELECT p.seq, q.record, q.mac FROM {schema}.pending p
                     JOIN {schema}.queue q ON q.seq = p.seq
                     ORDER BY p.seq LIMIT $1"
                ),
                &[&batch],
            )?;
            if rows.is_empty() {
                return Ok(Step::Idle);
            }
            let reject = tx.prepare(&format!(
                "INSERT INTO {schema}.rejected (seq, reason, at) VALUES ($1, $2, $3)"
            ))?;
            let mut next = tree.clone();
            let mut rejected = Vec::new();
            let (mut idxs, mut seqs, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
            for r in &rows {
                let seq: i64 = r.get(0);
                let bytes: Vec<u8> = r.get(1);
                let tag: Vec<u8> = r.get(2);
                if let Err(e) = authentic(&self.mac, seq, &bytes, &tag, None, String::new()) {
                    let reason = e.to_string();
                    tx.execute(&reject, &[&seq, &reason, &now])?;
                    rejected.push(Rejected { seq, reason });
                    continue;
                }
                let h = merkle::leaf_hash(&bytes);
                idxs.push(next.len() as i64);
                seqs.push(seq);
                hashes.push(h.to_vec());
                next.push(h);
            }
            // Every new leaf in one statement.
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.leaves (idx, seq, leaf_hash)
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])"
                ),
                &[&idxs, &seqs, &hashes],
            )?;
            let done: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute(
                &format!("DELETE FROM {schema}.pending WHERE seq = ANY($1)"),
                &[&done],
            )?;
            if next.len() == tree.len() {
                tx.commit()?;
                self.rejected.extend(rejected);
                return Ok(Step::Idle);
            }
            let cp = crate::ledger::sign_head(&self.signer, &next)
                .map_err(|e| FleetError::Signing(e.to_string()))?;
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.checkpoints (size, note, signed_at) VALUES ($1, $2, $3)"
                ),
                &[&(next.len() as i64), &cp.note(), &now],
            )?;
            tx.execute("SELECT pg_notify($1, '')", &[&channel(&schema)])?;
            tx.commit()?;
            self.rejected.extend(rejected);
            let added = (next.len() - tree.len()) as usize;
            tree = next;
            Ok(Step::Sequenced {
                added,
                size: tree.len(),
            })
        })();
        match result {
            Ok(step) => {
                self.tree = Some(tree);
                Ok(step)
            }
            Err(e) => {
                // The connection may be gone, and the lock with it: start over
                // as a follower, reloading the tree if leadership returns.
                self.leader = false;
                self.tree = None;
                Err(e)
            }
        }
    }

    /// The latest signed checkpoint, if any.
    pub fn checkpoint(&mut self) -> Result<Option<String>, FleetError> {
        latest_checkpoint(&mut self.client, &self.schema)
    }
}
