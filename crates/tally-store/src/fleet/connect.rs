//! Connections to the fleet's database: bounded for the request path
//! ([`connect`], [`REQUEST_PATH_TIMEOUT`]), unbounded for whole-ledger
//! verification, named for operators ([`connect_named`]), and a LISTEN loop
//! that reconnects for ever ([`listen`]). Every connection notices a dead
//! server or peer within seconds (see [`connect_for`]).

use std::time::Duration;

use postgres::Client;

use super::error::FleetError;

/// LISTENs on `channel` for ever, calling `wake` for every notification;
/// reconnects after any failure (half a second apart).
pub fn listen(url: &str, channel: &str, wake: &dyn Fn()) -> ! {
    use postgres::fallible_iterator::FallibleIterator;
    loop {
        if let Ok(mut client) = connect(url)
            && client.batch_execute(&format!("LISTEN {channel}")).is_ok()
        {
            // Whatever happened while nobody listened is caught up by the
            // caller's own polling.
            wake();
            let mut notes = client.notifications();
            let mut it = notes.blocking_iter();
            while let Ok(Some(_)) = it.next() {
                wake();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Connects to `url` (`postgres://…`) for work in the request path: every
/// statement, lock wait and idle transaction is bounded (see [`connect_for`]).
pub fn connect(url: &str) -> Result<Client, FleetError> {
    connect_for(url, Some(REQUEST_PATH_TIMEOUT))
}

/// The statement limit of connections in the request path.
pub const REQUEST_PATH_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url`. A dead or unreachable server is noticed within
/// seconds on both sides: connect timeout, TCP keepalives and a TCP user
/// timeout here, and the same asked of the server for its end (so that a
/// sequencer whose host vanished loses its lock in seconds, not after the
/// server's default two hours). A stalled server cannot hang a caller
/// either: statements run at most `statement_timeout` (`None`: no limit,
/// for whole-ledger verification), lock waits at most 10 s, and a
/// transaction left idle is ended after 30 s. Commits are synchronous.
pub fn connect_for(url: &str, statement_timeout: Option<Duration>) -> Result<Client, FleetError> {
    connect_named(url, statement_timeout, None)
}

/// [`connect_for`], naming the connection (`application_name`) so that
/// operators, and [`lock_holder`], can tell who holds it.
///
/// [`lock_holder`]: crate::fleet::lock_holder
pub fn connect_named(
    url: &str,
    statement_timeout: Option<Duration>,
    name: Option<&str>,
) -> Result<Client, FleetError> {
    let target = crate::pg::parse(url).map_err(FleetError::Config)?;
    connect_to(&target, statement_timeout, name)
}

/// [`connect_named`] to a URL parsed once ([`crate::pg::parse`]), as a node
/// reconnecting many times does: its TLS files are read once.
pub fn connect_to(
    target: &crate::pg::Target,
    statement_timeout: Option<Duration>,
    name: Option<&str>,
) -> Result<Client, FleetError> {
    let mut config = target.config.clone();
    if let Some(n) = name {
        config.application_name(n);
    }
    if config.get_application_name().is_none() {
        config.application_name("tally");
    }
    crate::pg::harden(&mut config, statement_timeout);
    Ok(crate::pg::connect(&config, target)?)
}
