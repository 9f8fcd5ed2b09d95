//! Key lifecycle: rotation, compromise, custodians, offboarding, and the
//! automatic maintenance a server runs (rotation at maximum age, retirement
//! once no token a key signed can still be valid).
//!
//! ```text
//!            rotate / offboard / max age              window elapsed
//!  active ───────────────────────────► retiring ─────────────────────► retired
//!    │                                     │
//!    └──────── compromise ───────► compromised (verifies only tokens issued
//!                                    before --since; the rest are revoked)
//! ```
//!
//! Every change is one transaction in the state store together with its audit
//! event (who, when, what), and reaches running servers through their
//! one-second reload.

use std::path::Path;

use tally_core::jose::Algorithm;
use tally_core::record::IssuanceRecord;
use tally_store::{KeyEvent, KeyPurpose, KeyRow, KeyState, Revocation};

use super::datadir::DataDir;
use super::keys::KeyRingError;

/// Lifecycle failures, phrased for operators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// No token key has this id.
    #[error("no token-signing key with kid {0} (see `tally keys list`)")]
    NoSuchKey(String),
    /// The key is already retired.
    #[error("key {0} is retired: it neither signs nor verifies")]
    Retired(String),
    /// Key generation, sealing or storage failed.
    #[error("{0}")]
    Keys(#[from] KeyRingError),
    /// The state store failed.
    #[error("{0}")]
    State(#[from] tally_store::StateError),
    /// The ledger could not be read or did not verify.
    #[error("{0}")]
    Ledger(#[from] tally_store::LedgerError),
}

/// Who performs an administrative action: `--actor`, else `$SUDO_USER`,
/// else `$USER`, else `unknown`.
pub fn actor(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn event(now: i64, kid: Option<&str>, what: &str, actor: &str, detail: String) -> KeyEvent {
    KeyEvent {
        at: now,
        kid: kid.map(str::to_string),
        event: what.to_string(),
        actor: actor.to_string(),
        detail,
    }
}

fn token_key(dir: &DataDir, kid: &str) -> Result<KeyRow, LifecycleError> {
    dir.state
        .keys(KeyPurpose::Token)?
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| LifecycleError::NoSuchKey(kid.to_string()))
}

/// The current active token key.
pub fn active_key(dir: &DataDir) -> Result<Option<KeyRow>, LifecycleError> {
    Ok(dir
        .state
        .keys(KeyPurpose::Token)?
        .into_iter()
        .find(|k| k.state == KeyState::Active))
}

/// A completed rotation.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key that stopped signing, if there was one.
    pub old: Option<String>,
    /// The new active key.
    pub new: String,
}

/// Generates a new key (`alg`, default: the current active key's algorithm)
/// and makes it active; the old active key becomes `old_state`. Custodians
/// carry over, except `leaving`.
pub fn rotate(
    dir: &DataDir,
    alg: Option<Algorithm>,
    old_state: KeyState,
    leaving: Option<&str>,
    what: &str,
    actor: &str,
    now: i64,
) -> Result<Rotation, LifecycleError> {
    let alg = match alg {
        Some(a) => a,
        None => active_key(dir)?
            .and_then(|k| Algorithm::from_name(&k.alg))
            .unwrap_or(Algorithm::EdDSA),
    };
    let row = super::keys::new_token_key(dir, alg, now)?;
    let kid = row.kid.clone();
    let ev = event(
        now,
        Some(&kid),
        what,
        actor,
        format!(
            "new {} key active; previous active key now {}",
            alg.name(),
            old_state.as_str()
        ),
    );
    let old = dir.state.rotate_in(&row, old_state, leaving, &ev)?;
    Ok(Rotation { old, new: kid })
}

/// Marks `kid` compromised: issuance with it stops (a new key becomes active
/// at once if it was the active one). Running servers apply this within a
/// second; call [`revoke_signed_by`] after that, so that no token they signed
/// meanwhile escapes revocation. Returns the new active key, if rotated.
pub fn mark_compromised(
    dir: &DataDir,
    kid: &str,
    since: Option<i64>,
    actor: &str,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let row = token_key(dir, kid)?;
    if row.state == KeyState::Retired {
        return Err(LifecycleError::Retired(kid.to_string()));
    }
    let since_txt = since.map_or("its creation".to_string(), |s| format!("unix time {s}"));
    let detail = format!("tokens signed since {since_txt} to be revoked");
    if row.state == KeyState::Active {
        // One transaction: the key turns compromised and a new one takes over.
        let r = rotate(
            dir,
            None,
            KeyState::Compromised,
            None,
            "rotated_after_compromise",
            actor,
            now,
        )?;
        dir.state
            .record_event(&event(now, Some(kid), "compromised", actor, detail))?;
        Ok(Some(r.new))
    } else if row.state == KeyState::Compromised {
        dir.state.record_event(&event(
            now,
            Some(kid),
            "compromised",
            actor,
            format!("again: {detail}"),
        ))?;
        Ok(None)
    } else {
        dir.state.set_key_state(
            kid,
            KeyState::Compromised,
            &event(now, Some(kid), "compromised", actor, detail),
        )?;
        Ok(None)
    }
}

/// Revokes every unexpired token `kid` signed at or after `since` (all of them
/// without `since`), from the verified ledger `records`. Returns
/// `(newly revoked, kept valid because signed before since)`.
pub fn revoke_signed_by(
    dir: &DataDir,
    records: &[IssuanceRecord],
    kid: &str,
    since: Option<i64>,
    now: i64,
) -> Result<(usize, usize), LifecycleError> {
    let mut revoke = Vec::new();
    let mut kept = 0;
    for r in records
        .iter()
        .filter(|r| r.kid == kid && r.expires_at > now)
    {
        if since.is_none_or(|s| r.issued_at >= s) {
            revoke.push(Revocation {
                token_id: r.token_id.clone(),
                token_sha256: *r.token_sha256.as_bytes(),
                expires_at: r.expires_at,
            });
        } else {
            kept += 1;
        }
    }
    let revoked = dir
        .state
        .revoke(&revoke, &format!("key {kid} compromised"), now)?;
    Ok((revoked, kept))
}

/// Revokes every unexpired token issued to `subject`, from the verified
/// ledger `records`. Returns how many were newly revoked.
pub fn revoke_subject(
    dir: &DataDir,
    records: &[IssuanceRecord],
    subject: &str,
    reason: &str,
    now: i64,
) -> Result<usize, LifecycleError> {
    let revoke: Vec<Revocation> = records
        .iter()
        .filter(|r| r.subject == subject && r.expires_at > now)
        .map(|r| Revocation {
            token_id: r.token_id.clone(),
            token_sha256: *r.token_sha256.as_bytes(),
            expires_at: r.expires_at,
        })
        .collect();
    Ok(dir.state.revoke(&revoke, reason, now)?)
}

/// Records `person` as a custodian of `kid`.
pub fn add_custodian(
    dir: &DataDir,
    kid: &str,
    person: &str,
    actor: &str,
    now: i64,
) -> Result<bool, LifecycleError> {
    token_key(dir, kid)?;
    Ok(dir.state.add_custodian(
        kid,
        person,
        &event(
            now,
            Some(kid),
            "custodian_added",
            actor,
            format!("custodian {person}"),
        ),
    )?)
}

/// What `offboard` did.
#[derive(Debug, Clone)]
pub struct OffboardReport {
    /// Keys the person was custodian of, with their state before.
    pub keys: Vec<(String, KeyState)>,
    /// Rotation of the active key, if the person guarded it.
    pub rotation: Option<Rotation>,
}

/// Offboards `person`: every key they guarded stops signing (the active one is
/// rotated at once, its other custodians carry over), their custody ends, and
/// who did it and when is recorded.
pub fn offboard(
    dir: &DataDir,
    person: &str,
    actor: &str,
    now: i64,
) -> Result<OffboardReport, LifecycleError> {
    let keys = dir.state.keys_of_custodian(person)?;
    let rotation = if keys.iter().any(|(_, s)| *s == KeyState::Active) {
        Some(rotate(
            dir,
            None,
            KeyState::Retiring,
            Some(person),
            "rotated_for_offboarding",
            actor,
            now,
        )?)
    } else {
        None
    };
    let list: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    dir.state.remove_custodian_everywhere(
        person,
        &event(
            now,
            None,
            "offboarded",
            actor,
            format!("{person} offboarded; custodian of [{}]", list.join(", ")),
        ),
    )?;
    Ok(OffboardReport { keys, rotation })
}

/// What the server's periodic maintenance changed.
#[derive(Debug, Default, Clone)]
pub struct Maintenance {
    /// A rotation because the active key reached its maximum age.
    pub rotated: Option<Rotation>,
    /// Keys retired because no token they signed can still be valid.
    pub retired: Vec<String>,
}

/// Rotates the active key once it is `max_age` seconds old, and retires a
/// retiring key once the last token it signed (`last_expiry`, from the ledger)
/// has expired.
pub fn maintain(
    dir: &DataDir,
    max_age: i64,
    leeway: i64,
    last_expiry: &dyn Fn(&str) -> Option<i64>,
    now: i64,
) -> Result<Maintenance, LifecycleError> {
    let mut out = Maintenance::default();
    for row in dir.state.keys(KeyPurpose::Token)? {
        if row.state == KeyState::Retiring
            && !super::keys::still_verifies(
                row.state,
                row.state_changed_at,
                last_expiry(&row.kid),
                now,
                leeway,
            )
        {
            dir.state.set_key_state(
                &row.kid,
                KeyState::Retired,
                &event(
                    now,
                    Some(&row.kid),
                    "retired",
                    "tally",
                    "no token it signed can still be valid".into(),
                ),
            )?;
            out.retired.push(row.kid);
        }
    }
    if let Some(active) = active_key(dir)?
        && now.saturating_sub(active.created_at) >= max_age
    {
        out.rotated = Some(rotate(
            dir,
            None,
            KeyState::Retiring,
            None,
            "rotated_at_max_age",
            "tally",
            now,
        )?);
    }
    Ok(out)
}

/// Every record of the configured ledger, after verifying it with the
/// sealed ledger key: the embedded ledger (leaves, checkpoints, head
/// witness), or the fleet's (every sequenced leaf and checkpoint, and every
/// queued record's MAC: records not yet sequenced are honoured too, so they
/// count).
pub fn all_records(dir: &DataDir) -> Result<Vec<IssuanceRecord>, LifecycleError> {
    let crate::config::Storage::Postgres { url, schema, .. } = &dir.storage else {
        return verified_records(dir, &dir.ledger_path());
    };
    use tally_store::fleet::{self, FleetError};
    let err = |e: FleetError| match e {
        FleetError::Tampered { index, reason } => {
            LifecycleError::Ledger(tally_store::LedgerError::Tampered { index, reason })
        }
        other => LifecycleError::Ledger(tally_store::LedgerError::Store(format!(
            "fleet ledger at {url}: {other}"
        ))),
    };
    let verifier = dir
        .ledger_signer()
        .map_err(|e| KeyRingError::Store(e.to_string()))?
        .verifier();
    let mac = dir.record_mac();
    let mut client = fleet::connect_for(url.expose(), None).map_err(err)?;
    fleet::verify(&mut client, schema, &verifier, &mac).map_err(err)?;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let rows = fleet::since(&mut client, schema, &mac, after, &[], 5000).map_err(err)?;
        if rows.is_empty() {
            return Ok(records);
        }
        for (seq, row) in rows {
            records.push(row.map_err(err)?.record);
            after = after.max(seq);
        }
    }
}

/// Every record of the ledger at `ledger_path`, after verifying the whole
/// ledger (leaves, checkpoints, head witness) with the sealed ledger key.
pub fn verified_records(
    dir: &DataDir,
    ledger_path: &Path,
) -> Result<Vec<IssuanceRecord>, LifecycleError> {
    let verifier = dir
        .ledger_signer()
        .map_err(|e| KeyRingError::Store(e.to_string()))?
        .verifier();
    let conn = tally_store::ledger::open_read_only(ledger_path)?;
    let mut records = Vec::new();
    let (tree, _) = tally_store::verify_ledger(&conn, &verifier, &mut |_, _| {}, &mut |_, r| {
        records.push(r.clone())
    })?;
    tally_store::ledger::check_witness(
        &tally_store::ledger::witness_path(ledger_path),
        &tree,
        &verifier,
    )?;
    Ok(records)
}
