//! The reminders of a clock: at half time, six hours before, one hour
//! before, and at the due time.
//!
//! Invariants: reminders are sorted by time, at most one per time (the most
//! urgent), never before the clock's start, and the overdue reminder is
//! always there.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::deadline::HOUR;

/// Which reminder. The order (`HalfTime < SixHours < OneHour < Overdue`) is
/// the order of urgency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderLabel {
    /// Half of the time has passed.
    HalfTime,
    /// Six hours are left.
    SixHours,
    /// One hour is left.
    OneHour,
    /// The deadline has passed.
    Overdue,
}

impl ReminderLabel {
    /// The stable name: `half_time`, `six_hours`, `one_hour`, `overdue`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderLabel::HalfTime => "half_time",
            ReminderLabel::SixHours => "six_hours",
            ReminderLabel::OneHour => "one_hour",
            ReminderLabel::Overdue => "overdue",
        }
    }
}

impl fmt::Display for ReminderLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reminder to send at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reminder {
    /// Which reminder.
    pub label: ReminderLabel,
    /// When to send it (unix seconds).
    pub at: i64,
}

/// The reminders of a clock from `starts_at` to `due_at`: at half time, six
/// hours before, one hour before, and at the due time ([`ReminderLabel::Overdue`]).
///
/// A reminder that would fall before `starts_at` is skipped (on a 3-hour
/// deadline there is no six-hour reminder); one that falls exactly at
/// `starts_at` is kept. The overdue reminder is always kept. The result is
/// sorted by time; when two reminders fall at the same time only the more
/// urgent one is kept (on a 12-hour deadline, half time is six hours before,
/// and only [`ReminderLabel::SixHours`] remains).
pub fn reminders(starts_at: i64, due_at: i64) -> Vec<Reminder> {
    let half = (i128::from(starts_at) + (i128::from(due_at) - i128::from(starts_at)) / 2) as i64;
    let candidates = [
        (ReminderLabel::HalfTime, half),
        (ReminderLabel::SixHours, due_at.saturating_sub(6 * HOUR)),
        (ReminderLabel::OneHour, due_at.saturating_sub(HOUR)),
        (ReminderLabel::Overdue, due_at),
    ];
    let mut out: Vec<Reminder> = candidates
        .into_iter()
        .filter(|&(label, at)| label == ReminderLabel::Overdue || at >= starts_at)
        .map(|(label, at)| Reminder { label, at })
        .collect();
    // By time; at equal times the most urgent first, so dedup keeps it.
    out.sort_by(|a, b| a.at.cmp(&b.at).then(b.label.cmp(&a.label)));
    out.dedup_by_key(|r| r.at);
    out
}
