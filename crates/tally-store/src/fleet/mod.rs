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
//! Every queued record carries an HMAC under a key derived from the master
//! key ([`RecordMac`]), which the database never sees: someone with write
//! access to PostgreSQL but not to the master key cannot slip a record into
//! the queue. Nodes refuse such a row at lookup, the follower reports it, and
//! the sequencer sets it aside in `rejected` instead of sequencing it.
//!
//! Tables live in one schema (default `tally`), so that tests and separate
//! deployments can share a database.

pub mod node;

use std::time::Duration;

use aws_lc_rs::hmac;
use postgres::Client;
use tally_core::merkle::{self, MerkleTree};
use tally_core::note::{NoteSigner, NoteVerifier, SignedCheckpoint};
use tally_core::record::IssuanceRecord;

/// The advisory lock key of the sequencer (`"tallyseq"` as ASCII), mixed
/// with the schema name by [`lock_key`] so that deployments sharing a
/// database do not wait for each other.
pub const SEQUENCER_LOCK: i64 = 0x7461_6c6c_7973_6571;

/// The sequencer's advisory lock key for `schema` (FNV-1a of the name, xor
/// [`SEQUENCER_LOCK`]).
pub fn lock_key(schema: &str) -> i64 {
    crate::sql::schema_hash(schema) ^ SEQUENCER_LOCK
}

/// The record MAC: HMAC-SHA256 under a key derived from the master key.
#[derive(Clone)]
pub struct RecordMac(hmac::Key);

impl std::fmt::Debug for RecordMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordMac(<redacted>)")
    }
}

impl RecordMac {
    /// The purpose string under which the key is derived from the master key.
    pub const PURPOSE: &'static str = "fleet/record-mac/v1";

    /// A MAC keyed by `key` (32 bytes derived from the master key).
    pub fn new(key: &[u8; 32]) -> RecordMac {
        RecordMac(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The tag of an encoded record.
    pub fn tag(&self, record: &[u8]) -> Vec<u8> {
        hmac::sign(&self.0, record).as_ref().to_vec()
    }

    /// Whether `tag` is this key's tag of `record` (constant time).
    pub fn verify(&self, record: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, record, tag).is_ok()
    }
}

/// The NOTIFY channel on which new queue rows and checkpoints are announced.
pub fn channel(schema: &str) -> String {
    format!("tally_ledger_{schema}")
}

/// Fleet store failures, with stable codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// PostgreSQL failed or is unreachable.
    #[error("PostgreSQL: {}", crate::pg::describe(.0))]
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
    /// A record with this token id is already queued.
    #[error("token id already recorded")]
    Duplicate,
    /// The node is shutting down.
    #[error("the fleet ledger is closed")]
    Closed,
    /// The storage URL or its TLS settings are not usable.
    #[error("{0}")]
    Config(String),
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
            FleetError::Duplicate => "duplicate_token_id",
            FleetError::Closed => "store_unavailable",
            FleetError::Config(_) => "bad_config",
        }
    }
}

fn check_schema(schema: &str) -> Result<(), FleetError> {
    crate::sql::check_schema(schema).map_err(|_| FleetError::BadSchema(schema.to_string()))
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
             queued_at    BIGINT NOT NULL,
             mac          BYTEA  NOT NULL,
             node         TEXT   NOT NULL DEFAULT ''
         );
         CREATE INDEX IF NOT EXISTS queue_expires ON {schema}.queue (expires_at);
         CREATE TABLE IF NOT EXISTS {schema}.leaves (
             idx       BIGINT PRIMARY KEY,
             seq       BIGINT NOT NULL UNIQUE REFERENCES {schema}.queue(seq),
             leaf_hash BYTEA  NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
             size      BIGINT PRIMARY KEY,
             note      TEXT   NOT NULL,
             signed_at BIGINT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.pending (
             seq BIGINT PRIMARY KEY REFERENCES {schema}.queue(seq)
         );
         CREATE TABLE IF NOT EXISTS {schema}.nodes (
             name      TEXT    PRIMARY KEY,
             last_seen BIGINT  NOT NULL,
             published BIGINT  NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.rejected (
             seq    BIGINT PRIMARY KEY REFERENCES {schema}.queue(seq),
             reason TEXT   NOT NULL,
             at     BIGINT NOT NULL
         );"
    ))?;
    tx.commit()?;
    Ok(())
}

/// LISTENs on `channel` for ever, calling `wake` for every notification;
/// reconnects after any failure (half a second apart).
pub fn listen(url: &str, channel: &str, wake: &dyn Fn()) -> ! {
    use postgres::fallible_iterator::FallibleIterator;
    loop {
        if let Ok(mut client) = connect(url)
            && client.batch_execute(&format!("LISTEN {channel}")).is_ok()
        {
            // Whatever happened while nobody listened is caught up by the
            // caller's own polling.
            wake();
            let mut notes = client.notifications();
            let mut it = notes.blocking_iter();
            while let Ok(Some(_)) = it.next() {
                wake();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// [`migrate`], handing the client back.
pub fn migrate_with(mut client: Client, schema: &str) -> Result<Client, FleetError> {
    migrate(&mut client, schema)?;
    Ok(client)
}

/// Connects to `url` (`postgres://…`) for work in the request path: every
/// statement, lock wait and idle transaction is bounded (see [`connect_for`]).
pub fn connect(url: &str) -> Result<Client, FleetError> {
    connect_for(url, Some(REQUEST_PATH_TIMEOUT))
}

/// The statement limit of connections in the request path.
pub const REQUEST_PATH_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url`. A dead or unreachable server is noticed within
/// seconds on both sides: connect timeout, TCP keepalives and a TCP user
/// timeout here, and the same asked of the server for its end (so that a
/// sequencer whose host vanished loses its lock in seconds, not after the
/// server's default two hours). A stalled server cannot hang a caller
/// either: statements run at most `statement_timeout` (`None`: no limit,
/// for whole-ledger verification), lock waits at most 10 s, and a
/// transaction left idle is ended after 30 s. Commits are synchronous.
pub fn connect_for(url: &str, statement_timeout: Option<Duration>) -> Result<Client, FleetError> {
    connect_named(url, statement_timeout, None)
}

/// [`connect_for`], naming the connection (`application_name`) so that
/// operators, and [`lock_holder`], can tell who holds it.
pub fn connect_named(
    url: &str,
    statement_timeout: Option<Duration>,
    name: Option<&str>,
) -> Result<Client, FleetError> {
    let target = crate::pg::parse(url).map_err(FleetError::Config)?;
    connect_to(&target, statement_timeout, name)
}

/// [`connect_named`] to a URL parsed once ([`crate::pg::parse`]), as a node
/// reconnecting many times does: its TLS files are read once.
pub fn connect_to(
    target: &crate::pg::Target,
    statement_timeout: Option<Duration>,
    name: Option<&str>,
) -> Result<Client, FleetError> {
    let mut config = target.config.clone();
    if let Some(n) = name {
        config.application_name(n);
    }
    if config.get_application_name().is_none() {
        config.application_name("tally");
    }
    crate::pg::harden(&mut config, statement_timeout);
    Ok(crate::pg::connect(&config, target)?)
}

/// Whether `e` means the database cannot be used now (as opposed to a
/// refused statement): the connection is gone, or the server is shutting
/// down, out of resources, timing statements out or not granting locks.
pub fn is_unavailable(e: &FleetError) -> bool {
    matches!(e, FleetError::Db(db) if crate::pg::is_unavailable(db))
}

/// Queues `records` in one transaction and announces them; returns, per
/// record, its queue sequence number or `Duplicate`. When this returns `Ok`,
/// every record given a number is durable and its token may be handed out.
pub fn enqueue(
    client: &mut Client,
    schema: &str,
    mac: &RecordMac,
    node: &str,
    records: &[IssuanceRecord],
    now: i64,
) -> Result<Vec<Result<i64, FleetError>>, FleetError> {
    check_schema(schema)?;
    let mut ids = Vec::with_capacity(records.len());
    let mut bodies = Vec::with_capacity(records.len());
    let mut digests = Vec::with_capacity(records.len());
    let mut expiries = Vec::with_capacity(records.len());
    let mut tags = Vec::with_capacity(records.len());
    for record in records {
        let bytes = record
            .encode()
            .map_err(|e| FleetError::Record(e.to_string()))?;
        tags.push(mac.tag(&bytes));
        bodies.push(bytes);
        ids.push(record.token_id.as_str());
        digests.push(record.token_sha256.as_bytes().to_vec());
        expiries.push(record.expires_at);
    }
    let mut tx = client.transaction()?;
    // The whole batch in one statement: queue rows and their places in the
    // sequencer's to-do list, at once.
    let rows = tx.query(
        &format!(
            "WITH q AS (
                 INSERT INTO {schema}.queue (token_id, record, token_sha256, expires_at, queued_at, mac, node)
                 SELECT t, r, d, e, $6, m, $7 FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bytea[]) AS b(t, r, d, e, m)
                 ON CONFLICT (token_id) DO NOTHING RETURNING seq, token_id),
             p AS (INSERT INTO {schema}.pending (seq) SELECT seq FROM q)
             SELECT seq, token_id FROM q"
        ),
        &[&ids, &bodies, &digests, &expiries, &tags, &now, &node],
    )?;
    tx.execute("SELECT pg_notify($1, '')", &[&channel(schema)])?;
    tx.commit()?;
    let mut queued: std::collections::HashMap<String, i64> = rows
        .into_iter()
        .map(|r| (r.get::<_, String>(1), r.get::<_, i64>(0)))
        .collect();
    // A token id already queued, or twice in this batch, is queued once.
    Ok(records
        .iter()
        .map(|r| queued.remove(&r.token_id).ok_or(FleetError::Duplicate))
        .collect())
}

/// A queued record as read back: checked against its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRecord {
    /// Queue sequence number.
    pub seq: i64,
    /// The record.
    pub record: IssuanceRecord,
    /// The node that queued it.
    pub node: String,
}

/// Decodes a queue row's record and checks its MAC and token id.
fn authentic(
    mac: &RecordMac,
    seq: i64,
    bytes: &[u8],
    tag: &[u8],
    token_id: Option<&str>,
    node: String,
) -> Result<QueuedRecord, FleetError> {
    let forged = |reason: &str| FleetError::Tampered {
        index: seq.max(0) as u64,
        reason: format!("queue row {seq}: {reason}"),
    };
    if !mac.verify(bytes, tag) {
        return Err(forged(
            "its MAC does not verify: it was not queued by a node holding the master key",
        ));
    }
    let record = IssuanceRecord::decode(bytes).map_err(|e| forged(&e.to_string()))?;
    if token_id.is_some_and(|t| t != record.token_id) {
        return Err(forged("the record is filed under another token id"));
    }
    Ok(QueuedRecord { seq, record, node })
}

/// The record queued for `token_id`, sequenced or not, if its MAC verifies.
pub fn lookup(
    client: &mut Client,
    schema: &str,
    mac: &RecordMac,
    token_id: &str,
) -> Result<Option<QueuedRecord>, FleetError> {
    check_schema(schema)?;
    let row = client.query_opt(
        &format!("SELECT seq, record, mac, node FROM {schema}.queue WHERE token_id = $1"),
        &[&token_id],
    )?;
    row.map(|r| authentic_row(mac, &r, Some(token_id)))
        .transpose()
}

/// [`authentic`] over a row of `seq, record, mac, node`.
fn authentic_row(
    mac: &RecordMac,
    r: &postgres::Row,
    token_id: Option<&str>,
) -> Result<QueuedRecord, FleetError> {
    authentic(
        mac,
        r.try_get(0)?,
        &r.try_get::<_, Vec<u8>>(1)?,
        &r.try_get::<_, Vec<u8>>(2)?,
        token_id,
        r.try_get(3)?,
    )
}

/// A queue row as the follower sees it: its number and the outcome of its
/// MAC check.
pub type FollowedRow = (i64, Result<QueuedRecord, FleetError>);

/// Queue rows with the given sequence numbers, or after `after` (at most
/// `limit`), oldest first: how a node's registry follows the fleet. Each row
/// is returned with its MAC check's outcome.
pub fn since(
    client: &mut Client,
    schema: &str,
    mac: &RecordMac,
    after: i64,
    also: &[i64],
    limit: i64,
) -> Result<Vec<FollowedRow>, FleetError> {
    check_schema(schema)?;
    let rows = client.query(
        &format!(
            "(SELECT seq, record, mac, node FROM {schema}.queue WHERE seq > $1 ORDER BY seq LIMIT $2)
             UNION ALL
             (SELECT seq, record, mac, node FROM {schema}.queue WHERE seq = ANY($3))
             ORDER BY seq"
        ),
        &[&after, &limit, &also],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), authentic_row(mac, &r, None)))
        .collect())
}

/// A node as it last reported itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// Its name (`[storage] node`).
    pub name: String,
    /// Unix seconds of its last report (every 2 s while it runs).
    pub last_seen: i64,
    /// The checkpoint size it had verified.
    pub published: i64,
}

/// Records that `node` is alive (its follower calls this every 2 s). Who
/// sequences is not reported: [`lock_holder`] reads it from the lock itself.
pub fn heartbeat(
    client: &mut Client,
    schema: &str,
    node: &str,
    now: i64,
    published: i64,
) -> Result<(), FleetError> {
    check_schema(schema)?;
    client.execute(
        &format!(
            "INSERT INTO {schema}.nodes (name, last_seen, published) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen,
               published = excluded.published"
        ),
        &[&node, &now, &published],
    )?;
    Ok(())
}

/// Every node that ever reported, most recent first.
pub fn nodes(client: &mut Client, schema: &str) -> Result<Vec<NodeRow>, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query(
            &format!(
                "SELECT name, last_seen, published FROM {schema}.nodes
                 ORDER BY last_seen DESC, name"
            ),
            &[],
        )?
        .into_iter()
        .map(|r| NodeRow {
            name: r.get(0),
            last_seen: r.get(1),
            published: r.get(2),
        })
        .collect())
}

/// Prefix of the sequencer connection's `application_name`; the node name follows.
pub const SEQUENCER_APP: &str = "tally sequencer ";

/// The node whose connection holds the sequencer lock now (from `pg_locks`),
/// if any: the authoritative answer, whatever the nodes last reported.
pub fn lock_holder(client: &mut Client, schema: &str) -> Result<Option<String>, FleetError> {
    check_schema(schema)?;
    let key = lock_key(schema) as u64;
    let (high, low) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
    Ok(client
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid = ($1::bigint)::oid AND l.objid = ($2::bigint)::oid
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&high, &low],
        )?
        .map(|r| {
            let app: String = r.get(0);
            app.strip_prefix(SEQUENCER_APP).unwrap_or(&app).to_string()
        }))
}

/// Queue rows waiting for the sequencer.
pub fn backlog(client: &mut Client, schema: &str) -> Result<i64, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {schema}.pending"), &[])?
        .get(0))
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

/// The leaf index the sequencer gave queue row `seq`, if it has sequenced it.
pub fn leaf_index(client: &mut Client, schema: &str, seq: i64) -> Result<Option<u64>, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query_opt(
            &format!("SELECT idx FROM {schema}.leaves WHERE seq = $1"),
            &[&seq],
        )?
        .map(|r| r.get::<_, i64>(0).max(0) as u64))
}

/// The columns [`check_leaf`] reads, from `leaves l` joined with `queue q`.
pub(crate) const LEAF_COLUMNS: &str = "l.idx, l.leaf_hash, q.record, q.mac, q.seq";

/// Leaf `at` of a tree being rebuilt from a row of [`LEAF_COLUMNS`]: its
/// index must be the next one, its record must hash to the stored leaf, and
/// the record must carry a valid MAC and decode. Returns the leaf hash.
pub(crate) fn check_leaf(
    mac: &RecordMac,
    at: u64,
    r: &postgres::Row,
) -> Result<merkle::Hash, FleetError> {
    let idx: i64 = r.get(0);
    if idx != at as i64 {
        return Err(FleetError::Tampered {
            index: at,
            reason: format!("leaf {at} is missing (next stored index is {idx})"),
        });
    }
    let stored: Vec<u8> = r.get(1);
    let record: Vec<u8> = r.get(2);
    let h = merkle::leaf_hash(&record);
    if stored.as_slice() != h.as_slice() {
        return Err(FleetError::Tampered {
            index: at,
            reason: "the stored record does not hash to the stored leaf".into(),
        });
    }
    let tag: Vec<u8> = r.get(3);
    match authentic(mac, r.get(4), &record, &tag, None, String::new()) {
        Ok(_) => Ok(h),
        Err(FleetError::Tampered { reason, .. }) => Err(FleetError::Tampered { index: at, reason }),
        Err(e) => Err(e),
    }
}

/// What [`verify`] found.
pub struct FleetReport {
    /// The verified tree.
    pub tree: MerkleTree,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The latest checkpoint, which covers exactly the verified tree.
    pub latest: Option<SignedCheckpoint>,
}

/// Verifies the whole fleet ledger: leaves contiguous from 0, each leaf hash
/// the hash of its queued record, each record's MAC, every checkpoint signed
/// by `verifier` and equal to the tree's root at its size.
pub fn verify(
    client: &mut Client,
    schema: &str,
    verifier: &NoteVerifier,
    mac: &RecordMac,
) -> Result<FleetReport, FleetError> {
    check_schema(schema)?;
    // One snapshot for leaves and checkpoints: a sequencer committing in
    // between must not look like a checkpoint beyond the stored leaves.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let rows = tx.query(
        &format!(
            "SELECT {LEAF_COLUMNS} FROM {schema}.leaves l
             JOIN {schema}.queue q ON q.seq = l.seq ORDER BY l.idx"
        ),
        &[],
    )?;
    let mut tree = MerkleTree::new();
    for r in rows {
        tree.push(check_leaf(mac, tree.len(), &r)?);
    }
    let notes = tx.query(
        &format!("SELECT size, note FROM {schema}.checkpoints ORDER BY size"),
        &[],
    )?;
    tx.commit()?;
    let mut checkpoints = 0;
    let mut latest = None;
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
        latest = Some(cp);
    }
    let covered = latest.as_ref().map_or(0, |c| c.checkpoint().size);
    if covered != tree.len() {
        // The sequencer writes leaves and their checkpoint in one transaction.
        return Err(FleetError::Tampered {
            index: covered,
            reason: format!(
                "{} leaves, but the latest signed checkpoint covers {covered}: a checkpoint is missing",
                tree.len()
            ),
        });
    }
    Ok(FleetReport {
        tree,
        checkpoints,
        latest,
    })
}
