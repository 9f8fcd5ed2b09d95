//! `tally access …`: the hash-chained access log: verify it, read it, place
//! and release legal holds, apply retention.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use tally_incident::access::{AccessError, AccessLog};
use tally_incident::timefmt;
use tally_server::keyring::lifecycle;

use super::{FormatArg, Globals, coded, config, parse_time, print_rows, require_data_dir};

#[derive(Subcommand)]
pub(crate) enum AccessCmd {
    /// Recompute the hash chain of the access log (edits, deletions, cuts).
    Verify,
    /// Print the newest events (JSON lines).
    Tail {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing new events as servers write them (every half
        /// second), until interrupted or the reader goes away.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Place a legal hold: nothing in [FROM, UNTIL] can be deleted until released.
    Hold {
        /// Start (RFC 3339 or unix seconds).
        #[arg(long)]
        from: String,
        /// End (RFC 3339 or unix seconds).
        #[arg(long)]
        until: String,
        /// Why (case number, preservation order).
        #[arg(long)]
        reason: String,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// List the legal holds in force.
    Holds {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Release a legal hold.
    Release {
        /// Hold id.
        id: i64,
        /// Why the hold may end (kept with the hold).
        #[arg(long)]
        reason: String,
        /// Who releases it (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Delete events older than TIME (refused while a legal hold covers any).
    Purge {
        /// RFC 3339 or unix seconds.
        #[arg(long)]
        before: String,
    },
}

pub(crate) fn run(g: &Globals, cmd: AccessCmd) -> Result<ExitCode> {
    let c = config(g, None)?;
    let path = c.data.join("access.db");
    require_data_dir(&c)?;
    let log = AccessLog::open(&path)
        .with_context(|| format!("cannot open the access log {}", path.display()))?;
    match cmd {
        AccessCmd::Verify => match log.verify() {
            Ok(r) => {
                outln!("access log   {}", path.display());
                outln!(
                    "events       {} (seq {}..={})",
                    r.events,
                    r.first_seq,
                    r.last_seq
                );
                outln!("result       OK: the hash chain is intact");
                Ok(ExitCode::SUCCESS)
            }
            Err(AccessError::Tampered { seq, reason }) => {
                outln!("result       TAMPERED");
                outln!("first bad    event {seq}");
                outln!("finding      {reason}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e).context("cannot verify the access log"),
        },
        AccessCmd::Tail { limit, follow, .. } => {
            let mut last = i64::MIN;
            for (seq, _, body) in log
                .tail(limit)
                .context("cannot read the newest access events")?
            {
                outln!("{}", String::from_utf8_lossy(&body));
                last = seq;
            }
            while follow && crate::out::open() {
                std::thread::sleep(std::time::Duration::from_millis(500));
                for (seq, _, body) in log
                    .after(last, 1000)
                    .context("cannot read new access events")?
                {
                    outln!("{}", String::from_utf8_lossy(&body));
                    last = seq;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AccessCmd::Hold {
            from,
            until,
            reason,
            actor,
            ..
        } => hold(&log, &from, &until, &reason, actor.as_deref()),
        AccessCmd::Holds { format } => {
            let mut table = vec![[
                "ID".to_string(),
                "FROM".into(),
                "UNTIL".into(),
                "BY".into(),
                "REASON".into(),
            ]];
            for h in log.holds().context("cannot list the legal holds")? {
                table.push([
                    h.id.to_string(),
                    timefmt::utc(h.from_ms / 1000),
                    timefmt::utc(h.until_ms / 1000),
                    h.actor,
                    h.reason,
                ]);
            }
            print_rows(&format, &table);
            Ok(ExitCode::SUCCESS)
        }
        AccessCmd::Release {
            id, reason, actor, ..
        } => {
            let reason = tally_server::contain::reason(&reason)
                .map_err(|_| anyhow!("--reason must say why the hold may end"))?;
            let by = lifecycle::actor(actor.as_deref());
            let now = tally_store::clock::now_unix();
            if log
                .release(id, now, &by, reason)
                .with_context(|| format!("cannot release hold {id}"))?
            {
                outln!("hold {id} released");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no hold {id} in force (see `tally access holds`)")
            }
        }
        AccessCmd::Purge { before, .. } => {
            let before = parse_time("before", &before)?;
            let n = log.purge(before * 1000).map_err(coded).with_context(|| {
                format!("cannot delete the events before {}", timefmt::utc(before))
            })?;
            outln!("{n} event(s) removed; the chain still verifies from the first one kept");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tally access hold`.
fn hold(
    log: &AccessLog,
    from: &str,
    until: &str,
    reason: &str,
    actor: Option<&str>,
) -> Result<ExitCode> {
    let (from, until) = (parse_time("from", from)?, parse_time("until", until)?);
    if until < from || reason.trim().is_empty() {
        bail!("need --from <= --until and a --reason");
    }
    let now = tally_store::clock::now_unix();
    let id = log
        .hold(
            from * 1000,
            until * 1000 + 999,
            reason,
            &lifecycle::actor(actor),
            now,
        )
        .context("cannot place the legal hold")?;
    outln!(
        "hold {id}: {} .. {} ({reason})",
        timefmt::utc(from),
        timefmt::utc(until)
    );
    Ok(ExitCode::SUCCESS)
}
