//! What a rule finds: a [`Finding`], the [`Actor`]s it names and the
//! [`Containment`] it suggests.
//!
//! Invariant: findings with the same `key` are about the same thing and
//! merge into one detection; evidence never holds secret material.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rules::{Rule, Severity};

/// Who did something: the kinds of actor tally can block or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// Client address.
    Ip,
    /// Device id.
    Device,
    /// Token id (`jti`).
    Token,
    /// Signing key id.
    Key,
    /// Token subject.
    Subject,
}

impl ActorKind {
    /// Stable lower-case name (also the block kind, except `key`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Ip => "ip",
            ActorKind::Device => "device",
            ActorKind::Token => "token",
            ActorKind::Key => "key",
            ActorKind::Subject => "subject",
        }
    }
}

/// One actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Actor {
    /// What kind.
    pub kind: ActorKind,
    /// Its value.
    pub value: String,
}

/// A containment step a finding suggests (and a rule may take automatically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Containment {
    /// Block the actor at the gate.
    BlockActor {
        /// The actor.
        actor: Actor,
    },
    /// Revoke every live token of a subject.
    RevokeSubject {
        /// The subject.
        subject: String,
    },
    /// Declare the key compromised (and rotate if it is the active one).
    CompromiseKey {
        /// The key id.
        kid: String,
    },
}

/// What a rule found, once.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Its severity.
    pub severity: Severity,
    /// What it is about: findings with the same key are one detection.
    pub key: String,
    /// Unix seconds.
    pub at: i64,
    /// The actors involved.
    pub actors: Vec<Actor>,
    /// A sample of the evidence (never secret material).
    pub evidence: Value,
    /// What to do about it.
    pub suggested: Vec<Containment>,
    /// A one-line summary for people.
    pub summary: String,
}

/// An automatic action a rule may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Block the actor the finding names.
    BlockActor,
    /// Revoke every live token of the subject.
    RevokeSubject,
    /// Declare the key compromised (rotating if it is active).
    CompromiseKey,
}

impl Action {
    /// Parses `block_actor`, `revoke_subject`, `compromise_key`.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "block_actor" => Action::BlockActor,
            "revoke_subject" => Action::RevokeSubject,
            "compromise_key" => Action::CompromiseKey,
            _ => return None,
        })
    }

    /// Whether `c` is a step of this kind.
    pub fn matches(self, c: &Containment) -> bool {
        matches!(
            (self, c),
            (Action::BlockActor, Containment::BlockActor { .. })
                | (Action::RevokeSubject, Containment::RevokeSubject { .. })
                | (Action::CompromiseKey, Containment::CompromiseKey { .. })
        )
    }
}
