//! The fleet ledger on PostgreSQL: many nodes queue issuance records, one
//! sequencer at a time turns them into the Merkle ledger.
//!
//! * [`Queue::enqueue`] durably stores a record (one `INSERT`, committed
//!   before it returns): a node hands out a token only after that, and the
//!   token is honoured from then on, before it is sequenced.
//! * [`Sequencer`] holds the PostgreSQL advisory lock [`lock_key`] on
//!   its own connection. While it holds it, it assigns contiguous leaf indexes
//!   to queued records (in queue order), extends the tree and signs a
//!   checkpoint, all in one transaction on that connection. If the leader's
//!   connection dies, PostgreSQL releases the lock and rolls back its open
//!   transaction; another node's sequencer takes over, reloads the tree from
//!   `leaves`, checks it against the latest signed checkpoint, and continues.
//! * [`verify`] recomputes the whole tree from the stored records and checks
//!   every checkpoint's signature and root.
//!
//! Tables live in one schema (default `tally`), so that tests and separate
//! deployments can share a database.

use std::time::Duration;

use postgres::{Client, NoTls};
use tally_core::merkle::{self, MerkleTree};
use tally_core::note::{Checkpoint, NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;

/// The advisory lock key of the sequencer (`"tallyseq"` as ASCII), mixed
/// with the schema name by [`lock_key`] so that deployments sharing a
/// database do not wait for each other.
pub const SEQUENCER_LOCK: i64 = 0x7461_6c6c_7973_6571;

/// The sequencer's advisory lock key for `schema` (FNV-1a of the name, xor
/// [`SEQUENCER_LOCK`]).
pub fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as i64) ^ SEQUENCER_LOCK
}

/// Fleet store failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// PostgreSQL failed or is unreachable.
    #[error("PostgreSQL: {0}")]
    Db(#[from] postgres::Error),
    /// A schema name that is not a plain identifier.
    #[error("schema name {0:?} must be 1-48 of a-z, 0-9, _ and start with a letter")]
    BadSchema(String),
    /// A record that does not encode.
    #[error("issuance record: {0}")]
    Record(String),
    /// The stored ledger does not match what was signed.
    #[error("fleet ledger tampered at index {index}: {reason}")]
    Tampered {
        /// First bad index (or tree size for a checkpoint).
        index: u64,
        /// What was found.
        reason: String,
    },
    /// Signing failed.
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
}

impl FleetError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            FleetError::Db(_) => "store_unavailable",
            FleetError::BadSchema(_) => "bad_config",
            FleetError::Record(_) => "bad_record",
            FleetError::Tampered { .. } => "ledger_tampered",
            FleetError::Signing(_) => "signing_failed",
        }
    }
}

fn check_schema(schema: &str) -> Result<(), FleetError> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(FleetError::BadSchema(schema.to_string()))
    }
}

/// Creates the schema and tables if needed (idempotent; safe from many nodes).
pub fn migrate(client: &mut Client, schema: &str) -> Result<(), FleetError> {
    check_schema(schema)?;
    let mut tx = client.transaction()?;
    // One migrator at a time.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&(lock_key(schema) ^ 1)],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.queue (
             seq          BIGSERIAL PRIMARY KEY,
             token_id     TEXT   NOT NULL UNIQUE,
             record       BYTEA  NOT NULL,
             token_sha256 BYTEA  NOT NULL,
             expires_at   BIGINT NOT NULL,
             queued_at    BIGINT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.leaves (
             idx       BIGINT PRIMARY KEY,
             seq       BIGINT NOT NULL UNIQUE REFERENCES {schema}.queue(seq),
             leaf_hash BYTEA  NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
             size      BIGINT PRIMARY KEY,
             note      TEXT   NOT NULL,
             signed_at BIGINT NOT NULL
         );"
    ))?;
    tx.commit()?;
    Ok(())
}

/// Connects to `url` (`postgres://…`).
pub fn connect(url: &str) -> Result<Client, FleetError> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    Ok(config.connect(NoTls)?)
}

/// A node's side of the ledger: queueing and lookups.
pub struct Queue {
    client: Client,
    schema: String,
}

impl Queue {
    /// A queue in `schema` over `client` (migrated first).
    pub fn new(mut client: Client, schema: &str) -> Result<Queue, FleetError> {
        migrate(&mut client, schema)?;
        Ok(Queue {
            client,
            schema: schema.to_string(),
        })
    }

    /// Durably queues `record`; returns its queue sequence number. When this
    /// returns, the token may be handed out.
    pub fn enqueue(&mut self, record: &IssuanceRecord, now: i64) -> Result<i64, FleetError> {
        let bytes = record
            .encode()
            .map_err(|e| FleetError::Record(e.to_string()))?;
        let row = self.client.query_one(
            &format!(
                "INSERT INTO {}.queue (token_id, record, token_sha256, expires_at, queued_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                self.schema
            ),
            &[
                &record.token_id,
                &bytes,
                &record.token_sha256.as_bytes().as_slice(),
                &record.expires_at,
                &now,
            ],
        )?;
        Ok(row.get(0))
    }

    /// The record queued for `token_id`, sequenced or not.
    pub fn lookup(&mut self, token_id: &str) -> Result<Option<IssuanceRecord>, FleetError> {
        let row = self.client.query_opt(
            &format!(
                "SELECT record FROM {}.queue WHERE token_id = $1",
                self.schema
            ),
            &[&token_id],
        )?;
        row.map(|r| {
            let bytes: Vec<u8> = r.get(0);
            IssuanceRecord::decode(&bytes).map_err(|e| FleetError::Record(e.to_string()))
        })
        .transpose()
    }

    /// Records queued after sequence number `after`, oldest first (at most
    /// `limit`): how a node's registry catches up.
    pub fn since(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, IssuanceRecord)>, FleetError> {
        let rows = self.client.query(
            &format!(
                "SELECT seq, record FROM {}.queue WHERE seq > $1 ORDER BY seq LIMIT $2",
                self.schema
            ),
            &[&after, &limit],
        )?;
        rows.into_iter()
            .map(|r| {
                let bytes: Vec<u8> = r.get(1);
                Ok((
                    r.get(0),
                    IssuanceRecord::decode(&bytes)
                        .map_err(|e| FleetError::Record(e.to_string()))?,
                ))
            })
            .collect()
    }
}

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

/// The sequencer: at most one in the fleet holds the lock at a time.
pub struct Sequencer {
    client: Client,
    schema: String,
    signer: NoteSigner,
    tree: Option<MerkleTree>,
    leader: bool,
}

impl Sequencer {
    /// A sequencer in `schema` (migrated first), signing with `signer`.
    pub fn new(
        mut client: Client,
        schema: &str,
        signer: NoteSigner,
    ) -> Result<Sequencer, FleetError> {
        migrate(&mut client, schema)?;
        Ok(Sequencer {
            client,
            schema: schema.to_string(),
            signer,
            tree: None,
            leader: false,
        })
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
            self.leader = true;
            // A new leader trusts nothing it did not check.
            self.tree = Some(load_tree(
                &mut self.client,
                &self.schema,
                &self.signer.verifier(),
            )?);
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
                    "SELECT q.seq, q.record FROM {schema}.queue q
                     LEFT JOIN {schema}.leaves l ON l.seq = q.seq
                     WHERE l.seq IS NULL ORDER BY q.seq LIMIT $1"
                ),
                &[&batch],
            )?;
            if rows.is_empty() {
                return Ok(Step::Idle);
            }
            let stmt = tx.prepare(&format!(
                "INSERT INTO {schema}.leaves (idx, seq, leaf_hash) VALUES ($1, $2, $3)"
            ))?;
            let mut next = tree.clone();
            for r in &rows {
                let seq: i64 = r.get(0);
                let bytes: Vec<u8> = r.get(1);
                let h = merkle::leaf_hash(&bytes);
                let idx = next.len() as i64;
                tx.execute(&stmt, &[&idx, &seq, &h.as_slice()])?;
                next.push(h);
            }
            let cp = SignedCheckpoint::sign(
                Checkpoint {
                    origin: self.signer.name().to_string(),
                    size: next.len(),
                    root_hash: next.root(),
                    extensions: Vec::new(),
                },
                &self.signer,
            )
            .map_err(|e| FleetError::Signing(e.to_string()))?;
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.checkpoints (size, note, signed_at) VALUES ($1, $2, $3)"
                ),
                &[&(next.len() as i64), &cp.note(), &now],
            )?;
            tx.commit()?;
            let added = rows.len();
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

/// The latest signed checkpoint note in `schema`.
pub fn latest_checkpoint(client: &mut Client, schema: &str) -> Result<Option<String>, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query_opt(
            &format!("SELECT note FROM {schema}.checkpoints ORDER BY size DESC LIMIT 1"),
            &[],
        )?
        .map(|r| r.get(0)))
}

/// Rebuilds the tree from `leaves`, checking every leaf hash against its
/// record and the latest checkpoint against the tree.
fn load_tree(
    client: &mut Client,
    schema: &str,
    verifier: &NoteVerifier,
) -> Result<MerkleTree, FleetError> {
    let report = verify(client, schema, verifier)?;
    Ok(report.tree)
}

/// What [`verify`] found.
pub struct FleetReport {
    /// The verified tree.
    pub tree: MerkleTree,
    /// Checkpoints checked.
    pub checkpoints: u64,
}

/// Verifies the whole fleet ledger: leaves contiguous from 0, each leaf hash
/// the hash of its queued record, every checkpoint signed by `verifier` and
/// equal to the tree's root at its size.
pub fn verify(
    client: &mut Client,
    schema: &str,
    verifier: &NoteVerifier,
) -> Result<FleetReport, FleetError> {
    check_schema(schema)?;
    let rows = client.query(
        &format!(
            "SELECT l.idx, l.leaf_hash, q.record FROM {schema}.leaves l
             JOIN {schema}.queue q ON q.seq = l.seq ORDER BY l.idx"
        ),
        &[],
    )?;
    let mut tree = MerkleTree::new();
    for r in rows {
        let idx: i64 = r.get(0);
        let stored: Vec<u8> = r.get(1);
        let record: Vec<u8> = r.get(2);
        let at = tree.len();
        if idx != at as i64 {
            return Err(FleetError::Tampered {
                index: at,
                reason: format!("leaf {at} is missing (next stored index is {idx})"),
            });
        }
        let h = merkle::leaf_hash(&record);
        if stored.as_slice() != h.as_slice() {
            return Err(FleetError::Tampered {
                index: at,
                reason: "the stored record does not hash to the stored leaf".into(),
            });
        }
        tree.push(h);
    }
    let notes = client.query(
        &format!("SELECT size, note FROM {schema}.checkpoints ORDER BY size"),
        &[],
    )?;
    let mut checkpoints = 0;
    for r in notes {
        let size: i64 = r.get(0);
        let note: String = r.get(1);
        let cp = SignedCheckpoint::verify(&note, verifier).map_err(|e| FleetError::Tampered {
            index: size.max(0) as u64,
            reason: format!("checkpoint does not verify: {e}"),
        })?;
        let c = cp.checkpoint();
        let root = tree.root_at(c.size).map_err(|_| FleetError::Tampered {
            index: c.size,
            reason: "checkpoint beyond the stored leaves".into(),
        })?;
        if c.size != size.max(0) as u64 || root != c.root_hash {
            return Err(FleetError::Tampered {
                index: c.size,
                reason: "checkpoint root differs from the stored leaves".into(),
            });
        }
        checkpoints += 1;
    }
    Ok(FleetReport { tree, checkpoints })
}
