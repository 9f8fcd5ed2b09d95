//! The ledger a fleet shares in PostgreSQL.

use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tally_core::merkle;
use tally_core::note::NoteVerifier;
use tally_server::Config;
use tally_server::config::StorageUrl;
use tally_store::fleet::{self, FleetError};

use crate::cmd::{coded, open_data_dir};

/// What to do with the shared ledger.
pub(super) enum Op<'a> {
    /// `tally ledger checkpoint`.
    Checkpoint,
    /// `tally ledger verify`: 0 when it verifies, 1 when it is tampered with.
    Verify,
    /// `tally ledger prove TOKEN_ID`.
    Prove(&'a str),
}

pub(super) fn run(
    c: &Config,
    url: &StorageUrl,
    schema: &str,
    verifier: &NoteVerifier,
    op: Op<'_>,
) -> Result<ExitCode> {
    let dir = open_data_dir(c)?;
    let mac = dir.record_mac();
    // `url` shows without its password, if it has one.
    let mut client = fleet::connect_for(url.expose(), None)
        .map_err(coded)
        .with_context(|| format!("cannot reach the fleet ledger at {url}"))?;
    match op {
        Op::Checkpoint => {
            let note = fleet::latest_checkpoint(&mut client, schema)
                .map_err(coded)
                .context("cannot read the fleet ledger's latest checkpoint")?
                .context("the fleet ledger has no checkpoint yet (start a node first)")?;
            tally_core::note::SignedCheckpoint::verify(&note, verifier).context(
                "the stored checkpoint does not verify (`tally ledger verify` finds what changed)",
            )?;
            out!("{note}");
            Ok(ExitCode::SUCCESS)
        }
        Op::Verify => match fleet::verify(&mut client, schema, verifier, &mac) {
            Ok(report) => {
                let backlog = fleet::backlog(&mut client, schema)
                    .map_err(coded)
                    .context("cannot count the records not sequenced yet")?;
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
            Err(e) => Err(coded(e)).with_context(|| {
                format!("cannot verify the fleet ledger at {url} (schema {schema})")
            }),
        },
        Op::Prove(token_id) => {
            let report = fleet::verify(&mut client, schema, verifier, &mac)
                .map_err(coded)
                .context("cannot verify the fleet ledger, so it proves nothing")?;
            let found = fleet::lookup(&mut client, schema, &mac, token_id)
                .map_err(coded)
                .with_context(|| format!("cannot look up token id {token_id}"))?
                .with_context(|| format!("no issuance record for token id {token_id}"))?;
            let bytes = found
                .record
                .encode()
                .with_context(|| format!("cannot encode the issuance record of {token_id}"))?;
            let leaf = merkle::leaf_hash(&bytes);
            let size = report.tree.len();
            let index = fleet::leaf_index(&mut client, schema, found.seq)
                .map_err(coded)
                .with_context(|| format!("cannot find the leaf of token id {token_id}"))?
                .filter(|i| report.tree.leaf(*i) == Some(leaf))
                .context("the record is durable but not sequenced yet: ask again in a second")?;
            let proof = report
                .tree
                .inclusion_proof(index, size)
                .with_context(|| format!("cannot build the inclusion proof of leaf {index}"))?;
            let root = report.tree.root();
            merkle::verify_inclusion(&leaf, index, size, &proof, &root)
                .context("proof does not verify")?;
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
    }
}
