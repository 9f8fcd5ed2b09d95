//! The regulator-ready report as typed data: [`Report`] and its sections,
//! built once from the stores ([`super::document::build`]) and rendered as
//! JSON (its `Serialize`), Markdown and HTML (askama templates).
//!
//! Invariant: the JSON form keeps the keys and value types the report has
//! always had (times as `YYYY-MM-DD HH:MM:SSZ` strings, counts as numbers,
//! absent times as `null`); tools and tests read it by key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::clocks::{ClockStatus, IncidentState};
use crate::detect::{Actor, Containment, Rule, Severity};
use crate::timefmt::utc;

/// An instant (unix seconds), shown and serialised as
/// `YYYY-MM-DD HH:MM:SSZ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc(pub i64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&utc(self.0))
    }
}

impl Serialize for Utc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The regulator-ready report: the incident, the nature and vector of the
/// attack, who and what it reached, likely consequences, measures taken and
/// proposed, contacts, the reporting obligations with their clocks, the
/// detections, the timeline and the attack requests per minute.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The incident.
    pub incident: IncidentHead,
    /// When the report was made.
    pub generated_at: Utc,
    /// The nature of the breach, in one paragraph.
    pub nature: String,
    /// How the attacker got in: one line per key in the wrong hands and per
    /// detection of another rule.
    pub attack_vector: Vec<String>,
    /// The first attack request in the access logs.
    pub first_malicious_use: Option<Utc>,
    /// The last one.
    pub last_malicious_use: Option<Utc>,
    /// When tally became aware.
    pub awareness: Utc,
    /// Who and what the attack reached.
    pub affected: Affected,
    /// What may follow for the affected customers.
    pub likely_consequences: Vec<String>,
    /// Actions, state changes and notes of the timeline.
    pub measures_taken: Vec<Entry>,
    /// Containment the detections suggest that was not taken yet.
    pub measures_proposed: Vec<Containment>,
    /// Contacts (`[contacts]` in tally.toml), by role.
    pub contacts: BTreeMap<String, String>,
    /// The reporting obligations, one per legal clock.
    pub regimes: Vec<Obligation>,
    /// The incident's detections.
    pub detections: Vec<DetectionRow>,
    /// The whole timeline.
    pub timeline: Vec<Entry>,
    /// Attack requests per minute, by verdict.
    pub per_minute: Vec<Minute>,
}

/// The incident a report is about.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentHead {
    /// Id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// State.
    pub state: IncidentState,
    /// Highest severity of its detections.
    pub severity: Severity,
    /// When it was opened.
    pub opened_at: Utc,
    /// When tally became aware.
    pub aware_at: Utc,
    /// When it was determined material, if it was.
    pub materiality_at: Option<Utc>,
}

/// Who and what the attack reached, from the access logs.
#[derive(Clone, Debug, Serialize)]
pub struct Affected {
    /// Customers at least one attack request for went through.
    pub subjects_exposed: usize,
    /// Customers whose attack requests were all refused.
    pub subjects_attempted_only: usize,
    /// Attack requests that went through.
    pub records_exposed: u64,
    /// Attack requests refused.
    pub records_attempted: u64,
    /// Attack requests with a forged token.
    pub forged_requests: u64,
    /// Of them, refused by containment before their tokens were weighed
    /// (the gate examined the tokens for the record).
    pub forged_refused_by_containment: u64,
    /// Attack requests refused by containment whose tokens were not
    /// examined: not known to be forged, not counted as forged.
    pub requests_unexamined: u64,
    /// Requests refused by containment during the attack, not examined and
    /// counted without their address (flood aggregation): they may belong
    /// to the attack.
    pub requests_unexamined_unattributed: u64,
    /// Attack requests the gate refused (blocked).
    pub records_refused: u64,
    /// Attack requests the gate judged a refusal but let through (allowed
    /// in monitor mode).
    pub records_allowed_monitor: u64,
    /// Attack requests with a valid token that the gate let through (a
    /// stolen or replayed token, a scraper's own session).
    pub records_allowed_valid: u64,
    /// Member ids the attack's tokens named that are not in the directory:
    /// evidence of minting, not affected people (not in the counts above).
    pub unknown_subjects: usize,
    /// Distinct tokens that named them.
    pub unknown_subject_tokens: u64,
    /// Attack requests for them.
    pub unknown_subject_requests: u64,
    /// Per data category.
    pub categories: Vec<CategoryCount>,
    /// Access events examined.
    pub events_scanned: u64,
    /// The access logs read.
    pub access_logs: Vec<String>,
}

/// Customers reached in one data category.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryCount {
    /// The category (`name`, `email`, `address`, …).
    pub category: String,
    /// Customers exposed.
    pub subjects_exposed: u64,
    /// Customers attempted only.
    pub subjects_attempted_only: u64,
}

/// One timeline entry (also a measure taken).
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// When.
    pub at: Utc,
    /// Who.
    pub by: String,
    /// `opened`, `detection`, `action`, `note`, `state`, …
    pub kind: String,
    /// Details, as stored.
    pub what: Value,
    /// The details in words.
    pub text: String,
}

impl Entry {
    /// The details for people: a string as it is, nothing as `-`, anything
    /// else as compact JSON.
    pub fn what_text(&self) -> String {
        text(&self.what)
    }
}

/// A value for people: a string as it is, `null` as `-`, anything else as
/// compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Proposed containment as the API takes it (compact JSON).
pub fn containment_text(c: &Containment) -> String {
    serde_json::to_string(c).unwrap_or_default()
}

/// One reporting obligation: a legal clock and what its report must hold.
#[derive(Clone, Debug, Serialize)]
pub struct Obligation {
    /// Regime id.
    pub regime: String,
    /// The clock's name.
    pub name: String,
    /// Who receives the report.
    pub authority: Option<String>,
    /// When the clock started.
    pub clock_starts_at: Utc,
    /// When the report is due.
    pub due_at: Utc,
    /// The same, in unix seconds.
    pub due_at_unix: i64,
    /// Where the clock stands.
    pub status: ClockStatus,
    /// Time left (negative once overdue), for people.
    pub remaining: String,
    /// What the report must contain.
    pub required_fields: Vec<String>,
}

impl Obligation {
    /// The status's name: `running`, `overdue`, `met` or `late`.
    pub fn state(&self) -> &'static str {
        match self.status {
            ClockStatus::Running { .. } => "running",
            ClockStatus::Overdue { .. } => "overdue",
            ClockStatus::Met { .. } => "met",
            ClockStatus::Late { .. } => "late",
        }
    }
}

/// One detection of the incident.
#[derive(Clone, Debug, Serialize)]
pub struct DetectionRow {
    /// Id.
    pub id: i64,
    /// Rule.
    pub rule: Rule,
    /// Severity.
    pub severity: Severity,
    /// First sighting.
    pub first_seen: Utc,
    /// Last sighting.
    pub last_seen: Utc,
    /// Findings merged.
    pub count: u64,
    /// Summary.
    pub summary: String,
    /// Actors named.
    pub actors: Vec<Actor>,
    /// Samples of evidence.
    pub samples: Vec<Value>,
}

/// Attack requests in one minute.
#[derive(Clone, Debug, Serialize)]
pub struct Minute {
    /// The minute's start.
    pub minute: Utc,
    /// Requests by verdict code.
    pub by_verdict: BTreeMap<String, u64>,
}
