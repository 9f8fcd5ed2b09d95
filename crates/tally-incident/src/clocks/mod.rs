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
//!
//! # Inside
//!
//! `regimes` (regimes, overrides, incident facts), `deadline` (hours and
//! business days), `clock` (clocks and their status), `reminders` and
//! `state` (the incident state machine).

mod clock;
mod deadline;
mod regimes;
mod reminders;
mod state;

#[cfg(test)]
mod tests;

pub use clock::{Clock, ClockKind, ClockStatus, clocks, due_reminders, format_duration, status};
pub use deadline::{Deadline, add_business_days};
pub use regimes::{
    Applicability, IncidentFacts, Regime, RegimeError, RegimeOverride, default_regimes,
    merge_regimes,
};
pub use reminders::{Reminder, ReminderLabel, reminders};
pub use state::{IncidentState, ParseIncidentStateError, TransitionError};
