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

use crate::clocks::Regime;
use crate::detect::{
    Action, ActorKind, Containment, Detection, DetectionBook, Detector, Observation, Rule,
    Severity, Signal,
};
use crate::facts::facts_of;
use crate::store::IncidentStore;
use serde_json::json;

use crate::access::AccessEvent;
use tally_store::clock::now_unix;

use crate::alerts::{Alerts, EventsKey};
use tally_core::verdict::Verdict;

/// How the title of a drill incident (and of its detections) begins.
pub const DRILL_PREFIX: &str = "DRILL: ";

/// What the watch needs of the server it runs in: containment taken against
/// the data directory and applied to the running gate, the key that signs
/// security events, and the count of incidents opened.
pub trait Responder: EventsKey + Send + Sync {
    /// Takes one containment step; returns what it did, for the timeline,
    /// or why it could not.
    fn take(&self, c: &Containment, why: &str, actor: &str, now: i64) -> Result<String, String>;
    /// Applies what containment changed (blocks, revocations, keys) to the
    /// running server.
    fn reload(&self);
    /// An incident was opened (a metric).
    fn incident_opened(&self);
}

/// The detector, its book and the incident store.
pub struct Watch {
    detector: Mutex<Detector>,
    book: Mutex<DetectionBook>,
    /// Detections and incidents.
    pub store: Arc<IncidentStore>,
    actions: HashMap<Rule, Vec<Action>>,
    regimes: Vec<Regime>,
    /// Every incident is a drill (see [`Watch::drill`]).
    drill: bool,
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
        detector: crate::detect::DetectorConfig,
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
            drill: false,
            last_reminder_check: Mutex::new(now_unix()),
            urgent: tokio::sync::Notify::new(),
            minutes: Mutex::new(std::collections::VecDeque::new()),
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// This watch, making every incident a drill (`tally serve --dev`): no
    /// reporting regime applies, so no legal clock runs and no reminder
    /// falls due, and the title of every detection, and so of every
    /// incident it opens, begins with [`DRILL_PREFIX`]. Nothing stored
    /// changes shape: a drill is told by its title and its empty clocks.
    pub fn drill(mut self) -> Watch {
        self.drill = true;
        self.regimes.clear();
        self
    }

    /// Whether every incident is a drill.
    pub fn is_drill(&self) -> bool {
        self.drill
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

    fn add_findings(&self, findings: &[crate::detect::Finding]) {
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
                examined: e.examined,
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
    pub fn flush(&self, alerts: &Alerts, r: &dyn Responder) {
        let now = now_unix();
        let mut dirty = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_dirty();
        if self.drill {
            for (d, _) in &mut dirty {
                if !d.summary.starts_with(DRILL_PREFIX) {
                    d.summary.insert_str(0, DRILL_PREFIX);
                }
            }
        }
        if !dirty.is_empty() {
            match self.store.record(&dirty, now) {
                Ok(rec) => {
                    for id in &rec.opened {
                        if self.drill {
                            tracing::warn!(
                                event = "incident_opened",
                                incident = id,
                                drill = true,
                                "drill incident opened: no legal clocks run in dev mode (tally incident show {id})"
                            );
                        } else {
                            tracing::error!(
                                event = "incident_opened",
                                incident = id,
                                "incident opened: legal clocks are running (tally incident show {id})"
                            );
                        }
                        r.incident_opened();
                        let inc = self.store.incident(*id).ok().flatten();
                        alerts.notify(
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
                            alerts.notify(
                                &self.store,
                                "detection",
                                json!({"incident": incident, "rule": d.rule, "severity": d.severity, "key": d.key, "summary": d.summary, "first_seen": d.first_seen, "actors": d.actors, "suggested": d.suggested}),
                                now,
                            );
                            if d.rule == Rule::RefreshReuse
                                && let Some(sub) =
                                    d.actors.iter().find(|a| a.kind == ActorKind::Subject)
                            {
                                alerts.security_event(r, &self.store, crate::alerts::CAEP_SESSION_REVOKED, &sub.value, json!({"initiating_entity": "policy", "reason_admin": {"en": "a spent refresh token was presented again; the session was revoked"}}), now);
                                alerts.security_event(r, &self.store, crate::alerts::RISC_CREDENTIAL_COMPROMISE, &sub.value, json!({"credential_type": "app", "reason_admin": {"en": "a copy of the subject's refresh token is in someone else's hands"}}), now);
                            }
                            self.contain(alerts, r, *incident, d, now);
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
        self.remind(alerts, now);
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

    fn contain(&self, alerts: &Alerts, r: &dyn Responder, incident: i64, d: &Detection, now: i64) {
        let Some(actions) = self.actions.get(&d.rule) else {
            return;
        };
        for c in &d.suggested {
            if !actions.iter().any(|a| a.matches(c)) {
                continue;
            }
            let outcome = r.take(
                c,
                &format!("incident {incident}, {}", d.rule.code()),
                "tally (automatic)",
                now,
            );
            r.reload();
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
            alerts.notify(
                &self.store,
                "containment",
                json!({"incident": incident, "action": c, "rule": d.rule, "ok": ok, "detail": detail}),
                now,
            );
            if ok && let Containment::RevokeSubject { subject } = c {
                alerts.security_event(r, &self.store, crate::alerts::CAEP_SESSION_REVOKED, subject, json!({"initiating_entity": "policy", "reason_admin": {"en": format!("incident {incident}: {}", d.rule.code())}}), now);
            }
        }
    }

    fn remind(&self, alerts: &Alerts, now: i64) {
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
            .filter(|i| i.state != crate::clocks::IncidentState::Closed)
        {
            let facts = facts_of(&self.store, &inc);
            let subs = self.store.submissions(inc.id).unwrap_or_default();
            for (clock, status) in crate::report::clock_states(&self.regimes, &facts, &subs, now) {
                use crate::clocks::ClockStatus;
                if matches!(status, ClockStatus::Met { .. } | ClockStatus::Late { .. }) {
                    continue;
                }
                for r in crate::clocks::due_reminders(&clock, since, now) {
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
                        alerts.notify(
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
