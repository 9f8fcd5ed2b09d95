//! `tally init`: a data directory (master key, signing key, ledger key) and
//! its issuer, without serving.

use std::process::ExitCode;

use anyhow::{Context, Result};
use tally_server::keyring::DataDir;

use super::{Globals, config};

pub(crate) fn run(g: &Globals, listen: Option<String>) -> Result<ExitCode> {
    let c = config(g, listen)?;
    let dir = DataDir::open_or_init(&c).context("cannot create or open the data directory")?;
    let signer = dir
        .ledger_signer()
        .context("cannot open the ledger key of the data directory")?;
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
            .context("cannot fix the issuer of the data directory")?;
        outln!("issuer          {issuer}");
    } else {
        outln!("issuer          (fixed by the first tally serve: http://<its address>)");
    }
    Ok(ExitCode::SUCCESS)
}
