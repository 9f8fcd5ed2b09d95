//! The public ledger must not be a customer list: its entries name the
//! subject of every token, so only auditors and administrators read them;
//! checkpoints and proofs stay public.

use serde_json::Value;

use crate::fixture::Fixture;
use crate::support::*;
use crate::{Attack, Run};

fn entries(f: &Fixture) -> Result<(), String> {
    let c = client();
    let url = f.server.url("/v1/ledger/entries?start=0&end=1");
    let status = |req: reqwest::blocking::RequestBuilder| -> Result<(u16, String), String> {
        let r = req.send().map_err(|e| e.to_string())?;
        let s = r.status().as_u16();
        Ok((s, r.text().unwrap_or_default()))
    };
    let (s, body) = status(c.get(&url))?;
    if s != 401 || body.contains("entries") {
        return Err(format!("anonymous: {s} {body}"));
    }
    let (s, body) = status(c.get(&url).bearer_auth(&f.token))?;
    if s != 403 || body.contains("entries") {
        return Err(format!("a customer's token: {s} {body}"));
    }
    let (s, body) = status(c.get(&url).bearer_auth(f.forge("forged-auditor", "root")))?;
    if s != 403 || body.contains("entries") {
        return Err(format!("a forged token for an auditor: {s} {body}"));
    }
    // Checkpoints and proofs name no one, and stay public.
    let (s, _) = status(c.get(f.server.url("/v1/ledger/checkpoint")))?;
    let (s2, _) = status(c.get(f.server.url("/v1/ledger/proof/consistency?from=1&to=1")))?;
    if s != 200 || s2 != 200 {
        return Err(format!("public checkpoint {s}, consistency proof {s2}"));
    }
    tally_ok(&["users", "role", "root", "auditor", "--data", f.d()], None);
    let auditor = login(&f.server, "root", "pw-root-unused");
    let (s, body) = status(c.get(&url).bearer_auth(&auditor))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if s != 200 || v["entries"].as_array().is_none_or(|e| e.len() != 1) {
        return Err(format!("an auditor: {s} {body}"));
    }
    Ok(())
}

pub const ROWS: &[Attack] = &[Attack {
    id: "disclosure.ledger-entries",
    item: 10,
    what: "the ledger's entries (every customer who logged in) need the auditor role",
    run: Run::WithFixture(entries),
}];
