//! Responders acting on an incident: acknowledging it, adding a note, and
//! containing it (optionally taking the containment its detections
//! suggest). The command line (`tally incident ack|note|contain`) and the
//! dashboard's forms both act through here, so an action is recorded the
//! same way (timeline entry, audit log) wherever it was taken.
//!
//! Containment itself (a block, a revocation, a key marked compromised)
//! happens against the data directory, which this crate does not know: the
//! caller hands [`contain`] the function that takes one step.
//!
//! Invariants: a note is never empty and never longer than [`MAX_NOTE`]
//! characters; `contain` takes no step for an incident that cannot become
//! `contained` (unknown, or already contained, reported or closed); every
//! step taken is on the timeline, failed ones with why.

use serde_json::json;

use crate::clocks::IncidentState;
use crate::detect::Containment;
use crate::store::{IncidentError, IncidentStore};

/// The longest note accepted, in characters.
pub const MAX_NOTE: usize = 4000;

/// Why an action was refused or did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActError {
    /// The note is empty (or only white space).
    #[error("the note is empty")]
    EmptyNote,
    /// The note is longer than [`MAX_NOTE`] characters.
    #[error("the note is longer than {MAX_NOTE} characters")]
    LongNote,
    /// The store refused (no such incident, a state it cannot leave) or
    /// failed.
    #[error(transparent)]
    Store(#[from] IncidentError),
    /// A containment step was taken but could not be put on the timeline.
    #[error("{detail}, but it could not be recorded on the timeline: {source}")]
    Unrecorded {
        /// What the step did.
        detail: String,
        /// Why the timeline refused it.
        source: IncidentError,
    },
}

impl ActError {
    /// Stable code: `invalid_note`, or the store's own code.
    pub fn code(&self) -> &'static str {
        match self {
            ActError::EmptyNote | ActError::LongNote => "invalid_note",
            ActError::Store(e) | ActError::Unrecorded { source: e, .. } => e.code(),
        }
    }
}

/// One containment step taken for an incident: what, and how it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The step.
    pub action: Containment,
    /// Whether it was taken.
    pub ok: bool,
    /// What it did, or why it could not.
    pub detail: String,
}

/// Acknowledges incident `id`: someone is on it (a timeline entry).
pub fn acknowledge(store: &IncidentStore, id: i64, actor: &str, now: i64) -> Result<(), ActError> {
    store.append(id, now, actor, "ack", &json!({"acknowledged": true}))?;
    Ok(())
}

/// Checks a note: not empty, at most [`MAX_NOTE`] characters. Returns it
/// as it will be stored.
pub fn checked_note(text: &str) -> Result<&str, ActError> {
    if text.trim().is_empty() {
        return Err(ActError::EmptyNote);
    }
    if text.chars().count() > MAX_NOTE {
        return Err(ActError::LongNote);
    }
    Ok(text)
}

/// Adds a note to incident `id`'s timeline.
pub fn note(
    store: &IncidentStore,
    id: i64,
    text: &str,
    actor: &str,
    now: i64,
) -> Result<(), ActError> {
    let text = checked_note(text)?;
    store.append(id, now, actor, "note", &json!({"text": text}))?;
    Ok(())
}

/// The containment incident `id`'s detections suggest, each step once, in
/// the order the detections suggest them.
pub fn suggested(store: &IncidentStore, id: i64) -> Result<Vec<Containment>, IncidentError> {
    let mut steps: Vec<Containment> = Vec::new();
    for d in store.detections(id)? {
        for s in d.detection.suggested {
            if !steps.contains(&s) {
                steps.push(s);
            }
        }
    }
    Ok(steps)
}

/// Marks incident `id` contained. With `apply_suggested`, every step its
/// detections suggest ([`suggested`]) is taken first through `take` (which
/// acts against the data directory, given the step and why it is taken,
/// and returns what it did or why it could not), and each outcome is put on
/// the timeline as an `action` entry. Returns the steps, in order.
///
/// Nothing is taken for an incident that cannot become `contained`: the
/// answer is then [`IncidentError::NotFound`] or
/// [`IncidentError::BadTransition`].
pub fn contain(
    store: &IncidentStore,
    id: i64,
    apply_suggested: bool,
    actor: &str,
    now: i64,
    take: &mut dyn FnMut(&Containment, &str) -> Result<String, String>,
) -> Result<Vec<Step>, ActError> {
    let inc = store.incident(id)?.ok_or(IncidentError::NotFound(id))?;
    if !inc.state.can_move_to(IncidentState::Contained) {
        return Err(IncidentError::BadTransition {
            id,
            from: inc.state.as_str(),
            to: IncidentState::Contained.as_str(),
        }
        .into());
    }
    let mut done = Vec::new();
    if apply_suggested {
        let why = format!("incident {id}");
        for action in suggested(store, id)? {
            let (ok, detail) = match take(&action, &why) {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            store
                .append(
                    id,
                    now,
                    actor,
                    "action",
                    &json!({"action": action, "ok": ok, "detail": detail}),
                )
                .map_err(|source| ActError::Unrecorded {
                    detail: detail.clone(),
                    source,
                })?;
            done.push(Step { action, ok, detail });
        }
    }
    store.set_state(id, IncidentState::Contained, actor, now, "")?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Actor, ActorKind, Detection, Rule, Severity};

    const NOW: i64 = 1_800_000_000;

    fn store_with_incident(dir: &std::path::Path) -> IncidentStore {
        let store = IncidentStore::open(dir).unwrap();
        let ip = Containment::BlockActor {
            actor: Actor {
                kind: ActorKind::Ip,
                value: "203.0.113.9".into(),
            },
        };
        let d = Detection {
            key: "k".into(),
            rule: Rule::MassAccess,
            severity: Severity::Critical,
            first_seen: NOW,
            last_seen: NOW,
            count: 1,
            actors: vec![],
            samples: vec![],
            // The same step twice is taken once.
            suggested: vec![ip.clone(), ip],
            summary: "a scrape".into(),
        };
        store.record(&[(d, true)], NOW).unwrap();
        store
    }

    fn kinds(store: &IncidentStore) -> Vec<String> {
        store
            .timeline(1)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn notes_are_checked_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_incident(dir.path());
        assert!(matches!(
            note(&store, 1, "  \n", "soc", NOW),
            Err(ActError::EmptyNote)
        ));
        let long = "x".repeat(MAX_NOTE + 1);
        assert_eq!(
            note(&store, 1, &long, "soc", NOW).unwrap_err().code(),
            "invalid_note"
        );
        note(&store, 1, &"é".repeat(MAX_NOTE), "soc", NOW).unwrap();
        acknowledge(&store, 1, "soc", NOW).unwrap();
        assert_eq!(
            acknowledge(&store, 2, "soc", NOW).unwrap_err().code(),
            "not_found"
        );
        let k = kinds(&store);
        assert!(
            k.ends_with(&["note".to_string(), "ack".to_string()]),
            "{k:?}"
        );
    }

    #[test]
    fn contain_takes_each_suggested_step_once_and_only_when_it_may() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_incident(dir.path());
        let mut taken = Vec::new();
        let steps = contain(&store, 1, true, "soc", NOW, &mut |c, why| {
            taken.push((c.clone(), why.to_string()));
            Err("the store is read-only".into())
        })
        .unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1, "incident 1");
        assert_eq!(steps.len(), 1);
        assert!(!steps[0].ok);
        assert_eq!(
            store.incident(1).unwrap().unwrap().state,
            IncidentState::Contained
        );
        let k = kinds(&store);
        assert!(
            k.ends_with(&["action".to_string(), "state".to_string()]),
            "{k:?}"
        );
        // Contained already: nothing is taken again.
        let err = contain(&store, 1, true, "soc", NOW, &mut |_, _| {
            panic!("no step may be taken")
        })
        .unwrap_err();
        assert_eq!(err.code(), "bad_transition");
        assert_eq!(
            contain(&store, 9, false, "soc", NOW, &mut |_, _| Ok(String::new()))
                .unwrap_err()
                .code(),
            "not_found"
        );
    }
}
