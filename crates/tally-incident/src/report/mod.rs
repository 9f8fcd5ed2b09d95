//! What an incident did, exactly, from the access log: the affected customers
//! (exposed: the request went through; attempted: it was refused), the
//! requests per minute by verdict, and the regulator-ready report in JSON,
//! Markdown and self-contained HTML.
//!
//! A request *exposed* data when the gate let it through and the upstream
//! answered with success (behind nginx, where tally does not see the answer,
//! every request let through counts as exposed); every other attack request
//! is *attempted*.
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
//! customers), and `summary` (an incident's clocks and summary as JSON).

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

pub use chart::chart_svg;
pub use csv::affected_csv;
pub use document::{Case, build, report_for};
pub use html::html;
pub use impact::{AffectedSubject, Evidence, Impact, Source, StoredEvent, impact_of, scan};
pub use markdown::markdown;
pub use model::{
    Affected, CategoryCount, DetectionRow, Entry, IncidentHead, Minute, Obligation, Report, Utc,
    containment_text,
};
pub use summary::{clock_states, clocks_json, incident_json};
