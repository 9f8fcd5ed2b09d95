//! Acting on an incident: acknowledge, note, contain, submit to an
//! authority, determine material, close; and verifying its audit log.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tally_incident::act;
use tally_incident::clocks::IncidentState;
use tally_incident::timefmt;

use super::store::{Opened, who};
use crate::cmd::coded;
use crate::cmd::parse_time;

/// `tally incident ack ID`.
pub(super) fn ack(o: &Opened, id: i64, actor: Option<&str>) -> Result<ExitCode> {
    act::acknowledge(&o.store, id, &who(actor), o.now)
        .map_err(coded)
        .with_context(|| format!("cannot acknowledge incident {id}"))?;
    outln!("incident {id} acknowledged");
    Ok(ExitCode::SUCCESS)
}

/// `tally incident note ID TEXT`.
pub(super) fn note(o: &Opened, id: i64, text: &str, actor: Option<&str>) -> Result<ExitCode> {
    act::note(&o.store, id, text, &who(actor), o.now)
        .map_err(coded)
        .with_context(|| format!("cannot add the note to incident {id}"))?;
    outln!("note added to incident {id}");
    Ok(ExitCode::SUCCESS)
}

/// `tally incident contain ID [--apply-suggested]`: the steps are taken
/// against the data directory; a running server applies them within a
/// second.
pub(super) fn contain(
    o: &Opened,
    id: i64,
    apply_suggested: bool,
    actor: Option<&str>,
) -> Result<ExitCode> {
    let by = who(actor);
    let steps = act::contain(&o.store, id, apply_suggested, &by, o.now, &mut |s, why| {
        tally_server::contain::take(&o.dir, s, why, &by, o.now)
    })
    .map_err(coded)
    .with_context(|| format!("cannot contain incident {id}"))?;
    for s in &steps {
        outln!("{} {}", if s.ok { "done  " } else { "failed" }, s.detail);
    }
    outln!("incident {id} contained");
    Ok(ExitCode::SUCCESS)
}

/// `tally incident submit ID REGIME`.
pub(super) fn submit(
    o: &Opened,
    id: i64,
    regime: &str,
    reference: &str,
    actor: Option<&str>,
) -> Result<ExitCode> {
    if !o.c.regimes.iter().any(|r| r.id == regime) {
        bail!(
            "unknown regime {regime:?}; configured: {}",
            o.c.regimes
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let by = who(actor);
    o.store
        .submit(id, regime, &by, o.now, reference)
        .map_err(coded)
        .with_context(|| format!("cannot record the report under {regime} for incident {id}"))?;
    let inc = o
        .store
        .incident(id)
        .map_err(coded)
        .with_context(|| format!("cannot read incident {id}"))?
        .with_context(|| format!("no incident {id}"))?;
    if inc.state.can_move_to(IncidentState::Reported) {
        o.store
            .set_state(
                id,
                IncidentState::Reported,
                &by,
                o.now,
                &format!("reported under {regime}"),
            )
            .map_err(coded)
            .with_context(|| {
                format!(
                    "the report under {regime} is recorded, but incident {id} cannot be marked reported"
                )
            })?;
    }
    outln!("report under {regime} recorded for incident {id}");
    Ok(ExitCode::SUCCESS)
}

/// `tally incident material ID [--at TIME]`.
pub(super) fn material(
    o: &Opened,
    id: i64,
    at: Option<&str>,
    actor: Option<&str>,
) -> Result<ExitCode> {
    let at = at
        .map(|t| parse_time("at", t))
        .transpose()?
        .unwrap_or(o.now);
    o.store
        .set_materiality(id, at, &who(actor))
        .map_err(coded)
        .with_context(|| format!("cannot record incident {id} as material"))?;
    outln!("incident {id} determined material at {}", timefmt::utc(at));
    Ok(ExitCode::SUCCESS)
}

/// `tally incident close ID`.
pub(super) fn close(o: &Opened, id: i64, note: &str, actor: Option<&str>) -> Result<ExitCode> {
    o.store
        .set_state(id, IncidentState::Closed, &who(actor), o.now, note)
        .map_err(coded)
        .with_context(|| format!("cannot close incident {id}"))?;
    outln!("incident {id} closed");
    Ok(ExitCode::SUCCESS)
}

/// `tally incident verify`.
pub(super) fn verify(o: &Opened) -> Result<ExitCode> {
    let n = o
        .store
        .verify_audit()
        .map_err(coded)
        .context("incident audit log verification failed")?;
    outln!("incident audit log verified: {n} timeline entries, chain intact");
    Ok(ExitCode::SUCCESS)
}
