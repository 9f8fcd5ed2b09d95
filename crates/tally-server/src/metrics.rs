//! Prometheus counters, rendered by hand (text exposition format 0.0.4).

use std::sync::atomic::{AtomicU64, Ordering};

use tally_core::verdict::Verdict;

/// Upper bounds (seconds) of the decision latency histogram buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// A Prometheus histogram of decision latencies.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    latency: Histogram,
    by_route: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    verdicts: [AtomicU64; Verdict::ALL.len()],
    issued: AtomicU64,
    login_failures: AtomicU64,
    refresh_reuse: AtomicU64,
    unknown_subject: AtomicU64,
    incidents_opened: AtomicU64,
}

impl Metrics {
    /// Counts one gate decision.
    pub fn verdict(&self, v: Verdict) {
        let i = Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0);
        self.verdicts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one gate decision took.
    pub fn decision_latency(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one proxied decision on `route` (a configured prefix, so the
    /// label set stays bounded).
    pub fn route_verdict(&self, route: &str, v: Verdict) {
        let mut m = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), v.code())).or_default() += 1;
    }

    /// Counts one issued token.
    pub fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed login.
    pub fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one reuse of a spent refresh token.
    pub fn refresh_reuse(&self) {
        self.refresh_reuse.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one issuance refused for a subject not in the directory.
    pub fn unknown_subject(&self) {
        self.unknown_subject.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one incident opened.
    pub fn incident_opened(&self) {
        self.incidents_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// How many decisions had verdict `v`.
    pub fn count(&self, v: Verdict) -> u64 {
        let i = Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0);
        self.verdicts[i].load(Ordering::Relaxed)
    }

    /// The exposition text.
    pub fn render(&self, ledger_size: u64, registry_len: usize, ledger_ok: bool) -> String {
        let mut out = String::new();
        out.push_str("# HELP tally_gate_decisions_total Gate decisions by verdict.\n");
        out.push_str("# TYPE tally_gate_decisions_total counter\n");
        for (i, v) in Verdict::ALL.iter().enumerate() {
            out.push_str(&format!(
                "tally_gate_decisions_total{{verdict=\"{}\"}} {}\n",
                v.code(),
                self.verdicts[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP tally_gate_route_decisions_total Reverse-proxy decisions by route and verdict.\n",
        );
        out.push_str("# TYPE tally_gate_route_decisions_total counter\n");
        for ((route, verdict), n) in self
            .by_route
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "tally_gate_route_decisions_total{{route=\"{route}\",verdict=\"{verdict}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP tally_gate_decision_seconds Time to decide one request.\n");
        out.push_str("# TYPE tally_gate_decision_seconds histogram\n");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "tally_gate_decision_seconds_bucket{{le=\"{bound}\"}} {}\n",
                self.latency.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.latency.count.load(Ordering::Relaxed);
        out.push_str(&format!(
            "tally_gate_decision_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "tally_gate_decision_seconds_sum {}\n",
            self.latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!("tally_gate_decision_seconds_count {count}\n"));
        out.push_str(
            "# HELP tally_tokens_issued_total Tokens issued and recorded in the ledger.\n",
        );
        out.push_str("# TYPE tally_tokens_issued_total counter\n");
        out.push_str(&format!(
            "tally_tokens_issued_total {}\n",
            self.issued.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tally_login_failures_total Failed logins.\n");
        out.push_str("# TYPE tally_login_failures_total counter\n");
        out.push_str(&format!(
            "tally_login_failures_total {}\n",
            self.login_failures.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tally_refresh_reuse_total Spent refresh tokens presented again (sessions revoked).\n");
        out.push_str("# TYPE tally_refresh_reuse_total counter\n");
        out.push_str(&format!(
            "tally_refresh_reuse_total {}\n",
            self.refresh_reuse.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tally_unknown_subject_total Issuances refused for subjects not in the directory.\n");
        out.push_str("# TYPE tally_unknown_subject_total counter\n");
        out.push_str(&format!(
            "tally_unknown_subject_total {}\n",
            self.unknown_subject.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tally_incidents_opened_total Incidents opened by this process.\n");
        out.push_str("# TYPE tally_incidents_opened_total counter\n");
        out.push_str(&format!(
            "tally_incidents_opened_total {}\n",
            self.incidents_opened.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tally_ledger_size Entries in the ledger.\n");
        out.push_str("# TYPE tally_ledger_size gauge\n");
        out.push_str(&format!("tally_ledger_size {ledger_size}\n"));
        out.push_str("# HELP tally_registry_live_tokens Live tokens in the registry.\n");
        out.push_str("# TYPE tally_registry_live_tokens gauge\n");
        out.push_str(&format!("tally_registry_live_tokens {registry_len}\n"));
        out.push_str("# HELP tally_ledger_healthy 1 if the ledger verified and accepts appends.\n");
        out.push_str("# TYPE tally_ledger_healthy gauge\n");
        out.push_str(&format!("tally_ledger_healthy {}\n", u8::from(ledger_ok)));
        out
    }
}
