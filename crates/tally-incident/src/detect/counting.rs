//! The counting rules (`mass_access`, `token_replay`) as pure functions
//! shared by the detector and the fleet counter: which actors an
//! observation counts against, and the finding a crossed threshold makes.
//!
//! Invariant: a node and the fleet make the same detection key for the same
//! actor or token, so their findings merge into one detection.

use serde_json::json;
use tally_core::verdict::Verdict;

use super::finding::{Actor, ActorKind, Containment, Finding};
use super::input::Observation;
use super::rules::{DetectorConfig, Rule, Severity};

/// Slices per counting window.
pub const SLICES: usize = 6;

/// An actor a counting rule counts against: its kind and value.
pub type CountedActor<'a> = (ActorKind, &'a str);

/// The actors `mass_access` counts `o`'s subject against: its client address
/// and device; its token and signing key only when the token is untallied
/// (a signing key legitimately touches every customer, and a tallied token
/// has the one subject the ledger recorded).
pub fn mass_access_actors<'a>(o: &Observation<'a>) -> [Option<CountedActor<'a>>; 4] {
    let forged = o.carries_forgery();
    let holder = !o.inquiry;
    [
        o.client_ip.filter(|_| holder).map(|v| (ActorKind::Ip, v)),
        o.device.filter(|_| holder).map(|v| (ActorKind::Device, v)),
        o.token_id.filter(|_| forged).map(|v| (ActorKind::Token, v)),
        o.kid.filter(|_| forged).map(|v| (ActorKind::Key, v)),
    ]
}

/// What `token_replay` counts for `o`: the token and the places it came from
/// (address, device), for tokens the gate allowed only (a refused token, e.g.
/// an expired one, must not let its holder set off containment), and never
/// for an inquiry (see [`Observation::inquiry`]).
pub fn replay_sources<'a>(o: &Observation<'a>) -> Option<(&'a str, [Option<CountedActor<'a>>; 2])> {
    let tid = o
        .token_id
        .filter(|_| o.verdict == Verdict::Ok.code() && !o.inquiry)?;
    Some((
        tid,
        [
            o.client_ip.map(|v| (ActorKind::Ip, v)),
            o.device.map(|v| (ActorKind::Device, v)),
        ],
    ))
}

/// The `mass_access` finding for `actor`, who touched about `n` distinct
/// subjects within the window, as counted by one node (`scope = "node"`) or
/// by the whole fleet (`"fleet"`). Both give the same detection key, so the
/// two merge into one detection.
pub fn mass_access_finding(
    cfg: &DetectorConfig,
    actor: Actor,
    n: u64,
    at: i64,
    route: &str,
    scope: &str,
) -> Finding {
    let window = cfg.mass_access_window_secs;
    let (kind, value) = (actor.kind, actor.value.clone());
    let suggested = match kind {
        ActorKind::Key => vec![Containment::CompromiseKey { kid: value.clone() }],
        _ => vec![Containment::BlockActor {
            actor: actor.clone(),
        }],
    };
    Finding {
        rule: Rule::MassAccess,
        severity: Severity::High,
        key: format!("mass_access:{}={value}", kind.as_str()),
        at,
        evidence: json!({
            "actor": actor, "distinct_subjects": n,
            "window_secs": window, "threshold": cfg.mass_access_threshold,
            "route": route, "counted_by": scope,
        }),
        summary: format!(
            "{} {value} touched about {n} distinct accounts in {}",
            kind.as_str(),
            crate::clocks::format_duration(window)
        ),
        actors: vec![actor],
        suggested,
    }
}

/// The `token_replay` finding for token `tid` of `subject`, used from `n`
/// distinct places within the window (see [`mass_access_finding`] for
/// `scope`).
pub fn token_replay_finding(
    cfg: &DetectorConfig,
    tid: &str,
    subject: &str,
    actors: Vec<Actor>,
    n: u64,
    at: i64,
    scope: &str,
) -> Finding {
    Finding {
        rule: Rule::TokenReplay,
        severity: Severity::High,
        key: format!("token_replay:token={tid}"),
        at,
        actors,
        evidence: json!({
            "token_id": tid, "subject": subject, "distinct_sources": n,
            "window_secs": cfg.replay_window_secs, "counted_by": scope,
        }),
        suggested: vec![
            Containment::BlockActor {
                actor: Actor {
                    kind: ActorKind::Token,
                    value: tid.to_string(),
                },
            },
            Containment::RevokeSubject {
                subject: subject.to_string(),
            },
        ],
        summary: format!("token {tid} of {subject} used from {n} places"),
    }
}
