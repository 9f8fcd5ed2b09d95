//! The commands, one module each, and what they share: the global arguments
//! (configuration file, data directory, storage), the configuration, opening
//! the data directory, reading a secret or a new password from standard
//! input, times given on the command line, tables.

pub(crate) mod access;
pub(crate) mod block;
pub(crate) mod clients;
pub(crate) mod custodians;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod fleet;
pub(crate) mod incident;
pub(crate) mod init;
pub(crate) mod keys;
pub(crate) mod ledger;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod users;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tally_incident::timefmt;
use tally_server::keyring::DataDir;
use tally_server::passwords::MAX_BYTES;
use tally_server::{Config, Overrides};
use zeroize::Zeroizing;

/// The options every command takes, before or after the command's name
/// (`tally --data D users list` is `tally users list --data D`): clap's
/// global arguments, read at whatever level of the command they are given.
#[derive(Args, Clone, Default)]
pub(crate) struct Globals {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (embedded storage; in a fleet, this node's own files).
    #[arg(long, global = true, env = "TALLY_DATA")]
    pub(crate) data: Option<PathBuf>,
    /// Shared storage for a fleet: postgres://user@host:5432/db.
    #[arg(long, global = true, env = "TALLY_STORAGE_URL")]
    pub(crate) storage: Option<String>,
}

/// The configuration: the file (`--config`), then the `TALLY_*` variables
/// and the flags given.
pub(crate) fn config(g: &Globals, listen: Option<String>) -> Result<Config> {
    let token_ttl_secs = match std::env::var("TALLY_TOKEN_TTL_SECS") {
        Ok(v) => Some(v.parse().map_err(|_| {
            anyhow!(
                "TALLY_TOKEN_TTL_SECS={v:?} is not a number of seconds; set it to a whole \
                 number of seconds or unset it"
            )
        })?),
        Err(_) => None,
    };
    let over = Overrides {
        listen,
        data: g.data.clone(),
        // A storage URL may carry a password: it is never part of a message
        // here (the configuration shows it with the password masked).
        storage: g.storage.clone(),
        issuer: std::env::var("TALLY_ISSUER").ok(),
        audience: std::env::var("TALLY_AUDIENCE").ok(),
        token_ttl_secs,
    };
    let file = g.config.as_deref();
    Config::load(file, over).with_context(|| match file {
        Some(p) => format!(
            "cannot load the configuration from {} (--config or TALLY_CONFIG)",
            p.display()
        ),
        None => "cannot load the configuration from the flags and TALLY_* variables".into(),
    })
}

/// An error with a stable code (`not_found`, `legal_hold`,
/// `store_unavailable`, …) that operators and scripts look for.
pub(crate) trait Coded: std::fmt::Display {
    fn code(&self) -> &'static str;
}

impl Coded for tally_store::fleet::FleetError {
    fn code(&self) -> &'static str {
        tally_store::fleet::FleetError::code(self)
    }
}

impl Coded for tally_incident::access::AccessError {
    fn code(&self) -> &'static str {
        tally_incident::access::AccessError::code(self)
    }
}

impl Coded for tally_server::passwords::PolicyError {
    fn code(&self) -> &'static str {
        tally_server::passwords::PolicyError::code(self)
    }
}

impl Coded for tally_incident::act::ActError {
    fn code(&self) -> &'static str {
        tally_incident::act::ActError::code(self)
    }
}

impl Coded for tally_incident::store::IncidentError {
    fn code(&self) -> &'static str {
        tally_incident::store::IncidentError::code(self)
    }
}

/// `<message> (<code>)`. (What the error wraps, such as a PostgreSQL or
/// SQLite error, is in its message already, as far as it is shown at all.)
pub(crate) fn coded(e: impl Coded) -> anyhow::Error {
    anyhow!("{e} ({})", e.code())
}

/// Opens the existing data directory of `c` (never creates one).
pub(crate) fn open_data_dir(c: &Config) -> Result<DataDir> {
    DataDir::open_existing(c).context("cannot open the data directory")
}

/// Refuses a data directory that is missing or is not tally's.
pub(crate) fn require_data_dir(c: &Config) -> Result<()> {
    DataDir::require_existing(c).context("cannot use the data directory")
}

/// A time given with `--<flag>`: RFC 3339 or unix seconds.
pub(crate) fn parse_time(flag: &str, s: &str) -> Result<i64> {
    timefmt::parse_time(s)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--{flag}"))
}

/// Reads one non-empty line (a password or secret) from standard input, of
/// at most [`MAX_BYTES`] bytes (more are not read).
///
/// No message says anything of what was read.
fn read_line(what: &str) -> Result<Zeroizing<String>> {
    let mut input = Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_BYTES as u64 + 2)
        .read_to_string(&mut input)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = input.strip_suffix('\n').unwrap_or(&input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        bail!("standard input must hold exactly one non-empty {what} line");
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Reads a secret (a client's) from standard input: one non-empty line of
/// at most [`MAX_BYTES`] bytes.
pub(crate) fn read_secret_line(what: &str) -> Result<Zeroizing<String>> {
    let line = read_line(what)?;
    if line.len() > MAX_BYTES {
        bail!("the {what} is longer than {MAX_BYTES} bytes");
    }
    Ok(line)
}

/// Reads a new password from standard input (one line) and checks it
/// against the configured policy (`password_too_short`,
/// `password_too_long`).
pub(crate) fn read_new_password(c: &Config) -> Result<Zeroizing<String>> {
    let password = read_line("password")?;
    c.passwords.check(&password).map_err(coded)?;
    Ok(password)
}

/// `--format table|json` of a list command.
#[derive(clap::Args)]
pub(crate) struct FormatArg {
    /// `table` or `json` (an array of objects named by the table's columns).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub(crate) format: String,
}

/// `rows` (a header, then the rows) as a table, or as a JSON array of
/// objects keyed by the lower-cased header.
pub(crate) fn print_rows<const N: usize>(format: &FormatArg, rows: &[[String; N]]) {
    if format.format != "json" {
        print_table(rows);
        return;
    }
    let Some((header, body)) = rows.split_first() else {
        outln!("[]");
        return;
    };
    let list: Vec<serde_json::Value> = body
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            for (k, v) in header.iter().zip(row) {
                m.insert(k.to_lowercase(), serde_json::Value::from(v.clone()));
            }
            serde_json::Value::Object(m)
        })
        .collect();
    outln!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
}

/// Prints rows as aligned columns (the last column is not padded).
pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        outln!("{}", line.trim_end());
    }
}
