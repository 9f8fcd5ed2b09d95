//! The facts an incident's legal clocks are decided on: which regimes apply
//! (awareness, materiality, outside access, confirmed facts) and which
//! submission answered which clock.

use std::collections::HashMap;

use crate::clocks::{Clock, IncidentFacts};
use crate::detect::{ActorKind, Rule, Severity};
use crate::store::{Incident, IncidentStore, Submission};

/// Which submission answers which clock: per regime, the clocks in order of
/// their start are answered by that regime's submissions in time order (the
/// first report is the initial one, each later one a supplementary report).
pub fn submitted_at(clocks: &[Clock], subs: &[Submission]) -> Vec<Option<i64>> {
    let mut out = vec![None; clocks.len()];
    let mut by_regime: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in clocks.iter().enumerate() {
        by_regime.entry(c.regime_id.as_str()).or_default().push(i);
    }
    for (regime, mut idx) in by_regime {
        idx.sort_by_key(|i| clocks[*i].starts_at);
        let mut times: Vec<i64> = subs
            .iter()
            .filter(|s| s.regime == regime)
            .map(|s| s.submitted_at)
            .collect();
        times.sort_unstable();
        for (i, t) in idx.into_iter().zip(times) {
            out[i] = Some(t);
        }
    }
    out
}

/// The facts that decide which regimes apply: awareness, materiality, and
/// whether outsiders got in (a forged token, a scraping actor, a honey account).
pub fn facts_of(store: &IncidentStore, inc: &Incident) -> IncidentFacts {
    let dets = store.detections(inc.id).unwrap_or_default();
    let outside = dets.iter().any(|d| {
        matches!(
            d.detection.rule,
            Rule::ForgedToken | Rule::MassAccess | Rule::CanaryAccount | Rule::TokenReplay
        )
    });
    let confirmed: Vec<i64> = dets
        .iter()
        .filter(|d| d.detection.severity >= Severity::High)
        .map(|d| d.detection.first_seen)
        .filter(|t| *t > inc.aware_at)
        .collect();
    // The exact subject count needs a scan of the access log (the report
    // does one); here, the subjects the detections name are a lower bound.
    let named: std::collections::HashSet<&str> = dets
        .iter()
        .flat_map(|d| d.detection.actors.iter())
        .filter(|a| a.kind == ActorKind::Subject)
        .map(|a| a.value.as_str())
        .collect();
    IncidentFacts {
        aware_at: inc.aware_at,
        affected_subjects: named.len() as u64,
        outside_access: outside,
        materiality_at: inc.materiality_at,
        confirmed_facts_at: confirmed,
    }
}
