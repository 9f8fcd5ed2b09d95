//! Deadline arithmetic: a [`Deadline`] in hours or business days, and
//! [`add_business_days`] on the UTC calendar.
//!
//! Invariants: every time is unix seconds passed in by the caller; hour
//! deadlines are exact durations; business days skip Saturday and Sunday
//! only (public holidays are not modelled, which can only make a computed
//! deadline earlier than the legal one), and keep the start's time of day;
//! nothing overflows (the result saturates).

use serde::{Deserialize, Serialize};

/// Seconds in an hour.
pub(super) const HOUR: i64 = 3600;
/// Seconds in a day.
pub(super) const DAY: i64 = 86_400;

/// A reporting deadline, measured from the start of the clock.
///
/// Serialized as `{"hours": 24}` or `{"business_days": 4}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// A fixed number of hours.
    Hours(i64),
    /// A number of business days, counted by [`add_business_days`].
    BusinessDays(u32),
}

impl Deadline {
    /// The due time of a clock that starts at `starts_at`.
    pub fn due_from(self, starts_at: i64) -> i64 {
        match self {
            Deadline::Hours(h) => starts_at.saturating_add(h.saturating_mul(HOUR)),
            Deadline::BusinessDays(n) => add_business_days(starts_at, n),
        }
    }

    pub(super) fn is_positive(self) -> bool {
        match self {
            Deadline::Hours(h) => h > 0,
            Deadline::BusinessDays(n) => n > 0,
        }
    }
}

/// Moves `t` forward by `n` business days on the UTC calendar, keeping the
/// time of day.
///
/// Business days are Monday to Friday; Saturday and Sunday are skipped.
/// **Public holidays are not modelled.** Each business day added moves to the
/// next weekday, so Thursday 10:00 + 4 is the next Wednesday 10:00 and Friday
/// 20:00 + 4 is the next Thursday 20:00. A start on a weekend counts as if it
/// were on the Friday before: Saturday 10:00 + 1 is Monday 10:00, and
/// Saturday 10:00 + 4 is Thursday 10:00. `n = 0` returns `t` unchanged.
///
/// The result always falls on the `n`-th business day after the start's day
/// (in UTC), so it is never later than the end of that UTC day.
pub fn add_business_days(t: i64, n: u32) -> i64 {
    if n == 0 {
        return t;
    }
    let t = i128::from(t);
    let time_of_day = t.rem_euclid(i128::from(DAY));
    let mut day = t.div_euclid(i128::from(DAY));
    // Monday = 0 … Sunday = 6; day 0 (1970-01-01) was a Thursday.
    let weekday = |d: i128| (d + 3).rem_euclid(7);
    // The weekdays after a Saturday or Sunday are those after the Friday before.
    let wd = weekday(day);
    if wd >= 5 {
        day -= wd - 4;
    }
    day += 7 * i128::from(n / 5);
    for _ in 0..n % 5 {
        day += if weekday(day) == 4 { 3 } else { 1 };
    }
    let out = day * i128::from(DAY) + time_of_day;
    out.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}
