//! The legal clocks of an incident: which run ([`clocks`]), where each
//! stands ([`status`]), which reminders fall due ([`due_reminders`]), and a
//! countdown for people ([`format_duration`]).
//!
//! Invariants: one initial clock per enabled regime that applies, plus one
//! supplementary clock per distinct fact confirmed after its start for
//! regimes that require them; clocks are sorted by due time; a report
//! submitted at the due time is on time, and an unsubmitted clock is
//! overdue from the due time on.

use serde::{Deserialize, Serialize};

use super::deadline::Deadline;
use super::regimes::{IncidentFacts, Regime};
use super::reminders::{Reminder, reminders};

/// Which report a clock is for.
///
/// Serialized as `"initial"` or `{"supplementary": {"fact_at": 1709805600}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// The first report of the incident.
    Initial,
    /// A supplementary report of a newly confirmed fact.
    Supplementary {
        /// When the fact was confirmed (the clock's start).
        fact_at: i64,
    },
}

/// One running legal deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    /// The [`Regime::id`] it comes from.
    pub regime_id: String,
    /// Human name: the regime's name, with `: supplementary report` appended
    /// for supplementary clocks.
    pub name: String,
    /// When the clock started (unix seconds).
    pub starts_at: i64,
    /// When the report is due (unix seconds).
    pub due_at: i64,
    /// Initial or supplementary.
    pub kind: ClockKind,
    /// Its reminders, from [`reminders`].
    pub reminders: Vec<Reminder>,
}

/// The clocks that run for an incident: for every enabled regime that applies,
/// an initial clock, then, if the regime has
/// [`supplementary_hours`](Regime::supplementary_hours), one supplementary
/// clock per distinct confirmed fact strictly after the initial clock's start
/// (facts confirmed at or before it belong in the initial report).
///
/// Clocks start at `aware_at`, or at `materiality_at` for
/// [`Applicability::Materiality`](crate::clocks::Applicability::Materiality)
/// regimes (which produce nothing until it is set). The result is sorted by
/// due time; ties keep the regimes' order, with the initial clock before its
/// supplementary ones.
pub fn clocks(regimes: &[Regime], facts: &IncidentFacts) -> Vec<Clock> {
    let mut facts_at = facts.confirmed_facts_at.clone();
    facts_at.sort_unstable();
    facts_at.dedup();

    let mut out = Vec::new();
    for regime in regimes {
        let Some(starts_at) = regime.clock_start(facts) else {
            continue;
        };
        out.push(make_clock(
            regime,
            regime.name.clone(),
            starts_at,
            regime.deadline.due_from(starts_at),
            ClockKind::Initial,
        ));
        if let Some(hours) = regime.supplementary_hours {
            for &fact_at in facts_at.iter().filter(|&&t| t > starts_at) {
                out.push(make_clock(
                    regime,
                    format!("{}: supplementary report", regime.name),
                    fact_at,
                    Deadline::Hours(hours).due_from(fact_at),
                    ClockKind::Supplementary { fact_at },
                ));
            }
        }
    }
    out.sort_by_key(|c| c.due_at);
    out
}

fn make_clock(
    regime: &Regime,
    name: String,
    starts_at: i64,
    due_at: i64,
    kind: ClockKind,
) -> Clock {
    Clock {
        regime_id: regime.id.clone(),
        name,
        starts_at,
        due_at,
        kind,
        reminders: reminders(starts_at, due_at),
    }
}

/// Where a clock stands.
///
/// Serialized with a `state` tag, e.g.
/// `{"state": "running", "remaining_secs": 3600}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClockStatus {
    /// Not submitted, and the due time has not been reached.
    Running {
        /// Seconds until the due time (always positive).
        remaining_secs: i64,
    },
    /// Not submitted, and the due time has been reached or passed.
    Overdue {
        /// Seconds since the due time (zero at the due time itself).
        by_secs: i64,
    },
    /// Submitted at or before the due time.
    Met {
        /// When it was submitted.
        at: i64,
    },
    /// Submitted after the due time.
    Late {
        /// When it was submitted.
        at: i64,
        /// How late, in seconds (always positive).
        by_secs: i64,
    },
}

/// The status of `clock` at `now`, given when (if ever) its report was submitted.
///
/// A report submitted exactly at the due time is [`ClockStatus::Met`]; an
/// unsubmitted clock is [`ClockStatus::Running`] strictly before the due time
/// and [`ClockStatus::Overdue`] from the due time on (matching the
/// [`ReminderLabel::Overdue`](crate::clocks::ReminderLabel::Overdue)
/// reminder). Once submitted, `now` is irrelevant.
pub fn status(clock: &Clock, now: i64, submitted_at: Option<i64>) -> ClockStatus {
    match submitted_at {
        Some(at) if at <= clock.due_at => ClockStatus::Met { at },
        Some(at) => ClockStatus::Late {
            at,
            by_secs: at.saturating_sub(clock.due_at),
        },
        None if now < clock.due_at => ClockStatus::Running {
            remaining_secs: clock.due_at.saturating_sub(now),
        },
        None => ClockStatus::Overdue {
            by_secs: now.saturating_sub(clock.due_at),
        },
    }
}

/// The reminders of `clock` with `since < at <= now`, in time order: what a
/// scheduler that last ran at `since` must send now. Consecutive runs with
/// `since` set to the previous `now` send each reminder exactly once.
pub fn due_reminders(clock: &Clock, since: i64, now: i64) -> Vec<Reminder> {
    clock
        .reminders
        .iter()
        .filter(|r| since < r.at && r.at <= now)
        .copied()
        .collect()
}

/// Formats a countdown with its two most significant units, truncated:
/// `3d 4h`, `23h 59m`, `12m 5s`, `45s`, `0s`. Negative durations (overdue)
/// get a leading minus: `-1h 5m`.
pub fn format_duration(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{sign}{d}d {h}h")
    } else if h > 0 {
        format!("{sign}{h}h {m}m")
    } else if m > 0 {
        format!("{sign}{m}m {s}s")
    } else {
        format!("{sign}{s}s")
    }
}
