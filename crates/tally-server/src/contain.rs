//! Containment taken against the data directory: the server's side of the
//! detector's [`Responder`](tally_incident::watch::Responder), also run by
//! `tally incident contain`.

use tally_incident::detect::{ActorKind, Containment};

use crate::datadir::DataDir;

/// Takes one containment step against the data directory; returns what it
/// did, for the timeline. Running servers apply it within a second.
pub fn take(
    dir: &DataDir,
    c: &Containment,
    why: &str,
    actor: &str,
    now: i64,
) -> Result<String, String> {
    match c {
        Containment::BlockActor { actor: who } => {
            let kind = match who.kind {
                ActorKind::Ip => "ip",
                ActorKind::Device => "device",
                ActorKind::Token => "token",
                ActorKind::Subject => "subject",
                ActorKind::Key => {
                    return Err("a key is contained by compromise, not a block".into());
                }
            };
            let (kind, value) = crate::admin::block_target(kind, &who.value)?;
            let id = dir
                .state
                .add_block(kind, &value, why, actor, now, None)
                .map_err(|e| e.to_string())?;
            Ok(format!("block {id}: {kind} {value}"))
        }
        Containment::RevokeSubject { subject } => {
            let records = crate::lifecycle::all_records(dir).map_err(|e| e.to_string())?;
            let n = crate::lifecycle::revoke_subject(dir, &records, subject, why, now)
                .map_err(|e| e.to_string())?;
            Ok(format!("{n} live token(s) of {subject} revoked"))
        }
        Containment::CompromiseKey { kid } => {
            let rotated = crate::lifecycle::mark_compromised(dir, kid, Some(now), actor, now)
                .map_err(|e| e.to_string())?;
            Ok(match rotated {
                Some(new) => format!("key {kid} marked compromised; {new} now signs"),
                None => format!("key {kid} marked compromised"),
            })
        }
    }
}
