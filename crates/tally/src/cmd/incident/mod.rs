//! `tally incident …`: list, inspect, act on and report incidents, against
//! the data directory of a running or stopped server.

mod act;
mod impact;
mod pdf;
mod store;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use self::impact::LogsArg;
use self::store::Opened;
use super::Globals;

#[derive(Subcommand)]
pub(crate) enum IncidentCmd {
    /// List incidents with their state and the nearest reporting deadline.
    List {
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// One incident: detections, legal clocks, timeline.
    Show {
        /// Incident id.
        id: i64,
        /// `text` or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Acknowledge: someone is on it (recorded on the timeline).
    Ack {
        /// Incident id.
        id: i64,
        /// Who (default: $USER).
        #[arg(long)]
        actor: Option<String>,
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
    },
    /// The regulator-ready report.
    Report {
        /// Incident id.
        id: i64,
        /// `md`, `json`, `html`, or `pdf` (printed from the HTML by headless
        /// Chromium; needs --output).
        #[arg(long, default_value = "md", value_parser = ["md", "json", "html", "pdf"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        logs: LogsArg,
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
    },
    /// Verify the incident audit log (hash chain and timeline).
    Verify,
}

pub(crate) fn run(g: &Globals, cmd: IncidentCmd) -> Result<ExitCode> {
    let o = Opened::open(g)?;
    match cmd {
        IncidentCmd::List { format, .. } => view::list(&o, &format),
        IncidentCmd::Show { id, format, .. } => view::show(&o, id, &format),
        IncidentCmd::Ack { id, actor, .. } => act::ack(&o, id, actor.as_deref()),
        IncidentCmd::Note {
            id, text, actor, ..
        } => act::note(&o, id, &text, actor.as_deref()),
        IncidentCmd::Contain {
            id,
            apply_suggested,
            actor,
            ..
        } => act::contain(&o, id, apply_suggested, actor.as_deref()),
        IncidentCmd::Submit {
            id,
            regime,
            reference,
            actor,
            ..
        } => act::submit(&o, id, &regime, &reference, actor.as_deref()),
        IncidentCmd::Material { id, at, actor, .. } => {
            act::material(&o, id, at.as_deref(), actor.as_deref())
        }
        IncidentCmd::Close {
            id, note, actor, ..
        } => act::close(&o, id, &note, actor.as_deref()),
        IncidentCmd::Report {
            id,
            format,
            output,
            logs,
            ..
        } => impact::report(&o, id, &format, output.as_deref(), &logs),
        IncidentCmd::Affected {
            id,
            format,
            output,
            logs,
            ..
        } => impact::affected(&o, id, &format, output.as_deref(), &logs),
        IncidentCmd::Scan {
            kid,
            since,
            format,
            logs,
            ..
        } => impact::scan(&o, &kid, since.as_deref(), &format, &logs),
        IncidentCmd::Verify => act::verify(&o),
    }
}
