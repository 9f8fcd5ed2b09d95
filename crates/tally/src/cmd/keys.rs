//! `tally keys …`: the token-signing keys: list, rotate, mark compromised,
//! import, and their audit log. Custodians and offboarding are in
//! [`super::custodians`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tally_core::jose::SigningKey;
use tally_incident::timefmt;
use tally_server::keyring::lifecycle;
use tally_store::clock::now_unix;
use tally_store::{KeyPurpose, KeyState, LEDGER_FILE};

use super::custodians::{self, CustodianCmd};
use super::{FormatArg, Globals, config, open_data_dir, parse_time, print_rows};

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// List token-signing keys: kid, algorithm, state, created, age, custodians.
    List {
        #[command(flatten)]
        format: FormatArg,
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
    },
    /// Show the key audit log (who did what to which key, and when).
    Log {
        /// How many of the newest events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        format: FormatArg,
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
    },
}

pub(crate) fn run(g: &Globals, cmd: KeysCmd) -> Result<ExitCode> {
    match cmd {
        KeysCmd::List { format } => list(g, &format),
        KeysCmd::Rotate { alg, actor } => rotate(g, alg.as_deref(), actor.as_deref()),
        KeysCmd::Compromise { kid, since, actor } => {
            compromise(g, &kid, since.as_deref(), actor.as_deref())
        }
        KeysCmd::Custodian(cmd) => custodians::run(g, cmd),
        KeysCmd::Offboard { person, actor } => custodians::offboard(g, &person, actor.as_deref()),
        KeysCmd::Log { limit, format } => log(g, limit, &format),
        KeysCmd::Import { kid, pem } => import(g, kid.as_deref(), &pem),
    }
}

fn list(g: &Globals, format: &FormatArg) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    let rows = dir
        .state
        .keys(KeyPurpose::Token)
        .context("cannot list the token-signing keys")?;
    let now = now_unix();
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
        let custodians = dir
            .state
            .custodians(&r.kid)
            .with_context(|| format!("cannot list the custodians of key {}", r.kid))?;
        let mut state = r.state.as_str().to_string();
        if r.state == KeyState::Active && now - r.created_at >= c.key_max_age_secs {
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
    print_rows(format, &table);
    Ok(ExitCode::SUCCESS)
}

fn rotate(g: &Globals, alg: Option<&str>, actor: Option<&str>) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    let alg = alg.and_then(tally_core::jose::Algorithm::from_name);
    let r = lifecycle::rotate(
        &dir,
        alg,
        KeyState::Retiring,
        None,
        "rotated",
        &lifecycle::actor(actor),
        now_unix(),
    )
    .context("cannot rotate the token-signing key")?;
    outln!("new active key  {}", r.new);
    if let Some(old) = r.old {
        outln!("retiring        {old} (verifies its tokens until they expire, then retires)");
    }
    Ok(ExitCode::SUCCESS)
}

fn compromise(
    g: &Globals,
    kid: &str,
    since: Option<&str>,
    actor: Option<&str>,
) -> Result<ExitCode> {
    let c = config(g, None)?;
    let since = since.map(|s| parse_time("since", s)).transpose()?;
    let dir = open_data_dir(&c)?;
    let actor = lifecycle::actor(actor);
    let now = now_unix();
    let rotated = lifecycle::mark_compromised(&dir, kid, since, &actor, now)
        .with_context(|| format!("cannot mark key {kid} compromised"))?;
    outln!("key {kid} marked compromised: it signs nothing from now on");
    if let Some(new) = &rotated {
        outln!("new active key  {new}");
    }
    // What fails from here on leaves the key compromised but its tokens
    // not yet revoked: running the command again revokes them.
    let again = || {
        format!(
            "key {kid} is marked compromised, but the tokens it signed are not revoked yet; \
             run this command again"
        )
    };
    // Running servers stop issuing with the key within a second; only
    // then is the ledger read, so nothing they signed meanwhile escapes.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let records = if c.storage.is_shared() || c.data.join(LEDGER_FILE).exists() {
        lifecycle::all_records(&dir)
            .context("cannot read the ledger")
            .with_context(again)?
    } else {
        Vec::new()
    };
    let (revoked, kept) = lifecycle::revoke_signed_by(&dir, &records, kid, since, now_unix())
        .context("cannot revoke the tokens")
        .with_context(again)?;
    match since {
        Some(s) => outln!(
            "revoked         {revoked} unexpired token(s) it signed since {}; {kept} signed before stay valid",
            timefmt::utc(s)
        ),
        None => outln!("revoked         {revoked} unexpired token(s) it signed"),
    }
    match dir
        .state
        .forgery_sightings(kid)
        .with_context(|| format!("cannot count the forgeries seen with key {kid}"))?
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

fn log(g: &Globals, limit: usize, format: &FormatArg) -> Result<ExitCode> {
    let c = config(g, None)?;
    let dir = open_data_dir(&c)?;
    let mut table = vec![[
        "TIME".to_string(),
        "EVENT".into(),
        "KID".into(),
        "ACTOR".into(),
        "DETAIL".into(),
    ]];
    for e in dir
        .state
        .events(limit)
        .context("cannot read the key audit log")?
    {
        table.push([
            timefmt::utc(e.at),
            e.event,
            e.kid.unwrap_or_else(|| "-".into()),
            e.actor,
            e.detail,
        ]);
    }
    print_rows(format, &table);
    Ok(ExitCode::SUCCESS)
}

/// `tally keys import`: no message shows anything of the key itself, only
/// the file it came from.
fn import(g: &Globals, kid: Option<&str>, pem: &Path) -> Result<ExitCode> {
    let c = config(g, None)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(pem).with_context(|| format!("cannot read {}", pem.display()))?,
    );
    let key = SigningKey::from_pkcs8_pem(&text)
        .with_context(|| format!("cannot import the private key in {}", pem.display()))?;
    if let Some(k) = kid
        && (k.is_empty()
            || k.len() > 128
            || k.chars().any(|ch| ch.is_control() || ch.is_whitespace()))
    {
        bail!("--kid must be 1-128 printable characters without spaces");
    }
    let dir = open_data_dir(&c)?;
    let kid =
        tally_server::keyring::store_token_key(&dir, &key, kid, "imported").with_context(|| {
            format!(
                "cannot make the key in {} the active signing key",
                pem.display()
            )
        })?;
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
