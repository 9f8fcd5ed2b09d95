//! `tally block …`: containment: block a client address, device, subject or
//! token; list and lift blocks.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use tally_incident::timefmt;
use tally_server::keyring::lifecycle;

use super::{FormatArg, Globals, config, open_data_dir, print_rows};

#[derive(Subcommand)]
pub(crate) enum BlockCmd {
    /// Add a block; exactly one of --ip, --device, --subject, --token.
    Add {
        /// Client address or CIDR range.
        #[arg(long, group = "what")]
        ip: Option<String>,
        /// Device id (the configured device header).
        #[arg(long, group = "what")]
        device: Option<String>,
        /// Token subject.
        #[arg(long, group = "what")]
        subject: Option<String>,
        /// Token id (jti).
        #[arg(long, group = "what", allow_hyphen_values = true)]
        token: Option<String>,
        /// Why (kept with the block).
        #[arg(long)]
        reason: String,
        /// For how long: 90s, 15m, 2h, 7d (default: until removed).
        #[arg(long = "for")]
        duration: Option<String>,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// List the blocks in force.
    List {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Lift a block.
    Remove {
        /// Block id (see `tally block list`).
        id: i64,
    },
}

pub(crate) fn run(g: &Globals, cmd: BlockCmd) -> Result<ExitCode> {
    let now = tally_store::clock::now_unix();
    match cmd {
        BlockCmd::Add {
            ip,
            device,
            subject,
            token,
            reason,
            duration,
            actor,
        } => {
            let c = config(g, None)?;
            let (kind, value) = match (ip, device, subject, token) {
                (Some(ip), None, None, None) => ("ip", ip),
                (None, Some(d), None, None) => ("device", d),
                (None, None, Some(s), None) => ("subject", s),
                (None, None, None, Some(t)) => ("token", t),
                _ => bail!("give exactly one of --ip, --device, --subject, --token"),
            };
            let (kind, value) = tally_server::contain::block_target(kind, &value)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--{kind}"))?;
            let reason = tally_server::contain::reason(&reason)
                .map_err(|_| anyhow!("--reason must say why (1-256 printable characters)"))?
                .to_string();
            let expires_at = duration
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| now + d);
            let dir = open_data_dir(&c)?;
            let id = dir
                .state
                .add_block(
                    kind,
                    &value,
                    &reason,
                    &lifecycle::actor(actor.as_deref()),
                    now,
                    expires_at,
                )
                .with_context(|| format!("cannot block {kind} {value}"))?;
            match expires_at {
                Some(e) => outln!("block {id}: {kind} {value} until {}", timefmt::utc(e)),
                None => outln!("block {id}: {kind} {value} until removed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        BlockCmd::List { format } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            let mut table = vec![[
                "ID".to_string(),
                "KIND".into(),
                "VALUE".into(),
                "UNTIL".into(),
                "BY".into(),
                "REASON".into(),
            ]];
            for b in dir
                .state
                .blocks(now)
                .context("cannot list the blocks in force")?
            {
                table.push([
                    b.id.to_string(),
                    b.kind,
                    b.value,
                    b.expires_at.map_or("(until lifted)".into(), timefmt::utc),
                    b.actor,
                    b.reason,
                ]);
            }
            print_rows(&format, &table);
            Ok(ExitCode::SUCCESS)
        }
        BlockCmd::Remove { id } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            if dir
                .state
                .remove_block(id, now)
                .with_context(|| format!("cannot lift block {id}"))?
            {
                outln!("block {id} lifted");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no block {id} in force (see `tally block list`)")
            }
        }
    }
}

/// `--for`: a number of seconds, minutes, hours or days.
fn parse_duration(s: &str) -> Result<i64> {
    let bad = || anyhow!("--for {s:?}: use a number with s, m, h or d (e.g. 15m)");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(mult).ok_or_else(bad)
}
