//! `tally clients …`: the API clients that may introspect tokens.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use tally_store::StateError;

use super::{Globals, config, open_data_dir, print_table, read_secret_line};

#[derive(Subcommand)]
pub(crate) enum ClientsCmd {
    /// Register a client; its secret is read from standard input. It
    /// authenticates to /v1/introspect with HTTP Basic.
    Add {
        /// Client id (1-64 of A-Z a-z 0-9 . _ @ -).
        id: String,
        /// Read the secret from standard input (one line).
        #[arg(long, required = true)]
        secret_stdin: bool,
    },
    /// List the clients: id and when each was registered.
    List {
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Remove a client: it can no longer authenticate to /v1/introspect.
    Remove {
        /// The client id.
        id: String,
    },
}

pub(crate) fn run(g: &Globals, cmd: ClientsCmd) -> Result<ExitCode> {
    match cmd {
        ClientsCmd::Add { id, .. } => add(g, id),
        ClientsCmd::List { format } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            let clients = dir.state.clients().context("cannot list the clients")?;
            if format == "json" {
                let rows: Vec<_> = clients
                    .iter()
                    .map(|(id, at)| serde_json::json!({"id": id, "created_at": at}))
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                let mut rows = vec![["CLIENT".to_string(), "REGISTERED".to_string()]];
                rows.extend(
                    clients
                        .iter()
                        .map(|(id, at)| [id.clone(), tally_incident::timefmt::utc(*at)]),
                );
                print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientsCmd::Remove { id } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            if !dir
                .state
                .remove_client(&id)
                .with_context(|| format!("cannot remove client {id}"))?
            {
                bail!("there is no client {id} (tally clients list shows them)");
            }
            outln!("client {id} removed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn add(g: &Globals, id: String) -> Result<ExitCode> {
    let c = config(g, None)?;
    if !tally_server::issuance::valid_username(&id) {
        bail!("client ids are 1-64 characters of A-Z a-z 0-9 . _ @ -");
    }
    let dir = open_data_dir(&c)?;
    let secret = read_secret_line("secret")?;
    // The hasher's own message speaks of a password: say what it was.
    let hash = tally_server::passwords::hash_once(&secret)
        .map_err(|_| anyhow!("secret hashing failed"))
        .with_context(|| format!("cannot hash the secret of client {id}"))?;
    match dir
        .state
        .add_client(&id, &hash, tally_store::clock::now_unix())
    {
        Ok(()) => {}
        Err(StateError::ClientExists) => bail!("client {id} already exists"),
        Err(e) => return Err(e).with_context(|| format!("cannot add client {id}")),
    }
    outln!("client {id} added");
    Ok(ExitCode::SUCCESS)
}
