//! Findings merged by key: a [`Detection`] per key, with first and last
//! sighting, a count and capped samples, held in a [`DetectionBook`] that
//! says which changed since it was last read.
//!
//! Invariants: a detection keeps at most [`MAX_ACTORS_PER_DETECTION`]
//! actors and suggested steps and [`MAX_SAMPLES`] evidence samples, the
//! first ones seen; merging never lowers a severity or narrows a sighting.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::finding::{Actor, Containment, Finding};
use super::rules::{Rule, Severity};

/// Findings merged by key: what the detections feed shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The finding key (stable id of what it is about).
    pub key: String,
    /// Rule code.
    pub rule: Rule,
    /// Severity.
    pub severity: Severity,
    /// First sighting, unix seconds.
    pub first_seen: i64,
    /// Last sighting, unix seconds.
    pub last_seen: i64,
    /// Findings merged.
    pub count: u64,
    /// Actors (at most [`MAX_ACTORS_PER_DETECTION`], first seen first).
    pub actors: Vec<Actor>,
    /// Samples of evidence (at most [`MAX_SAMPLES`]: the first ones).
    pub samples: Vec<Value>,
    /// Suggested containment (union, in order).
    pub suggested: Vec<Containment>,
    /// Summary of the first finding.
    pub summary: String,
}

/// Actors kept per detection.
pub const MAX_ACTORS_PER_DETECTION: usize = 50;

/// Evidence samples kept per detection.
pub const MAX_SAMPLES: usize = 5;

impl Detection {
    /// A detection made of one finding.
    pub fn from_finding(f: &Finding) -> Detection {
        let mut d = Detection {
            key: f.key.clone(),
            rule: f.rule,
            severity: f.severity,
            first_seen: f.at,
            last_seen: f.at,
            count: 0,
            actors: Vec::new(),
            samples: Vec::new(),
            suggested: Vec::new(),
            summary: f.summary.clone(),
        };
        d.merge(f);
        d
    }

    /// Adds a finding with the same key.
    pub fn merge(&mut self, f: &Finding) {
        self.count += 1;
        self.first_seen = self.first_seen.min(f.at);
        self.last_seen = self.last_seen.max(f.at);
        self.severity = self.severity.max(f.severity);
        for a in &f.actors {
            if self.actors.len() < MAX_ACTORS_PER_DETECTION && !self.actors.contains(a) {
                self.actors.push(a.clone());
            }
        }
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(f.evidence.clone());
        }
        for s in &f.suggested {
            if self.suggested.len() < MAX_ACTORS_PER_DETECTION && !self.suggested.contains(s) {
                self.suggested.push(s.clone());
            }
        }
    }
}

impl Detection {
    /// Merges another view of the same detection (same key), such as the one
    /// another server of a fleet has built from its own findings: first
    /// sighting the earlier, last sighting the later, severity the higher;
    /// actors, evidence samples and suggested containment the union, in
    /// order (this view's first), within the caps that [`Detection::merge`]
    /// keeps ([`MAX_ACTORS_PER_DETECTION`], [`MAX_SAMPLES`]); the summary of
    /// the view seen first.
    ///
    /// `count` is left alone: two views may hold the same findings (a server
    /// hands over its cumulative view each time), so only the caller knows
    /// how many of `other`'s are new.
    pub fn absorb(&mut self, other: &Detection) {
        if other.first_seen < self.first_seen {
            self.summary = other.summary.clone();
        }
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.severity = self.severity.max(other.severity);
        for a in &other.actors {
            if self.actors.len() < MAX_ACTORS_PER_DETECTION && !self.actors.contains(a) {
                self.actors.push(a.clone());
            }
        }
        for e in &other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(e) {
                self.samples.push(e.clone());
            }
        }
        for s in &other.suggested {
            if self.suggested.len() < MAX_ACTORS_PER_DETECTION && !self.suggested.contains(s) {
                self.suggested.push(s.clone());
            }
        }
    }
}

/// Detections by key, with the set changed since the last [`DetectionBook::take_dirty`].
#[derive(Debug, Default)]
pub struct DetectionBook {
    by_key: HashMap<String, Detection>,
    dirty: HashSet<String>,
    fresh: HashSet<String>,
}

impl DetectionBook {
    /// An empty book.
    pub fn new() -> DetectionBook {
        DetectionBook::default()
    }

    /// Puts back a stored detection (at start).
    pub fn restore(&mut self, d: Detection) {
        self.by_key.insert(d.key.clone(), d);
    }

    /// Records a finding.
    pub fn add(&mut self, f: &Finding) {
        match self.by_key.get_mut(&f.key) {
            Some(d) => d.merge(f),
            None => {
                self.by_key
                    .insert(f.key.clone(), Detection::from_finding(f));
                self.fresh.insert(f.key.clone());
            }
        }
        self.dirty.insert(f.key.clone());
    }

    /// Detections changed since the last call, each with whether it is new.
    pub fn take_dirty(&mut self) -> Vec<(Detection, bool)> {
        let mut out: Vec<(Detection, bool)> = self
            .dirty
            .drain()
            .filter_map(|k| {
                let new = self.fresh.remove(&k);
                self.by_key.get(&k).map(|d| (d.clone(), new))
            })
            .collect();
        out.sort_by(|a, b| {
            a.0.first_seen
                .cmp(&b.0.first_seen)
                .then(a.0.key.cmp(&b.0.key))
        });
        out
    }

    /// Marks a detection changed again (its store write failed).
    pub fn requeue(&mut self, key: &str, new: bool) {
        if self.by_key.contains_key(key) {
            self.dirty.insert(key.to_string());
            if new {
                self.fresh.insert(key.to_string());
            }
        }
    }

    /// Forgets detections last seen before `cutoff` (they stay stored).
    pub fn forget_before(&mut self, cutoff: i64) {
        self.by_key
            .retain(|k, d| d.last_seen >= cutoff || self.dirty.contains(k));
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ActorKind;
    use serde_json::json;

    fn finding(at: i64, ip: &str, rule: Rule) -> Finding {
        Finding {
            rule,
            severity: rule.severity(),
            key: "k".into(),
            at,
            actors: vec![Actor {
                kind: ActorKind::Ip,
                value: ip.into(),
            }],
            evidence: json!({"ip": ip}),
            suggested: vec![Containment::BlockActor {
                actor: Actor {
                    kind: ActorKind::Ip,
                    value: ip.into(),
                },
            }],
            summary: format!("seen from {ip}"),
        }
    }

    #[test]
    fn absorbing_another_view_merges_within_the_caps() {
        let mut a = Detection::from_finding(&finding(100, "192.0.2.1", Rule::MassAccess));
        a.merge(&finding(110, "192.0.2.2", Rule::MassAccess));
        let mut b = Detection::from_finding(&finding(90, "192.0.2.2", Rule::MassAccess));
        b.merge(&finding(200, "192.0.2.3", Rule::MassAccess));
        b.severity = Severity::Critical;
        let mut m = a.clone();
        m.absorb(&b);
        assert_eq!((m.first_seen, m.last_seen), (90, 200));
        assert_eq!(m.severity, Severity::Critical);
        assert_eq!(m.count, a.count, "counts are the caller's business");
        assert_eq!(
            m.summary, "seen from 192.0.2.2",
            "the summary of the earlier view"
        );
        let ips: Vec<&str> = m.actors.iter().map(|x| x.value.as_str()).collect();
        assert_eq!(ips, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        assert_eq!(m.samples.len(), 3, "no sample twice");
        assert_eq!(m.suggested.len(), 3);
        // Absorbing the same view again changes nothing.
        let again = {
            let mut x = m.clone();
            x.absorb(&b);
            x.absorb(&a);
            x
        };
        assert_eq!(again, m);
        // Absorbing an older, lesser view keeps the higher severity.
        let mut c = b.clone();
        c.absorb(&a);
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!((c.first_seen, c.last_seen), (90, 200));
        // The caps hold.
        let mut big = Detection::from_finding(&finding(1, "198.51.100.0", Rule::MassAccess));
        for i in 1..200 {
            let mut other =
                Detection::from_finding(&finding(i, &format!("198.51.100.{i}"), Rule::MassAccess));
            other.samples = vec![json!(i)];
            big.absorb(&other);
        }
        assert_eq!(big.actors.len(), MAX_ACTORS_PER_DETECTION);
        assert_eq!(big.samples.len(), MAX_SAMPLES);
        assert_eq!(big.suggested.len(), MAX_ACTORS_PER_DETECTION);
        assert_eq!(big.actors[0].value, "198.51.100.0", "first seen first");
    }
}
