//! Reporting regimes: the built-in ones ([`default_regimes`]), the
//! overrides that adjust or add them ([`merge_regimes`]), and the
//! [`IncidentFacts`] that decide whether a regime applies and when its
//! clock starts.
//!
//! Invariants: a regime that passed [`Regime::validate`] has an id of
//! `a-z0-9_` (1 to 64 characters), a name, and positive deadlines; regime
//! ids are unique after a merge; a disabled regime never starts a clock.

use serde::{Deserialize, Serialize};

use super::deadline::Deadline;

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
