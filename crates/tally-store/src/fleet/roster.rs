//! Who is in the fleet: each node's heartbeat (when it was last seen, which
//! checkpoint it had verified) and who holds the sequencer lock now, read
//! from the lock itself rather than from what nodes report.

use postgres::Client;

use super::error::FleetError;
use super::schema::{check_schema, lock_key};

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
