//! The command line: the `tally` command and its subcommands. Each command's
//! own arguments are defined next to it, in [`crate::cmd`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::Globals;
use crate::cmd::access::AccessCmd;
use crate::cmd::block::BlockCmd;
use crate::cmd::clients::ClientsCmd;
use crate::cmd::fleet::FleetCmd;
use crate::cmd::incident::IncidentCmd;
use crate::cmd::keys::KeysCmd;
use crate::cmd::ledger::LedgerCmd;
use crate::cmd::state::StateCmd;
use crate::cmd::users::UsersCmd;

/// tally: every access token is tallied in a Merkle ledger when it is issued;
/// a token the ledger cannot tally is refused, whatever its signature.
#[derive(Parser)]
#[command(name = "tally", version, about, long_about = None)]
pub(crate) struct Cli {
    // `--config`, `--data`, `--storage`: before or after the command.
    #[command(flatten)]
    pub(crate) globals: Globals,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the issuer, gate, and ledger API on one address.
    Serve {
        /// Listen address.
        #[arg(long, env = "TALLY_LISTEN")]
        listen: Option<String>,
        /// Dev mode, to try tally out: a throwaway data directory (removed
        /// when the server stops), an `admin` user whose random password is
        /// printed once, and every incident a drill with no legal clocks.
        /// Not for production; cannot be combined with --data or --storage.
        #[arg(long)]
        dev: bool,
    },
    /// Replay the breach tally exists to prevent: a shop with synthetic
    /// customers, an insider with a copy of the signing key, first against
    /// signature-only verification, then against tally. Prints the comparison.
    Demo {
        /// Synthetic customers.
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        /// Seed of the synthetic data and of the request order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the data directories here (a new or empty directory).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Where the reports and affected-customer lists go.
        #[arg(long, default_value = "tally-demo-output")]
        out: PathBuf,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Create a data directory (master key, signing key, ledger key) and fix
    /// its issuer, without serving.
    Init {
        /// The address `tally serve` will listen on: unless an issuer is
        /// configured, tokens are issued as `http://<this address>` from now
        /// on, whatever address the server listens on later.
        #[arg(long, env = "TALLY_LISTEN")]
        listen: Option<String>,
    },
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage token-signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Inspect and verify the issuance ledger.
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// Manage API clients (for token introspection).
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// The access log: verify it, read it, place legal holds, apply retention.
    #[command(subcommand)]
    Access(AccessCmd),
    /// Containment: block a client address, device, subject or token
    /// (refused as blocked_actor on every server within a second).
    #[command(subcommand)]
    Block(BlockCmd),
    /// A fleet sharing PostgreSQL: its nodes, the sequencer, the backlog.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Incidents: list, show, act, report to authorities, affected customers.
    #[command(subcommand)]
    Incident(IncidentCmd),
    /// The state store's row seals.
    #[command(subcommand)]
    State(StateCmd),
    /// Print a completion script for a shell (`tally completions bash >
    /// /etc/bash_completion.d/tally`; zsh: into a directory on `$fpath` as
    /// `_tally`; fish: `~/.config/fish/completions/tally.fish`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::{Cli, Command, LedgerCmd};

    /// Regression: a key id is an RFC 7638 thumbprint (base64url) and may
    /// begin with '-' too, one key in 64.
    #[test]
    fn key_commands_accept_a_kid_starting_with_a_hyphen() {
        for args in [
            &[
                "tally",
                "keys",
                "custodian",
                "add",
                "-iBrJv",
                "olivia",
                "--data",
                "d",
            ][..],
            &["tally", "keys", "compromise", "-iBrJv", "--data", "d"][..],
            &[
                "tally", "incident", "scan", "--kid", "-iBrJv", "--data", "d",
            ][..],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }

    /// `--data`, `--storage` and `--config` may come before the command, after
    /// it, or between a command and its subcommand; given twice, the last one
    /// counts.
    #[test]
    fn global_arguments_go_anywhere() {
        use crate::cmd::keys::KeysCmd;
        use crate::cmd::users::UsersCmd;
        let parse =
            |args: &[&str]| Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        for args in [
            &["tally", "--data", "d", "users", "list"][..],
            &["tally", "users", "list", "--data", "d"][..],
            &["tally", "users", "--data", "d", "list"][..],
            &["tally", "--data=d", "users", "list"][..],
            &[
                "tally",
                "--data",
                "elsewhere",
                "users",
                "list",
                "--data",
                "d",
            ][..],
        ] {
            let cli = parse(args);
            assert_eq!(
                cli.globals.data.as_deref(),
                Some(Path::new("d")),
                "{args:?}"
            );
            assert!(
                matches!(cli.command, Command::Users(UsersCmd::List { .. })),
                "{args:?}"
            );
        }
        // Two levels down, and with the other global arguments.
        let cli = parse(&[
            "tally",
            "--config",
            "c.toml",
            "--data",
            "d",
            "keys",
            "log",
            "--storage",
            "postgres://h/db",
        ]);
        assert_eq!(cli.globals.data.as_deref(), Some(Path::new("d")));
        assert_eq!(cli.globals.config.as_deref(), Some(Path::new("c.toml")));
        assert_eq!(cli.globals.storage.as_deref(), Some("postgres://h/db"));
        assert!(matches!(cli.command, Command::Keys(KeysCmd::Log { .. })));
        let cli = parse(&[
            "tally",
            "--data",
            "d",
            "keys",
            "custodian",
            "add",
            "-iBrJv",
            "olivia",
        ]);
        assert_eq!(cli.globals.data.as_deref(), Some(Path::new("d")));
        // A token id that begins with '-' after a global argument.
        let cli = parse(&["tally", "--data", "d", "ledger", "prove", "-vX9"]);
        match cli.command {
            Command::Ledger(LedgerCmd::Prove { token_id }) => assert_eq!(token_id, "-vX9"),
            _ => panic!("parsed as another command"),
        }
        assert_eq!(cli.globals.data.as_deref(), Some(Path::new("d")));
        // Every command's help still names them.
        let help = Cli::try_parse_from(["tally", "users", "list", "--help"])
            .err()
            .unwrap()
            .to_string();
        for flag in ["--data <DATA>", "--storage <STORAGE>", "--config <CONFIG>"] {
            assert!(help.contains(flag), "{help}");
        }
        assert!(help.contains("TALLY_DATA"), "{help}");
    }

    /// Completion scripts name the commands, for every shell offered.
    #[test]
    fn completions_cover_the_commands() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tally", &mut out);
            let text = String::from_utf8(out).unwrap();
            for cmd in ["serve", "users", "ledger", "incident", "completions"] {
                assert!(text.contains(cmd), "{shell:?} completions lack {cmd}");
            }
        }
    }

    /// Regression: a base64url token id may begin with '-' and must not be
    /// read as an option.
    #[test]
    fn prove_accepts_a_token_id_starting_with_a_hyphen() {
        let cli = Cli::try_parse_from(["tally", "ledger", "prove", "-vX9", "--data", "d"]).unwrap();
        match cli.command {
            Command::Ledger(LedgerCmd::Prove { token_id }) => assert_eq!(token_id, "-vX9"),
            _ => panic!("parsed as another command"),
        }
        assert_eq!(cli.globals.data.as_deref(), Some(Path::new("d")));
    }
}
