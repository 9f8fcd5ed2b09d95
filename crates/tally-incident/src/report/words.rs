//! The report's sentences: the nature of the breach per detection rule, a
//! timeline entry and a containment step in words (UTC times, no JSON).
//!
//! Invariant: every stored body renders as a sentence; a kind or shape this
//! module does not know falls back to its compact JSON, so nothing stored is
//! ever hidden from the report.

use serde_json::Value;

use crate::detect::{Containment, Rule};
use crate::timefmt::utc;

/// What a detection of `rule` says about the breach, for the nature of the
/// breach: one sentence per rule.
pub fn rule_nature(rule: Rule) -> &'static str {
    match rule {
        Rule::ForgedToken => {
            "Tokens signed with a genuine signing key but never issued (the issuance ledger cannot tally them) were presented to reach customer data: the key is in the wrong hands, and whoever holds it can mint access to any account."
        }
        Rule::MassAccess => {
            "One client address or device requested the data of an unusual number of distinct accounts: a scrape of customer data."
        }
        Rule::CanaryAccount => {
            "A honey account, which no real customer uses, was accessed: someone is enumerating accounts or testing stolen access."
        }
        Rule::TokenReplay => {
            "One access token was used from several places: a token was stolen and replayed."
        }
        Rule::UnknownSubject => {
            "Tokens were asked for subjects that are not in the directory: someone tried to obtain access for accounts that do not exist."
        }
        Rule::RefreshReuse => {
            "A refresh token that had already been spent was presented again: a refresh token was stolen (or copied) and replayed to keep a session alive."
        }
        Rule::SignerLedgerMismatch => {
            "The signer's count of signatures and the issuance ledger disagree: tokens may have been signed outside the recorded issuance process."
        }
        Rule::LedgerTampered => {
            "The issuance ledger no longer verifies: its records were altered or removed."
        }
        Rule::StateTampered => {
            "A stored row that grants access fails its integrity check: access rights may have been altered outside tally."
        }
        Rule::KeyTooOld => {
            "The active signing key is past its maximum age: a key-hygiene finding, not by itself evidence of access to customer data."
        }
        Rule::DepartedCustodianKey => {
            "A key held by a custodian who has left still signs tokens: access may be minted by someone no longer entitled to."
        }
        Rule::AccessFlood => {
            "Refused requests arrived faster than the access log's budget and were counted in aggregate rows: a flood of invalid requests."
        }
    }
}

/// The nature of the breach: what each rule among `rules` (in order, each
/// once) says, then the detections it rests on.
pub fn nature(rules: &[Rule], detections: usize) -> String {
    let mut seen: Vec<Rule> = Vec::new();
    for r in rules {
        if !seen.contains(r) {
            seen.push(*r);
        }
    }
    if seen.is_empty() {
        return "No detection is attached to this incident yet.".into();
    }
    let mut codes: Vec<&str> = seen.iter().map(|r| r.code()).collect();
    codes.sort_unstable();
    let mut out: Vec<String> = seen.iter().map(|r| rule_nature(*r).to_string()).collect();
    out.push(format!("{detections} detection(s): {}.", codes.join(", ")));
    out.join(" ")
}

/// A containment step to take, in words.
pub fn containment_words(c: &Containment) -> String {
    match c {
        Containment::BlockActor { actor } => {
            format!("block {} {} at the gate", actor.kind.as_str(), actor.value)
        }
        Containment::RevokeSubject { subject } => {
            format!("revoke every live token of subject {subject}")
        }
        Containment::CompromiseKey { kid } => {
            format!("declare key {kid} compromised (and rotate it if it is the active key)")
        }
    }
}

/// A containment step taken, in words.
fn taken_words(c: &Containment) -> String {
    match c {
        Containment::BlockActor { actor } => {
            format!("blocked {} {}", actor.kind.as_str(), actor.value)
        }
        Containment::RevokeSubject { subject } => {
            format!("revoked every live token of subject {subject}")
        }
        Containment::CompromiseKey { kid } => format!("declared key {kid} compromised"),
    }
}

/// A string field of `body`, if it is a non-empty string.
fn field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A timeline entry of incident `incident` in words: `kind` and its stored
/// `body` (times as UTC).
pub fn entry_words(incident: i64, kind: &str, body: &Value) -> String {
    let json = || match body {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    match kind {
        "opened" => {
            let mut s = format!("incident {incident} opened");
            if let Some(sev) = field(body, "severity") {
                s.push_str(&format!(" (severity {sev})"));
            }
            if let Some(k) = field(body, "by_detection") {
                s.push_str(&format!(" by detection {k}"));
            }
            s
        }
        "detection" => match (field(body, "rule"), field(body, "summary")) {
            (Some(rule), Some(summary)) => format!("detected {rule}: {summary}"),
            (Some(rule), None) => format!("detected {rule}"),
            _ => json(),
        },
        "action" => {
            let Ok(c) = serde_json::from_value::<Containment>(body["action"].clone()) else {
                return json();
            };
            let ok = body["ok"].as_bool() == Some(true);
            let why = match field(body, "rule") {
                Some(rule) => format!("incident {incident}, {rule}"),
                None => format!("incident {incident}"),
            };
            if ok {
                format!("{} ({why})", taken_words(&c))
            } else {
                let detail = field(body, "detail").unwrap_or("no detail");
                format!("could not {} ({why}): {detail}", containment_words(&c))
            }
        }
        "state" => match (field(body, "from"), field(body, "to")) {
            (Some(from), Some(to)) => match field(body, "note") {
                Some(note) => format!("state changed from {from} to {to}: {note}"),
                None => format!("state changed from {from} to {to}"),
            },
            _ => json(),
        },
        "materiality" => match body["materiality_at"].as_i64() {
            Some(t) => format!("incident determined material as of {}", utc(t)),
            None => json(),
        },
        "submission" => match (field(body, "regime"), field(body, "reference")) {
            (Some(regime), Some(r)) => format!("reported under {regime} (reference {r})"),
            (Some(regime), None) => format!("reported under {regime}"),
            _ => json(),
        },
        "ack" => "incident acknowledged".into(),
        "note" => field(body, "text").map_or_else(json, |t| format!("note: {t}")),
        _ => json(),
    }
}
