//! The detection rules and their thresholds: [`Rule`] with its stable code
//! and the [`Severity`] its findings carry, and [`DetectorConfig`]
//! (`[detector]` in `tally.toml`).
//!
//! Invariants: rule codes and severity names are stable (they are stored
//! and shown); a rule's severity is fixed by the rule, and severity high or
//! above opens or joins an incident.

use serde::{Deserialize, Serialize};

/// How bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Needs attention this week.
    Medium,
    /// An incident: opens one or joins the open one.
    High,
    /// An incident, now.
    Critical,
}

impl Severity {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// A detection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A validly signed token the ledger cannot tally.
    ForgedToken,
    /// Too many distinct subjects per actor.
    MassAccess,
    /// Access to a honey account.
    CanaryAccount,
    /// One token from many places.
    TokenReplay,
    /// Issuance for a subject not in the directory.
    UnknownSubject,
    /// A spent refresh token presented again.
    RefreshReuse,
    /// Signature count and ledger disagree.
    SignerLedgerMismatch,
    /// The ledger no longer verifies.
    LedgerTampered,
    /// A state row that grants access fails its MAC.
    StateTampered,
    /// The active key is past its maximum age.
    KeyTooOld,
    /// A key of an offboarded custodian still signs.
    DepartedCustodianKey,
    /// Refusals arrive faster than the access log's byte budget: they are
    /// counted in aggregate rows instead of written one by one.
    AccessFlood,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 12] = [
        Rule::ForgedToken,
        Rule::MassAccess,
        Rule::CanaryAccount,
        Rule::TokenReplay,
        Rule::UnknownSubject,
        Rule::RefreshReuse,
        Rule::SignerLedgerMismatch,
        Rule::LedgerTampered,
        Rule::StateTampered,
        Rule::KeyTooOld,
        Rule::DepartedCustodianKey,
        Rule::AccessFlood,
    ];

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Rule::ForgedToken => "forged_token",
            Rule::MassAccess => "mass_access",
            Rule::CanaryAccount => "canary_account",
            Rule::TokenReplay => "token_replay",
            Rule::UnknownSubject => "unknown_subject",
            Rule::RefreshReuse => "refresh_reuse",
            Rule::SignerLedgerMismatch => "signer_ledger_mismatch",
            Rule::LedgerTampered => "ledger_tampered",
            Rule::StateTampered => "state_tampered",
            Rule::KeyTooOld => "key_too_old",
            Rule::DepartedCustodianKey => "departed_custodian_key",
            Rule::AccessFlood => "access_flood",
        }
    }

    /// Parses [`Rule::code`].
    pub fn parse(code: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The severity findings of this rule carry.
    pub fn severity(self) -> Severity {
        match self {
            Rule::ForgedToken
            | Rule::CanaryAccount
            | Rule::SignerLedgerMismatch
            | Rule::LedgerTampered
            | Rule::StateTampered => Severity::Critical,
            Rule::MassAccess
            | Rule::TokenReplay
            | Rule::UnknownSubject
            | Rule::RefreshReuse
            | Rule::DepartedCustodianKey => Severity::High,
            Rule::KeyTooOld | Rule::AccessFlood => Severity::Medium,
        }
    }
}

/// Thresholds, from `[detector]` in `tally.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// `mass_access`: window length, seconds.
    pub mass_access_window_secs: i64,
    /// `mass_access`: distinct subjects per actor in the window above which it fires.
    pub mass_access_threshold: u64,
    /// `token_replay`: window length, seconds.
    pub replay_window_secs: i64,
    /// `token_replay`: distinct client addresses or devices per token that fire it.
    pub replay_min_sources: u64,
    /// Honey accounts: any access to one is critical.
    pub canary_accounts: Vec<String>,
    /// Actors tracked per counting rule (least recently seen evicted beyond).
    pub max_actors: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            mass_access_window_secs: 600,
            mass_access_threshold: 100,
            replay_window_secs: 300,
            replay_min_sources: 3,
            canary_accounts: Vec::new(),
            max_actors: 1_000_000,
        }
    }
}
