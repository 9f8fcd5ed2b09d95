//! What a demo run is asked for ([`Options`]) and what one phase of it
//! found ([`Phase`]): every figure read from tally's own counters, incident
//! store and report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Synthetic customers.
    pub customers: usize,
    /// Customers who log in and browse before the attack.
    pub browsing: usize,
    /// Member ids that do not exist, minted by the attacker too.
    pub ghosts: usize,
    /// Seed of the synthetic data and of the order of requests.
    pub seed: u64,
    /// Where the two data directories go.
    pub dir: PathBuf,
    /// Where the reports go.
    pub out: PathBuf,
    /// Attack requests in flight at once.
    pub concurrency: usize,
}

/// One run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// `monitor` or `enforce`.
    pub mode: String,
    /// Requests of ordinary customers, and how many the gate allowed.
    pub legit_requests: u64,
    /// Allowed (verdict `ok`).
    pub legit_allowed: u64,
    /// Attack requests sent.
    pub attack_requests: u64,
    /// Attack requests let through by the gate.
    pub attack_let_through: u64,
    /// Attack requests refused by the gate, by verdict.
    pub attack_refused: BTreeMap<String, u64>,
    /// Forged tokens minted (one per member id).
    pub forged_tokens: u64,
    /// Of which for member ids that do not exist.
    pub ghost_tokens: u64,
    /// Requests with those tokens that the gate refused.
    pub ghost_requests_refused: u64,
    /// Records the attack obtained (requests let through that the shop answered with data).
    pub records_exposed: u64,
    /// Customers whose data the attack obtained.
    pub customers_exposed: u64,
    /// Customers the attack tried and did not get.
    pub customers_attempted_only: u64,
    /// First forged request to the first `forged_token` detection, ms.
    pub detection_ms: Option<f64>,
    /// First forged request to the incident, ms.
    pub incident_ms: Option<f64>,
    /// The incident.
    pub incident: Option<i64>,
    /// Its reporting deadlines: (regime, due at, UTC).
    pub deadlines: Vec<(String, String)>,
    /// The HTML report.
    pub report: Option<PathBuf>,
    /// The affected-customer CSV.
    pub affected: Option<PathBuf>,
    /// Wall time of the attack, seconds.
    pub attack_secs: f64,
    /// The report's own counts, from the access log: attack requests the
    /// gate refused (blocked).
    pub report_refused: u64,
    /// Attack requests the gate judged invalid and let through (monitor mode).
    pub report_allowed_monitor: u64,
    /// Attack requests that carried forged tokens.
    pub report_forged_requests: u64,
    /// Member ids named by the attack's tokens that do not exist (kept out
    /// of the affected customers).
    pub report_ghost_members: u64,
    /// Distinct tokens that named them.
    pub report_ghost_tokens: u64,
    /// Attack requests for them.
    pub report_ghost_requests: u64,
}

/// Progress: (what, done, total).
pub type Progress<'a> = &'a (dyn Fn(&'static str, u64, u64) + Send + Sync);
