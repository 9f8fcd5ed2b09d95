//! `tally incident …`: list, inspect, act on and report incidents, against
//! the data directory of a running or stopped server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};
use tally_incident::access::AccessLog;
use tally_incident::clocks::IncidentState;
use tally_incident::timefmt;
use tally_server::keyring::DataDir;

use crate::DataArg;

#[derive(Subcommand)]
pub enum IncidentCmd {
    /// List incidents with their state and the nearest reporting deadline.
    List {
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// One incident: detections, legal clocks, timeline.
    Show {
        /// Incident id.
        id: i64,
        /// `text` or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Acknowledge: someone is on it (recorded on the timeline).
    Ack {
        /// Incident id.
        id: i64,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Add a note to the timeline.
    Note {
        /// Incident id.
        id: i64,
        /// The note.
        text: String,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Mark the incident contained, optionally taking every containment step
    /// its detections suggest (blocks, revocations, key compromise).
    Contain {
        /// Incident id.
        id: i64,
        /// Take the suggested containment steps.
        #[arg(long)]
        apply_suggested: bool,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Record the report to an authority under REGIME (e.g. kr_network_act,
    /// kr_pipa, gdpr_art33, sec_8k_105); the incident becomes `reported`.
    Submit {
        /// Incident id.
        id: i64,
        /// Regime id.
        regime: String,
        /// The authority's reference number or a note.
        #[arg(long, default_value = "")]
        reference: String,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Record that the incident was determined material (starts the SEC clock).
    Material {
        /// Incident id.
        id: i64,
        /// When (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Close the incident.
    Close {
        /// Incident id.
        id: i64,
        /// Closing note.
        #[arg(long, default_value = "")]
        note: String,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// The regulator-ready report.
    Report {
        /// Incident id.
        id: i64,
        /// `md`, `json` or `html`.
        #[arg(long, default_value = "md", value_parser = ["md", "json", "html"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        logs: LogsArg,
        #[command(flatten)]
        data: DataArg,
    },
    /// The affected customers, exactly, from the access log.
    Affected {
        /// Incident id.
        id: i64,
        /// `csv` or `json`.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        logs: LogsArg,
        #[command(flatten)]
        data: DataArg,
    },
    /// Re-evaluate the stored access log for tokens signed with KID that the
    /// ledger cannot tally, and list every account they touched.
    Scan {
        /// The signing key (a thumbprint may start with '-').
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// `csv` or `json`.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        #[command(flatten)]
        logs: LogsArg,
        #[command(flatten)]
        data: DataArg,
    },
    /// Verify the incident audit log (hash chain and timeline).
    Verify {
        #[command(flatten)]
        data: DataArg,
    },
}

fn data_of(cmd: &IncidentCmd) -> &DataArg {
    match cmd {
        IncidentCmd::List { data, .. }
        | IncidentCmd::Show { data, .. }
        | IncidentCmd::Ack { data, .. }
        | IncidentCmd::Note { data, .. }
        | IncidentCmd::Contain { data, .. }
        | IncidentCmd::Submit { data, .. }
        | IncidentCmd::Material { data, .. }
        | IncidentCmd::Close { data, .. }
        | IncidentCmd::Report { data, .. }
        | IncidentCmd::Affected { data, .. }
        | IncidentCmd::Scan { data, .. }
        | IncidentCmd::Verify { data } => data,
    }
}

fn write_out(output: Option<&Path>, text: &str) -> Result<(), String> {
    match output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
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
fn open_logs(data: &Path, extra: &[PathBuf]) -> Result<Vec<(String, AccessLog)>, String> {
    std::iter::once(data.join("access.db"))
        .chain(extra.iter().cloned())
        .map(|p| {
            let log =
                AccessLog::open(&p).map_err(|e| format!("access log {}: {e}", p.display()))?;
            Ok((p.display().to_string(), log))
        })
        .collect()
}

/// The opened logs as the report reads them.
fn sources(logs: &[(String, AccessLog)]) -> Vec<tally_incident::report::Source<'_>> {
    logs.iter().map(|(name, log)| (name.clone(), log)).collect()
}

/// The affected customers of `impact` as `json` or CSV.
fn affected_text(impact: &tally_incident::report::Impact, format: &str) -> String {
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

/// The access logs a report reads.
#[derive(clap::Args)]
pub struct LogsArg {
    /// Also read this access log (another node's `access.db`, in a fleet);
    /// repeat for each node. This node's own is always read.
    #[arg(long = "access-log", value_name = "PATH")]
    access_logs: Vec<PathBuf>,
}

pub fn run(cfg: Option<&Path>, cmd: IncidentCmd) -> Result<ExitCode, String> {
    let c = crate::config(cfg, data_of(&cmd), None)?;
    let dir = DataDir::open_existing(&c).map_err(|e| e.to_string())?;
    let store = dir.incidents().map_err(|e| e.to_string())?;
    let now = tally_store::clock::now_unix();
    let who = |a: &Option<String>| tally_server::keyring::lifecycle::actor(a.as_deref());
    let e = |e: tally_incident::store::IncidentError| format!("{e} ({})", e.code());
    match cmd {
        IncidentCmd::List { format, .. } => {
            let list = store.incidents().map_err(e)?;
            let rows: Vec<Value> = list
                .iter()
                .map(|i| tally_incident::report::incident_json(&store, i, &c.regimes, now, false))
                .collect();
            if format == "json" {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = vec![[
                "ID".to_string(),
                "STATE".into(),
                "SEVERITY".into(),
                "AWARE".into(),
                "NEXT DEADLINE".into(),
                "TITLE".into(),
            ]];
            for r in &rows {
                let next = &r["next_deadline"];
                table.push([
                    r["id"].to_string(),
                    r["state"].as_str().unwrap_or("").into(),
                    r["severity"].as_str().unwrap_or("").into(),
                    timefmt::utc(r["aware_at"].as_i64().unwrap_or(0)),
                    if next.is_null() {
                        "-".into()
                    } else {
                        format!(
                            "{} in {}",
                            next["regime"].as_str().unwrap_or(""),
                            next["remaining"].as_str().unwrap_or("")
                        )
                    },
                    r["title"].as_str().unwrap_or("").into(),
                ]);
            }
            crate::print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Show { id, format, .. } => {
            let inc = store
                .incident(id)
                .map_err(e)?
                .ok_or(format!("no incident {id}"))?;
            let dets = store.detections(id).map_err(e)?;
            let timeline = store.timeline(id).map_err(e)?;
            let clocks = tally_incident::report::clocks_json(&store, &inc, &c.regimes, now);
            if format == "json" {
                let doc =
                    tally_incident::report::incident_json(&store, &inc, &c.regimes, now, true);
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "incident {}  {}  severity {}",
                inc.id,
                inc.state.as_str(),
                inc.severity.as_str()
            );
            outln!("title      {}", inc.title);
            outln!("aware at   {}", timefmt::utc(inc.aware_at));
            outln!("opened at  {}", timefmt::utc(inc.opened_at));
            outln!("\nreporting deadlines");
            let mut t = vec![[
                "REGIME".to_string(),
                "DUE".into(),
                "STATUS".into(),
                "REMAINING".into(),
            ]];
            for k in &clocks {
                t.push([
                    k["name"].as_str().unwrap_or("").into(),
                    timefmt::utc(k["due_at"].as_i64().unwrap_or(0)),
                    k["status"]["state"].as_str().unwrap_or("").into(),
                    k["remaining"].as_str().unwrap_or("").into(),
                ]);
            }
            crate::print_table(&t);
            outln!("\ndetections");
            let mut t = vec![[
                "ID".to_string(),
                "RULE".into(),
                "SEVERITY".into(),
                "FIRST SEEN".into(),
                "COUNT".into(),
                "SUMMARY".into(),
            ]];
            for d in &dets {
                t.push([
                    d.id.to_string(),
                    d.detection.rule.code().into(),
                    d.detection.severity.as_str().into(),
                    timefmt::utc(d.detection.first_seen),
                    d.detection.count.to_string(),
                    d.detection.summary.clone(),
                ]);
            }
            crate::print_table(&t);
            outln!("\ntimeline");
            for t in &timeline {
                outln!(
                    "  {}  {:<10} {:<20} {}",
                    timefmt::utc(t.at),
                    t.kind,
                    t.actor,
                    t.body
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Ack { id, actor, .. } => {
            store
                .append(id, now, &who(&actor), "ack", &json!({"acknowledged": true}))
                .map_err(e)?;
            outln!("incident {id} acknowledged");
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Note {
            id, text, actor, ..
        } => {
            if text.trim().is_empty() {
                return Err("the note is empty".into());
            }
            store
                .append(id, now, &who(&actor), "note", &json!({"text": text}))
                .map_err(e)?;
            outln!("note added to incident {id}");
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Contain {
            id,
            apply_suggested,
            actor,
            ..
        } => {
            let by = who(&actor);
            if apply_suggested {
                let mut steps = Vec::new();
                for d in store.detections(id).map_err(e)? {
                    for s in d.detection.suggested {
                        if !steps.contains(&s) {
                            steps.push(s);
                        }
                    }
                }
                for s in &steps {
                    let outcome =
                        tally_server::contain::take(&dir, s, &format!("incident {id}"), &by, now);
                    let (ok, detail) = match outcome {
                        Ok(d) => (true, d),
                        Err(d) => (false, d),
                    };
                    outln!("{} {detail}", if ok { "done  " } else { "failed" });
                    store
                        .append(
                            id,
                            now,
                            &by,
                            "action",
                            &json!({"action": s, "ok": ok, "detail": detail}),
                        )
                        .map_err(e)?;
                }
            }
            store
                .set_state(id, IncidentState::Contained, &by, now, "")
                .map_err(e)?;
            outln!("incident {id} contained");
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Submit {
            id,
            regime,
            reference,
            actor,
            ..
        } => {
            if !c.regimes.iter().any(|r| r.id == regime) {
                return Err(format!(
                    "unknown regime {regime:?}; configured: {}",
                    c.regimes
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let by = who(&actor);
            store.submit(id, &regime, &by, now, &reference).map_err(e)?;
            let inc = store
                .incident(id)
                .map_err(e)?
                .ok_or(format!("no incident {id}"))?;
            if inc.state.can_move_to(IncidentState::Reported) {
                store
                    .set_state(
                        id,
                        IncidentState::Reported,
                        &by,
                        now,
                        &format!("reported under {regime}"),
                    )
                    .map_err(e)?;
            }
            outln!("report under {regime} recorded for incident {id}");
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Material { id, at, actor, .. } => {
            let at = at
                .as_deref()
                .map(timefmt::parse_time)
                .transpose()?
                .unwrap_or(now);
            store.set_materiality(id, at, &who(&actor)).map_err(e)?;
            outln!("incident {id} determined material at {}", timefmt::utc(at));
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Close {
            id, note, actor, ..
        } => {
            store
                .set_state(id, IncidentState::Closed, &who(&actor), now, &note)
                .map_err(e)?;
            outln!("incident {id} closed");
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Report {
            id,
            format,
            output,
            logs: LogsArg { access_logs },
            ..
        } => {
            let logs = open_logs(&c.data, &access_logs)?;
            let named = sources(&logs);
            let (report, _impact) = with_progress("report", &logs, |p| {
                tally_incident::report::report_for(
                    &store,
                    &named,
                    id,
                    &c.regimes,
                    &c.contacts,
                    now,
                    p,
                )
            })?;
            let text = match format.as_str() {
                "json" => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                "html" => tally_incident::report::html(&report),
                _ => tally_incident::report::markdown(&report),
            };
            write_out(output.as_deref(), &text)?;
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Affected {
            id,
            format,
            output,
            logs: LogsArg { access_logs },
            ..
        } => {
            let logs = open_logs(&c.data, &access_logs)?;
            let named = sources(&logs);
            if store.incident(id).map_err(e)?.is_none() {
                return Err(format!("no incident {id} (tally incident list)"));
            }
            let dets = store.detections(id).map_err(e)?;
            let impact = with_progress("affected", &logs, |p| {
                tally_incident::report::impact_of(&named, &dets, p)
            })?;
            let text = affected_text(&impact, &format);
            write_out(output.as_deref(), &text)?;
            eprintln!(
                "{} subject(s): {} exposed, {} attempted only",
                impact.subjects.len(),
                impact.exposed_subjects(),
                impact.attempted_subjects()
            );
            Ok(ExitCode::SUCCESS)
        }
        IncidentCmd::Scan {
            kid,
            since,
            format,
            logs: LogsArg { access_logs },
            ..
        } => {
            let since_ms = since
                .as_deref()
                .map(timefmt::parse_time)
                .transpose()?
                .map_or(i64::MIN, |s| s * 1000);
            let logs = open_logs(&c.data, &access_logs)?;
            let named = sources(&logs);
            // Re-evaluate each token of that key against the ledger now: a
            // token id the ledger does not hold for this key is untallied,
            // whatever verdict was recorded at the time.
            // The ledger is verified first (every leaf, every checkpoint).
            let tallied: std::collections::HashSet<String> =
                tally_server::keyring::lifecycle::all_records(&dir)
                    .map_err(|e| {
                        format!("the ledger does not verify, so it cannot vouch for any token: {e}")
                    })?
                    .into_iter()
                    .filter(|r| r.kid == kid)
                    .map(|r| r.token_id)
                    .collect();
            let mut select = |ev: &tally_incident::report::StoredEvent| {
                if ev.kid.as_deref() != Some(kid.as_str()) {
                    return false;
                }
                if ev.proves_stolen_key() {
                    return true;
                }
                ev.token_id
                    .as_ref()
                    .is_some_and(|jti| !tallied.contains(jti))
            };
            let impact = with_progress("scan", &logs, |p| {
                tally_incident::report::scan(&named, since_ms, i64::MAX, &mut select, p)
            })?;
            let text = affected_text(&impact, &format);
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
        IncidentCmd::Verify { .. } => match store.verify_audit() {
            Ok(n) => {
                outln!("incident audit log verified: {n} timeline entries, chain intact");
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => Err(format!("incident audit log: {err} ({})", err.code())),
        },
    }
}
