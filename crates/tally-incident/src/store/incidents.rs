//! Incidents and their timelines: reading them, moving an incident through
//! its states, materiality, reports to authorities, notes and reminders.
//!
//! Invariant: every change to an incident is written with its audited
//! timeline entry in one transaction ([`super::audit`]), so that the
//! incident is always what its audited timeline says.

use serde_json::{Value, json};
use tally_store::sql::{Row, Tx, args};

use super::audit::log;
use super::error::IncidentError;
use super::handle::IncidentStore;
use crate::clocks::IncidentState;
use crate::detect::Severity;

/// One incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// Id.
    pub id: i64,
    /// When it was opened (unix seconds).
    pub opened_at: i64,
    /// When tally became aware: the first high or critical detection's first sighting.
    pub aware_at: i64,
    /// State.
    pub state: IncidentState,
    /// Highest severity of its detections.
    pub severity: Severity,
    /// Title (the first detection's summary).
    pub title: String,
    /// When the incident was determined material (SEC 8-K Item 1.05), if it was.
    pub materiality_at: Option<i64>,
    /// Last change.
    pub updated_at: i64,
}

/// One timeline entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    /// Id.
    pub id: i64,
    /// Incident.
    pub incident_id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who (`tally` for automatic entries, `admin:NAME`, an operator).
    pub actor: String,
    /// `opened`, `detection`, `action`, `note`, `state`, `submission`, `reminder`.
    pub kind: String,
    /// Details.
    pub body: Value,
}

/// A report made to an authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// Regime id.
    pub regime: String,
    /// When.
    pub submitted_at: i64,
    /// Who.
    pub actor: String,
    /// The authority's reference or a note.
    pub reference: String,
}

fn state_of(s: &str) -> Result<IncidentState, IncidentError> {
    s.parse()
        .map_err(|_| IncidentError::Corrupt(format!("unknown incident state {s:?}")))
}

pub(super) fn severity_of(s: &str) -> Result<Severity, IncidentError> {
    Severity::parse(s).ok_or_else(|| IncidentError::Corrupt(format!("unknown severity {s:?}")))
}

pub(super) const INCIDENT_COLUMNS: &str =
    "id, opened_at, aware_at, state, severity, title, materiality_at, updated_at";

pub(super) fn incident_at(r: &Row) -> Result<Incident, IncidentError> {
    Ok(Incident {
        id: r.i64(0)?,
        opened_at: r.i64(1)?,
        aware_at: r.i64(2)?,
        state: state_of(&r.text(3)?)?,
        severity: severity_of(&r.text(4)?)?,
        title: r.text(5)?,
        materiality_at: r.opt_i64(6)?,
        updated_at: r.i64(7)?,
    })
}

fn read_incident(tx: &mut dyn Tx, id: i64) -> Result<Option<Incident>, IncidentError> {
    tx.query_opt(
        &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"),
        args![id],
    )?
    .map(|r| incident_at(&r))
    .transpose()
}

fn incident_exists(tx: &mut dyn Tx, id: i64) -> Result<(), IncidentError> {
    match tx.query_opt("SELECT 1 FROM incidents WHERE id = $1", args![id])? {
        Some(_) => Ok(()),
        None => Err(IncidentError::NotFound(id)),
    }
}

impl IncidentStore {
    /// Adds a timeline entry (`note`, `action`, `reminder`, ...).
    pub fn append(
        &self,
        incident_id: i64,
        at: i64,
        actor: &str,
        kind: &str,
        body: &Value,
    ) -> Result<(), IncidentError> {
        let (actor, kind, body) = (actor.to_owned(), kind.to_owned(), body.clone());
        self.write_logged(move |tx| {
            incident_exists(tx, incident_id)?;
            let head = log(tx, incident_id, at, &actor, &kind, &body)?;
            tx.execute(
                "UPDATE incidents SET updated_at = $2 WHERE id = $1",
                args![incident_id, at],
            )?;
            Ok(((), Some(head)))
        })
    }

    /// Moves an incident to `next`, if its state allows.
    pub fn set_state(
        &self,
        id: i64,
        next: IncidentState,
        actor: &str,
        now: i64,
        note: &str,
    ) -> Result<Incident, IncidentError> {
        let (actor, note) = (actor.to_owned(), note.to_owned());
        self.write_logged(move |tx| {
            let cur = tx
                .query_opt("SELECT state FROM incidents WHERE id = $1", args![id])?
                .ok_or(IncidentError::NotFound(id))?
                .text(0)?;
            let cur = state_of(&cur)?;
            if !cur.can_move_to(next) {
                return Err(IncidentError::BadTransition {
                    id,
                    from: cur.as_str(),
                    to: next.as_str(),
                });
            }
            tx.execute(
                "UPDATE incidents SET state = $2, updated_at = $3 WHERE id = $1",
                args![id, next.as_str(), now],
            )?;
            let head = log(
                tx,
                id,
                now,
                &actor,
                "state",
                &json!({"from": cur.as_str(), "to": next.as_str(), "note": note}),
            )?;
            let inc = read_incident(tx, id)?.ok_or(IncidentError::NotFound(id))?;
            Ok((inc, Some(head)))
        })
    }

    /// Records the materiality determination (starts the SEC clock).
    pub fn set_materiality(&self, id: i64, at: i64, actor: &str) -> Result<(), IncidentError> {
        let actor = actor.to_owned();
        self.write_logged(move |tx| {
            let n = tx.execute(
                "UPDATE incidents SET materiality_at = $2, updated_at = $2 WHERE id = $1",
                args![id, at],
            )?;
            if n == 0 {
                return Err(IncidentError::NotFound(id));
            }
            let head = log(
                tx,
                id,
                at,
                &actor,
                "materiality",
                &json!({"materiality_at": at}),
            )?;
            Ok(((), Some(head)))
        })
    }

    /// Records a report to an authority under `regime`.
    pub fn submit(
        &self,
        id: i64,
        regime: &str,
        actor: &str,
        now: i64,
        reference: &str,
    ) -> Result<(), IncidentError> {
        let (regime, actor, reference) =
            (regime.to_owned(), actor.to_owned(), reference.to_owned());
        self.write_logged(move |tx| {
            incident_exists(tx, id)?;
            tx.execute(
                "INSERT INTO submissions (incident_id, regime, submitted_at, actor, reference) VALUES ($1, $2, $3, $4, $5)",
                args![id, regime.clone(), now, actor.clone(), reference.clone()],
            )?;
            let head = log(
                tx,
                id,
                now,
                &actor,
                "submission",
                &json!({"regime": regime, "reference": reference}),
            )?;
            Ok(((), Some(head)))
        })
    }

    /// Reports made for an incident, oldest first.
    pub fn submissions(&self, id: i64) -> Result<Vec<Submission>, IncidentError> {
        self.db.read(move |tx| {
            tx.query(
                "SELECT regime, submitted_at, actor, reference FROM submissions WHERE incident_id = $1 ORDER BY id",
                args![id],
            )?
            .iter()
            .map(|r| {
                Ok(Submission {
                    regime: r.text(0)?,
                    submitted_at: r.i64(1)?,
                    actor: r.text(2)?,
                    reference: r.text(3)?,
                })
            })
            .collect()
        })
    }

    /// Marks a reminder as sent; false if it already was (by any node).
    pub fn mark_reminder(
        &self,
        id: i64,
        clock: &str,
        label: &str,
        now: i64,
    ) -> Result<bool, IncidentError> {
        let (clock, label) = (clock.to_owned(), label.to_owned());
        self.db.write(move |tx| {
            Ok(tx.execute(
                "INSERT INTO reminders (incident_id, clock, label, sent_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (incident_id, clock, label) DO NOTHING",
                args![id, clock, label, now],
            )? == 1)
        })
    }

    /// One incident.
    pub fn incident(&self, id: i64) -> Result<Option<Incident>, IncidentError> {
        self.db.read(move |tx| read_incident(tx, id))
    }

    /// All incidents, newest first.
    pub fn incidents(&self) -> Result<Vec<Incident>, IncidentError> {
        self.db.read(|tx| {
            tx.query(
                &format!("SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC"),
                &[],
            )?
            .iter()
            .map(incident_at)
            .collect()
        })
    }

    /// An incident's timeline, oldest first.
    pub fn timeline(&self, incident_id: i64) -> Result<Vec<TimelineEntry>, IncidentError> {
        self.db.read(move |tx| {
            let rows = tx.query(
                "SELECT id, incident_id, at, actor, kind, body FROM timeline WHERE incident_id = $1 ORDER BY id",
                args![incident_id],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = r.i64(0)?;
                let body = serde_json::from_str(&r.text(5)?)
                    .map_err(|e| IncidentError::Corrupt(format!("timeline {id}: {e}")))?;
                out.push(TimelineEntry {
                    id,
                    incident_id: r.i64(1)?,
                    at: r.i64(2)?,
                    actor: r.text(3)?,
                    kind: r.text(4)?,
                    body,
                });
            }
            Ok(out)
        })
    }
}
