//! The `tally` command line.
#![forbid(unsafe_code)]
// Standard output goes through `out!`/`outln!` (see `out`), which treat a
// reader that went away as the end of the output, not as a failure.
#![deny(clippy::print_stdout)]

#[macro_use]
mod out;
mod progress;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Parser, Subcommand};
use tally_core::jose::SigningKey;
use tally_core::merkle;
use tally_core::note::NoteVerifier;
use tally_incident::timefmt;
use tally_server::keyring::{DataDir, DataDirLock};

mod demo_cmd;
mod fleet_cmd;
mod incident_cmd;
use tally_server::keyring::lifecycle;
use tally_server::{App, Config, Overrides};
use tally_store::{KeyPurpose, LEDGER_FILE, LedgerError};

/// tally: every access token is tallied in a Merkle ledger when it is issued;
/// a token the ledger cannot tally is refused, whatever its signature.
#[derive(Parser)]
#[command(name = "tally", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct DataArg {
    /// Data directory (embedded storage; in a fleet, this node's own files).
    #[arg(long, env = "TALLY_DATA")]
    pub(crate) data: Option<PathBuf>,
    /// Shared storage for a fleet: postgres://user@host:5432/db.
    #[arg(long, env = "TALLY_STORAGE_URL")]
    pub(crate) storage: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the issuer, gate, and ledger API on one address.
    Serve {
        /// Listen address.
        #[arg(long, env = "TALLY_LISTEN")]
        listen: Option<String>,
        #[command(flatten)]
        data: DataArg,
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
        #[command(flatten)]
        data: DataArg,
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
    Fleet(fleet_cmd::FleetCmd),
    /// Incidents: list, show, act, report to authorities, affected customers.
    #[command(subcommand)]
    Incident(incident_cmd::IncidentCmd),
    /// The state store's row seals.
    #[command(subcommand)]
    State(StateCmd),
}

#[derive(Subcommand)]
enum StateCmd {
    /// List the rows from before row seals (users with their roles, API
    /// clients, sessions, refresh tokens); with --yes, seal them as they
    /// stand. Needed once, after upgrading a store that holds such rows.
    Seal {
        /// Seal the rows listed (after checking them).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum AccessCmd {
    /// Recompute the hash chain of the access log (edits, deletions, cuts).
    Verify {
        #[command(flatten)]
        data: DataArg,
    },
    /// Print the newest events (JSON lines).
    Tail {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        data: DataArg,
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
        #[command(flatten)]
        data: DataArg,
    },
    /// List the legal holds in force.
    Holds {
        #[command(flatten)]
        data: DataArg,
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
        #[command(flatten)]
        data: DataArg,
    },
    /// Delete events older than TIME (refused while a legal hold covers any).
    Purge {
        /// RFC 3339 or unix seconds.
        #[arg(long)]
        before: String,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum BlockCmd {
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
        #[command(flatten)]
        data: DataArg,
    },
    /// List the blocks in force.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Lift a block.
    Remove {
        /// Block id (see `tally block list`).
        id: i64,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// Register a client; its secret is read from standard input. It
    /// authenticates to /v1/introspect with HTTP Basic.
    Add {
        /// Client id (1-64 of A-Z a-z 0-9 . _ @ -).
        id: String,
        /// Read the secret from standard input (one line).
        #[arg(long, required = true)]
        secret_stdin: bool,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Add a user; the password is read from standard input.
    Add {
        /// User name (1-64 of A-Z a-z 0-9 . _ @ -).
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// Reset a user: a new password (read from standard input), the `user`
    /// role and no one-time-password enrolment, sealed afresh. Takes back a
    /// user row that someone changed in the database behind tally's back.
    Reset {
        /// The user.
        name: String,
        /// Read the new password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// List users.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Set a user's role: `admin` may use the admin API (/v1/admin/...) and
    /// the dashboard; `auditor` may read the ledger's entries, which name
    /// customers (`admin` may too); `user` may do neither. Takes effect on
    /// the next request.
    Role {
        /// The user.
        name: String,
        /// The role.
        #[arg(value_parser = ["admin", "auditor", "user"])]
        role: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Enrol a user in one-time passwords (RFC 6238): prints the otpauth://
    /// URI and a QR code for an authenticator app. Re-running replaces the secret.
    Totp {
        /// The user.
        name: String,
        /// Issuer label shown in the authenticator app.
        #[arg(long, default_value = "tally")]
        label: String,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List token-signing keys: kid, algorithm, state, created, age, custodians.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Generate a new signing key and make it active; the old one retires once
    /// the tokens it signed have expired.
    Rotate {
        /// Algorithm of the new key (default: that of the current active key).
        #[arg(long, value_parser = ["EdDSA", "ES256", "RS256"])]
        alg: Option<String>,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Mark a key compromised: issuance with it stops at once, and the tokens
    /// it signed since TIME (all of them without --since) are revoked.
    Compromise {
        /// The compromised key (a thumbprint may start with '-').
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Revoke tokens signed at or after this time (RFC 3339 or unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Manage the people who guard a key.
    #[command(subcommand)]
    Custodian(CustodianCmd),
    /// A person leaves: rotate every key they guarded and end their custody.
    Offboard {
        /// The person leaving.
        person: String,
        /// Who performs this (default: $SUDO_USER or $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Show the key audit log (who did what to which key, and when).
    Log {
        /// How many of the newest events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        data: DataArg,
    },
    /// Import an existing Ed25519 / P-256 / RSA private key (PKCS#8 PEM) and
    /// make it the active signing key.
    Import {
        /// Key id to publish (default: RFC 7638 thumbprint).
        #[arg(long, allow_hyphen_values = true)]
        kid: Option<String>,
        /// PKCS#8 PEM file ("-----BEGIN PRIVATE KEY-----").
        #[arg(long)]
        pem: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum CustodianCmd {
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
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// Recompute every leaf and check every stored checkpoint.
    Verify {
        /// Verifier key to check checkpoints with (`<name>+<hash>+<base64>`),
        /// e.g. one an auditor pinned earlier. Without it, the key is derived
        /// from the sealed ledger key (needs the master key).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Print the checkpoint verifier key (`<name>+<hash>+<base64>`).
    Key {
        #[command(flatten)]
        data: DataArg,
    },
    /// Print the latest signed checkpoint.
    Checkpoint {
        #[command(flatten)]
        data: DataArg,
    },
    /// Print (and check) an inclusion proof for a token id.
    Prove {
        /// The token's `jti` (may begin with '-').
        #[arg(allow_hyphen_values = true)]
        token_id: String,
        #[command(flatten)]
        data: DataArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = run(cli);
    // A reader that went away is not an error; any other failure to write
    // the output is, once the command's work is done.
    let written = out::finish();
    match (result, written) {
        (Err(msg), _) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        (Ok(_), Err(e)) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(2)
        }
        (Ok(code), Ok(())) => code,
    }
}

fn init_logging() {
    // The demo prints its own table; its servers log only when asked to.
    let default = if std::env::args().nth(1).as_deref() == Some("demo") {
        "off"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

pub(crate) fn config(
    cli_config: Option<&Path>,
    data: &DataArg,
    listen: Option<String>,
) -> Result<Config, String> {
    let over =
        Overrides {
            listen,
            data: data.data.clone(),
            storage: data.storage.clone(),
            issuer: std::env::var("TALLY_ISSUER").ok(),
            audience: std::env::var("TALLY_AUDIENCE").ok(),
            token_ttl_secs: match std::env::var("TALLY_TOKEN_TTL_SECS") {
                Ok(v) => Some(v.parse().map_err(|_| {
                    format!("TALLY_TOKEN_TTL_SECS={v:?} is not a number of seconds")
                })?),
                Err(_) => None,
            },
        };
    Config::load(cli_config, over).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let cfg_path = cli.config.clone();
    let cfg_path = cfg_path.as_deref();
    match cli.command {
        Command::Serve { listen, data } => serve(config(cfg_path, &data, listen)?),
        Command::Demo {
            customers,
            seed,
            keep,
            out,
            format,
        } => demo_cmd::run(demo_cmd::DemoArgs {
            customers,
            seed,
            keep,
            out,
            format,
        }),
        Command::Init { listen, data } => {
            let c = config(cfg_path, &data, listen)?;
            let dir = DataDir::open_or_init(&c).map_err(|e| e.to_string())?;
            let signer = dir.ledger_signer().map_err(|e| e.to_string())?;
            outln!("data directory  {}", c.data.display());
            outln!("ledger key      {}", signer.verifier_key());
            // Port 0 is not an address tokens can name: the first `serve`
            // fixes the issuer from the address it is given.
            if c.issuer_configured || c.listen.port() != 0 {
                let issuer = dir
                    .issuer(
                        c.issuer_configured.then_some(c.issuer.as_str()),
                        &format!("http://{}", c.listen),
                    )
                    .map_err(|e| e.to_string())?;
                outln!("issuer          {issuer}");
            } else {
                outln!("issuer          (fixed by the first tally serve: http://<its address>)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(cmd) => users(cfg_path, cmd),
        Command::Keys(cmd) => keys(cfg_path, cmd),
        Command::Ledger(cmd) => ledger(cfg_path, cmd),
        Command::Block(cmd) => block(cfg_path, cmd),
        Command::State(StateCmd::Seal { yes, data }) => seal_state(cfg_path, yes, &data),
        Command::Access(cmd) => access(cfg_path, cmd),
        Command::Incident(cmd) => incident_cmd::run(cfg_path, cmd),
        Command::Fleet(cmd) => fleet_cmd::run(cfg_path, cmd),
        Command::Clients(ClientsCmd::Add { id, data, .. }) => {
            let c = config(cfg_path, &data, None)?;
            if !tally_server::issuance::valid_username(&id) {
                return Err("client ids are 1-64 characters of A-Z a-z 0-9 . _ @ -".into());
            }
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let secret = read_secret_line("secret")?;
            let hash = tally_server::passwords::hash_once(&secret)
                .map_err(|_| "secret hashing failed".to_string())?;
            dir.state
                .add_client(&id, &hash, tally_store::clock::now_unix())
                .map_err(|e| match e {
                    tally_store::StateError::ClientExists => format!("client {id} already exists"),
                    other => other.to_string(),
                })?;
            outln!("client {id} added");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Why an address cannot be listened on, and what to do about it.
fn cannot_listen(addr: &str, what: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "cannot listen on {addr}{what}: the address is already in use by another process; \
             stop it or choose another address (--listen, or listen in the configuration)"
        )
    } else {
        format!("cannot listen on {addr}{what}: {e}")
    }
}

fn serve(mut config: Config) -> Result<ExitCode, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // A data directory another server runs on is refused first, naming it.
    let held = if config.data.is_dir() {
        Some(DataDirLock::acquire(&config.data).map_err(|e| e.to_string())?)
    } else {
        None
    };
    // Every address is bound before a data directory is created: one in
    // use fails here and leaves nothing behind.
    let (listener, gate_listener) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| cannot_listen(&config.listen.to_string(), "", &e))?;
        let gate_listener = match &config.gate {
            Some(g) => Some(
                tokio::net::TcpListener::bind(&g.listen)
                    .await
                    .map_err(|e| cannot_listen(&g.listen, " (gate)", &e))?,
            ),
            None => None,
        };
        Ok::<_, String>((listener, gate_listener))
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The address actually bound (port 0 picks one): the lock file names
    // it, and a new data directory's issuer is fixed from it.
    config.listen = addr;
    let lock = match held {
        Some(l) => l,
        None => {
            DataDir::create(&config).map_err(|e| e.to_string())?;
            DataDirLock::acquire(&config.data).map_err(|e| e.to_string())?
        }
    };
    lock.describe(&addr.to_string())
        .map_err(|e| e.to_string())?;
    let mut bar = progress::Progress::new("verifying ledger");
    let app = App::open_locked(config.clone(), lock, &mut |done, total| {
        bar.update(done, total)
    })
    .map_err(|e| e.to_string())?;
    bar.finish();
    rt.block_on(async move {
        tracing::info!(
            listen = %addr,
            data = %config.data.display(),
            ledger_size = app.ledger.size(),
            live_tokens = app.gate.registry().len(),
            ledger_key = %app.ledger.verifier().verifier_key(),
            "tally serving"
        );
        // The gate's line comes first: tools wait for the "tally listening" line.
        if let (Some(l), Some(g)) = (&gate_listener, &config.gate) {
            let gaddr = l.local_addr().map_err(|e| e.to_string())?;
            eprintln!(
                "tally gate listening on http://{gaddr} ({} route(s), {:?} mode)",
                g.routes.len(),
                g.mode.unwrap_or_default()
            );
        }
        eprintln!(
            "tally listening on http://{addr} (data: {})",
            config.data.display()
        );
        tally_server::serve_with_gate(app, listener, gate_listener, shutdown_signal())
            .await
            .map_err(|e| format!("server error: {e}"))?;
        tracing::info!("shut down cleanly; every acknowledged record is durable");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining requests");
}

fn users(cfg: Option<&Path>, cmd: UsersCmd) -> Result<ExitCode, String> {
    match cmd {
        UsersCmd::Add { name, data, .. } => {
            let c = config(cfg, &data, None)?;
            if !tally_server::issuance::valid_username(&name) {
                return Err("user names are 1-64 characters of A-Z a-z 0-9 . _ @ -".into());
            }
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let password = read_secret_line("password")?;
            let password = password.as_str();
            let hash = tally_server::passwords::hash_once(password)
                .map_err(|_| "password hashing failed".to_string())?;
            dir.state
                .add_user(&name, &hash, tally_store::clock::now_unix())
                .map_err(|e| match e {
                    tally_store::StateError::UserExists => format!("user {name} already exists"),
                    other => other.to_string(),
                })?;
            outln!("user {name} added");
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Reset { name, data, .. } => {
            let c = config(cfg, &data, None)?;
            let password = read_secret_line("password")?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let hash = tally_server::passwords::hash_once(password.as_str())
                .map_err(|_| "password hashing failed".to_string())?;
            if !dir
                .state
                .reset_user(&name, &hash, tally_store::clock::now_unix())
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no user {name:?}: add it with tally users add"));
            }
            outln!(
                "user {name} reset: new password, role user, no one-time codes (re-enrol with tally users totp {name}), every session ended"
            );
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Totp { name, label, data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let secret = tally_core::totp::TotpSecret::generate().map_err(|e| e.to_string())?;
            let sealed = dir
                .master
                .seal(
                    &tally_server::issuance::totp_context(&name),
                    secret.as_bytes(),
                )
                .map_err(|e| e.to_string())?;
            if !dir
                .state
                .set_totp(&name, &sealed)
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no user {name}"));
            }
            let uri = tally_core::totp::Totp::default().otpauth_uri(&secret, &label, &name);
            outln!("{}", uri.as_str());
            match qrcode::QrCode::new(uri.as_bytes()) {
                Ok(code) => outln!(
                    "{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                ),
                Err(e) => eprintln!("(no QR code: {e})"),
            }
            outln!("{name} must now send the current code as \"totp\" when logging in.");
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Role { name, role, data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            if dir
                .state
                .set_role(&name, &role)
                .map_err(|e| e.to_string())?
            {
                outln!("user {name} is now {role}");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!(
                    "no user {name:?}: add it first with tally users add"
                ))
            }
        }
        UsersCmd::List { data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            for u in dir.state.users().map_err(|e| e.to_string())? {
                outln!("{u}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keys(cfg: Option<&Path>, cmd: KeysCmd) -> Result<ExitCode, String> {
    match cmd {
        KeysCmd::List { data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let rows = dir
                .state
                .keys(KeyPurpose::Token)
                .map_err(|e| e.to_string())?;
            let now = tally_store::clock::now_unix();
            let mut table = vec![[
                "KID".to_string(),
                "ALG".into(),
                "STATE".into(),
                "CREATED".into(),
                "AGE".into(),
                "SOURCE".into(),
                "CUSTODIANS".into(),
            ]];
            for r in rows {
                let custodians = dir.state.custodians(&r.kid).map_err(|e| e.to_string())?;
                let mut state = r.state.as_str().to_string();
                if r.state == tally_store::KeyState::Active
                    && now - r.created_at >= c.key_max_age_secs
                {
                    state.push_str(" (over max age)");
                }
                table.push([
                    r.kid.clone(),
                    r.alg.clone(),
                    state,
                    timefmt::utc(r.created_at),
                    timefmt::age(now - r.created_at),
                    r.source.clone(),
                    if custodians.is_empty() {
                        "-".into()
                    } else {
                        custodians.join(",")
                    },
                ]);
            }
            print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Rotate { alg, actor, data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let alg = alg
                .as_deref()
                .and_then(tally_core::jose::Algorithm::from_name);
            let r = lifecycle::rotate(
                &dir,
                alg,
                tally_store::KeyState::Retiring,
                None,
                "rotated",
                &lifecycle::actor(actor.as_deref()),
                tally_store::clock::now_unix(),
            )
            .map_err(|e| e.to_string())?;
            outln!("new active key  {}", r.new);
            if let Some(old) = r.old {
                outln!(
                    "retiring        {old} (verifies its tokens until they expire, then retires)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Compromise {
            kid,
            since,
            actor,
            data,
        } => {
            let c = config(cfg, &data, None)?;
            let since = since.as_deref().map(timefmt::parse_time).transpose()?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let actor = lifecycle::actor(actor.as_deref());
            let now = tally_store::clock::now_unix();
            let rotated = lifecycle::mark_compromised(&dir, &kid, since, &actor, now)
                .map_err(|e| e.to_string())?;
            outln!("key {kid} marked compromised: it signs nothing from now on");
            if let Some(new) = &rotated {
                outln!("new active key  {new}");
            }
            // Running servers stop issuing with the key within a second; only
            // then is the ledger read, so nothing they signed meanwhile escapes.
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let records = if c.storage.is_shared() || c.data.join(LEDGER_FILE).exists() {
                lifecycle::all_records(&dir).map_err(|e| e.to_string())?
            } else {
                Vec::new()
            };
            let (revoked, kept) = lifecycle::revoke_signed_by(
                &dir,
                &records,
                &kid,
                since,
                tally_store::clock::now_unix(),
            )
            .map_err(|e| e.to_string())?;
            match since {
                Some(s) => outln!(
                    "revoked         {revoked} unexpired token(s) it signed since {}; {kept} signed before stay valid",
                    timefmt::utc(s)
                ),
                None => outln!("revoked         {revoked} unexpired token(s) it signed"),
            }
            match dir
                .state
                .forgery_sightings(&kid)
                .map_err(|e| e.to_string())?
            {
                Some((n, first, last)) => outln!(
                    "forged          {n} validly signed token(s) with this key that the ledger could not tally were already refused (first {}, last {})",
                    timefmt::utc(first),
                    timefmt::utc(last)
                ),
                None => {
                    outln!("forged          no validly signed forgery with this key has been seen")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Custodian(CustodianCmd::Add {
            kid,
            person,
            actor,
            data,
        }) => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            if person.is_empty() || person.len() > 128 || person.chars().any(char::is_control) {
                return Err("PERSON must be 1-128 printable characters".into());
            }
            let added = lifecycle::add_custodian(
                &dir,
                &kid,
                &person,
                &lifecycle::actor(actor.as_deref()),
                tally_store::clock::now_unix(),
            )
            .map_err(|e| e.to_string())?;
            if added {
                outln!("{person} is now a custodian of {kid}");
            } else {
                outln!("{person} already is a custodian of {kid}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Offboard {
            person,
            actor,
            data,
        } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let actor = lifecycle::actor(actor.as_deref());
            let report = lifecycle::offboard(&dir, &person, &actor, tally_store::clock::now_unix())
                .map_err(|e| e.to_string())?;
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
        KeysCmd::Log { limit, data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let mut table = vec![[
                "TIME".to_string(),
                "EVENT".into(),
                "KID".into(),
                "ACTOR".into(),
                "DETAIL".into(),
            ]];
            for e in dir.state.events(limit).map_err(|e| e.to_string())? {
                table.push([
                    timefmt::utc(e.at),
                    e.event,
                    e.kid.unwrap_or_else(|| "-".into()),
                    e.actor,
                    e.detail,
                ]);
            }
            print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Import { kid, pem, data } => {
            let c = config(cfg, &data, None)?;
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&pem)
                    .map_err(|e| format!("cannot read {}: {e}", pem.display()))?,
            );
            let key =
                SigningKey::from_pkcs8_pem(&text).map_err(|e| format!("{}: {e}", pem.display()))?;
            if let Some(k) = &kid
                && (k.is_empty()
                    || k.len() > 128
                    || k.chars().any(|ch| ch.is_control() || ch.is_whitespace()))
            {
                return Err("--kid must be 1-128 printable characters without spaces".into());
            }
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let kid =
                tally_server::keyring::store_token_key(&dir, &key, kid.as_deref(), "imported")
                    .map_err(|e| e.to_string())?;
            outln!(
                "imported {} key {kid}; it is now the active signing key",
                key.algorithm().name()
            );
            outln!(
                "note: this key may already be in other hands. Tokens it signs outside tally's \
                 issuance process are refused as not_issued."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ledger(cfg: Option<&Path>, cmd: LedgerCmd) -> Result<ExitCode, String> {
    let data = match &cmd {
        LedgerCmd::Verify { data, .. }
        | LedgerCmd::Key { data }
        | LedgerCmd::Checkpoint { data }
        | LedgerCmd::Prove { data, .. } => data.clone(),
    };
    let c = config(cfg, &data, None)?;
    DataDir::require_existing(&c).map_err(|e| e.to_string())?;
    let ledger_path = c.data.join(LEDGER_FILE);
    let verifier = match &cmd {
        LedgerCmd::Verify { key: Some(k), .. } => {
            NoteVerifier::from_verifier_key(k.trim()).map_err(|e| format!("--key: {e}"))?
        }
        _ => trusted_ledger_verifier(&c)?,
    };
    let verifier_key = verifier.verifier_key();
    if let tally_server::config::Storage::Postgres { url, schema, .. } = &c.storage
        && !matches!(cmd, LedgerCmd::Key { .. })
    {
        return fleet_ledger_cmd(&c, &cmd, url, schema, &verifier);
    }
    match cmd {
        LedgerCmd::Key { .. } => {
            outln!("{verifier_key}");
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::Checkpoint { .. } => {
            let conn =
                tally_store::ledger::open_read_only(&ledger_path).map_err(|e| e.to_string())?;
            let note =
                tally_store::ledger::latest_checkpoint_note(&conn).map_err(|e| e.to_string())?;
            tally_core::note::SignedCheckpoint::verify(&note, &verifier)
                .map_err(|e| format!("the stored checkpoint does not verify: {e}"))?;
            out!("{note}");
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::Verify { .. } => {
            let conn =
                tally_store::ledger::open_read_only(&ledger_path).map_err(|e| e.to_string())?;
            let mut bar = progress::Progress::new("verifying");
            let result = tally_store::verify_ledger(
                &conn,
                &verifier,
                &mut |d, t| bar.update(d, t),
                &mut |_, _| {},
            );
            bar.finish();
            let result = result.and_then(|(tree, report)| {
                tally_store::ledger::check_witness(
                    &tally_store::ledger::witness_path(&ledger_path),
                    &tree,
                    &verifier,
                )?;
                Ok(report)
            });
            match result {
                Ok(report) => {
                    outln!("ledger       {}", ledger_path.display());
                    outln!("origin       {}", verifier.name());
                    outln!("entries      {}", report.size);
                    outln!("checkpoints  {}", report.checkpoints);
                    outln!("root         {}", STANDARD.encode(report.root));
                    outln!(
                        "result       OK: every leaf recomputed; every checkpoint's signature and root verified"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(LedgerError::Tampered { index, reason }) => {
                    outln!("ledger       {}", ledger_path.display());
                    outln!("result       TAMPERED");
                    outln!("first bad    index {index}");
                    outln!("finding      {reason}");
                    eprintln!(
                        "error: ledger_tampered at index {index}. Preserve this data directory as evidence; \
                         restore the ledger from backup before serving again."
                    );
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        LedgerCmd::Prove { token_id, .. } => {
            let conn =
                tally_store::ledger::open_read_only(&ledger_path).map_err(|e| e.to_string())?;
            let mut found = None;
            let (tree, report) =
                tally_store::verify_ledger(&conn, &verifier, &mut |_, _| {}, &mut |i, r| {
                    if r.token_id == token_id {
                        found = Some((i, r.encode()));
                    }
                })
                .map_err(|e| e.to_string())?;
            let Some((index, Ok(bytes))) = found else {
                return Err(format!("no issuance record for token id {token_id}"));
            };
            let proof = tree
                .inclusion_proof(index, report.size)
                .map_err(|e| e.to_string())?;
            merkle::verify_inclusion(
                &merkle::leaf_hash(&bytes),
                index,
                report.size,
                &proof,
                &report.root,
            )
            .map_err(|e| format!("proof does not verify: {e}"))?;
            outln!("token_id    {token_id}");
            outln!("leaf_index  {index}");
            outln!("tree_size   {}", report.size);
            outln!("root        {}", STANDARD.encode(report.root));
            for (i, h) in proof.iter().enumerate() {
                outln!("proof[{i}]    {}", STANDARD.encode(h));
            }
            outln!("verified    yes");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn access(cfg: Option<&Path>, cmd: AccessCmd) -> Result<ExitCode, String> {
    let data = match &cmd {
        AccessCmd::Verify { data }
        | AccessCmd::Tail { data, .. }
        | AccessCmd::Hold { data, .. }
        | AccessCmd::Holds { data }
        | AccessCmd::Release { data, .. }
        | AccessCmd::Purge { data, .. } => data.clone(),
    };
    let c = config(cfg, &data, None)?;
    let path = c.data.join("access.db");
    DataDir::require_existing(&c).map_err(|e| e.to_string())?;
    let log = tally_incident::access::AccessLog::open(&path).map_err(|e| e.to_string())?;
    let now = tally_store::clock::now_unix();
    match cmd {
        AccessCmd::Verify { .. } => match log.verify() {
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
            Err(tally_incident::access::AccessError::Tampered { seq, reason }) => {
                outln!("result       TAMPERED");
                outln!("first bad    event {seq}");
                outln!("finding      {reason}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.to_string()),
        },
        AccessCmd::Tail { limit, .. } => {
            for (_, _, body) in log.tail(limit).map_err(|e| e.to_string())? {
                outln!("{}", String::from_utf8_lossy(&body));
            }
            Ok(ExitCode::SUCCESS)
        }
        AccessCmd::Hold {
            from,
            until,
            reason,
            actor,
            ..
        } => {
            let (from, until) = (timefmt::parse_time(&from)?, timefmt::parse_time(&until)?);
            if until < from || reason.trim().is_empty() {
                return Err("need --from <= --until and a --reason".into());
            }
            let id = log
                .hold(
                    from * 1000,
                    until * 1000 + 999,
                    &reason,
                    &lifecycle::actor(actor.as_deref()),
                    now,
                )
                .map_err(|e| e.to_string())?;
            outln!(
                "hold {id}: {} .. {} ({reason})",
                timefmt::utc(from),
                timefmt::utc(until)
            );
            Ok(ExitCode::SUCCESS)
        }
        AccessCmd::Holds { .. } => {
            let mut table = vec![[
                "ID".to_string(),
                "FROM".into(),
                "UNTIL".into(),
                "BY".into(),
                "REASON".into(),
            ]];
            for h in log.holds().map_err(|e| e.to_string())? {
                table.push([
                    h.id.to_string(),
                    timefmt::utc(h.from_ms / 1000),
                    timefmt::utc(h.until_ms / 1000),
                    h.actor,
                    h.reason,
                ]);
            }
            print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        AccessCmd::Release {
            id, reason, actor, ..
        } => {
            let reason = tally_server::contain::reason(&reason)
                .map_err(|_| "--reason must say why the hold may end".to_string())?;
            let by = lifecycle::actor(actor.as_deref());
            if log
                .release(id, now, &by, reason)
                .map_err(|e| e.to_string())?
            {
                outln!("hold {id} released");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("no hold {id} in force"))
            }
        }
        AccessCmd::Purge { before, .. } => {
            let before = timefmt::parse_time(&before)?;
            let n = log
                .purge(before * 1000)
                .map_err(|e| format!("{} ({})", e, e.code()))?;
            outln!("{n} event(s) removed; the chain still verifies from the first one kept");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("--for {s:?}: use a number with s, m, h or d (e.g. 15m)");
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

fn block(cfg: Option<&Path>, cmd: BlockCmd) -> Result<ExitCode, String> {
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
            data,
        } => {
            let c = config(cfg, &data, None)?;
            let (kind, value) = match (ip, device, subject, token) {
                (Some(ip), None, None, None) => ("ip", ip),
                (None, Some(d), None, None) => ("device", d),
                (None, None, Some(s), None) => ("subject", s),
                (None, None, None, Some(t)) => ("token", t),
                _ => return Err("give exactly one of --ip, --device, --subject, --token".into()),
            };
            let (kind, value) = tally_server::contain::block_target(kind, &value)?;
            let reason = tally_server::contain::reason(&reason)
                .map_err(|_| "--reason must say why (1-256 printable characters)".to_string())?
                .to_string();
            let expires_at = duration
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| now + d);
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())?;
            match expires_at {
                Some(e) => outln!("block {id}: {kind} {value} until {}", timefmt::utc(e)),
                None => outln!("block {id}: {kind} {value} until removed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        BlockCmd::List { data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            let mut table = vec![[
                "ID".to_string(),
                "KIND".into(),
                "VALUE".into(),
                "UNTIL".into(),
                "BY".into(),
                "REASON".into(),
            ]];
            for b in dir.state.blocks(now).map_err(|e| e.to_string())? {
                table.push([
                    b.id.to_string(),
                    b.kind,
                    b.value,
                    b.expires_at.map_or("(until lifted)".into(), timefmt::utc),
                    b.actor,
                    b.reason,
                ]);
            }
            print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        BlockCmd::Remove { id, data } => {
            let c = config(cfg, &data, None)?;
            let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
            if dir.state.remove_block(id, now).map_err(|e| e.to_string())? {
                outln!("block {id} lifted");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("no block {id} in force"))
            }
        }
    }
}

/// Reads one non-empty line (a password or secret) from standard input.
fn read_secret_line(what: &str) -> Result<zeroize::Zeroizing<String>, String> {
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(tally_server::issuance::MAX_PASSWORD as u64 + 2)
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the {what} from standard input: {e}"))?;
    let line = input.strip_suffix('\n').unwrap_or(&input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        return Err(format!(
            "standard input must hold exactly one non-empty {what} line"
        ));
    }
    if line.len() > tally_server::issuance::MAX_PASSWORD {
        return Err(format!("the {what} is longer than 1024 bytes"));
    }
    Ok(zeroize::Zeroizing::new(line.to_string()))
}

/// Prints rows as aligned columns (the last column is not padded).
/// `tally state seal [--yes]`.
fn seal_state(cfg: Option<&Path>, yes: bool, data: &DataArg) -> Result<ExitCode, String> {
    let c = config(cfg, data, None)?;
    let dir = DataDir::open_for_sealing(&c).map_err(|e| e.to_string())?;
    let rows = dir.state.unsealed_rows().map_err(|e| e.to_string())?;
    if rows.is_empty() {
        dir.adopt_unsealed().map_err(|e| e.to_string())?;
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
    let n = dir.adopt_unsealed().map_err(|e| e.to_string())?;
    outln!("\nsealed {n} rows; from now on a row without a seal is refused");
    Ok(ExitCode::SUCCESS)
}

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

/// The ledger's verifier key, derived from the sealed ledger key (so a state
/// database whose stored public key was swapped cannot vouch for a rewritten
/// ledger), and compared with the stored copy.
/// `tally ledger verify|checkpoint|prove` on a fleet's shared ledger.
fn fleet_ledger_cmd(
    c: &Config,
    cmd: &LedgerCmd,
    url: &tally_server::config::StorageUrl,
    schema: &str,
    verifier: &NoteVerifier,
) -> Result<ExitCode, String> {
    use tally_store::fleet::{self, FleetError};
    let dir = DataDir::open_existing(c).map_err(|e| e.to_string())?;
    let mac = dir.record_mac();
    let mut client = fleet::connect_for(url.expose(), None)
        .map_err(|e| format!("cannot reach the fleet ledger at {url} ({}): {e}", e.code()))?;
    match cmd {
        LedgerCmd::Checkpoint { .. } => {
            let note = fleet::latest_checkpoint(&mut client, schema)
                .map_err(|e| e.to_string())?
                .ok_or("the fleet ledger has no checkpoint yet (start a node first)")?;
            tally_core::note::SignedCheckpoint::verify(&note, verifier)
                .map_err(|e| format!("the stored checkpoint does not verify: {e}"))?;
            out!("{note}");
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::Verify { .. } => match fleet::verify(&mut client, schema, verifier, &mac) {
            Ok(report) => {
                let backlog = fleet::backlog(&mut client, schema).map_err(|e| e.to_string())?;
                outln!("ledger       {url} (schema {schema})");
                outln!("origin       {}", verifier.name());
                outln!("entries      {}", report.tree.len());
                outln!("checkpoints  {}", report.checkpoints);
                outln!("queued       {backlog} (durable, not sequenced yet)");
                outln!("root         {}", STANDARD.encode(report.tree.root()));
                outln!(
                    "result       OK: every leaf recomputed and its record's MAC checked; every checkpoint's signature and root verified"
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(FleetError::Tampered { index, reason }) => {
                outln!("ledger       {url} (schema {schema})");
                outln!("result       TAMPERED");
                outln!("first bad    index {index}");
                outln!("finding      {reason}");
                eprintln!(
                    "error: ledger_tampered at index {index}. Preserve the database as evidence \
                     (pg_dump the schema) before anything else."
                );
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(format!("{} ({})", e, e.code())),
        },
        LedgerCmd::Prove { token_id, .. } => {
            let report =
                fleet::verify(&mut client, schema, verifier, &mac).map_err(|e| e.to_string())?;
            let found = fleet::lookup(&mut client, schema, &mac, token_id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no issuance record for token id {token_id}"))?;
            let bytes = found.record.encode().map_err(|e| e.to_string())?;
            let leaf = merkle::leaf_hash(&bytes);
            let size = report.tree.len();
            let index = fleet::leaf_index(&mut client, schema, found.seq)
                .map_err(|e| e.to_string())?
                .filter(|i| report.tree.leaf(*i) == Some(leaf))
                .ok_or("the record is durable but not sequenced yet: ask again in a second")?;
            let proof = report
                .tree
                .inclusion_proof(index, size)
                .map_err(|e| e.to_string())?;
            let root = report.tree.root();
            merkle::verify_inclusion(&leaf, index, size, &proof, &root)
                .map_err(|e| format!("proof does not verify: {e}"))?;
            outln!("token_id    {token_id}");
            outln!("leaf_index  {index}");
            outln!("tree_size   {size}");
            outln!("root        {}", STANDARD.encode(root));
            for (i, h) in proof.iter().enumerate() {
                outln!("proof[{i}]    {}", STANDARD.encode(h));
            }
            outln!("verified    yes");
            Ok(ExitCode::SUCCESS)
        }
        LedgerCmd::Key { .. } => Ok(ExitCode::SUCCESS),
    }
}

fn trusted_ledger_verifier(c: &Config) -> Result<NoteVerifier, String> {
    let data = c.data.as_path();
    let dir = DataDir::open_existing(c).map_err(|e| e.to_string())?;
    let verifier = dir.ledger_signer().map_err(|e| e.to_string())?.verifier();
    let stored = dir
        .state
        .keys(KeyPurpose::Ledger)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .map(|r| r.public)
        .ok_or("no ledger key in this data directory")?;
    if stored != verifier.verifier_key() {
        return Err(format!(
            "ledger_tampered: the ledger verifier key stored in {} does not match the sealed ledger key; \
             preserve this data directory as evidence",
            data.display()
        ));
    }
    Ok(verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Regression: a base64url token id may begin with '-' and must not be
    /// read as an option.
    #[test]
    fn prove_accepts_a_token_id_starting_with_a_hyphen() {
        let cli = Cli::try_parse_from(["tally", "ledger", "prove", "-vX9", "--data", "d"]).unwrap();
        match cli.command {
            Command::Ledger(LedgerCmd::Prove { token_id, data }) => {
                assert_eq!(token_id, "-vX9");
                assert_eq!(data.data.as_deref(), Some(Path::new("d")));
            }
            _ => panic!("parsed as another command"),
        }
    }
}
