//! Containment taken against the data directory: the server's side of the
//! detector's [`Responder`](tally_incident::watch::Responder), also run by
//! `tally incident contain`.

use tally_incident::detect::{ActorKind, Containment};

use crate::keyring::DataDir;

/// The longest block value or reason accepted, in characters.
pub const MAX_TEXT: usize = 256;

/// Checks and normalises a block target: `ip` (an address or CIDR, written in
/// canonical form), `device`, `subject` or `token`, with a printable value.
pub fn block_target(kind: &str, value: &str) -> Result<(&'static str, String), String> {
    let kind = match kind {
        "ip" => "ip",
        "device" => "device",
        "subject" => "subject",
        "token" => "token",
        other => {
            return Err(format!(
                "unknown block kind {other:?}: use ip, device, subject or token"
            ));
        }
    };
    if value.is_empty() || value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(format!(
            "the blocked value must be 1-{MAX_TEXT} printable characters"
        ));
    }
    let value = if kind == "ip" {
        tally_core::containment::Cidr::parse(value)?.to_string()
    } else {
        value.to_string()
    };
    Ok((kind, value))
}

/// Checks a reason: required, printable, bounded.
pub fn reason(text: &str) -> Result<&str, String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_TEXT || t.chars().any(char::is_control) {
        return Err(format!(
            "a reason is required: 1-{MAX_TEXT} printable characters saying why"
        ));
    }
    Ok(t)
}

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
            let (kind, value) = crate::contain::block_target(kind, &who.value)?;
            let id = dir
                .state
                .add_block(kind, &value, why, actor, now, None)
                .map_err(|e| e.to_string())?;
            Ok(format!("block {id}: {kind} {value}"))
        }
        Containment::RevokeSubject { subject } => {
            let records = crate::keyring::lifecycle::all_records(dir).map_err(|e| e.to_string())?;
            let n = crate::keyring::lifecycle::revoke_subject(dir, &records, subject, why, now)
                .map_err(|e| e.to_string())?;
            Ok(format!("{n} live token(s) of {subject} revoked"))
        }
        Containment::CompromiseKey { kid } => {
            let rotated =
                crate::keyring::lifecycle::mark_compromised(dir, kid, Some(now), actor, now)
                    .map_err(|e| e.to_string())?;
            Ok(match rotated {
                Some(new) => format!("key {kid} marked compromised; {new} now signs"),
                None => format!("key {kid} marked compromised"),
            })
        }
    }
}
