//! The queue: how records enter the fleet ledger and are read back before
//! and after sequencing. [`enqueue`] commits a batch in one statement and
//! announces it; [`lookup`] and [`since`] return rows only with their MAC
//! checked; [`backlog`] and [`leaf_index`] tell how far the sequencer got.

use postgres::Client;
use tally_core::record::IssuanceRecord;

use super::error::FleetError;
use super::record::{QueuedRecord, RecordMac, authentic_row};
use super::schema::{channel, check_schema};

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

/// Queue rows waiting for the sequencer.
pub fn backlog(client: &mut Client, schema: &str) -> Result<i64, FleetError> {
    check_schema(schema)?;
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {schema}.pending"), &[])?
        .get(0))
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
