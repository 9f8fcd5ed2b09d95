//! What an incident did, from the access logs: the regulator-ready report,
//! the affected customers, and a scan for the untallied tokens of a key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tally_incident::access::AccessLog;
use tally_incident::report::{Impact, Source, StoredEvent};

use super::store::Opened;
use crate::cmd::coded;
use crate::cmd::parse_time;

/// The access logs a report reads.
#[derive(clap::Args)]
pub(crate) struct LogsArg {
    /// Also read this access log (another node's `access.db`, in a fleet);
    /// repeat for each node. This node's own is always read.
    #[arg(long = "access-log", value_name = "PATH")]
    pub(super) access_logs: Vec<PathBuf>,
}

fn write_out(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            out!("{text}");
            Ok(())
        }
    }
}

/// Runs `f` with a progress callback over the access log's events: the
/// CLI's usual bar (shown from 100,000 events), finished afterwards.
fn with_progress<T>(
    label: &'static str,
    logs: &[(String, AccessLog)],
    f: impl FnOnce(&mut dyn FnMut(u64)) -> T,
) -> T {
    let total = logs.iter().map(|(_, l)| l.event_count().unwrap_or(0)).sum();
    let mut bar = crate::progress::Progress::new(label);
    let out = f(&mut |n| bar.update(n, total));
    bar.finish();
    out
}

/// This node's access log and every `--access-log` given, opened and named
/// by their paths (the report says which it read).
fn open_logs(data: &Path, extra: &[PathBuf]) -> Result<Vec<(String, AccessLog)>> {
    std::iter::once(data.join("access.db"))
        .chain(extra.iter().cloned())
        .map(|p| {
            let log = AccessLog::open(&p)
                .with_context(|| format!("cannot open the access log {}", p.display()))?;
            Ok((p.display().to_string(), log))
        })
        .collect()
}

/// The opened logs as the report reads them.
fn sources(logs: &[(String, AccessLog)]) -> Vec<Source<'_>> {
    logs.iter().map(|(name, log)| (name.clone(), log)).collect()
}

/// Whether `subject` is a user of this data directory
/// ([`tally_server::keyring::DataDir::is_member`]).
fn known(o: &Opened, subject: &str) -> bool {
    o.dir.is_member(subject)
}

/// The affected customers of `impact` as `json` or CSV.
fn affected_text(impact: &Impact, format: &str) -> String {
    if format == "json" {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&impact.subjects.values().collect::<Vec<_>>())
                .unwrap_or_default()
        )
    } else {
        tally_incident::report::affected_csv(impact)
    }
}

/// `tally incident report ID`.
pub(super) fn report(
    o: &Opened,
    id: i64,
    format: &str,
    output: Option<&Path>,
    logs: &LogsArg,
) -> Result<ExitCode> {
    if format == "pdf" && output.is_none() {
        bail!("a PDF is written to a file: add --output FILE.pdf");
    }
    let logs = open_logs(&o.c.data, &logs.access_logs)?;
    let named = sources(&logs);
    let (report, _impact) = with_progress("report", &logs, |p| {
        tally_incident::report::report_for(
            &o.store,
            &named,
            id,
            &o.c.regimes,
            &o.c.contacts,
            o.now,
            &|s| known(o, s),
            p,
        )
    })
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("cannot build the report of incident {id}"))?;
    if format == "pdf" {
        let output = output.context("a PDF is written to a file: add --output FILE.pdf")?;
        super::pdf::write_pdf(&tally_incident::report::html(&report), output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = match format {
        "json" => format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        "html" => tally_incident::report::html(&report),
        _ => tally_incident::report::markdown(&report),
    };
    write_out(output, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// `tally incident affected ID`.
pub(super) fn affected(
    o: &Opened,
    id: i64,
    format: &str,
    output: Option<&Path>,
    logs: &LogsArg,
) -> Result<ExitCode> {
    let logs = open_logs(&o.c.data, &logs.access_logs)?;
    let named = sources(&logs);
    let read = || format!("cannot read incident {id}");
    if o.store
        .incident(id)
        .map_err(coded)
        .with_context(read)?
        .is_none()
    {
        bail!("no incident {id} (tally incident list)");
    }
    let dets = o.store.detections(id).map_err(coded).with_context(read)?;
    let impact = with_progress("affected", &logs, |p| {
        tally_incident::report::impact_of(&named, &dets, &|s| known(o, s), p)
    })
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("cannot read the access logs for incident {id}"))?;
    let text = affected_text(&impact, format);
    write_out(output, &text)?;
    eprintln!(
        "{} subject(s): {} exposed, {} attempted only",
        impact.subjects.len(),
        impact.exposed_subjects(),
        impact.attempted_subjects()
    );
    if !impact.unknown_subjects.is_empty() {
        eprintln!(
            "{} token(s) named {} member id(s) that do not exist: evidence of minting, not affected people (not listed)",
            impact.unknown_subject_tokens,
            impact.unknown_subjects.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally incident scan --kid KID`: every access by a token of KID that the
/// ledger cannot tally.
pub(super) fn scan(
    o: &Opened,
    kid: &str,
    since: Option<&str>,
    format: &str,
    logs: &LogsArg,
) -> Result<ExitCode> {
    let since_ms = since
        .map(|s| parse_time("since", s))
        .transpose()?
        .map_or(i64::MIN, |s| s * 1000);
    let logs = open_logs(&o.c.data, &logs.access_logs)?;
    let named = sources(&logs);
    // Re-evaluate each token of that key against the ledger now: a
    // token id the ledger does not hold for this key is untallied,
    // whatever verdict was recorded at the time.
    // The ledger is verified first (every leaf, every checkpoint).
    let tallied: std::collections::HashSet<String> =
        tally_server::keyring::lifecycle::all_records(&o.dir)
            .context("the ledger does not verify, so it cannot vouch for any token")?
            .into_iter()
            .filter(|r| r.kid == kid)
            .map(|r| r.token_id)
            .collect();
    let mut select = |ev: &StoredEvent| {
        if ev.kid.as_deref() != Some(kid) {
            return false;
        }
        if ev.proves_stolen_key() {
            return true;
        }
        ev.token_id
            .as_ref()
            .is_some_and(|jti| !tallied.contains(jti))
    };
    // A forensic scan lists every subject the tokens named, in the directory
    // or not.
    let impact = with_progress("scan", &logs, |p| {
        tally_incident::report::scan(
            &named,
            since_ms,
            i64::MAX,
            &mut select,
            &tally_incident::report::all_known,
            p,
        )
    })
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("cannot scan the access logs for tokens of key {kid}"))?;
    let text = affected_text(&impact, format);
    out!("{text}");
    eprintln!(
        "{} access event(s) examined; {} request(s) with untallied tokens of key {kid}; {} account(s): {} exposed, {} attempted only",
        impact.scanned,
        impact.requests_exposed + impact.requests_attempted,
        impact.subjects.len(),
        impact.exposed_subjects(),
        impact.attempted_subjects()
    );
    Ok(ExitCode::SUCCESS)
}
