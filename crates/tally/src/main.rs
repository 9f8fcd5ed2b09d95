//! The `tally` command line.
#![forbid(unsafe_code)]
// Standard output goes through `out!`/`outln!` (see `out`), which treat a
// reader that went away as the end of the output, not as a failure.
#![deny(clippy::print_stdout)]

#[macro_use]
mod out;
mod cli;
mod cmd;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The global arguments written on this command line (not taken from
    // the environment).
    let given: Vec<&str> = ["data", "storage"]
        .into_iter()
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    init_logging(matches!(cli.command, Command::Demo { .. }));
    let result = run(cli, &given);
    // A reader that went away is not an error; any other failure to write
    // the output is, once the command's work is done.
    let written = out::finish();
    match (result, written) {
        (Err(e), _) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(2)
        }
        (Ok(_), Err(e)) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(2)
        }
        (Ok(code), Ok(())) => code,
    }
}

/// An error and its causes on one line, outermost first, as `{:#}` shows
/// them (`what was being done: why it failed`), except that a cause is left
/// out when the text so far already says it: many errors repeat their
/// source in their own message.
fn message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_logging(demo: bool) {
    // The demo prints its own table; its servers log only when asked to.
    let default = if demo { "off" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs the command; its exit status when it ran to the end (0, or 1 for a
/// finding such as a tampered ledger), its error otherwise. `given` names
/// the global arguments written on the command line.
fn run(cli: Cli, given: &[&str]) -> anyhow::Result<ExitCode> {
    let g = &cli.globals;
    match cli.command {
        Command::Serve { listen, dev } => cmd::serve::run(g, listen, dev),
        Command::Demo {
            customers,
            seed,
            keep,
            out,
            format,
        } => cmd::demo::run(
            given,
            cmd::demo::DemoArgs {
                customers,
                seed,
                keep,
                out,
                format,
            },
        ),
        Command::Init { listen } => cmd::init::run(g, listen),
        Command::Users(c) => cmd::users::run(g, c),
        Command::Keys(c) => cmd::keys::run(g, c),
        Command::Ledger(c) => cmd::ledger::run(g, c),
        Command::Block(c) => cmd::block::run(g, c),
        Command::State(c) => cmd::state::run(g, c),
        Command::Access(c) => cmd::access::run(g, c),
        Command::Incident(c) => cmd::incident::run(g, c),
        Command::Fleet(c) => cmd::fleet::run(g, c),
        Command::Clients(c) => cmd::clients::run(g, c),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tally", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::message;

    /// An error that says what its source says, as `#[error("{0}")]` and
    /// `#[error("store error: {0}")]` errors do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "store error: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_message_says_what_was_being_done_then_why() {
        let e = anyhow::Error::new(std::io::Error::other("disk full"))
            .context("cannot add user bob")
            .context("users add");
        assert_eq!(message(&e), "users add: cannot add user bob: disk full");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = anyhow::Error::new(Repeats(std::io::Error::other("disk full")))
            .context("cannot open this node's ledger");
        assert_eq!(
            message(&e),
            "cannot open this node's ledger: store error: disk full"
        );
        let e = anyhow::anyhow!("no hold 7 in force");
        assert_eq!(message(&e), "no hold 7 in force");
    }
}
