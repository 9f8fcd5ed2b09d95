//! `tally ledger …`: the issuance ledger's verifier key, its latest
//! checkpoint, a full verification, and inclusion proofs; on this node's
//! own ledger ([`local`]) or on a fleet's shared one ([`fleet`]).

mod fleet;
mod local;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tally_core::note::NoteVerifier;
use tally_server::Config;
use tally_server::config::Storage;
use tally_store::KeyPurpose;

use super::{Globals, config, open_data_dir, require_data_dir};

#[derive(Subcommand)]
pub(crate) enum LedgerCmd {
    /// Recompute every leaf and check every stored checkpoint.
    Verify {
        /// Verifier key to check checkpoints with (`<name>+<hash>+<base64>`),
        /// e.g. one an auditor pinned earlier. Without it, the key is derived
        /// from the sealed ledger key (needs the master key).
        #[arg(long)]
        key: Option<String>,
    },
    /// Print the checkpoint verifier key (`<name>+<hash>+<base64>`).
    Key,
    /// Print the latest signed checkpoint.
    Checkpoint,
    /// Print (and check) an inclusion proof for a token id.
    Prove {
        /// The token's `jti` (may begin with '-').
        #[arg(allow_hyphen_values = true)]
        token_id: String,
    },
}

pub(crate) fn run(g: &Globals, cmd: LedgerCmd) -> Result<ExitCode> {
    let c = config(g, None)?;
    require_data_dir(&c)?;
    let verifier = match &cmd {
        LedgerCmd::Verify { key: Some(k), .. } => NoteVerifier::from_verifier_key(k.trim())
            .context("--key is not a verifier key (<name>+<hash>+<base64>)")?,
        _ => trusted_ledger_verifier(&c)?,
    };
    if let LedgerCmd::Key = cmd {
        outln!("{}", verifier.verifier_key());
        return Ok(ExitCode::SUCCESS);
    }
    if let Storage::Postgres { url, schema, .. } = &c.storage {
        let op = match &cmd {
            LedgerCmd::Checkpoint => fleet::Op::Checkpoint,
            LedgerCmd::Verify { .. } => fleet::Op::Verify,
            LedgerCmd::Prove { token_id } => fleet::Op::Prove(token_id),
            LedgerCmd::Key => return Ok(ExitCode::SUCCESS),
        };
        return fleet::run(&c, url, schema, &verifier, op);
    }
    let own = local::Own::new(&c, &verifier);
    match cmd {
        LedgerCmd::Checkpoint => own.checkpoint(),
        LedgerCmd::Verify { .. } => own.verify(),
        LedgerCmd::Prove { token_id } => own.prove(&token_id),
        LedgerCmd::Key => Ok(ExitCode::SUCCESS),
    }
}

/// The ledger's verifier key, derived from the sealed ledger key (so a state
/// database whose stored public key was swapped cannot vouch for a rewritten
/// ledger), and compared with the stored copy.
fn trusted_ledger_verifier(c: &Config) -> Result<NoteVerifier> {
    let data = c.data.as_path();
    let dir = open_data_dir(c)?;
    let verifier = dir
        .ledger_signer()
        .context("cannot open the sealed ledger key (it needs the master key)")?
        .verifier();
    let stored = dir
        .state
        .keys(KeyPurpose::Ledger)
        .context("cannot read the stored ledger verifier key")?
        .into_iter()
        .next()
        .map(|r| r.public)
        .context("no ledger key in this data directory")?;
    if stored != verifier.verifier_key() {
        bail!(
            "ledger_tampered: the ledger verifier key stored in {} does not match the sealed ledger key; \
             preserve this data directory as evidence",
            data.display()
        );
    }
    Ok(verifier)
}
