//! `tally users …`: add, reset, list users, set their roles, enrol them in
//! one-time passwords.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tally_store::StateError;
use tally_store::clock::now_unix;

use super::{Globals, config, open_data_dir, read_new_password};

#[derive(Subcommand)]
pub(crate) enum UsersCmd {
    /// Add a user; the password is read from standard input. It must have at
    /// least 12 characters (`[passwords] min_length`) and at most 1024 bytes.
    Add {
        /// User name (1-64 of A-Z a-z 0-9 . _ @ -).
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Reset a user: a new password (read from standard input, with the same
    /// rules as for `users add`), the `user` role and no one-time-password
    /// enrolment, sealed afresh. Takes back a user row that someone changed
    /// in the database behind tally's back.
    Reset {
        /// The user.
        name: String,
        /// Read the new password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// `table` (one name per line) or `json` (names and roles).
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Remove a user: they can no longer log in, their sessions end (refresh
    /// tokens stop working) and the access tokens of those sessions are
    /// revoked (on every server within a second).
    Remove {
        /// The user.
        name: String,
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
    },
    /// Enrol a user in one-time passwords (RFC 6238): prints the otpauth://
    /// URI and a QR code for an authenticator app. Re-running replaces the secret.
    Totp {
        /// The user.
        name: String,
        /// Issuer label shown in the authenticator app.
        #[arg(long, default_value = "tally")]
        label: String,
    },
}

pub(crate) fn run(g: &Globals, cmd: UsersCmd) -> Result<ExitCode> {
    match cmd {
        UsersCmd::Add { name, .. } => add(g, &name),
        UsersCmd::Reset { name, .. } => reset(g, &name),
        UsersCmd::Totp { name, label } => totp(g, &name, &label),
        UsersCmd::Role { name, role } => set_role(g, &name, &role),
        UsersCmd::Remove { name } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            let now = tally_store::clock::now_unix();
            if !dir
                .state
                .remove_user(&name, now)
                .with_context(|| format!("cannot remove user {name}"))?
            {
                bail!("there is no user {name} (tally users list shows them)");
            }
            outln!("user {name} removed; their sessions are ended");
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::List { format } => {
            let c = config(g, None)?;
            let dir = open_data_dir(&c)?;
            let users = dir.state.users().context("cannot list the users")?;
            if format == "json" {
                let mut rows = Vec::new();
                for u in &users {
                    let role = dir
                        .state
                        .user_role(u)
                        .with_context(|| format!("cannot read the role of user {u}"))?;
                    rows.push(serde_json::json!({"name": u, "role": role}));
                }
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                for u in users {
                    outln!("{u}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Hashes a password read from standard input; the message never shows it.
fn hash_password(name: &str, password: &str) -> Result<String> {
    tally_server::passwords::hash_once(password)
        .with_context(|| format!("cannot hash the new password of user {name}"))
}

fn add(g: &Globals, name: &str) -> Result<ExitCode> {
    let c = config(g, None)?;
    if !tally_server::issuance::valid_username(name) {
        bail!("user names are 1-64 characters of A-Z a-z 0-9 . _ @ -");
    }
    let dir = open_data_dir(&c)?;
    let password = read_new_password(&c).with_context(|| format!("cannot add user {name}"))?;
    let hash = hash_password(name, password.as_str())?;
    match dir.state.add_user(name, &hash, now_unix()) {
        Ok(()) => {}
        Err(StateError::UserExists) => bail!("user {name} already exists"),
        Err(e) => return Err(e).with_context(|| format!("cannot add user {name}")),
    }
    outln!("user {name} added");
    Ok(ExitCode::SUCCESS)
}

fn reset(g: &Globals, name: &str) -> Result<ExitCode> {
    let c = config(g, None)?;
    let password = read_new_password(&c).with_context(|| format!("cannot reset user {name}"))?;
    let dir = open_data_dir(&c)?;
    let hash = hash_password(name, password.as_str())?;
    if !dir
        .state
        .reset_user(name, &hash, now_unix())
        .with_context(|| format!("cannot reset user {name}"))?
    {
        bail!("no user {name:?}: add it with tally users add");
    }
    outln!(
        "user {name} reset: new password, role user, no one-time codes (re-enrol with tally users totp {name}), every session ended"
    );
    Ok(ExitCode::SUCCESS)
}

fn totp(g: &Globals, name: &str, label: &str) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    let secret = tally_core::totp::TotpSecret::generate()
        .context("cannot generate a one-time-password secret")?;
    let sealed = dir
        .master
        .seal(
            &tally_server::issuance::totp_context(name),
            secret.as_bytes(),
        )
        .with_context(|| format!("cannot seal the one-time-password secret of user {name}"))?;
    if !dir
        .state
        .set_totp(name, &sealed)
        .with_context(|| format!("cannot enrol user {name} in one-time passwords"))?
    {
        bail!("no user {name}");
    }
    let uri = tally_core::totp::Totp::default().otpauth_uri(&secret, label, name);
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

fn set_role(g: &Globals, name: &str, role: &str) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    if dir
        .state
        .set_role(name, role)
        .with_context(|| format!("cannot make user {name} {role}"))?
    {
        outln!("user {name} is now {role}");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("no user {name:?}: add it first with tally users add")
    }
}
