//! The attack table: every way around the gate, and every way to knock it
//! over or to trick it into a false alarm, that tally has been tried with.
//!
//! Each attack is one row ([`Attack`]): an id, the class it belongs to, what
//! the attacker (or the careless operator) does, and how to run it: a raw
//! HTTP request against a shared fixture (a real `tally serve` with its
//! reverse proxy in front of Python's `http.server` and a WSGI upstream),
//! or a scenario with its own setup (real nginx, real Caddy, a second
//! server on the same directory, a flood). One test per class runs its
//! rows, prints a table of what held and what did not, and fails on the
//! first row that did not hold (every row still runs). Adding an attack is
//! adding a row. `TALLY_ATTACK=<id prefix>` runs only the matching rows;
//! `TALLY_TEST_BIN=<path>` runs them against another `tally` binary (an
//! older release, to see which attacks it lets through).

#[path = "../support/mod.rs"]
mod support;

mod differential;
mod disclosure;
#[allow(dead_code)]
mod fixture;
mod gateways;
mod guessing;
#[allow(dead_code)]
mod http;
mod knock_over;
mod operator;
mod token_endpoints;
mod walk_around;

use std::time::Instant;

/// What an attack goes after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Reaching an upstream with a decision made for something else.
    WalkAround,
    /// Exhausting memory, disk, connections or the evidence.
    KnockOver,
    /// Guessing secrets, locking out rightful users, exhausting hashing.
    Guessing,
    /// Reading what only auditors may read.
    Disclosure,
    /// An operator's mistake that must give a clear error, never a false alarm.
    OperatorTrap,
}

/// One attack.
pub struct Attack {
    /// Stable id (`class.what`), for `TALLY_ATTACK` and the report.
    pub id: &'static str,
    /// The item of the security review it comes from.
    pub item: u8,
    /// What is tried, in a line.
    pub what: &'static str,
    /// How it is run.
    pub run: Run,
}

/// How a row runs.
pub enum Run {
    /// One raw request to the shared fixture, and what must come back.
    Request(fixture::Probe),
    /// Steps against the shared fixture: `Err` says what did not hold.
    WithFixture(fn(&fixture::Fixture) -> Result<(), String>),
    /// A scenario with its own setup: `Err` says what did not hold.
    Scenario(fn() -> Result<(), String>),
}

/// Runs `rows`, prints what held, and panics if any did not.
pub fn run_table(class: Class, rows: &[Attack]) {
    let only = std::env::var("TALLY_ATTACK").ok();
    let mut shared: Option<fixture::Fixture> = None;
    let mut failed = Vec::new();
    let mut report = Vec::new();
    for row in rows {
        if only.as_deref().is_some_and(|p| !row.id.starts_with(p)) {
            continue;
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &row.run {
            Run::Request(p) => shared.get_or_insert_with(fixture::Fixture::start).probe(p),
            Run::WithFixture(f) => f(shared.get_or_insert_with(fixture::Fixture::start)),
            Run::Scenario(f) => f(),
        }))
        .unwrap_or_else(|e| {
            Err(e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let took = started.elapsed();
        report.push(format!(
            "{:<5} #{:<2} {:<44} {:>6} ms  {}",
            if outcome.is_ok() { "held" } else { "FAIL" },
            row.item,
            row.id,
            took.as_millis(),
            row.what
        ));
        if let Err(why) = outcome {
            failed.push(format!("{}: {why}", row.id));
        }
    }
    eprintln!("\nattack table, class {class:?}:\n{}", report.join("\n"));
    assert!(
        failed.is_empty(),
        "{} attack(s) of class {class:?} got through:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn walk_around_the_gate() {
    run_table(Class::WalkAround, walk_around::ROWS);
}

#[test]
fn forged_tokens_outside_the_gate() {
    run_table(Class::WalkAround, token_endpoints::ROWS);
}

#[test]
fn disclosure() {
    run_table(Class::Disclosure, disclosure::ROWS);
}

#[test]
fn knock_it_over() {
    run_table(Class::KnockOver, knock_over::ROWS);
}

#[test]
fn operator_traps() {
    run_table(Class::OperatorTrap, operator::ROWS);
}

#[test]
fn guessing_and_lockouts() {
    run_table(Class::Guessing, guessing::ROWS);
}
