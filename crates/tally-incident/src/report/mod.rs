//! What an incident did, exactly, from the access log: the affected customers
//! (exposed: the request went through and data came back; attempted: it was
//! refused, or went through without data), the
//! requests per minute by verdict, and the regulator-ready report in JSON,
//! Markdown and self-contained HTML.
//!
//! A request *exposed* data when the gate let it through and the upstream
//! answered with success (behind nginx, where tally does not see the answer,
//! every request let through counts as exposed); every other attack request
//! is *attempted*. What the gate did is counted apart: refused (blocked),
//! allowed in monitor mode (judged invalid, let through: `passed` with a
//! refusal's verdict), or allowed with a valid token.
//!
//! A subject the directory does not hold (a member id that does not exist)
//! is not an affected customer: its requests are counted apart, as evidence
//! of minting.
//!
//! An access event belongs to the attack when it carries a forged token
//! (`not_issued`, `altered`), or when its client address, device or token id
//! is one the incident's detections name (a scraper, a replayed token, a
//! visitor of a honey account). Nothing is sampled or estimated.
//!
//! # Inside
//!
//! `impact` (the scan of the access logs), `model` (the typed [`Report`]),
//! `document` (the report built from the stores), `markdown`, `html` and
//! `chart` (its renderings, through the askama templates in `templates/`;
//! the JSON form is the report's `Serialize`), `csv` (the affected
//! customers), `summary` (an incident's clocks and summary as JSON), and
//! `words` (the nature of the breach per rule, timeline entries and
//! containment in sentences).

mod chart;
mod csv;
mod document;
mod html;
mod impact;
mod markdown;
mod model;
mod summary;
#[cfg(test)]
mod tests;
mod words;

pub use chart::chart_svg;
pub use csv::affected_csv;
pub use document::{Case, build, report_for};
pub use html::html;
pub use impact::{
    AffectedSubject, Evidence, Impact, Known, Source, StoredEvent, all_known, impact_of, scan,
};
pub use markdown::markdown;
pub use model::{
    Affected, CategoryCount, DetectionRow, Entry, IncidentHead, Minute, Obligation, Report, Utc,
    containment_text,
};
pub use summary::{clock_states, clocks_json, incident_json};
pub use words::{containment_words, entry_words, nature, rule_nature};
