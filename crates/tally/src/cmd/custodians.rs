//! `tally keys custodian …` and `tally keys offboard`: the people who guard
//! a key, and what happens to their keys when one of them leaves.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tally_server::keyring::lifecycle;
use tally_store::clock::now_unix;

use super::{Globals, config, open_data_dir};

#[derive(Subcommand)]
pub(crate) enum CustodianCmd {
    /// Record PERSON as a custodian of KID.
    Add {
        /// The key (a thumbprint may start with '-').
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// The person (name or e-mail).
        person: String,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// `tally keys custodian …`.
pub(crate) fn run(g: &Globals, cmd: CustodianCmd) -> Result<ExitCode> {
    let CustodianCmd::Add { kid, person, actor } = cmd;
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    if person.is_empty() || person.len() > 128 || person.chars().any(char::is_control) {
        bail!("PERSON must be 1-128 printable characters");
    }
    let added = lifecycle::add_custodian(
        &dir,
        &kid,
        &person,
        &lifecycle::actor(actor.as_deref()),
        now_unix(),
    )
    .with_context(|| format!("cannot record {person} as a custodian of key {kid}"))?;
    if added {
        outln!("{person} is now a custodian of {kid}");
    } else {
        outln!("{person} already is a custodian of {kid}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally keys offboard PERSON`: rotates every key PERSON guarded and ends
/// their custody.
pub(crate) fn offboard(g: &Globals, person: &str, actor: Option<&str>) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    let actor = lifecycle::actor(actor);
    let report = lifecycle::offboard(&dir, person, &actor, now_unix()).with_context(|| {
        format!("cannot offboard {person}; once the cause is fixed, run it again")
    })?;
    if report.keys.is_empty() {
        outln!("{person} guarded no key; offboarding recorded by {actor}");
        return Ok(ExitCode::SUCCESS);
    }
    for (kid, state) in &report.keys {
        outln!("custody ended   {kid} (was {})", state.as_str());
    }
    if let Some(r) = &report.rotation {
        outln!(
            "rotated         {} -> {} (the old key retires once its tokens expire)",
            r.old.as_deref().unwrap_or("-"),
            r.new
        );
    }
    outln!("recorded        offboarding of {person} by {actor}");
    Ok(ExitCode::SUCCESS)
}
