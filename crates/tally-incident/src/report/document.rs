//! The regulator-ready report as one JSON document: the incident, the
//! nature and vector of the attack, who and what it reached, likely
//! consequences, measures taken and proposed, contacts, and the reporting
//! obligations with their clocks.
//!
//! The Markdown and HTML renderings are made from this document alone, so
//! the three forms always say the same thing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::impact::{Evidence, Impact, Source, impact_of};
use super::summary::clock_states;
use crate::clocks::{self, IncidentFacts, Regime};
use crate::detect::{Containment, Rule};
use crate::store::{Incident, IncidentStore, StoredDetection};
use crate::timefmt::utc;

fn consequences(categories: &BTreeMap<String, (u64, u64)>) -> Vec<String> {
    let mut out = Vec::new();
    let has = |c: &str| categories.get(c).is_some_and(|(e, _)| *e > 0);
    if has("name") || has("email") {
        out.push("Phishing and impersonation aimed at the affected customers, using their names and e-mail addresses.".to_string());
    }
    if has("address") {
        out.push(
            "Physical mail fraud, stalking or social engineering using postal addresses."
                .to_string(),
        );
    }
    if has("orders") {
        out.push(
            "Fraud that exploits knowledge of purchase history (fake delivery or refund messages)."
                .to_string(),
        );
    }
    if has("phone") {
        out.push("Smishing and voice phishing.".to_string());
    }
    if out.is_empty() {
        out.push(
            "No request of the attack went through: no data is known to have been exposed."
                .to_string(),
        );
    }
    out
}

/// Everything stored about one incident.
pub struct Case {
    /// The incident.
    pub incident: Incident,
    /// Its detections.
    pub detections: Vec<StoredDetection>,
    /// Its timeline.
    pub timeline: Vec<crate::store::TimelineEntry>,
    /// Reports made to authorities.
    pub submissions: Vec<crate::store::Submission>,
}

impl Case {
    /// Reads incident `id`.
    pub fn load(store: &IncidentStore, id: i64) -> Result<Case, String> {
        Ok(Case {
            incident: store
                .incident(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no incident {id} (tally incident list)"))?,
            detections: store.detections(id).map_err(|e| e.to_string())?,
            timeline: store.timeline(id).map_err(|e| e.to_string())?,
            submissions: store.submissions(id).map_err(|e| e.to_string())?,
        })
    }
}

/// Builds the report document (the JSON form; Markdown and HTML render it).
pub fn build(
    case: &Case,
    impact: &Impact,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
) -> Value {
    let (inc, detections, timeline, submissions) = (
        &case.incident,
        &case.detections[..],
        &case.timeline[..],
        &case.submissions[..],
    );
    let evidence = Evidence::of(detections);
    let mut vectors = Vec::new();
    for kid in &evidence.forged_kids {
        vectors.push(format!("tokens signed with key {kid} that the ledger cannot tally (the key is in the wrong hands)"));
    }
    for d in detections {
        match d.detection.rule {
            Rule::ForgedToken => {}
            _ => vectors.push(d.detection.summary.clone()),
        }
    }
    let facts = IncidentFacts {
        aware_at: inc.aware_at,
        affected_subjects: impact.subjects.len() as u64,
        outside_access: !evidence.forged_kids.is_empty() || !evidence.actors.is_empty(),
        materiality_at: inc.materiality_at,
        confirmed_facts_at: detections
            .iter()
            .map(|d| d.detection.first_seen)
            .filter(|t| *t > inc.aware_at)
            .collect(),
    };
    let regimes_json: Vec<Value> = clock_states(regimes, &facts, submissions, now)
        .into_iter()
        .map(|(c, status)| {
            let regime = regimes.iter().find(|r| r.id == c.regime_id);
            json!({
                "regime": c.regime_id,
                "name": c.name,
                "authority": regime.map(|r| r.authority.clone()),
                "clock_starts_at": utc(c.starts_at),
                "due_at": utc(c.due_at),
                "due_at_unix": c.due_at,
                "status": status,
                "remaining": clocks::format_duration(c.due_at - now),
                "required_fields": regime.map(|r| r.required_fields.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let taken: Vec<Value> = timeline
        .iter()
        .filter(|t| t.kind == "action" || t.kind == "state" || t.kind == "note")
        .map(|t| json!({"at": utc(t.at), "by": t.actor, "kind": t.kind, "what": t.body}))
        .collect();
    let taken_actions: Vec<&Value> = timeline
        .iter()
        .filter(|t| t.kind == "action" && t.body["ok"] == json!(true))
        .map(|t| &t.body["action"])
        .collect();
    let proposed: Vec<&Containment> = detections
        .iter()
        .flat_map(|d| d.detection.suggested.iter())
        .filter(|c| {
            let v = serde_json::to_value(c).unwrap_or(Value::Null);
            !taken_actions.contains(&&v)
        })
        .collect::<Vec<_>>();
    let mut proposed_dedup: Vec<&Containment> = Vec::new();
    for c in proposed {
        if !proposed_dedup.contains(&c) {
            proposed_dedup.push(c);
        }
    }
    let categories = impact.categories();
    json!({
        "incident": {
            "id": inc.id,
            "title": inc.title,
            "state": inc.state.as_str(),
            "severity": inc.severity.as_str(),
            "opened_at": utc(inc.opened_at),
            "aware_at": utc(inc.aware_at),
            "materiality_at": inc.materiality_at.map(utc),
        },
        "generated_at": utc(now),
        "nature": format!(
            "Unauthorised access to customer data by an actor outside the regular issuance process. {} detection(s): {}.",
            detections.len(),
            detections.iter().map(|d| d.detection.rule.code()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
        ),
        "attack_vector": vectors,
        "first_malicious_use": impact.first_ms.map(|m| utc(m.div_euclid(1000))),
        "last_malicious_use": impact.last_ms.map(|m| utc(m.div_euclid(1000))),
        "awareness": utc(inc.aware_at),
        "affected": {
            "subjects_exposed": impact.exposed_subjects(),
            "subjects_attempted_only": impact.attempted_subjects(),
            "records_exposed": impact.requests_exposed,
            "records_attempted": impact.requests_attempted,
            "forged_requests": impact.forged_requests,
            "categories": categories.iter().map(|(c, (e, a))| json!({"category": c, "subjects_exposed": e, "subjects_attempted_only": a})).collect::<Vec<_>>(),
            "events_scanned": impact.scanned,
            "access_logs": impact.sources,
        },
        "likely_consequences": consequences(&categories),
        "measures_taken": taken,
        "measures_proposed": proposed_dedup,
        "contacts": contacts,
        "regimes": regimes_json,
        "detections": detections.iter().map(|d| json!({
            "id": d.id, "rule": d.detection.rule.code(), "severity": d.detection.severity.as_str(),
            "first_seen": utc(d.detection.first_seen), "last_seen": utc(d.detection.last_seen),
            "count": d.detection.count, "summary": d.detection.summary,
            "actors": d.detection.actors, "samples": d.detection.samples,
        })).collect::<Vec<_>>(),
        "timeline": timeline.iter().map(|t| json!({"at": utc(t.at), "by": t.actor, "kind": t.kind, "what": t.body})).collect::<Vec<_>>(),
        "per_minute": impact.per_minute.iter().map(|(m, v)| json!({"minute": utc(m * 60), "by_verdict": v})).collect::<Vec<_>>(),
    })
}

/// Everything the report needs, read from the stores.
pub fn report_for(
    store: &IncidentStore,
    logs: &[Source<'_>],
    id: i64,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<(Value, Impact), String> {
    let case = Case::load(store, id)?;
    let impact = impact_of(logs, &case.detections, progress)?;
    Ok((build(&case, &impact, regimes, contacts, now), impact))
}
