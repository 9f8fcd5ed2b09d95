//! A thread's connection slot: connected on first use, dropped when the
//! connection broke so that the next call reconnects, and every outcome
//! booked as reachability on [`Shared`]. Work that is safe to repeat may run
//! once more on a fresh connection when the old one had died unnoticed.

use postgres::Client;

use super::shared::Shared;
use crate::fleet::FleetError;

/// Connects (or reconnects) the client in `slot`.
fn ensure<'a>(
    slot: &'a mut Option<Client>,
    target: &crate::pg::Target,
) -> Result<&'a mut Client, FleetError> {
    if slot.as_ref().is_none_or(|c| c.is_closed()) {
        *slot = None;
        *slot = Some(crate::fleet::connect_to(
            target,
            Some(crate::fleet::REQUEST_PATH_TIMEOUT),
            None,
        )?);
    }
    slot.as_mut().ok_or(FleetError::Closed)
}

/// Runs `f` on the client in `slot`, dropping the client if the connection
/// broke so that the next call reconnects.
pub(super) fn with_client<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    f: impl FnOnce(&mut Client) -> Result<T, FleetError>,
) -> Result<T, FleetError> {
    let result = ensure(slot, &shared.target).and_then(f);
    settle(slot, shared, result)
}

/// [`with_client`], once more on a new connection if the one in `slot` had
/// died unnoticed (the first use after the database came back). Only for
/// work that is safe to repeat: reads, and queueing (whose second attempt
/// finds an already committed record as a duplicate, and hands nothing out).
pub(super) fn with_client_again<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    mut f: impl FnMut(&mut Client) -> Result<T, FleetError>,
) -> Result<T, FleetError> {
    let had_client = slot.is_some();
    let first = ensure(slot, &shared.target).and_then(&mut f);
    if had_client && first.as_ref().is_err_and(is_connection_error) {
        *slot = None;
        let second = ensure(slot, &shared.target).and_then(&mut f);
        return settle(slot, shared, second);
    }
    settle(slot, shared, first)
}

fn settle<T>(
    slot: &mut Option<Client>,
    shared: &Shared,
    result: Result<T, FleetError>,
) -> Result<T, FleetError> {
    match &result {
        Ok(_) => shared.ok(),
        Err(e @ FleetError::Db(_)) => {
            if slot.as_ref().is_none_or(|c| c.is_closed()) || is_connection_error(e) {
                *slot = None;
            }
            shared.failed(e);
        }
        Err(_) => {}
    }
    result
}

fn is_connection_error(e: &FleetError) -> bool {
    match e {
        FleetError::Db(db) => db.is_closed() || db.code().is_none(),
        _ => false,
    }
}
