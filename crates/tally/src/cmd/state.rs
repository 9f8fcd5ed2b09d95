//! `tally state seal`: the state store's row seals.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use tally_server::keyring::DataDir;

use super::{Globals, config, print_table};

#[derive(Subcommand)]
pub(crate) enum StateCmd {
    /// List the rows from before row seals (users with their roles, API
    /// clients, sessions, refresh tokens); with --yes, seal them as they
    /// stand. Needed once, after upgrading a store that holds such rows.
    Seal {
        /// Seal the rows listed (after checking them).
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) fn run(g: &Globals, cmd: StateCmd) -> Result<ExitCode> {
    let StateCmd::Seal { yes } = cmd;
    seal(g, yes)
}

/// `tally state seal [--yes]`: 1 when rows wait for `--yes`.
fn seal(g: &Globals, yes: bool) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = DataDir::open_for_sealing(&c).context("cannot open the data directory")?;
    let rows = dir
        .state
        .unsealed_rows()
        .context("cannot list the rows without a seal")?;
    if rows.is_empty() {
        dir.adopt_unsealed()
            .context("cannot record that every row is sealed")?;
        outln!("every row that grants access is sealed");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![["TABLE".to_string(), "ROW".into()]];
    table.extend(rows.iter().map(|(t, w)| [t.clone(), w.clone()]));
    print_table(&table);
    if !yes {
        outln!(
            "\n{} rows have no seal. Check that every user (and role), client and session above is \
             one you expect; then seal them as they stand with `tally state seal --yes`.",
            rows.len()
        );
        return Ok(ExitCode::from(1));
    }
    let n = dir
        .adopt_unsealed()
        .context("cannot seal the rows listed")?;
    outln!("\nsealed {n} rows; from now on a row without a seal is refused");
    Ok(ExitCode::SUCCESS)
}
