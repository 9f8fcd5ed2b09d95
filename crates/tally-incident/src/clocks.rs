//! Incident reporting clocks: legal regimes, their deadlines, reminders, and the
//! incident state machine.
//!
//! A [`Regime`] is one legal obligation to report an incident to an authority
//! (the Korean Network Act, the Korean PIPA, GDPR Art. 33, SEC Form 8-K
//! Item 1.05, or one configured by the operator). Given the [`IncidentFacts`],
//! [`clocks`] lists every deadline that runs: one [`ClockKind::Initial`] clock
//! per enabled regime that applies, plus one [`ClockKind::Supplementary`] clock
//! per newly confirmed fact for regimes that require supplementary reports.
//! [`status`] says where a clock stands at a given time, and [`due_reminders`]
//! tells a scheduler which reminders to send since it last ran.
//!
//! **Time.** Every time is unix seconds (UTC, `i64`) and is passed in by the
//! caller: nothing here reads a clock. A clock starts at the awareness time
//! [`IncidentFacts::aware_at`], except for regimes whose applicability is
//! [`Applicability::Materiality`] (SEC Item 1.05), which start at the
//! materiality determination [`IncidentFacts::materiality_at`]. Hour deadlines
//! are exact durations. Business-day deadlines ([`add_business_days`]) are
//! counted on the UTC calendar with Saturday and Sunday skipped; **public
//! holidays are not modelled** (neither Korean, EU nor US federal holidays),
//! which can only make a computed deadline earlier than the legal one. Local
//! filing cut-offs are not modelled either: a business-day deadline keeps the
//! start's time of day, which may fall after EDGAR's 5:30 p.m. Eastern
//! cut-off on the last day, so file before it.
//!
//! **What is not decided here.** Whether a regime applies is reduced to the
//! facts in [`IncidentFacts`]; legal judgements such as GDPR's "unlikely to
//! result in a risk" exemption, or PIPA's separate triggers for sensitive or
//! unique identifying information, are left to the people handling the
//! incident (disable the regime or adjust the facts).
//!
//! ```
//! use tally_incident::clocks::{ClockStatus, IncidentFacts, clocks, default_regimes, status};
//!
//! let aware_at = 1_709_805_600; // Thursday 2024-03-07 10:00 UTC
//! let facts = IncidentFacts {
//!     aware_at,
//!     affected_subjects: 12_000,
//!     outside_access: true,
//!     materiality_at: None,
//!     confirmed_facts_at: vec![],
//! };
//! let all = clocks(&default_regimes(), &facts);
//! let ids: Vec<&str> = all.iter().map(|c| c.regime_id.as_str()).collect();
//! assert_eq!(ids, ["kr_network_act", "kr_pipa", "gdpr_art33"]);
//! assert_eq!(all[0].due_at, aware_at + 24 * 3600);
//! assert_eq!(
//!     status(&all[0], aware_at + 3600, None),
//!     ClockStatus::Running { remaining_secs: 23 * 3600 }
//! );
//! ```
//!
//! **Configuration.** Regimes serialize to JSON and TOML. The built-in
//! [`default_regimes`] can be adjusted by id with [`RegimeOverride`] tables
//! merged by [`merge_regimes`]:
//!
//! ```toml
//! [[regimes]]
//! id = "sec_8k_105"
//! enabled = true
//!
//! [[regimes]]
//! id = "uk_gdpr_art33"
//! name = "UK GDPR Art. 33 (ICO)"
//! authority = "ICO"
//! deadline = { hours = 72 }
//! applies = "always"
//! required_fields = ["Nature of the breach", "Likely consequences"]
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------
// Regimes
// ---------------------------------------------------------------------------

/// A configured reporting regime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regime {
    /// Stable identifier: `kr_network_act`, `kr_pipa`, `gdpr_art33`,
    /// `sec_8k_105`, or an operator-chosen one (`a-z`, `0-9`, `_`).
    pub id: String,
    /// Human name, e.g. `KR Network Act (MSIT/KISA)`.
    pub name: String,
    /// Who receives the report, e.g. `MSIT / KISA`.
    pub authority: String,
    /// How long after the clock starts the initial report is due.
    pub deadline: Deadline,
    /// When the regime applies to an incident (and, for
    /// [`Applicability::Materiality`], when its clock starts).
    pub applies: Applicability,
    /// If set, a supplementary report is due this many hours after each newly
    /// confirmed fact ([`IncidentFacts::confirmed_facts_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplementary_hours: Option<i64>,
    /// A disabled regime produces no clocks. Defaults to `true` when absent.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What the report for this regime must contain (human labels).
    #[serde(default)]
    pub required_fields: Vec<String>,
}

fn default_true() -> bool {
    true
}

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

    fn is_positive(self) -> bool {
        match self {
            Deadline::Hours(h) => h > 0,
            Deadline::BusinessDays(n) => n > 0,
        }
    }
}

/// When a regime applies to an incident.
///
/// Serialized as `"always"`, `{"min_subjects": 1000}`,
/// `{"min_subjects_or_outside_access": 1000}` or `"materiality"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applicability {
    /// To every incident.
    Always,
    /// When at least this many data subjects are affected.
    MinSubjects(u64),
    /// When at least this many data subjects are affected, or when the data
    /// was reached by unlawful access from outside (KR PIPA).
    MinSubjectsOrOutsideAccess(u64),
    /// Once the incident has been determined to be material; the clock then
    /// starts at [`IncidentFacts::materiality_at`] (SEC Item 1.05).
    Materiality,
}

impl Applicability {
    /// Whether an incident with these facts falls under this rule.
    pub fn matches(self, facts: &IncidentFacts) -> bool {
        match self {
            Applicability::Always => true,
            Applicability::MinSubjects(n) => facts.affected_subjects >= n,
            Applicability::MinSubjectsOrOutsideAccess(n) => {
                facts.affected_subjects >= n || facts.outside_access
            }
            Applicability::Materiality => facts.materiality_at.is_some(),
        }
    }
}

impl Regime {
    /// When this regime's initial clock starts for an incident, or `None` if
    /// the regime is disabled or does not apply.
    pub fn clock_start(&self, facts: &IncidentFacts) -> Option<i64> {
        if !self.enabled || !self.applies.matches(facts) {
            return None;
        }
        match self.applies {
            Applicability::Materiality => facts.materiality_at,
            _ => Some(facts.aware_at),
        }
    }

    /// Checks the id, the name and that the deadlines are positive.
    pub fn validate(&self) -> Result<(), RegimeError> {
        let id = &self.id;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !id_ok {
            return Err(RegimeError::BadId { id: id.clone() });
        }
        if self.name.trim().is_empty() {
            return Err(RegimeError::EmptyName { id: id.clone() });
        }
        if !self.deadline.is_positive() {
            return Err(RegimeError::BadDeadline { id: id.clone() });
        }
        if self.supplementary_hours.is_some_and(|h| h <= 0) {
            return Err(RegimeError::BadSupplementary { id: id.clone() });
        }
        Ok(())
    }
}

fn fields(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|s| (*s).to_owned()).collect()
}

/// The built-in regimes, in this order:
///
/// | id | deadline | applies | notes |
/// | --- | --- | --- | --- |
/// | `kr_network_act` | 24 h from awareness | always | supplementary report within 24 h of each newly confirmed fact |
/// | `kr_pipa` | 72 h from awareness | >= 1,000 subjects, or unlawful outside access | |
/// | `gdpr_art33` | 72 h from awareness | always | |
/// | `sec_8k_105` | 4 business days from the materiality determination | once material | disabled by default |
///
/// SEC Item 1.05's amended 8-K for information not yet determined at filing
/// (Instruction 2) is not modelled as a supplementary clock.
pub fn default_regimes() -> Vec<Regime> {
    vec![
        Regime {
            id: "kr_network_act".to_owned(),
            name: "KR Network Act (MSIT/KISA)".to_owned(),
            authority: "MSIT / KISA".to_owned(),
            deadline: Deadline::Hours(24),
            applies: Applicability::Always,
            supplementary_hours: Some(24),
            enabled: true,
            required_fields: fields(&[
                "Date, time and place of the incident",
                "Cause of the incident and damage caused",
                "Emergency measures taken",
                "Response and recovery measures",
                "Department in charge and contact details",
            ]),
        },
        Regime {
            id: "kr_pipa".to_owned(),
            name: "KR PIPA (PIPC/KISA)".to_owned(),
            authority: "PIPC / KISA".to_owned(),
            deadline: Deadline::Hours(72),
            applies: Applicability::MinSubjectsOrOutsideAccess(1000),
            supplementary_hours: None,
            enabled: true,
            required_fields: fields(&[
                "Items of personal information leaked",
                "When and how the leak occurred",
                "What data subjects can do to minimise damage",
                "Measures taken by the controller and remedies available to data subjects",
                "Department and contact for reporting damage",
            ]),
        },
        Regime {
            id: "gdpr_art33".to_owned(),
            name: "GDPR Art. 33".to_owned(),
            authority: "Lead supervisory authority".to_owned(),
            deadline: Deadline::Hours(72),
            applies: Applicability::Always,
            supplementary_hours: None,
            enabled: true,
            required_fields: fields(&[
                "Nature of the personal data breach",
                "Categories and approximate number of data subjects concerned",
                "Categories and approximate number of personal data records concerned",
                "Name and contact details of the DPO or other contact point",
                "Likely consequences of the breach",
                "Measures taken or proposed, including mitigation of possible adverse effects",
            ]),
        },
        Regime {
            id: "sec_8k_105".to_owned(),
            name: "SEC Form 8-K Item 1.05".to_owned(),
            authority: "SEC".to_owned(),
            deadline: Deadline::BusinessDays(4),
            applies: Applicability::Materiality,
            supplementary_hours: None,
            enabled: false,
            required_fields: fields(&[
                "Material aspects of the nature of the incident",
                "Material aspects of the scope of the incident",
                "Material aspects of the timing of the incident",
                "Material impact or reasonably likely material impact, including on financial condition and results of operations",
            ]),
        },
    ]
}

/// A configuration table that adjusts a regime by id, or adds one.
///
/// For an existing id, every field present replaces the regime's value;
/// `supplementary_hours = 0` removes the supplementary clock. For a new id,
/// `name`, `authority`, `deadline` and `applies` are required, `enabled`
/// defaults to `true` and `required_fields` to empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegimeOverride {
    /// The regime to adjust or add.
    pub id: String,
    /// Replaces [`Regime::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces [`Regime::authority`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces [`Regime::deadline`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// Replaces [`Regime::applies`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies: Option<Applicability>,
    /// Replaces [`Regime::supplementary_hours`]; `0` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplementary_hours: Option<i64>,
    /// Replaces [`Regime::enabled`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces [`Regime::required_fields`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_fields: Option<Vec<String>>,
}

/// Why a regime or a set of regimes is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegimeError {
    /// The id is empty, too long, or uses characters other than `a-z0-9_`.
    #[error("regime id {id:?} must be 1 to 64 characters of a-z, 0-9 and _")]
    BadId {
        /// The offending id.
        id: String,
    },
    /// Two regimes, or two overrides, share an id.
    #[error("regime {id:?} is defined more than once")]
    Duplicate {
        /// The repeated id.
        id: String,
    },
    /// A new regime lacks a required field.
    #[error("new regime {id:?} needs `{field}`")]
    Missing {
        /// The new regime's id.
        id: String,
        /// The missing field.
        field: &'static str,
    },
    /// The name is empty.
    #[error("regime {id:?} needs a non-empty name")]
    EmptyName {
        /// The regime's id.
        id: String,
    },
    /// The deadline is zero or negative.
    #[error("regime {id:?}: the deadline must be positive")]
    BadDeadline {
        /// The regime's id.
        id: String,
    },
    /// `supplementary_hours` is zero or negative (or negative in an override).
    #[error("regime {id:?}: supplementary_hours must be positive")]
    BadSupplementary {
        /// The regime's id.
        id: String,
    },
}

/// Applies `overrides` to `base` (usually [`default_regimes`]): matching ids
/// are adjusted in place, new ids are appended in the order given. Every
/// resulting regime is validated; repeated ids are refused.
pub fn merge_regimes(
    base: Vec<Regime>,
    overrides: &[RegimeOverride],
) -> Result<Vec<Regime>, RegimeError> {
    let mut out = base;
    for (i, r) in out.iter().enumerate() {
        if out[..i].iter().any(|p| p.id == r.id) {
            return Err(RegimeError::Duplicate { id: r.id.clone() });
        }
    }
    for (i, o) in overrides.iter().enumerate() {
        if overrides[..i].iter().any(|p| p.id == o.id) {
            return Err(RegimeError::Duplicate { id: o.id.clone() });
        }
        let supplementary = match o.supplementary_hours {
            None => None,
            Some(0) => Some(None),
            Some(h) if h > 0 => Some(Some(h)),
            Some(_) => return Err(RegimeError::BadSupplementary { id: o.id.clone() }),
        };
        if let Some(r) = out.iter_mut().find(|r| r.id == o.id) {
            if let Some(v) = &o.name {
                r.name.clone_from(v);
            }
            if let Some(v) = &o.authority {
                r.authority.clone_from(v);
            }
            if let Some(v) = o.deadline {
                r.deadline = v;
            }
            if let Some(v) = o.applies {
                r.applies = v;
            }
            if let Some(v) = supplementary {
                r.supplementary_hours = v;
            }
            if let Some(v) = o.enabled {
                r.enabled = v;
            }
            if let Some(v) = &o.required_fields {
                r.required_fields.clone_from(v);
            }
        } else {
            let missing = |field| RegimeError::Missing {
                id: o.id.clone(),
                field,
            };
            out.push(Regime {
                id: o.id.clone(),
                name: o.name.clone().ok_or_else(|| missing("name"))?,
                authority: o.authority.clone().ok_or_else(|| missing("authority"))?,
                deadline: o.deadline.ok_or_else(|| missing("deadline"))?,
                applies: o.applies.ok_or_else(|| missing("applies"))?,
                supplementary_hours: supplementary.flatten(),
                enabled: o.enabled.unwrap_or(true),
                required_fields: o.required_fields.clone().unwrap_or_default(),
            });
        }
    }
    for r in &out {
        r.validate()?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Clocks
// ---------------------------------------------------------------------------

/// Facts about an incident that decide which regimes apply and when clocks start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFacts {
    /// When the organisation became aware of the incident (unix seconds).
    pub aware_at: i64,
    /// How many data subjects are (or may be) affected. Required: an unknown
    /// count should be estimated upwards, not left at zero.
    pub affected_subjects: u64,
    /// Whether the data was reached by unlawful access from outside.
    pub outside_access: bool,
    /// When the incident was determined to be material, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materiality_at: Option<i64>,
    /// When each newly confirmed fact was confirmed (unix seconds).
    #[serde(default)]
    pub confirmed_facts_at: Vec<i64>,
}

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

/// The clocks that run for an incident: for every enabled regime that applies,
/// an initial clock, then, if the regime has
/// [`supplementary_hours`](Regime::supplementary_hours), one supplementary
/// clock per distinct confirmed fact strictly after the initial clock's start
/// (facts confirmed at or before it belong in the initial report).
///
/// Clocks start at `aware_at`, or at `materiality_at` for
/// [`Applicability::Materiality`] regimes (which produce nothing until it is
/// set). The result is sorted by due time; ties keep the regimes' order, with
/// the initial clock before its supplementary ones.
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
/// [`ReminderLabel::Overdue`] reminder). Once submitted, `now` is irrelevant.
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

// ---------------------------------------------------------------------------
// Incident state machine
// ---------------------------------------------------------------------------

/// Where an incident is in its life.
///
/// States only move forward, `open → contained → reported → closed`, and may
/// skip steps: an open incident may be reported without a separate
/// containment step, and closing is allowed from every state but `closed`.
/// No move goes backwards (a reported incident cannot become contained
/// again), `closed` is terminal, and staying in the same state is not a move.
///
/// | from \ to | open | contained | reported | closed |
/// | --- | --- | --- | --- | --- |
/// | open | – | yes | yes | yes |
/// | contained | – | – | yes | yes |
/// | reported | – | – | – | yes |
/// | closed | – | – | – | – |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// Detected, being investigated.
    Open,
    /// The attacker's access has been cut off.
    Contained,
    /// The required reports have been submitted.
    Reported,
    /// Finished; terminal.
    Closed,
}

impl IncidentState {
    /// Every state, in order.
    pub const ALL: [IncidentState; 4] = [
        IncidentState::Open,
        IncidentState::Contained,
        IncidentState::Reported,
        IncidentState::Closed,
    ];

    /// The stable name: `open`, `contained`, `reported`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Contained => "contained",
            IncidentState::Reported => "reported",
            IncidentState::Closed => "closed",
        }
    }

    /// Whether no move leaves this state.
    pub fn is_terminal(self) -> bool {
        self == IncidentState::Closed
    }

    /// Whether an incident in this state may move to `next` (see the table on
    /// [`IncidentState`]).
    pub fn can_move_to(self, next: IncidentState) -> bool {
        // The declaration order is the life order; `Closed` is the last, so
        // nothing is after it.
        next > self
    }

    /// `next` if the move is allowed, otherwise a [`TransitionError`].
    pub fn move_to(self, next: IncidentState) -> Result<IncidentState, TransitionError> {
        if self.can_move_to(next) {
            Ok(next)
        } else {
            Err(TransitionError {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an incident state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown incident state {input:?} (expected open, contained, reported or closed)")]
pub struct ParseIncidentStateError {
    /// What was given.
    pub input: String,
}

impl FromStr for IncidentState {
    type Err = ParseIncidentStateError;

    /// Parses the exact lowercase names returned by [`IncidentState::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IncidentState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseIncidentStateError {
                input: s.to_owned(),
            })
    }
}

/// A move the incident state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an incident cannot move from {from} to {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: IncidentState,
    /// The refused next state.
    pub to: IncidentState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReminderLabel::{HalfTime, OneHour, Overdue, SixHours};
    use serde_json::json;

    // ---- test helpers ------------------------------------------------------

    /// Unix seconds of a UTC civil date-time (Howard Hinnant's days_from_civil).
    fn utc(y: i64, m: i64, d: i64, hh: i64, mm: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * DAY + hh * HOUR + mm * 60
    }

    fn regime(id: &str) -> Regime {
        default_regimes()
            .into_iter()
            .find(|r| r.id == id)
            .expect("default regime")
    }

    fn facts(aware_at: i64, affected_subjects: u64, outside_access: bool) -> IncidentFacts {
        IncidentFacts {
            aware_at,
            affected_subjects,
            outside_access,
            materiality_at: None,
            confirmed_facts_at: vec![],
        }
    }

    fn ids(cs: &[Clock]) -> Vec<&str> {
        cs.iter().map(|c| c.regime_id.as_str()).collect()
    }

    fn clock(starts_at: i64, due_at: i64) -> Clock {
        Clock {
            regime_id: "t".into(),
            name: "t".into(),
            starts_at,
            due_at,
            kind: ClockKind::Initial,
            reminders: reminders(starts_at, due_at),
        }
    }

    /// Weekday, Monday = 0, computed independently of `add_business_days`.
    fn weekday(t: i64) -> i64 {
        (t.div_euclid(DAY) + 3).rem_euclid(7)
    }

    /// Obviously-correct reference: step one calendar day at a time.
    fn add_business_days_slow(t: i64, n: u32) -> i64 {
        let mut t = t;
        let mut left = n;
        while left > 0 {
            t += DAY;
            if weekday(t) < 5 {
                left -= 1;
            }
        }
        t
    }

    const THU: (i64, i64, i64) = (2024, 3, 7);

    #[test]
    fn test_helper_dates() {
        assert_eq!(utc(1970, 1, 1, 0, 0), 0);
        assert_eq!(utc(2024, 1, 1, 0, 0), 1_704_067_200);
        assert_eq!(utc(2024, 3, 7, 10, 0), 1_709_805_600);
        assert_eq!(utc(2000, 2, 29, 12, 0), 951_825_600);
        assert_eq!(weekday(utc(2024, 1, 1, 0, 0)), 0); // Monday
        assert_eq!(weekday(utc(THU.0, THU.1, THU.2, 0, 0)), 3); // Thursday
        assert_eq!(weekday(0), 3); // 1970-01-01 was a Thursday
    }

    // ---- default regimes ---------------------------------------------------

    #[test]
    fn default_regimes_are_valid_and_as_specified() {
        let rs = default_regimes();
        assert_eq!(
            rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["kr_network_act", "kr_pipa", "gdpr_art33", "sec_8k_105"]
        );
        for r in &rs {
            r.validate().unwrap();
            assert!(!r.required_fields.is_empty(), "{}", r.id);
            assert!(!r.authority.is_empty(), "{}", r.id);
        }
        let kr = &rs[0];
        assert_eq!(kr.deadline, Deadline::Hours(24));
        assert_eq!(kr.applies, Applicability::Always);
        assert_eq!(kr.supplementary_hours, Some(24));
        assert!(kr.enabled);
        let pipa = &rs[1];
        assert_eq!(pipa.deadline, Deadline::Hours(72));
        assert_eq!(
            pipa.applies,
            Applicability::MinSubjectsOrOutsideAccess(1000)
        );
        assert_eq!(pipa.supplementary_hours, None);
        assert!(pipa.enabled);
        let gdpr = &rs[2];
        assert_eq!(gdpr.deadline, Deadline::Hours(72));
        assert_eq!(gdpr.applies, Applicability::Always);
        assert!(gdpr.enabled);
        let sec = &rs[3];
        assert_eq!(sec.deadline, Deadline::BusinessDays(4));
        assert_eq!(sec.applies, Applicability::Materiality);
        assert!(!sec.enabled);
    }

    #[test]
    fn kr_network_act_is_24_hours_from_awareness() {
        let aware = utc(2024, 3, 7, 10, 0);
        let cs = clocks(&[regime("kr_network_act")], &facts(aware, 1, false));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].starts_at, aware);
        assert_eq!(cs[0].due_at, utc(2024, 3, 8, 10, 0));
        assert_eq!(cs[0].kind, ClockKind::Initial);
        assert_eq!(cs[0].name, "KR Network Act (MSIT/KISA)");
        // Hours are exact durations, weekends included.
        let fri = utc(2024, 3, 8, 22, 30);
        let cs = clocks(&[regime("kr_network_act")], &facts(fri, 0, false));
        assert_eq!(cs[0].due_at, utc(2024, 3, 9, 22, 30));
    }

    #[test]
    fn kr_network_act_supplementary_clocks() {
        let aware = utc(2024, 3, 7, 10, 0);
        let mut f = facts(aware, 0, false);
        // Unsorted, with a duplicate and facts at/before awareness.
        f.confirmed_facts_at = vec![
            utc(2024, 3, 9, 8, 0),
            utc(2024, 3, 7, 15, 0),
            utc(2024, 3, 9, 8, 0),
            aware,
            aware - HOUR,
        ];
        let cs = clocks(&[regime("kr_network_act")], &f);
        let got: Vec<_> = cs.iter().map(|c| (c.kind, c.starts_at, c.due_at)).collect();
        assert_eq!(
            got,
            [
                (ClockKind::Initial, aware, utc(2024, 3, 8, 10, 0)),
                (
                    ClockKind::Supplementary {
                        fact_at: utc(2024, 3, 7, 15, 0)
                    },
                    utc(2024, 3, 7, 15, 0),
                    utc(2024, 3, 8, 15, 0)
                ),
                (
                    ClockKind::Supplementary {
                        fact_at: utc(2024, 3, 9, 8, 0)
                    },
                    utc(2024, 3, 9, 8, 0),
                    utc(2024, 3, 10, 8, 0)
                ),
            ]
        );
        assert_eq!(
            cs[1].name,
            "KR Network Act (MSIT/KISA): supplementary report"
        );
        assert!(cs.iter().all(|c| c.regime_id == "kr_network_act"));
        // Regimes without supplementary_hours ignore confirmed facts.
        let cs = clocks(&[regime("gdpr_art33")], &f);
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn gdpr_is_72_hours_from_awareness_always() {
        let aware = utc(2024, 3, 7, 10, 0);
        let cs = clocks(&[regime("gdpr_art33")], &facts(aware, 0, false));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].starts_at, aware);
        assert_eq!(cs[0].due_at, utc(2024, 3, 10, 10, 0)); // Sunday: hours ignore weekends
    }

    #[test]
    fn pipa_threshold_and_outside_access() {
        let aware = utc(2024, 3, 7, 10, 0);
        let pipa = [regime("kr_pipa")];
        let table: &[(u64, bool, bool)] = &[
            (0, false, false),
            (999, false, false),
            (1000, false, true),
            (1001, false, true),
            (u64::MAX, false, true),
            (0, true, true),
            (1, true, true),
            (999, true, true),
            (1000, true, true),
        ];
        for &(n, outside, applies) in table {
            let cs = clocks(&pipa, &facts(aware, n, outside));
            assert_eq!(
                cs.len(),
                usize::from(applies),
                "{n} subjects, outside={outside}"
            );
            if applies {
                assert_eq!(cs[0].starts_at, aware);
                assert_eq!(cs[0].due_at, aware + 72 * HOUR);
            }
        }
    }

    #[test]
    fn min_subjects_applicability() {
        let a = Applicability::MinSubjects(10);
        assert!(!a.matches(&facts(0, 9, true)));
        assert!(a.matches(&facts(0, 10, false)));
        assert!(Applicability::Always.matches(&facts(0, 0, false)));
        assert!(!Applicability::Materiality.matches(&facts(0, u64::MAX, true)));
    }

    #[test]
    fn sec_is_disabled_by_default_and_needs_materiality() {
        let aware = utc(2024, 3, 4, 9, 0); // Monday
        let mut f = facts(aware, 1_000_000, true);
        f.materiality_at = Some(utc(2024, 3, 7, 16, 0)); // Thursday
        // Disabled by default: nothing, even when material.
        assert!(clocks(&[regime("sec_8k_105")], &f).is_empty());

        let mut sec = regime("sec_8k_105");
        sec.enabled = true;
        let cs = clocks(std::slice::from_ref(&sec), &f);
        assert_eq!(cs.len(), 1);
        // Starts at the materiality determination, not at awareness.
        assert_eq!(cs[0].starts_at, utc(2024, 3, 7, 16, 0));
        // Thursday + 4 business days = next Wednesday, same time of day.
        assert_eq!(cs[0].due_at, utc(2024, 3, 13, 16, 0));

        // Enabled but no materiality determination yet: no clock.
        f.materiality_at = None;
        assert!(clocks(&[sec], &f).is_empty());
    }

    #[test]
    fn all_defaults_together_sorted_by_due_time() {
        let aware = utc(2024, 3, 7, 10, 0);
        let mut rs = default_regimes();
        rs[3].enabled = true;
        let mut f = facts(aware, 5000, false);
        f.materiality_at = Some(utc(2024, 3, 7, 12, 0));
        f.confirmed_facts_at = vec![utc(2024, 3, 9, 10, 0)];
        let cs = clocks(&rs, &f);
        // kr 24h (Fri 10:00), kr supp (Sun 10:00), pipa & gdpr 72h (Sun 10:00,
        // ties keep regime order), sec (Wed 12:00).
        assert_eq!(
            ids(&cs),
            [
                "kr_network_act",
                "kr_network_act",
                "kr_pipa",
                "gdpr_art33",
                "sec_8k_105"
            ]
        );
        let due: Vec<i64> = cs.iter().map(|c| c.due_at).collect();
        assert!(due.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cs[4].due_at, utc(2024, 3, 13, 12, 0));
        for c in &cs {
            assert_eq!(c.reminders, reminders(c.starts_at, c.due_at));
        }
        // Disabled regimes vanish; below threshold PIPA vanishes.
        let cs = clocks(&default_regimes(), &facts(aware, 10, false));
        assert_eq!(ids(&cs), ["kr_network_act", "gdpr_art33"]);
        assert!(clocks(&[], &f).is_empty());
    }

    #[test]
    fn supplementary_facts_are_relative_to_the_clock_start() {
        // A regime with supplementary reports whose clock starts at materiality.
        let r = Regime {
            id: "x".into(),
            name: "X".into(),
            authority: "A".into(),
            deadline: Deadline::Hours(10),
            applies: Applicability::Materiality,
            supplementary_hours: Some(2),
            enabled: true,
            required_fields: vec![],
        };
        let mut f = facts(100, 0, false);
        f.materiality_at = Some(1000);
        f.confirmed_facts_at = vec![500, 1000, 1001];
        let cs = clocks(&[r], &f);
        let got: Vec<_> = cs.iter().map(|c| (c.starts_at, c.due_at)).collect();
        assert_eq!(got, [(1001, 1001 + 2 * HOUR), (1000, 1000 + 10 * HOUR)]);
    }

    // ---- business days ------------------------------------------------------

    #[test]
    fn business_days_table() {
        // (start, n, expected)
        let table = [
            // Thursday + 4 = next Wednesday, time of day kept.
            (utc(2024, 3, 7, 10, 0), 4, utc(2024, 3, 13, 10, 0)),
            // Friday evening + 4 = next Thursday evening.
            (utc(2024, 3, 8, 20, 0), 4, utc(2024, 3, 14, 20, 0)),
            // Friday + 1 = Monday.
            (utc(2024, 3, 8, 23, 59), 1, utc(2024, 3, 11, 23, 59)),
            // Saturday + 4 = Thursday; Saturday + 1 = Monday.
            (utc(2024, 3, 9, 10, 0), 4, utc(2024, 3, 14, 10, 0)),
            (utc(2024, 3, 9, 10, 0), 1, utc(2024, 3, 11, 10, 0)),
            // Sunday late + 1 = Monday, same time.
            (utc(2024, 3, 10, 23, 0), 1, utc(2024, 3, 11, 23, 0)),
            (utc(2024, 3, 10, 0, 0), 5, utc(2024, 3, 15, 0, 0)),
            // Monday + 4 = Friday; + 5 = next Monday; + 10 = two weeks.
            (utc(2024, 3, 4, 9, 0), 4, utc(2024, 3, 8, 9, 0)),
            (utc(2024, 3, 4, 9, 0), 5, utc(2024, 3, 11, 9, 0)),
            (utc(2024, 3, 4, 9, 0), 10, utc(2024, 3, 18, 9, 0)),
            // Wednesday + 4 across a month and a leap day.
            (utc(2024, 2, 28, 12, 0), 4, utc(2024, 3, 5, 12, 0)),
            // Across a year end (holidays are not modelled).
            (utc(2024, 12, 31, 8, 0), 4, utc(2025, 1, 6, 8, 0)),
            // Zero: unchanged, even on a weekend.
            (utc(2024, 3, 9, 10, 0), 0, utc(2024, 3, 9, 10, 0)),
        ];
        for (start, n, want) in table {
            assert_eq!(add_business_days(start, n), want, "start {start} + {n}");
        }
    }

    #[test]
    fn business_days_match_reference() {
        // Every hour-ish offset over two weeks, every n up to 3 weeks, plus
        // times before 1970.
        let base = utc(2024, 3, 4, 0, 0);
        for start in (0..14 * DAY).step_by(3 * 3600 + 7).map(|o| base + o) {
            for n in 0..16 {
                assert_eq!(
                    add_business_days(start, n),
                    add_business_days_slow(start, n)
                );
            }
        }
        for start in [
            -1,
            -DAY,
            -DAY - 1,
            utc(1969, 12, 27, 5, 0),
            utc(1900, 1, 6, 0, 0),
        ] {
            for n in 0..12 {
                assert_eq!(
                    add_business_days(start, n),
                    add_business_days_slow(start, n)
                );
            }
        }
    }

    #[test]
    fn business_days_land_on_weekdays_and_do_not_overflow() {
        let start = utc(2024, 3, 9, 10, 0);
        for n in 1..40 {
            assert!(weekday(add_business_days(start, n)) < 5);
        }
        assert_eq!(add_business_days(i64::MAX - 10, 1_000), i64::MAX);
        // Large n is computed without stepping day by day.
        let far = add_business_days(utc(2024, 3, 4, 0, 0), u32::MAX);
        assert!(far > utc(2024, 3, 4, 0, 0));
    }

    // ---- reminders ----------------------------------------------------------

    fn rem(label: ReminderLabel, at: i64) -> Reminder {
        Reminder { label, at }
    }

    #[test]
    fn reminders_for_24_and_72_hours() {
        let s = utc(2024, 3, 7, 10, 0);
        assert_eq!(
            reminders(s, s + 24 * HOUR),
            [
                rem(HalfTime, s + 12 * HOUR),
                rem(SixHours, s + 18 * HOUR),
                rem(OneHour, s + 23 * HOUR),
                rem(Overdue, s + 24 * HOUR),
            ]
        );
        assert_eq!(
            reminders(s, s + 72 * HOUR),
            [
                rem(HalfTime, s + 36 * HOUR),
                rem(SixHours, s + 66 * HOUR),
                rem(OneHour, s + 71 * HOUR),
                rem(Overdue, s + 72 * HOUR),
            ]
        );
    }

    #[test]
    fn reminders_short_deadlines() {
        let s = 1_000_000;
        // 3 h: six hours before would be before the start: skipped.
        assert_eq!(
            reminders(s, s + 3 * HOUR),
            [
                rem(HalfTime, s + 90 * 60),
                rem(OneHour, s + 2 * HOUR),
                rem(Overdue, s + 3 * HOUR),
            ]
        );
        // 6 h: six hours before is exactly the start: kept.
        assert_eq!(
            reminders(s, s + 6 * HOUR),
            [
                rem(SixHours, s),
                rem(HalfTime, s + 3 * HOUR),
                rem(OneHour, s + 5 * HOUR),
                rem(Overdue, s + 6 * HOUR),
            ]
        );
        // 8 h: six hours before comes before half time; order is by time.
        assert_eq!(
            reminders(s, s + 8 * HOUR),
            [
                rem(SixHours, s + 2 * HOUR),
                rem(HalfTime, s + 4 * HOUR),
                rem(OneHour, s + 7 * HOUR),
                rem(Overdue, s + 8 * HOUR),
            ]
        );
        // 30 min: only half time and overdue.
        assert_eq!(
            reminders(s, s + 1800),
            [rem(HalfTime, s + 900), rem(Overdue, s + 1800)]
        );
        // Zero length: only overdue (half time would duplicate it).
        assert_eq!(reminders(s, s), [rem(Overdue, s)]);
        // Due before start (invalid config): still an overdue reminder.
        assert_eq!(reminders(s, s - 10), [rem(Overdue, s - 10)]);
    }

    #[test]
    fn reminders_dedup_keeps_the_more_urgent() {
        let s = 50_000;
        // 12 h: half time == six hours before.
        assert_eq!(
            reminders(s, s + 12 * HOUR),
            [
                rem(SixHours, s + 6 * HOUR),
                rem(OneHour, s + 11 * HOUR),
                rem(Overdue, s + 12 * HOUR),
            ]
        );
        // 2 h: half time == one hour before.
        assert_eq!(
            reminders(s, s + 2 * HOUR),
            [rem(OneHour, s + HOUR), rem(Overdue, s + 2 * HOUR)]
        );
        // 1 h: one hour before == start (kept), half time after it.
        assert_eq!(
            reminders(s, s + HOUR),
            [
                rem(OneHour, s),
                rem(HalfTime, s + 1800),
                rem(Overdue, s + HOUR)
            ]
        );
    }

    #[test]
    fn reminders_invariants() {
        let s = utc(2024, 3, 7, 10, 0);
        for len in (0..100 * HOUR).step_by(599) {
            let rs = reminders(s, s + len);
            assert_eq!(rs.last(), Some(&rem(Overdue, s + len)));
            assert!(rs.windows(2).all(|w| w[0].at < w[1].at), "{len}: {rs:?}");
            assert!(rs.iter().all(|r| r.at >= s && r.at <= s + len));
            let mut labels: Vec<_> = rs.iter().map(|r| r.label).collect();
            labels.sort();
            labels.dedup();
            assert_eq!(labels.len(), rs.len());
        }
        // Extreme values do not overflow.
        let _ = reminders(i64::MIN, i64::MAX);
        let _ = reminders(i64::MAX, i64::MIN);
    }

    #[test]
    fn due_reminders_window() {
        let s = 0;
        let c = clock(s, s + 24 * HOUR);
        assert!(due_reminders(&c, s, s + 12 * HOUR - 1).is_empty());
        assert_eq!(
            due_reminders(&c, s, s + 12 * HOUR),
            [rem(HalfTime, 12 * HOUR)]
        );
        // `since` is exclusive: the next run does not repeat it.
        assert!(due_reminders(&c, s + 12 * HOUR, s + 18 * HOUR - 1).is_empty());
        // A scheduler that slept through several sends them all, in order.
        assert_eq!(
            due_reminders(&c, s + 12 * HOUR, s + 30 * HOUR),
            [
                rem(SixHours, 18 * HOUR),
                rem(OneHour, 23 * HOUR),
                rem(Overdue, 24 * HOUR)
            ]
        );
        // Runs at arbitrary times send each reminder exactly once.
        let mut sent = Vec::new();
        let mut since = -1;
        for now in (0..30 * HOUR).step_by(1234) {
            sent.extend(due_reminders(&c, since, now));
            since = now;
        }
        sent.extend(due_reminders(&c, since, 30 * HOUR));
        assert_eq!(sent, c.reminders);
        // Empty or inverted window.
        assert!(due_reminders(&c, 30 * HOUR, 30 * HOUR).is_empty());
        assert!(due_reminders(&c, 30 * HOUR, 0).is_empty());
    }

    // ---- status ---------------------------------------------------------------

    #[test]
    fn status_around_the_due_time() {
        let due = 100 * HOUR;
        let c = clock(due - 24 * HOUR, due);
        assert_eq!(
            status(&c, c.starts_at, None),
            ClockStatus::Running {
                remaining_secs: 24 * HOUR
            }
        );
        assert_eq!(
            status(&c, due - 1, None),
            ClockStatus::Running { remaining_secs: 1 }
        );
        assert_eq!(status(&c, due, None), ClockStatus::Overdue { by_secs: 0 });
        assert_eq!(
            status(&c, due + 1, None),
            ClockStatus::Overdue { by_secs: 1 }
        );
        assert_eq!(
            status(&c, due + 3900, None),
            ClockStatus::Overdue { by_secs: 3900 }
        );
        // Submitted: `now` no longer matters.
        for now in [0, due - 1, due, due + 10 * HOUR] {
            assert_eq!(
                status(&c, now, Some(due - 5)),
                ClockStatus::Met { at: due - 5 }
            );
            assert_eq!(status(&c, now, Some(due)), ClockStatus::Met { at: due });
            assert_eq!(
                status(&c, now, Some(due + 1)),
                ClockStatus::Late {
                    at: due + 1,
                    by_secs: 1
                }
            );
        }
        // Submitted before the clock even started (early report) is met.
        assert_eq!(status(&c, due, Some(0)), ClockStatus::Met { at: 0 });
    }

    // ---- format_duration ----------------------------------------------------

    #[test]
    fn format_duration_table() {
        let table: &[(i64, &str)] = &[
            (0, "0s"),
            (45, "45s"),
            (60, "1m 0s"),
            (12 * 60 + 5, "12m 5s"),
            (HOUR, "1h 0m"),
            (24 * HOUR - 1, "23h 59m"),
            (24 * HOUR, "1d 0h"),
            (3 * DAY + 4 * HOUR + 59 * 60, "3d 4h"),
            (-1, "-1s"),
            (-(HOUR + 5 * 60), "-1h 5m"),
            (-(HOUR + 5 * 60 + 59), "-1h 5m"),
            (-2 * DAY, "-2d 0h"),
        ];
        for &(secs, want) in table {
            assert_eq!(format_duration(secs), want, "{secs}");
        }
        assert!(format_duration(i64::MIN).starts_with('-'));
        assert!(format_duration(i64::MAX).ends_with('h'));
    }

    // ---- state machine --------------------------------------------------------

    #[test]
    fn state_machine_table() {
        use IncidentState::{Closed, Contained, Open, Reported};
        const TABLE: &[(IncidentState, IncidentState, bool)] = &[
            (Open, Open, false),
            (Open, Contained, true),
            (Open, Reported, true),
            (Open, Closed, true),
            (Contained, Open, false),
            (Contained, Contained, false),
            (Contained, Reported, true),
            (Contained, Closed, true),
            (Reported, Open, false),
            (Reported, Contained, false),
            (Reported, Reported, false),
            (Reported, Closed, true),
            (Closed, Open, false),
            (Closed, Contained, false),
            (Closed, Reported, false),
            (Closed, Closed, false),
        ];
        assert_eq!(
            TABLE.len(),
            IncidentState::ALL.len() * IncidentState::ALL.len()
        );
        for &(from, to, allowed) in TABLE {
            assert_eq!(from.can_move_to(to), allowed, "{from} -> {to}");
            match from.move_to(to) {
                Ok(next) => {
                    assert!(allowed);
                    assert_eq!(next, to);
                }
                Err(e) => {
                    assert!(!allowed);
                    assert_eq!(e, TransitionError { from, to });
                    assert_eq!(
                        e.to_string(),
                        format!("an incident cannot move from {from} to {to}")
                    );
                }
            }
        }
        for s in IncidentState::ALL {
            assert_eq!(s.is_terminal(), s == Closed);
            // Closing is allowed from every non-closed state.
            assert_eq!(s.can_move_to(Closed), s != Closed);
        }
    }

    #[test]
    fn state_names_parse_and_serialize() {
        for s in IncidentState::ALL {
            assert_eq!(s.as_str().parse::<IncidentState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
            assert_eq!(
                serde_json::from_value::<IncidentState>(json!(s.as_str())).unwrap(),
                s
            );
        }
        for bad in ["", "Open", "OPEN", " open", "closed ", "resolved"] {
            let err = bad.parse::<IncidentState>().unwrap_err();
            assert_eq!(err.input, bad);
            assert!(serde_json::from_value::<IncidentState>(json!(bad)).is_err());
        }
    }

    // ---- serde ----------------------------------------------------------------

    #[test]
    fn regimes_round_trip_through_json() {
        let rs = default_regimes();
        let text = serde_json::to_string(&rs).unwrap();
        let back: Vec<Regime> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rs);
    }

    #[test]
    fn regime_wire_format() {
        let v = serde_json::to_value(regime("kr_network_act")).unwrap();
        assert_eq!(v["deadline"], json!({"hours": 24}));
        assert_eq!(v["applies"], json!("always"));
        assert_eq!(v["supplementary_hours"], json!(24));
        assert_eq!(v["enabled"], json!(true));
        let v = serde_json::to_value(regime("kr_pipa")).unwrap();
        assert_eq!(
            v["applies"],
            json!({"min_subjects_or_outside_access": 1000})
        );
        assert!(v.get("supplementary_hours").is_none());
        let v = serde_json::to_value(regime("sec_8k_105")).unwrap();
        assert_eq!(v["deadline"], json!({"business_days": 4}));
        assert_eq!(v["applies"], json!("materiality"));
        assert_eq!(v["enabled"], json!(false));
        assert_eq!(
            serde_json::to_value(Applicability::MinSubjects(5)).unwrap(),
            json!({"min_subjects": 5})
        );
    }

    #[test]
    fn regime_defaults_and_unknown_fields() {
        let r: Regime = serde_json::from_value(json!({
            "id": "x", "name": "X", "authority": "A",
            "deadline": {"hours": 48}, "applies": {"min_subjects": 1}
        }))
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.supplementary_hours, None);
        assert!(r.required_fields.is_empty());
        assert!(
            serde_json::from_value::<Regime>(json!({
                "id": "x", "name": "X", "authority": "A",
                "deadline": {"hours": 48}, "applies": "always", "deadlne": 1
            }))
            .is_err()
        );
        assert!(serde_json::from_value::<Deadline>(json!({"days": 2})).is_err());
        assert!(serde_json::from_value::<Deadline>(json!({"business_days": -1})).is_err());
        assert!(serde_json::from_value::<Applicability>(json!("sometimes")).is_err());
    }

    #[test]
    fn clocks_and_statuses_round_trip() {
        let aware = utc(2024, 3, 7, 10, 0);
        let mut f = facts(aware, 2000, true);
        f.confirmed_facts_at = vec![aware + 5 * HOUR];
        f.materiality_at = Some(aware + HOUR);
        let fv = serde_json::to_value(&f).unwrap();
        assert_eq!(serde_json::from_value::<IncidentFacts>(fv).unwrap(), f);
        // Optional facts may be omitted; the counts may not.
        let minimal: IncidentFacts = serde_json::from_value(json!({
            "aware_at": 5, "affected_subjects": 0, "outside_access": false
        }))
        .unwrap();
        assert_eq!(minimal, facts(5, 0, false));
        assert!(
            serde_json::from_value::<IncidentFacts>(
                json!({"aware_at": 5, "outside_access": false})
            )
            .is_err()
        );

        let cs = clocks(&default_regimes(), &f);
        let text = serde_json::to_string(&cs).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Clock>>(&text).unwrap(), cs);
        let v = serde_json::to_value(&cs[0]).unwrap();
        assert_eq!(v["kind"], json!("initial"));
        assert_eq!(
            v["reminders"][0],
            json!({"label": "half_time", "at": aware + 12 * HOUR})
        );
        let supp = cs
            .iter()
            .find(|c| matches!(c.kind, ClockKind::Supplementary { .. }))
            .unwrap();
        assert_eq!(
            serde_json::to_value(supp).unwrap()["kind"],
            json!({"supplementary": {"fact_at": aware + 5 * HOUR}})
        );

        for st in [
            ClockStatus::Running { remaining_secs: 5 },
            ClockStatus::Overdue { by_secs: 0 },
            ClockStatus::Met { at: 7 },
            ClockStatus::Late { at: 9, by_secs: 2 },
        ] {
            let v = serde_json::to_value(st).unwrap();
            assert_eq!(serde_json::from_value::<ClockStatus>(v).unwrap(), st);
        }
        assert_eq!(
            serde_json::to_value(ClockStatus::Late { at: 9, by_secs: 2 }).unwrap(),
            json!({"state": "late", "at": 9, "by_secs": 2})
        );
        for l in [HalfTime, SixHours, OneHour, Overdue] {
            assert_eq!(serde_json::to_value(l).unwrap(), json!(l.as_str()));
            assert_eq!(l.to_string(), l.as_str());
        }
    }

    // ---- overrides ------------------------------------------------------------

    fn overrides(v: serde_json::Value) -> Vec<RegimeOverride> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn overrides_adjust_defaults_by_id() {
        let out = merge_regimes(
            default_regimes(),
            &overrides(json!([
                {"id": "sec_8k_105", "enabled": true},
                {"id": "kr_network_act", "supplementary_hours": 0},
                {"id": "gdpr_art33", "deadline": {"hours": 48}, "authority": "CNIL"},
            ])),
        )
        .unwrap();
        assert_eq!(out.len(), 4);
        assert!(out[3].enabled);
        assert_eq!(out[3].deadline, Deadline::BusinessDays(4)); // untouched
        assert_eq!(out[0].supplementary_hours, None);
        assert_eq!(out[0].deadline, Deadline::Hours(24));
        assert_eq!(out[2].deadline, Deadline::Hours(48));
        assert_eq!(out[2].authority, "CNIL");
        assert_eq!(out[2].name, "GDPR Art. 33");
        assert_eq!(out[1], regime("kr_pipa"));
        // No overrides: unchanged.
        assert_eq!(
            merge_regimes(default_regimes(), &[]).unwrap(),
            default_regimes()
        );
    }

    #[test]
    fn overrides_add_new_regimes() {
        let out = merge_regimes(
            default_regimes(),
            &overrides(json!([{
                "id": "uk_gdpr_art33", "name": "UK GDPR Art. 33 (ICO)", "authority": "ICO",
                "deadline": {"hours": 72}, "applies": "always",
                "required_fields": ["Nature of the breach"]
            }])),
        )
        .unwrap();
        assert_eq!(out.len(), 5);
        let r = &out[4];
        assert_eq!(r.id, "uk_gdpr_art33");
        assert!(r.enabled);
        assert_eq!(r.supplementary_hours, None);
        assert_eq!(r.required_fields, ["Nature of the breach"]);
    }

    #[test]
    fn overrides_are_checked() {
        let merge = |v| merge_regimes(default_regimes(), &overrides(v)).unwrap_err();
        assert_eq!(
            merge(json!([{"id": "new", "name": "N", "authority": "A", "applies": "always"}])),
            RegimeError::Missing {
                id: "new".into(),
                field: "deadline"
            }
        );
        assert_eq!(
            merge(json!([{"id": "new"}])),
            RegimeError::Missing {
                id: "new".into(),
                field: "name"
            }
        );
        assert_eq!(
            merge(json!([{"id": "gdpr_art33", "enabled": false}, {"id": "gdpr_art33"}])),
            RegimeError::Duplicate {
                id: "gdpr_art33".into()
            }
        );
        assert_eq!(
            merge(json!([{"id": "gdpr_art33", "deadline": {"hours": 0}}])),
            RegimeError::BadDeadline {
                id: "gdpr_art33".into()
            }
        );
        assert_eq!(
            merge(json!([{"id": "sec_8k_105", "deadline": {"business_days": 0}}])),
            RegimeError::BadDeadline {
                id: "sec_8k_105".into()
            }
        );
        assert_eq!(
            merge(json!([{"id": "kr_network_act", "supplementary_hours": -1}])),
            RegimeError::BadSupplementary {
                id: "kr_network_act".into()
            }
        );
        assert_eq!(
            merge(json!([{"id": "kr_pipa", "name": "  "}])),
            RegimeError::EmptyName {
                id: "kr_pipa".into()
            }
        );
        assert_eq!(
            merge(json!([{"id": "Bad-Id", "name": "N", "authority": "A",
                          "deadline": {"hours": 1}, "applies": "always"}])),
            RegimeError::BadId {
                id: "Bad-Id".into()
            }
        );
        // Typos in an override table are refused by name.
        let err =
            serde_json::from_value::<Vec<RegimeOverride>>(json!([{"id": "x", "enabeld": true}]))
                .unwrap_err();
        assert!(err.to_string().contains("enabeld"), "{err}");
        // Duplicates in the base are refused too.
        let mut base = default_regimes();
        base.push(regime("gdpr_art33"));
        assert_eq!(
            merge_regimes(base, &[]).unwrap_err(),
            RegimeError::Duplicate {
                id: "gdpr_art33".into()
            }
        );
    }
}
