//! The detector at work: access events and signals in, detections and
//! incidents out, containment taken, legal clocks watched.
//!
//! The access-log writer hands every batch of events to [`Watch::observe`]
//! (off the request path); other parts call [`Watch::signal`]. Every half
//! second [`Watch::flush`] stores what changed: a new detection of severity
//! high or above opens an incident or joins the open one, the automatic
//! actions configured for its rule are taken and put on the timeline, and
//! reminders fall due as the legal clocks run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tally_core::clocks::{IncidentFacts, Regime};
use tally_core::detect::{
    ActorKind, Containment, Detection, DetectionBook, Detector, Observation, Rule, Severity, Signal,
};
use tally_store::incidents::IncidentStore;

use crate::access::AccessEvent;
use crate::app::App;
use crate::keys::now_unix;
use tally_core::verdict::Verdict;

/// An automatic action a rule may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Block the actor the finding names.
    BlockActor,
    /// Revoke every live token of the subject.
    RevokeSubject,
    /// Declare the key compromised (rotating if it is active).
    CompromiseKey,
}

impl Action {
    /// Parses `block_actor`, `revoke_subject`, `compromise_key`.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "block_actor" => Action::BlockActor,
            "revoke_subject" => Action::RevokeSubject,
            "compromise_key" => Action::CompromiseKey,
            _ => return None,
        })
    }

    fn matches(self, c: &Containment) -> bool {
        matches!(
            (self, c),
            (Action::BlockActor, Containment::BlockActor { .. })
                | (Action::RevokeSubject, Containment::RevokeSubject { .. })
                | (Action::CompromiseKey, Containment::CompromiseKey { .. })
        )
    }
}

/// The detector, its book and the incident store.
pub struct Watch {
    detector: Mutex<Detector>,
    book: Mutex<DetectionBook>,
    /// Detections and incidents.
    pub store: Arc<IncidentStore>,
    actions: HashMap<Rule, Vec<Action>>,
    regimes: Vec<Regime>,
    last_reminder_check: Mutex<i64>,
    /// Woken when a finding of severity high or above arrives, so that it is
    /// stored (and its incident opened) at once rather than at the next tick.
    pub urgent: tokio::sync::Notify,
    /// Decisions per minute by verdict, the last hour (for the dashboard).
    minutes: Mutex<std::collections::VecDeque<(i64, [u64; Verdict::ALL.len()])>>,
    /// Fleet-wide distinct counts, when `[storage] redis_url` is set.
    fleet: std::sync::OnceLock<crate::fleet_counts::FleetCounts>,
}

impl Watch {
    /// A watch over `store` with the configured rules, actions and regimes.
    pub fn new(
        store: Arc<IncidentStore>,
        detector: tally_core::detect::DetectorConfig,
        actions: HashMap<Rule, Vec<Action>>,
        regimes: Vec<Regime>,
    ) -> Watch {
        let mut book = DetectionBook::new();
        // Detections still current carry on (a restart must not reopen them).
        let since = now_unix() - detector.mass_access_window_secs.max(3600);
        if let Ok(rows) = store.detections_since(since) {
            for r in rows {
                book.restore(r.detection);
            }
        }
        Watch {
            detector: Mutex::new(Detector::new(detector)),
            book: Mutex::new(book),
            store,
            actions,
            regimes,
            last_reminder_check: Mutex::new(now_unix()),
            urgent: tokio::sync::Notify::new(),
            minutes: Mutex::new(std::collections::VecDeque::new()),
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// Also counts across the fleet, in the Redis at `url` (keys under
    /// `namespace`, actors hashed under `key`).
    pub fn count_across_fleet(
        self: &Arc<Self>,
        redis: crate::redis::Target,
        namespace: String,
        key: &[u8; 32],
    ) {
        let me = Arc::downgrade(self);
        let cfg = self
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config()
            .clone();
        self.fleet.get_or_init(|| {
            crate::fleet_counts::FleetCounts::start(
                redis,
                namespace,
                key,
                cfg,
                Box::new(move |findings| {
                    if let Some(w) = me.upgrade() {
                        w.add_findings(&findings);
                    }
                }),
            )
        });
    }

    /// Batches of observations the fleet counter had to drop.
    pub fn fleet_dropped(&self) -> Option<u64> {
        self.fleet.get().map(|f| f.dropped())
    }

    fn add_findings(&self, findings: &[tally_core::detect::Finding]) {
        if findings.is_empty() {
            return;
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        for f in findings {
            book.add(f);
        }
        if findings.iter().any(|f| f.severity >= Severity::High) {
            self.urgent.notify_one();
        }
    }

    /// The reporting regimes in force.
    pub fn regimes(&self) -> &[Regime] {
        &self.regimes
    }

    /// Decisions per minute (unix minute) by verdict code, oldest first, at
    /// most the last 60 minutes that saw traffic.
    pub fn minutes(&self) -> Vec<(i64, Vec<(&'static str, u64)>)> {
        self.minutes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(m, counts)| {
                (
                    *m,
                    Verdict::ALL
                        .iter()
                        .zip(counts)
                        .filter(|(_, n)| **n > 0)
                        .map(|(v, n)| (v.code(), *n))
                        .collect(),
                )
            })
            .collect()
    }

    /// Feeds a batch of access events.
    pub fn observe(&self, events: &[AccessEvent]) {
        {
            let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
            for e in events {
                let m = e.at_ms.div_euclid(60_000);
                let i = Verdict::ALL
                    .iter()
                    .position(|v| v.code() == e.verdict)
                    .unwrap_or(0);
                let n = e.decisions();
                match minutes.back_mut() {
                    Some((last, counts)) if *last == m => counts[i] += n,
                    Some((last, _)) if *last > m => {
                        if let Some((_, counts)) = minutes.iter_mut().find(|(x, _)| *x == m) {
                            counts[i] += n;
                        }
                    }
                    _ => {
                        let mut counts = [0u64; Verdict::ALL.len()];
                        counts[i] = n;
                        minutes.push_back((m, counts));
                        while minutes.front().is_some_and(|(x, _)| *x <= m - 60) {
                            minutes.pop_front();
                        }
                    }
                }
            }
        }
        let observations: Vec<Observation<'_>> = events
            .iter()
            .map(|e| Observation {
                at: e.at_ms.div_euclid(1000),
                client_ip: e.client_ip.as_deref(),
                device: e.device.as_deref(),
                subject: e.subject.as_deref(),
                token_id: e.token_id.as_deref(),
                kid: e.kid.as_deref(),
                route: &e.route,
                verdict: e.verdict,
                detail: e.detail,
                inquiry: e.inquiry,
            })
            .collect();
        let mut findings = Vec::new();
        {
            let mut d = self.detector.lock().unwrap_or_else(|e| e.into_inner());
            for o in &observations {
                findings.extend(d.observe(o));
            }
        }
        if let Some(fleet) = self.fleet.get() {
            fleet.observe(&observations);
        }
        self.add_findings(&findings);
    }

    /// Raises a signal from elsewhere (issuer, sessions, ledger audit, keys).
    pub fn signal(&self, s: Signal) {
        let f = self
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal(&s, now_unix());
        let urgent = f.severity >= Severity::High;
        self.book.lock().unwrap_or_else(|e| e.into_inner()).add(&f);
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Stores what changed, opens or joins incidents, takes the automatic
    /// actions, and sends due reminders. Blocking: run on a blocking thread.
    pub fn flush(&self, app: &App) {
        let now = now_unix();
        let dirty = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_dirty();
        if !dirty.is_empty() {
            match self.store.record(&dirty, now) {
                Ok(rec) => {
                    for id in &rec.opened {
                        tracing::error!(
                            event = "incident_opened",
                            incident = id,
                            "incident opened: legal clocks are running (tally incident show {id})"
                        );
                        app.metrics.incident_opened();
                        let inc = self.store.incident(*id).ok().flatten();
                        app.alerts.notify(
                            &self.store,
                            "incident.opened",
                            json!({
                                "incident": id,
                                "title": inc.as_ref().map(|i| i.title.clone()),
                                "aware_at": inc.as_ref().map(|i| i.aware_at),
                                "severity": inc.as_ref().map(|i| i.severity.as_str()),
                            }),
                            now,
                        );
                    }
                    let by_key: HashMap<&str, &Detection> =
                        dirty.iter().map(|(d, _)| (d.key.as_str(), d)).collect();
                    for (key, incident) in &rec.assigned {
                        if let Some(d) = by_key.get(key.as_str()) {
                            tracing::warn!(event = "detection", rule = d.rule.code(), severity = d.severity.as_str(), incident, summary = %d.summary, "detection");
                            app.alerts.notify(
                                &self.store,
                                "detection",
                                json!({"incident": incident, "rule": d.rule, "severity": d.severity, "key": d.key, "summary": d.summary, "first_seen": d.first_seen, "actors": d.actors, "suggested": d.suggested}),
                                now,
                            );
                            if d.rule == Rule::RefreshReuse
                                && let Some(sub) =
                                    d.actors.iter().find(|a| a.kind == ActorKind::Subject)
                            {
                                app.alerts.security_event(&app.dir, &self.store, crate::alerts::CAEP_SESSION_REVOKED, &sub.value, json!({"initiating_entity": "policy", "reason_admin": {"en": "a spent refresh token was presented again; the session was revoked"}}), now);
                                app.alerts.security_event(&app.dir, &self.store, crate::alerts::RISC_CREDENTIAL_COMPROMISE, &sub.value, json!({"credential_type": "app", "reason_admin": {"en": "a copy of the subject's refresh token is in someone else's hands"}}), now);
                            }
                            self.contain(app, *incident, d, now);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(code = e.code(), error = %e, "detections not stored; retrying");
                    let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                    for (d, new) in dirty {
                        book.requeue(&d.key, new);
                    }
                }
            }
        }
        self.remind(app, now);
    }

    /// Periodic cleanup of the counting state.
    pub fn expire(&self) {
        let now = now_unix();
        self.detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(now);
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_before(now - 86_400);
    }

    fn contain(&self, app: &App, incident: i64, d: &Detection, now: i64) {
        let Some(actions) = self.actions.get(&d.rule) else {
            return;
        };
        for c in &d.suggested {
            if !actions.iter().any(|a| a.matches(c)) {
                continue;
            }
            let outcome = take(
                &app.dir,
                c,
                &format!("incident {incident}, {}", d.rule.code()),
                "tally (automatic)",
                now,
            );
            app.reload_blocks();
            let _ = app.apply_revocations();
            app.reload_keys(true);
            let (ok, detail) = match outcome {
                Ok(d) => (true, d),
                Err(e) => (false, e),
            };
            if ok {
                tracing::warn!(event = "containment", incident, action = ?c, detail = %detail, "automatic containment");
            } else {
                tracing::error!(event = "containment_failed", incident, action = ?c, detail = %detail, "automatic containment failed");
            }
            let _ = self.store.append(
                incident,
                now,
                "tally (automatic)",
                "action",
                &json!({"action": c, "rule": d.rule, "ok": ok, "detail": detail}),
            );
            app.alerts.notify(
                &self.store,
                "containment",
                json!({"incident": incident, "action": c, "rule": d.rule, "ok": ok, "detail": detail}),
                now,
            );
            if ok && let Containment::RevokeSubject { subject } = c {
                app.alerts.security_event(&app.dir, &self.store, crate::alerts::CAEP_SESSION_REVOKED, subject, json!({"initiating_entity": "policy", "reason_admin": {"en": format!("incident {incident}: {}", d.rule.code())}}), now);
            }
        }
    }

    fn remind(&self, app: &App, now: i64) {
        let since = {
            let mut last = self
                .last_reminder_check
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let s = *last;
            *last = now;
            s
        };
        let Ok(incidents) = self.store.incidents() else {
            return;
        };
        for inc in incidents
            .into_iter()
            .filter(|i| i.state != tally_core::clocks::IncidentState::Closed)
        {
            let facts = facts_of(&self.store, &inc);
            let subs = self.store.submissions(inc.id).unwrap_or_default();
            for (clock, status) in crate::report::clock_states(&self.regimes, &facts, &subs, now) {
                use tally_core::clocks::ClockStatus;
                if matches!(status, ClockStatus::Met { .. } | ClockStatus::Late { .. }) {
                    continue;
                }
                for r in tally_core::clocks::due_reminders(&clock, since, now) {
                    let label = r.label.as_str().to_string();
                    let clock_id = format!("{}@{}", clock.regime_id, clock.starts_at);
                    if self
                        .store
                        .mark_reminder(inc.id, &clock_id, &label, now)
                        .unwrap_or(false)
                    {
                        tracing::warn!(event = "deadline_reminder", incident = inc.id, regime = %clock.regime_id, due_at = clock.due_at, reminder = %label, "reporting deadline approaching");
                        let doc = json!({"regime": clock.regime_id, "name": clock.name, "due_at": clock.due_at, "reminder": label});
                        let _ = self.store.append(inc.id, now, "tally", "reminder", &doc);
                        app.alerts.notify(
                            &self.store,
                            "deadline.reminder",
                            json!({"incident": inc.id, "reminder": doc}),
                            now,
                        );
                    }
                }
            }
        }
    }
}

/// Which submission answers which clock: per regime, the clocks in order of
/// their start are answered by that regime's submissions in time order (the
/// first report is the initial one, each later one a supplementary report).
pub fn submitted_at(
    clocks: &[tally_core::clocks::Clock],
    subs: &[tally_store::incidents::Submission],
) -> Vec<Option<i64>> {
    let mut out = vec![None; clocks.len()];
    let mut by_regime: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in clocks.iter().enumerate() {
        by_regime.entry(c.regime_id.as_str()).or_default().push(i);
    }
    for (regime, mut idx) in by_regime {
        idx.sort_by_key(|i| clocks[*i].starts_at);
        let mut times: Vec<i64> = subs
            .iter()
            .filter(|s| s.regime == regime)
            .map(|s| s.submitted_at)
            .collect();
        times.sort_unstable();
        for (i, t) in idx.into_iter().zip(times) {
            out[i] = Some(t);
        }
    }
    out
}

/// The facts that decide which regimes apply: awareness, materiality, and
/// whether outsiders got in (a forged token, a scraping actor, a honey account).
pub fn facts_of(store: &IncidentStore, inc: &tally_store::incidents::Incident) -> IncidentFacts {
    let dets = store.detections(inc.id).unwrap_or_default();
    let outside = dets.iter().any(|d| {
        matches!(
            d.detection.rule,
            Rule::ForgedToken | Rule::MassAccess | Rule::CanaryAccount | Rule::TokenReplay
        )
    });
    let confirmed: Vec<i64> = dets
        .iter()
        .filter(|d| d.detection.severity >= Severity::High)
        .map(|d| d.detection.first_seen)
        .filter(|t| *t > inc.aware_at)
        .collect();
    // The exact subject count needs a scan of the access log (the report
    // does one); here, the subjects the detections name are a lower bound.
    let named: std::collections::HashSet<&str> = dets
        .iter()
        .flat_map(|d| d.detection.actors.iter())
        .filter(|a| a.kind == ActorKind::Subject)
        .map(|a| a.value.as_str())
        .collect();
    IncidentFacts {
        aware_at: inc.aware_at,
        affected_subjects: named.len() as u64,
        outside_access: outside,
        materiality_at: inc.materiality_at,
        confirmed_facts_at: confirmed,
    }
}

/// Takes one containment step against the data directory; returns what it
/// did, for the timeline. Running servers apply it within a second.
pub fn take(
    dir: &crate::datadir::DataDir,
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
