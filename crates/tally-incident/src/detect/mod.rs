//! The detector: access events and signals in, [`Finding`]s out.
//!
//! Pure and bounded: the caller feeds every access decision as an
//! [`Observation`] and every fact raised elsewhere (issuance of a token for a
//! subject that does not exist, refresh-token reuse, a tampered ledger, a key
//! too old, ...) as a [`Signal`], with the time as a parameter. Memory is
//! bounded by `max_actors` per counting rule, whatever the traffic.
//!
//! Rules (stable codes, as in [`Rule::code`]):
//!
//! | rule | raised when | severity |
//! | --- | --- | --- |
//! | `forged_token` | a validly signed token the ledger cannot tally (`not_issued`, `altered`) | critical |
//! | `mass_access` | an actor (client address, device, token, signing key) touches more than `mass_access_threshold` distinct subjects within `mass_access_window_secs` | high |
//! | `canary_account` | any access to a configured honey account | critical |
//! | `token_replay` | one token used from at least `replay_min_sources` client addresses or devices within `replay_window_secs` | high |
//! | `unknown_subject` | issuance was asked for a subject that is not in the directory | high |
//! | `refresh_reuse` | a spent refresh token was presented again | high |
//! | `signer_ledger_mismatch` | a key's signature count and the ledger disagree | critical |
//! | `ledger_tampered` | the ledger's stored history no longer verifies | critical |
//! | `key_too_old` | the active key is older than its maximum age | medium |
//! | `departed_custodian_key` | a key guarded by an offboarded custodian still signs | high |
//!
//! A finding carries a `key` that names what it is about (`forged_token:kid=K`,
//! `mass_access:ip=203.0.113.7`): a [`DetectionBook`] merges findings with the
//! same key into one [`Detection`] with first and last sighting and a count.
//!
//! # Inside
//!
//! `rules` (rules, severities, thresholds), `input` (observations and
//! signals), `finding` (findings, actors, containment), `counting` (the
//! counting rules shared with the fleet counter), `detector` (the detector
//! itself) and `book` (detections and the detection book).

mod book;
mod counting;
mod detector;
mod finding;
mod input;
mod rules;

pub use book::{Detection, DetectionBook, MAX_ACTORS_PER_DETECTION, MAX_SAMPLES};
pub use counting::{
    CountedActor, SLICES, mass_access_actors, mass_access_finding, replay_sources,
    token_replay_finding,
};
pub use detector::Detector;
pub use finding::{Action, Actor, ActorKind, Containment, Finding};
pub use input::{Observation, Signal};
pub use rules::{DetectorConfig, Rule, Severity};
