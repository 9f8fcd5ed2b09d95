//! The incident state machine: [`IncidentState`], its stable names, and
//! the moves it allows.
//!
//! Invariants: states only move forward (`open → contained → reported →
//! closed`, steps may be skipped), `closed` is terminal, and staying in the
//! same state is not a move.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
