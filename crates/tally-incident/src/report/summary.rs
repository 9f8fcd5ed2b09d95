//! An incident at a glance, as JSON: its legal clocks and where each
//! stands ([`clock_states`], [`clocks_json`]) and its summary
//! ([`incident_json`]), for the command line, the admin API and the
//! reminders of the watch.
//!
//! Invariant: a clock's status counts the submissions matched to it by
//! [`crate::facts::submitted_at`], so the report, the listing and the
//! reminders agree on which reports are still due.

use serde_json::{Value, json};

use crate::clocks::{self, IncidentFacts, Regime};
use crate::store::{Incident, IncidentStore};

/// An incident's legal clocks at `now`, as JSON (`regime`, `name`,
/// `starts_at`, `due_at`, `status`, `remaining`).
pub fn clocks_json(
    store: &IncidentStore,
    inc: &Incident,
    regimes: &[Regime],
    now: i64,
) -> Vec<Value> {
    let facts = crate::facts::facts_of(store, inc);
    let subs = store.submissions(inc.id).unwrap_or_default();
    clock_states(regimes, &facts, &subs, now)
        .into_iter()
        .map(|(c, status)| {
            json!({
                "regime": c.regime_id, "name": c.name, "starts_at": c.starts_at, "due_at": c.due_at,
                "status": status,
                "remaining": clocks::format_duration(c.due_at - now),
            })
        })
        .collect()
}

/// Every clock that runs for `facts`, with where it stands at `now` given
/// the reports made (matched to clocks by [`crate::facts::submitted_at`]).
pub fn clock_states(
    regimes: &[Regime],
    facts: &IncidentFacts,
    submissions: &[crate::store::Submission],
    now: i64,
) -> Vec<(clocks::Clock, clocks::ClockStatus)> {
    let all = clocks::clocks(regimes, facts);
    let sent = crate::facts::submitted_at(&all, submissions);
    all.into_iter()
        .zip(sent)
        .map(|(c, submitted)| {
            let status = clocks::status(&c, now, submitted);
            (c, status)
        })
        .collect()
}

/// One incident as JSON: the summary (`id`, `state`, `severity`, `title`,
/// times, `clocks`, `next_deadline`) and, with `detail`, its detections and
/// timeline.
pub fn incident_json(
    store: &IncidentStore,
    inc: &Incident,
    regimes: &[Regime],
    now: i64,
    detail: bool,
) -> Value {
    let clocks = clocks_json(store, inc, regimes, now);
    let next = clocks
        .iter()
        .filter(|k| k["status"]["state"] == "running" || k["status"]["state"] == "overdue")
        .min_by_key(|k| k["due_at"].as_i64().unwrap_or(i64::MAX))
        .cloned();
    let mut doc = json!({
        "id": inc.id, "state": inc.state.as_str(), "severity": inc.severity.as_str(),
        "title": inc.title, "opened_at": inc.opened_at, "aware_at": inc.aware_at,
        "materiality_at": inc.materiality_at, "updated_at": inc.updated_at,
        "clocks": clocks, "next_deadline": next,
    });
    if detail {
        let dets = store.detections(inc.id).unwrap_or_default();
        let timeline = store.timeline(inc.id).unwrap_or_default();
        doc["detections"] = Value::from(
            dets.iter()
                .map(|d| json!({"id": d.id, "detection": d.detection}))
                .collect::<Vec<_>>(),
        );
        doc["timeline"] = Value::from(
            timeline
                .iter()
                .map(|t| json!({"at": t.at, "actor": t.actor, "kind": t.kind, "body": t.body}))
                .collect::<Vec<_>>(),
        );
    }
    doc
}
