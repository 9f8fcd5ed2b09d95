//! Prometheus metrics through `prometheus-client`: the instruments the server
//! updates as it works ([`Metrics`]), and the values read from the app's state
//! at each scrape ([`Scrape`], a collector), encoded together in the
//! Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]).
//!
//! Counters are named here without `_total`: the encoder appends it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tally_core::verdict::Verdict;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the decision latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// `tally_gate_decision_seconds`: decision latencies counted in fixed
/// buckets with atomics, so that the gate's hot path takes no lock (the
/// library's own histogram locks on every observation); the library encodes
/// it. The count is the buckets' total, so the two always agree.
#[derive(Clone, Debug, Default)]
struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Per bucket of [`LATENCY_BUCKETS`], then one above every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// `tally_gate_decisions_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// `tally_gate_route_decisions_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    verdict: &'static str,
}

/// Process-wide counters, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// One counter of `tally_gate_decisions_total` per verdict, in
    /// [`Verdict::ALL`] order (each shares its value with the family's).
    verdicts: [Counter; Verdict::ALL.len()],
    by_route: Family<RouteLabels, Counter>,
    latency: Latency,
    issued: Counter,
    login_failures: Counter,
    refresh_reuse: Counter,
    unknown_subject: Counter,
    incidents_opened: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        // Every verdict is in the output from the start, at 0 until it happens.
        let decisions = Family::<VerdictLabels, Counter>::default();
        let verdicts = Verdict::ALL
            .map(|v| decisions.get_or_create_owned(&VerdictLabels { verdict: v.code() }));
        let by_route = Family::<RouteLabels, Counter>::default();
        let latency = Latency::default();
        let [
            issued,
            login_failures,
            refresh_reuse,
            unknown_subject,
            incidents_opened,
        ] = <[Counter; 5]>::default();
        // The registry adds the final full stop to each help text.
        let mut registry = Registry::default();
        registry.register(
            "tally_gate_decisions",
            "Gate decisions by verdict",
            decisions,
        );
        registry.register(
            "tally_gate_route_decisions",
            "Reverse-proxy decisions by route and verdict",
            by_route.clone(),
        );
        registry.register(
            "tally_gate_decision_seconds",
            "Time to decide one request",
            latency.clone(),
        );
        for (name, help, counter) in [
            (
                "tally_tokens_issued",
                "Tokens issued and recorded in the ledger",
                &issued,
            ),
            ("tally_login_failures", "Failed logins", &login_failures),
            (
                "tally_refresh_reuse",
                "Spent refresh tokens presented again (sessions revoked)",
                &refresh_reuse,
            ),
            (
                "tally_unknown_subject",
                "Issuances refused for subjects not in the directory",
                &unknown_subject,
            ),
            (
                "tally_incidents_opened",
                "Incidents opened by this process",
                &incidents_opened,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Metrics {
            registry,
            verdicts,
            by_route,
            latency,
            issued,
            login_failures,
            refresh_reuse,
            unknown_subject,
            incidents_opened,
        }
    }
}

impl Metrics {
    /// Counts one gate decision.
    pub fn verdict(&self, v: Verdict) {
        self.verdicts[verdict_index(v)].inc();
    }

    /// Records how long one gate decision took.
    pub fn decision_latency(&self, elapsed: std::time::Duration) {
        self.latency.observe(elapsed);
    }

    /// Counts one proxied decision on `route` (a configured prefix, so the
    /// label set stays bounded).
    pub fn route_verdict(&self, route: &str, v: Verdict) {
        self.by_route
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                verdict: v.code(),
            })
            .inc();
    }

    /// Counts one issued token.
    pub fn issued(&self) {
        self.issued.inc();
    }

    /// Counts one failed login.
    pub fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// Counts one reuse of a spent refresh token.
    pub fn refresh_reuse(&self) {
        self.refresh_reuse.inc();
    }

    /// Counts one issuance refused for a subject not in the directory.
    pub fn unknown_subject(&self) {
        self.unknown_subject.inc();
    }

    /// Counts one incident opened.
    pub fn incident_opened(&self) {
        self.incidents_opened.inc();
    }

    /// How many decisions had verdict `v`.
    pub fn count(&self, v: Verdict) -> u64 {
        self.verdicts[verdict_index(v)].get()
    }

    /// The exposition text: these counters, then what `scrape` read.
    pub(crate) fn render(&self, scrape: Scrape) -> Result<String, fmt::Error> {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(scrape));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        prometheus_text::encode(&mut out, &scraped)?;
        Ok(out)
    }
}

fn verdict_index(v: Verdict) -> usize {
    Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0)
}

/// What `/metrics` reads from the app's state when it is scraped.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// Entries in the ledger.
    pub(crate) ledger_size: u64,
    /// Live tokens in the registry.
    pub(crate) registry_live_tokens: u64,
    /// The ledger verified and accepts appends.
    pub(crate) ledger_healthy: bool,
    /// The access log's counts, when there is an access log.
    pub(crate) access: Option<AccessCounts>,
    /// What the listeners counted.
    pub(crate) connections: ConnectionCounts,
    /// The ledger store answered its last round trip.
    pub(crate) store_reachable: bool,
    /// This process sequences the ledger.
    pub(crate) sequencer: bool,
    /// Tokens the store said it never issued, remembered.
    pub(crate) forged_tokens_remembered: u64,
    /// Observation batches the fleet's shared counts dropped, when there is a fleet.
    pub(crate) fleet_counts_dropped: Option<u64>,
}

/// The access log's counters and queue.
#[derive(Debug, Default)]
pub(crate) struct AccessCounts {
    pub(crate) dropped: u64,
    pub(crate) written: u64,
    pub(crate) logged: u64,
    pub(crate) aggregated: u64,
    pub(crate) log_bytes: u64,
    /// Budget bites: the byte rate, the writer's queue, too many actors.
    pub(crate) bites_bytes: u64,
    pub(crate) bites_queue: u64,
    pub(crate) bites_actors: u64,
    pub(crate) queue_bytes: u64,
}

/// The listeners' connection counts.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    pub(crate) open: u64,
    pub(crate) accepted: u64,
    pub(crate) refused_per_address: u64,
    pub(crate) refused_total: u64,
    pub(crate) idle_closed: u64,
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut e,
            "tally_ledger_size",
            "Entries in the ledger.",
            self.ledger_size,
        )?;
        gauge(
            &mut e,
            "tally_registry_live_tokens",
            "Live tokens in the registry.",
            self.registry_live_tokens,
        )?;
        gauge(
            &mut e,
            "tally_ledger_healthy",
            "1 if the ledger verified and accepts appends.",
            u64::from(self.ledger_healthy),
        )?;
        if let Some(a) = &self.access {
            counter(
                &mut e,
                "tally_access_events_dropped",
                "Decisions the access log failed to take (write errors); a flood drops none.",
                a.dropped,
            )?;
            counter(
                &mut e,
                "tally_access_events_written",
                "Rows written to the access log (an aggregate row counts once).",
                a.written,
            )?;
            counter(
                &mut e,
                "tally_access_decisions_logged",
                "Decisions in the access log: rows, plus the refusals aggregate rows count.",
                a.logged,
            )?;
            counter(
                &mut e,
                "tally_access_refusals_aggregated",
                "Decisions counted in aggregate rows instead of written one by one (refusals under a flood; allowed requests only when the writer is 64 MiB behind).",
                a.aggregated,
            )?;
            counter(
                &mut e,
                "tally_access_log_bytes",
                "Bytes of rows written to the access log.",
                a.log_bytes,
            )?;
            counters(
                &mut e,
                "tally_access_budget_bites",
                "Refusals counted because a budget was spent: bytes (the byte rate), queue (the writer's queue), actors (too many actors at once).",
                "reason",
                &[
                    ("bytes", a.bites_bytes),
                    ("queue", a.bites_queue),
                    ("actors", a.bites_actors),
                ],
            )?;
            gauge(
                &mut e,
                "tally_access_queue_bytes",
                "Bytes of access events waiting to be written.",
                a.queue_bytes,
            )?;
        }
        let c = &self.connections;
        gauge(
            &mut e,
            "tally_connections_open",
            "Client connections open now (API and gate ports).",
            c.open,
        )?;
        counter(
            &mut e,
            "tally_connections_accepted",
            "Client connections accepted.",
            c.accepted,
        )?;
        counters(
            &mut e,
            "tally_connections_refused",
            "Connections closed at once, over a cap.",
            "cap",
            &[
                ("per_address", c.refused_per_address),
                ("total", c.refused_total),
            ],
        )?;
        counter(
            &mut e,
            "tally_connections_idle_closed",
            "Connections closed because no byte moved for the idle timeout.",
            c.idle_closed,
        )?;
        gauge(
            &mut e,
            "tally_store_reachable",
            "Whether the ledger store answered its last round trip (1) or not (0).",
            u64::from(self.store_reachable),
        )?;
        gauge(
            &mut e,
            "tally_sequencer",
            "Whether this process sequences the ledger (always 1 when embedded).",
            u64::from(self.sequencer),
        )?;
        gauge(
            &mut e,
            "tally_forged_tokens_remembered",
            "Tokens the store said it never issued, answered from memory when seen again.",
            self.forged_tokens_remembered,
        )?;
        if let Some(n) = self.fleet_counts_dropped {
            counter(
                &mut e,
                "tally_fleet_counts_dropped",
                "Observation batches not added to the fleet's shared counts (queue full).",
                n,
            )?;
        }
        Ok(())
    }
}

/// One unlabelled gauge.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One unlabelled counter (`name` without `_total`).
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A counter family with one label (`name` without `_total`).
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> fmt::Result {
    let mut family = e.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families `/metrics` serves, as they were when they were written by
    /// hand: dashboards, alerts, the tests and the bench scripts name them.
    const FAMILIES: &[(&str, &str)] = &[
        ("tally_gate_decisions_total", "counter"),
        ("tally_gate_route_decisions_total", "counter"),
        ("tally_gate_decision_seconds", "histogram"),
        ("tally_tokens_issued_total", "counter"),
        ("tally_login_failures_total", "counter"),
        ("tally_refresh_reuse_total", "counter"),
        ("tally_unknown_subject_total", "counter"),
        ("tally_incidents_opened_total", "counter"),
        ("tally_ledger_size", "gauge"),
        ("tally_registry_live_tokens", "gauge"),
        ("tally_ledger_healthy", "gauge"),
        ("tally_access_events_dropped_total", "counter"),
        ("tally_access_events_written_total", "counter"),
        ("tally_access_decisions_logged_total", "counter"),
        ("tally_access_refusals_aggregated_total", "counter"),
        ("tally_access_log_bytes_total", "counter"),
        ("tally_access_budget_bites_total", "counter"),
        ("tally_access_queue_bytes", "gauge"),
        ("tally_connections_open", "gauge"),
        ("tally_connections_accepted_total", "counter"),
        ("tally_connections_refused_total", "counter"),
        ("tally_connections_idle_closed_total", "counter"),
        ("tally_store_reachable", "gauge"),
        ("tally_sequencer", "gauge"),
        ("tally_forged_tokens_remembered", "gauge"),
        ("tally_fleet_counts_dropped_total", "counter"),
    ];

    fn everything() -> Scrape {
        Scrape {
            access: Some(AccessCounts::default()),
            fleet_counts_dropped: Some(0),
            ..Scrape::default()
        }
    }

    #[test]
    fn families_keep_their_names_and_types() {
        let m = Metrics::default();
        // The route family has no sample, and no header, before a route decides.
        m.route_verdict("/api/", Verdict::Ok);
        let text = m.render(everything()).unwrap();
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        assert_eq!(types, FAMILIES, "{text}");
    }

    #[test]
    fn samples_keep_their_names_and_labels() {
        let m = Metrics::default();
        m.verdict(Verdict::NotIssued);
        m.verdict(Verdict::NotIssued);
        m.route_verdict("/api/\\\"x", Verdict::Revoked);
        m.decision_latency(std::time::Duration::from_micros(300));
        m.issued();
        m.refresh_reuse();
        let mut scrape = everything();
        scrape.ledger_size = 7;
        scrape.ledger_healthy = true;
        scrape.connections.refused_total = 3;
        scrape.access.as_mut().unwrap().bites_actors = 4;
        let text = m.render(scrape).unwrap();
        for line in [
            "tally_gate_decisions_total{verdict=\"not_issued\"} 2\n",
            "tally_gate_decisions_total{verdict=\"ok\"} 0\n",
            // A route's quote and backslash are escaped.
            "tally_gate_route_decisions_total{route=\"/api/\\\\\\\"x\",verdict=\"revoked\"} 1\n",
            "tally_gate_decision_seconds_bucket{le=\"0.00025\"} 0\n",
            "tally_gate_decision_seconds_bucket{le=\"0.0005\"} 1\n",
            "tally_gate_decision_seconds_bucket{le=\"+Inf\"} 1\n",
            "tally_gate_decision_seconds_count 1\n",
            "tally_tokens_issued_total 1\n",
            "tally_refresh_reuse_total 1\n",
            "tally_login_failures_total 0\n",
            "\ntally_ledger_size 7\n",
            "\ntally_ledger_healthy 1\n",
            "tally_connections_refused_total{cap=\"per_address\"} 0\n",
            "tally_connections_refused_total{cap=\"total\"} 3\n",
            "tally_access_budget_bites_total{reason=\"actors\"} 4\n",
            "\ntally_store_reachable 0\n",
            "\ntally_fleet_counts_dropped_total 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing:\n{text}");
        }
        assert_eq!(m.count(Verdict::NotIssued), 2);
    }

    #[test]
    fn absent_parts_serve_no_family() {
        let text = Metrics::default().render(Scrape::default()).unwrap();
        assert!(!text.contains("tally_gate_route_"), "{text}");
        assert!(!text.contains("tally_access_"), "{text}");
        assert!(!text.contains("tally_fleet_"), "{text}");
    }
}
