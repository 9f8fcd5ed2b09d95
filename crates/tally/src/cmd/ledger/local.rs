//! The ledger of this node (`ledger.db` in the data directory).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tally_core::merkle;
use tally_core::note::NoteVerifier;
use tally_server::Config;
use tally_store::{LEDGER_FILE, LedgerError};

/// This node's ledger file, and the key its checkpoints must verify under.
pub(super) struct Own<'a> {
    path: PathBuf,
    verifier: &'a NoteVerifier,
}

impl<'a> Own<'a> {
    pub(super) fn new(c: &Config, verifier: &'a NoteVerifier) -> Own<'a> {
        Own {
            path: c.data.join(LEDGER_FILE),
            verifier,
        }
    }

    /// `tally ledger checkpoint`.
    pub(super) fn checkpoint(&self) -> Result<ExitCode> {
        let conn = tally_store::ledger::open_read_only(&self.path)
            .context("cannot open this node's ledger")?;
        let note = tally_store::ledger::latest_checkpoint_note(&conn)
            .context("cannot read the latest checkpoint")?;
        tally_core::note::SignedCheckpoint::verify(&note, self.verifier).context(
            "the stored checkpoint does not verify (`tally ledger verify` finds what changed)",
        )?;
        out!("{note}");
        Ok(ExitCode::SUCCESS)
    }

    /// `tally ledger verify`: 0 when it verifies, 1 when it is tampered with.
    pub(super) fn verify(&self) -> Result<ExitCode> {
        let (path, verifier) = (&self.path, self.verifier);
        let conn = tally_store::ledger::open_read_only(&self.path)
            .context("cannot open this node's ledger")?;
        let mut bar = crate::progress::Progress::new("verifying");
        let result = tally_store::verify_ledger(
            &conn,
            verifier,
            &mut |d, t| bar.update(d, t),
            &mut |_, _| {},
        );
        bar.finish();
        let result = result.and_then(|(tree, report)| {
            tally_store::ledger::check_witness(
                &tally_store::ledger::witness_path(path),
                &tree,
                verifier,
            )?;
            Ok(report)
        });
        match result {
            Ok(report) => {
                outln!("ledger       {}", path.display());
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
                outln!("ledger       {}", path.display());
                outln!("result       TAMPERED");
                outln!("first bad    index {index}");
                outln!("finding      {reason}");
                eprintln!(
                    "error: ledger_tampered at index {index}. Preserve this data directory as evidence; \
                     restore the ledger from backup before serving again."
                );
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e).context("cannot verify this node's ledger"),
        }
    }

    /// `tally ledger prove TOKEN_ID`.
    pub(super) fn prove(&self, token_id: &str) -> Result<ExitCode> {
        let conn = tally_store::ledger::open_read_only(&self.path)
            .context("cannot open this node's ledger")?;
        let mut found = None;
        let (tree, report) =
            tally_store::verify_ledger(&conn, self.verifier, &mut |_, _| {}, &mut |i, r| {
                if r.token_id == token_id {
                    found = Some((i, r.encode()));
                }
            })
            .context("cannot verify the ledger, so it proves nothing")?;
        let Some((index, Ok(bytes))) = found else {
            bail!("no issuance record for token id {token_id}");
        };
        let proof = tree
            .inclusion_proof(index, report.size)
            .with_context(|| format!("cannot build the inclusion proof of leaf {index}"))?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(&bytes),
            index,
            report.size,
            &proof,
            &report.root,
        )
        .context("proof does not verify")?;
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
