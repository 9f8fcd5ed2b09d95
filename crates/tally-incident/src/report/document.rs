//! The regulator-ready report built from the stores: an incident's stored
//! [`Case`] and the [`Impact`] read from the access logs make one typed
//! [`Report`].
//!
//! The JSON, Markdown and HTML forms are all rendered from that report
//! alone, so the three always say the same thing.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::impact::{Evidence, Impact, Known, Source, impact_of};
use super::model::{
    Affected, CategoryCount, DetectionRow, Entry, IncidentHead, Minute, Obligation, Report, Utc,
};
use super::summary::clock_states;
use crate::clocks::{self, IncidentFacts, Regime};
use crate::detect::{ActorKind, Containment, Rule};
use crate::store::{Incident, IncidentStore, StoredDetection, Submission, TimelineEntry};

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
    pub timeline: Vec<TimelineEntry>,
    /// Reports made to authorities.
    pub submissions: Vec<Submission>,
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

/// Builds the report from an incident's stored case and the impact read
/// from the access logs, at `now`.
pub fn build(
    case: &Case,
    impact: &Impact,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
) -> Report {
    let (inc, detections, timeline) = (&case.incident, &case.detections[..], &case.timeline[..]);
    let evidence = Evidence::of(detections);
    let categories = impact.categories();
    Report {
        incident: IncidentHead {
            id: inc.id,
            title: inc.title.clone(),
            state: inc.state,
            severity: inc.severity,
            opened_at: Utc(inc.opened_at),
            aware_at: Utc(inc.aware_at),
            materiality_at: inc.materiality_at.map(Utc),
        },
        generated_at: Utc(now),
        nature: super::words::nature(
            &detections
                .iter()
                .map(|d| d.detection.rule)
                .collect::<Vec<_>>(),
            detections.len(),
        ),
        attack_vector: vectors(&evidence, detections, impact),
        first_malicious_use: impact.first_ms.map(|m| Utc(m.div_euclid(1000))),
        last_malicious_use: impact.last_ms.map(|m| Utc(m.div_euclid(1000))),
        awareness: Utc(inc.aware_at),
        affected: Affected {
            subjects_exposed: impact.exposed_subjects(),
            subjects_attempted_only: impact.attempted_subjects(),
            records_exposed: impact.requests_exposed,
            records_attempted: impact.requests_attempted,
            forged_requests: impact.forged_requests,
            forged_refused_by_containment: impact.forged_refused_by_containment,
            requests_unexamined: impact.requests_unexamined,
            requests_unexamined_unattributed: impact.requests_unexamined_unattributed,
            records_refused: impact.requests_refused,
            records_allowed_monitor: impact.requests_allowed_monitor,
            records_allowed_valid: impact.requests_allowed_valid,
            unknown_subjects: impact.unknown_subjects.len(),
            unknown_subject_tokens: impact.unknown_subject_tokens,
            unknown_subject_requests: impact.unknown_subjects.values().sum(),
            categories: categories
                .iter()
                .map(|(c, (e, a))| CategoryCount {
                    category: c.clone(),
                    subjects_exposed: *e,
                    subjects_attempted_only: *a,
                })
                .collect(),
            events_scanned: impact.scanned,
            access_logs: impact.sources.clone(),
        },
        likely_consequences: consequences(&categories),
        measures_taken: timeline
            .iter()
            .filter(|t| t.kind == "action" || t.kind == "state" || t.kind == "note")
            .map(|t| entry(inc.id, t))
            .collect(),
        measures_proposed: proposed(detections, timeline),
        contacts: contacts.clone(),
        regimes: obligations(case, impact, &evidence, regimes, now),
        detections: detections
            .iter()
            .map(|d| DetectionRow {
                id: d.id,
                rule: d.detection.rule,
                severity: d.detection.severity,
                first_seen: Utc(d.detection.first_seen),
                last_seen: Utc(d.detection.last_seen),
                count: d.detection.count,
                summary: d.detection.summary.clone(),
                actors: d.detection.actors.clone(),
                samples: d.detection.samples.clone(),
            })
            .collect(),
        timeline: timeline.iter().map(|t| entry(inc.id, t)).collect(),
        per_minute: impact
            .per_minute
            .iter()
            .map(|(m, v)| Minute {
                minute: Utc(m * 60),
                by_verdict: v.clone(),
            })
            .collect(),
    }
}

fn entry(incident: i64, t: &TimelineEntry) -> Entry {
    Entry {
        at: Utc(t.at),
        by: t.actor.clone(),
        kind: t.kind.clone(),
        text: super::words::entry_words(incident, &t.kind, &t.body),
        what: t.body.clone(),
    }
}

/// How the attacker got in: each key in the wrong hands, then the summary
/// of each detection of another rule. A `mass_access` summary is the
/// detector's estimate (a sketch, over its window): the exact count of
/// distinct accounts its actor asked for, from the access log this report
/// scanned, follows it.
fn vectors(evidence: &Evidence, detections: &[StoredDetection], impact: &Impact) -> Vec<String> {
    let mut vectors = Vec::new();
    for kid in &evidence.forged_kids {
        let named = impact
            .subjects_by_actor
            .get(&format!("{} {kid}", ActorKind::Key.as_str()))
            .map(|n| format!(", naming exactly {n} distinct subjects (customers, and any member ids that do not exist)"))
            .unwrap_or_default();
        vectors.push(format!("tokens signed with key {kid} that the ledger cannot tally (the key is in the wrong hands){named}"));
    }
    for d in detections {
        let det = &d.detection;
        if det.rule == Rule::ForgedToken {
            continue;
        }
        let exact: Vec<String> = det
            .actors
            .iter()
            .filter_map(|a| {
                let key = format!("{} {}", a.kind.as_str(), a.value);
                impact
                    .subjects_by_actor
                    .get(&key)
                    .map(|n| format!("{key} asked for exactly {n} distinct subjects"))
            })
            .collect();
        if det.rule == Rule::MassAccess && !exact.is_empty() {
            vectors.push(format!(
                "{} (the detector's estimate, from a sketch over its window); in the whole access log, {}",
                det.summary,
                exact.join("; ")
            ));
        } else {
            vectors.push(det.summary.clone());
        }
    }
    vectors
}

/// The containment the detections suggest, less what was taken with
/// success, each once.
fn proposed(detections: &[StoredDetection], timeline: &[TimelineEntry]) -> Vec<Containment> {
    let taken: Vec<&Value> = timeline
        .iter()
        .filter(|t| t.kind == "action" && t.body["ok"] == json!(true))
        .map(|t| &t.body["action"])
        .collect();
    let mut out: Vec<Containment> = Vec::new();
    for c in detections.iter().flat_map(|d| d.detection.suggested.iter()) {
        let v = serde_json::to_value(c).unwrap_or(Value::Null);
        if !taken.contains(&&v) && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// The reporting obligations: every clock that runs for the incident, with
/// where it stands at `now`.
fn obligations(
    case: &Case,
    impact: &Impact,
    evidence: &Evidence,
    regimes: &[Regime],
    now: i64,
) -> Vec<Obligation> {
    let inc = &case.incident;
    let facts = IncidentFacts {
        aware_at: inc.aware_at,
        affected_subjects: impact.subjects.len() as u64,
        outside_access: !evidence.forged_kids.is_empty() || !evidence.actors.is_empty(),
        materiality_at: inc.materiality_at,
        confirmed_facts_at: case
            .detections
            .iter()
            .map(|d| d.detection.first_seen)
            .filter(|t| *t > inc.aware_at)
            .collect(),
    };
    clock_states(regimes, &facts, &case.submissions, now)
        .into_iter()
        .map(|(c, status)| {
            let regime = regimes.iter().find(|r| r.id == c.regime_id);
            Obligation {
                regime: c.regime_id.clone(),
                name: c.name.clone(),
                authority: regime.map(|r| r.authority.clone()),
                clock_starts_at: Utc(c.starts_at),
                due_at: Utc(c.due_at),
                due_at_unix: c.due_at,
                status,
                remaining: clocks::format_duration(c.due_at - now),
                required_fields: regime
                    .map(|r| r.required_fields.clone())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Everything the report needs, read from the stores. `known` says whether
/// a subject is in the directory: the others are member ids that do not
/// exist, reported apart from the affected customers.
#[allow(clippy::too_many_arguments)]
pub fn report_for(
    store: &IncidentStore,
    logs: &[Source<'_>],
    id: i64,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
    known: Known<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Report, Impact), String> {
    let case = Case::load(store, id)?;
    let impact = impact_of(logs, &case.detections, known, progress)?;
    Ok((build(&case, &impact, regimes, contacts, now), impact))
}
