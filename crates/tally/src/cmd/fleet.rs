//! `tally fleet status`: the nodes sharing one PostgreSQL store, the
//! sequencer, and how far behind each node and the sequencer are.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tally_incident::timefmt;
use tally_server::config::Storage;
use tally_store::fleet;

use super::{Globals, coded, config, print_table};

/// A node that has not reported for this long is shown as silent.
const SILENT_AFTER_SECS: i64 = 10;

#[derive(Subcommand)]
pub(crate) enum FleetCmd {
    /// The fleet at a glance: every node, its role, when it last reported,
    /// the checkpoint it has verified, and the sequencer's backlog.
    Status {
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

pub(crate) fn run(g: &Globals, cmd: FleetCmd) -> Result<ExitCode> {
    let FleetCmd::Status { format } = cmd;
    let c = config(g, None)?;
    let Storage::Postgres { url, schema, .. } = &c.storage else {
        bail!(
            "this is not a fleet: set [storage] url, --storage or TALLY_STORAGE_URL to a postgres:// URL"
        );
    };
    // `url` shows without its password, if it has one.
    let mut client = fleet::connect(url.expose())
        .map_err(coded)
        .with_context(|| format!("cannot reach the fleet store at {url}"))?;
    let nodes = fleet::nodes(&mut client, schema)
        .map_err(coded)
        .context("cannot list the fleet's nodes")?;
    let backlog = fleet::backlog(&mut client, schema)
        .map_err(coded)
        .context("cannot count the records not sequenced yet")?;
    let holder = fleet::lock_holder(&mut client, schema)
        .map_err(coded)
        .context("cannot tell which node is the sequencer")?;
    let size = fleet::latest_checkpoint(&mut client, schema)
        .map_err(coded)
        .context("cannot read the fleet ledger's latest checkpoint")?
        .and_then(|note| note.lines().nth(1).and_then(|l| l.parse::<i64>().ok()))
        .unwrap_or(0);
    let now = tally_store::clock::now_unix();
    let state = |n: &fleet::NodeRow| {
        if now - n.last_seen > SILENT_AFTER_SECS {
            "silent"
        } else {
            "up"
        }
    };
    if format == "json" {
        let doc = serde_json::json!({
            "schema": schema,
            "checkpoint_size": size,
            "backlog": backlog,
            "sequencer": holder,
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "name": n.name,
                "state": state(n),
                "sequencer": holder.as_deref() == Some(n.name.as_str()),
                "last_seen": n.last_seen,
                "checkpoint_seen": n.published,
            })).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    outln!("store       {url} (schema {schema})");
    outln!(
        "ledger      {size} entries in the latest checkpoint; {backlog} queued, not sequenced yet"
    );
    outln!(
        "sequencer   {}",
        holder
            .as_deref()
            .unwrap_or("none: nobody holds the lock (records are queued but not sequenced)")
    );
    outln!();
    let mut rows = vec![[
        "NODE".to_string(),
        "STATE".into(),
        "ROLE".into(),
        "LAST REPORT".into(),
        "CHECKPOINT SEEN".into(),
    ]];
    for n in &nodes {
        let up = state(n) == "up";
        rows.push([
            n.name.clone(),
            state(n).into(),
            if holder.as_deref() == Some(n.name.as_str()) {
                "sequencer"
            } else {
                "follower"
            }
            .into(),
            format!(
                "{} ({} s ago)",
                timefmt::utc(n.last_seen),
                now - n.last_seen
            ),
            if up && n.published < size {
                format!("{} ({} behind)", n.published, size - n.published)
            } else {
                n.published.to_string()
            },
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}
