//! What an incident did, exactly, from the access log: the affected customers
//! (exposed: the request went through; attempted: it was refused), the
//! requests per minute by verdict, and the regulator-ready report in JSON,
//! Markdown and self-contained HTML.
//!
//! A request *exposed* data when the gate let it through and the upstream
//! answered with success (behind nginx, where tally does not see the answer,
//! every request let through counts as exposed); every other attack request
//! is *attempted*.
//!
//! An access event belongs to the attack when it carries a forged token
//! (`not_issued`, `altered`), or when its client address, device or token id
//! is one the incident's detections name (a scraper, a replayed token, a
//! visitor of a honey account). Nothing is sampled or estimated.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::access::AccessLog;
use crate::clocks::{self, IncidentFacts, Regime};
use crate::detect::{ActorKind, Containment, Rule};
use crate::store::{Incident, IncidentStore, StoredDetection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An access event as stored.
#[derive(Debug, Deserialize)]
pub struct StoredEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Client address.
    pub client_ip: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Token id.
    pub token_id: Option<String>,
    /// Key id.
    pub kid: Option<String>,
    /// Route.
    pub route: String,
    /// Data categories.
    #[serde(default)]
    pub data: Vec<String>,
    /// Verdict code.
    pub verdict: String,
    /// Whether it went through the gate.
    pub passed: bool,
    /// The upstream's status, when the gate forwarded it.
    #[serde(default)]
    pub upstream_status: Option<u16>,
    /// The refusal's detail.
    #[serde(default)]
    pub detail: Option<String>,
    /// A resource server asked about the token (introspection).
    #[serde(default)]
    pub inquiry: bool,
    /// For an aggregate row: how many refusals it stands for.
    #[serde(default)]
    pub count: Option<u64>,
    /// For an aggregate row: the last of them.
    #[serde(default)]
    pub last_ms: Option<i64>,
}

impl StoredEvent {
    /// Whether this event proves a signing key is in the wrong hands
    /// ([`tally_core::gate::proves_stolen_key`]).
    pub fn proves_stolen_key(&self) -> bool {
        tally_core::gate::proves_stolen_key(&self.verdict, self.detail.as_deref())
    }

    /// How many decisions the row stands for (an aggregate row of refusals
    /// counts each of them).
    pub fn decisions(&self) -> u64 {
        self.count.unwrap_or(1)
    }

    /// Whether data reached the client: the gate let the request through and
    /// the upstream answered it with success (or tally cannot know the
    /// answer, as behind nginx: then it counts as exposed, to be safe). An
    /// introspection is not a request for data.
    pub fn exposed(&self) -> bool {
        !self.inquiry && self.passed && self.upstream_status.is_none_or(|s| s < 400)
    }
}

/// What marks an event as part of the attack.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    /// Client addresses, devices and token ids named by detections.
    pub actors: HashSet<(ActorKind, String)>,
    /// Keys proven in the wrong hands.
    pub forged_kids: BTreeSet<String>,
}

impl Evidence {
    /// The evidence of an incident's detections.
    pub fn of(detections: &[StoredDetection]) -> Evidence {
        let mut e = Evidence::default();
        for d in detections {
            let det = &d.detection;
            if det.rule == Rule::ForgedToken {
                for a in &det.actors {
                    if a.kind == ActorKind::Key {
                        e.forged_kids.insert(a.value.clone());
                    }
                }
                continue;
            }
            if matches!(
                det.rule,
                Rule::MassAccess | Rule::TokenReplay | Rule::CanaryAccount
            ) {
                for a in &det.actors {
                    if matches!(a.kind, ActorKind::Ip | ActorKind::Device | ActorKind::Token) {
                        e.actors.insert((a.kind, a.value.clone()));
                    }
                }
            }
        }
        e
    }

    /// Whether `ev` is part of the attack.
    pub fn matches(&self, ev: &StoredEvent) -> bool {
        if ev.proves_stolen_key() {
            return true;
        }
        let hit = |kind, v: &Option<String>| {
            v.as_ref()
                .is_some_and(|v| self.actors.contains(&(kind, v.clone())))
        };
        hit(ActorKind::Ip, &ev.client_ip)
            || hit(ActorKind::Device, &ev.device)
            || hit(ActorKind::Token, &ev.token_id)
    }
}

/// One affected customer.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AffectedSubject {
    /// The subject (customer id).
    pub subject: String,
    /// Data categories the attack reached (exposed) or tried (attempted only).
    pub categories: BTreeSet<String>,
    /// First attack request for this subject (unix milliseconds).
    pub first_ms: i64,
    /// Last one.
    pub last_ms: i64,
    /// `exposed` when at least one request went through, else `attempted`.
    pub status: &'static str,
    /// Requests that went through.
    pub exposed_requests: u64,
    /// Requests refused.
    pub attempted_requests: u64,
}

/// What a scan of the access log found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Impact {
    /// Per subject.
    pub subjects: BTreeMap<String, AffectedSubject>,
    /// Attack requests that went through / were refused.
    pub requests_exposed: u64,
    /// Refused.
    pub requests_attempted: u64,
    /// Attack requests with a forged token.
    pub forged_requests: u64,
    /// First attack request (unix milliseconds).
    pub first_ms: Option<i64>,
    /// Last attack request.
    pub last_ms: Option<i64>,
    /// Events scanned.
    pub scanned: u64,
    /// The access logs read (in a fleet, one per node given).
    pub sources: Vec<String>,
    /// Requests per minute (unix minute) by verdict, attack requests only.
    pub per_minute: BTreeMap<i64, BTreeMap<String, u64>>,
}

impl Impact {
    /// Subjects with at least one request that went through.
    pub fn exposed_subjects(&self) -> usize {
        self.subjects
            .values()
            .filter(|s| s.status == "exposed")
            .count()
    }

    /// Subjects only ever attempted.
    pub fn attempted_subjects(&self) -> usize {
        self.subjects.len() - self.exposed_subjects()
    }

    /// Per category: (subjects exposed, subjects attempted only).
    pub fn categories(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for s in self.subjects.values() {
            for c in &s.categories {
                let e = out.entry(c.clone()).or_default();
                if s.status == "exposed" {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
        out
    }

    fn add(&mut self, ev: &StoredEvent) {
        let n = ev.decisions();
        let last = ev.last_ms.unwrap_or(ev.at_ms).max(ev.at_ms);
        if ev.proves_stolen_key() {
            self.forged_requests += n;
        }
        let exposed = ev.exposed();
        if exposed {
            self.requests_exposed += n;
        } else {
            self.requests_attempted += n;
        }
        self.first_ms = Some(self.first_ms.map_or(ev.at_ms, |f| f.min(ev.at_ms)));
        self.last_ms = Some(self.last_ms.map_or(last, |l| l.max(last)));
        *self
            .per_minute
            .entry(ev.at_ms.div_euclid(60_000))
            .or_default()
            .entry(ev.verdict.clone())
            .or_default() += n;
        let Some(sub) = ev.subject.as_ref().filter(|s| !s.is_empty()) else {
            return;
        };
        let s = self
            .subjects
            .entry(sub.clone())
            .or_insert_with(|| AffectedSubject {
                subject: sub.clone(),
                categories: BTreeSet::new(),
                first_ms: ev.at_ms,
                last_ms: ev.at_ms,
                status: "attempted",
                exposed_requests: 0,
                attempted_requests: 0,
            });
        s.first_ms = s.first_ms.min(ev.at_ms);
        s.last_ms = s.last_ms.max(last);
        if exposed {
            if s.status == "attempted" {
                // Categories of refused attempts no longer describe an exposure.
                s.categories.clear();
            }
            s.status = "exposed";
            s.exposed_requests += n;
            s.categories.extend(ev.data.iter().cloned());
        } else {
            s.attempted_requests += n;
            if s.status == "attempted" {
                s.categories.extend(ev.data.iter().cloned());
            }
        }
    }
}

/// An access log to read, and how the report names it.
pub type Source<'a> = (String, &'a AccessLog);

/// Scans the access logs in `[from_ms, until_ms)` for events `select` keeps.
/// In a fleet each node keeps its own log: give every node's to count every
/// affected customer.
pub fn scan(
    logs: &[Source<'_>],
    from_ms: i64,
    until_ms: i64,
    select: &mut dyn FnMut(&StoredEvent) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Impact, String> {
    let mut impact = Impact::default();
    for (name, log) in logs {
        scan_into(&mut impact, log, from_ms, until_ms, select, progress)?;
        impact.sources.push(name.clone());
    }
    Ok(impact)
}

fn scan_into(
    impact: &mut Impact,
    log: &AccessLog,
    from_ms: i64,
    until_ms: i64,
    select: &mut dyn FnMut(&StoredEvent) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), String> {
    let mut bad = 0u64;
    let before = impact.scanned;
    let scanned = log
        .scan(from_ms, until_ms, |_, _, body| {
            match serde_json::from_slice::<StoredEvent>(body) {
                Ok(ev) => {
                    if select(&ev) {
                        impact.add(&ev);
                    }
                }
                Err(_) => bad += 1,
            }
            impact.scanned += 1;
            if impact.scanned.is_multiple_of(50_000) {
                progress(impact.scanned);
            }
            true
        })
        .map_err(|e| format!("{e} ({})", e.code()))?;
    progress(before + scanned);
    if bad > 0 {
        tracing::warn!(
            unreadable = bad,
            "access events that do not parse were skipped"
        );
    }
    Ok(())
}

/// The impact of an incident: the whole retained logs, attack events only.
pub fn impact_of(
    logs: &[Source<'_>],
    detections: &[StoredDetection],
    progress: &mut dyn FnMut(u64),
) -> Result<Impact, String> {
    let evidence = Evidence::of(detections);
    scan(
        logs,
        i64::MIN,
        i64::MAX,
        &mut |ev| evidence.matches(ev),
        progress,
    )
}

fn utc(secs: i64) -> String {
    crate::timefmt::utc(secs)
}

fn consequences(categories: &BTreeMap<String, (u64, u64)>) -> Vec<String> {
    let mut out = Vec::new();
    let has = |c: &str| categories.get(c).is_some_and(|(e, _)| *e > 0);
    if has("name") || has("email") {
        out.push("Phishing and impersonation aimed at the affected customers, using their names and e-mail addresses.".to_string());
    }
    if has("address") {
        out.push(
            "Physical mail fraud, stalking or social engineering using postal addresses."
                .to_string(),
        );
    }
    if has("orders") {
        out.push(
            "Fraud that exploits knowledge of purchase history (fake delivery or refund messages)."
                .to_string(),
        );
    }
    if has("phone") {
        out.push("Smishing and voice phishing.".to_string());
    }
    if out.is_empty() {
        out.push(
            "No request of the attack went through: no data is known to have been exposed."
                .to_string(),
        );
    }
    out
}

/// Everything stored about one incident.
pub struct Case {
    /// The incident.
    pub incident: Incident,
    /// Its detections.
    pub detections: Vec<StoredDetection>,
    /// Its timeline.
    pub timeline: Vec<crate::store::TimelineEntry>,
    /// Reports made to authorities.
    pub submissions: Vec<crate::store::Submission>,
}

impl Case {
    /// Reads incident `id`.
    pub fn load(store: &IncidentStore, id: i64) -> Result<Case, String> {
        Ok(Case {
            incident: store
                .incident(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no incident {id} (tally incident list)"))?,
            detections: store.detections(id).map_err(|e| e.to_string())?,
            timeline: store.timeline(id).map_err(|e| e.to_string())?,
            submissions: store.submissions(id).map_err(|e| e.to_string())?,
        })
    }
}

/// Builds the report document (the JSON form; Markdown and HTML render it).
pub fn build(
    case: &Case,
    impact: &Impact,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
) -> Value {
    let (inc, detections, timeline, submissions) = (
        &case.incident,
        &case.detections[..],
        &case.timeline[..],
        &case.submissions[..],
    );
    let evidence = Evidence::of(detections);
    let mut vectors = Vec::new();
    for kid in &evidence.forged_kids {
        vectors.push(format!("tokens signed with key {kid} that the ledger cannot tally (the key is in the wrong hands)"));
    }
    for d in detections {
        match d.detection.rule {
            Rule::ForgedToken => {}
            _ => vectors.push(d.detection.summary.clone()),
        }
    }
    let facts = IncidentFacts {
        aware_at: inc.aware_at,
        affected_subjects: impact.subjects.len() as u64,
        outside_access: !evidence.forged_kids.is_empty() || !evidence.actors.is_empty(),
        materiality_at: inc.materiality_at,
        confirmed_facts_at: detections
            .iter()
            .map(|d| d.detection.first_seen)
            .filter(|t| *t > inc.aware_at)
            .collect(),
    };
    let regimes_json: Vec<Value> = clock_states(regimes, &facts, submissions, now)
        .into_iter()
        .map(|(c, status)| {
            let regime = regimes.iter().find(|r| r.id == c.regime_id);
            json!({
                "regime": c.regime_id,
                "name": c.name,
                "authority": regime.map(|r| r.authority.clone()),
                "clock_starts_at": utc(c.starts_at),
                "due_at": utc(c.due_at),
                "due_at_unix": c.due_at,
                "status": status,
                "remaining": clocks::format_duration(c.due_at - now),
                "required_fields": regime.map(|r| r.required_fields.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let taken: Vec<Value> = timeline
        .iter()
        .filter(|t| t.kind == "action" || t.kind == "state" || t.kind == "note")
        .map(|t| json!({"at": utc(t.at), "by": t.actor, "kind": t.kind, "what": t.body}))
        .collect();
    let taken_actions: Vec<&Value> = timeline
        .iter()
        .filter(|t| t.kind == "action" && t.body["ok"] == json!(true))
        .map(|t| &t.body["action"])
        .collect();
    let proposed: Vec<&Containment> = detections
        .iter()
        .flat_map(|d| d.detection.suggested.iter())
        .filter(|c| {
            let v = serde_json::to_value(c).unwrap_or(Value::Null);
            !taken_actions.contains(&&v)
        })
        .collect::<Vec<_>>();
    let mut proposed_dedup: Vec<&Containment> = Vec::new();
    for c in proposed {
        if !proposed_dedup.contains(&c) {
            proposed_dedup.push(c);
        }
    }
    let categories = impact.categories();
    json!({
        "incident": {
            "id": inc.id,
            "title": inc.title,
            "state": inc.state.as_str(),
            "severity": inc.severity.as_str(),
            "opened_at": utc(inc.opened_at),
            "aware_at": utc(inc.aware_at),
            "materiality_at": inc.materiality_at.map(utc),
        },
        "generated_at": utc(now),
        "nature": format!(
            "Unauthorised access to customer data by an actor outside the regular issuance process. {} detection(s): {}.",
            detections.len(),
            detections.iter().map(|d| d.detection.rule.code()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
        ),
        "attack_vector": vectors,
        "first_malicious_use": impact.first_ms.map(|m| utc(m.div_euclid(1000))),
        "last_malicious_use": impact.last_ms.map(|m| utc(m.div_euclid(1000))),
        "awareness": utc(inc.aware_at),
        "affected": {
            "subjects_exposed": impact.exposed_subjects(),
            "subjects_attempted_only": impact.attempted_subjects(),
            "records_exposed": impact.requests_exposed,
            "records_attempted": impact.requests_attempted,
            "forged_requests": impact.forged_requests,
            "categories": categories.iter().map(|(c, (e, a))| json!({"category": c, "subjects_exposed": e, "subjects_attempted_only": a})).collect::<Vec<_>>(),
            "events_scanned": impact.scanned,
            "access_logs": impact.sources,
        },
        "likely_consequences": consequences(&categories),
        "measures_taken": taken,
        "measures_proposed": proposed_dedup,
        "contacts": contacts,
        "regimes": regimes_json,
        "detections": detections.iter().map(|d| json!({
            "id": d.id, "rule": d.detection.rule.code(), "severity": d.detection.severity.as_str(),
            "first_seen": utc(d.detection.first_seen), "last_seen": utc(d.detection.last_seen),
            "count": d.detection.count, "summary": d.detection.summary,
            "actors": d.detection.actors, "samples": d.detection.samples,
        })).collect::<Vec<_>>(),
        "timeline": timeline.iter().map(|t| json!({"at": utc(t.at), "by": t.actor, "kind": t.kind, "what": t.body})).collect::<Vec<_>>(),
        "per_minute": impact.per_minute.iter().map(|(m, v)| json!({"minute": utc(m * 60), "by_verdict": v})).collect::<Vec<_>>(),
    })
}

/// A value for the Markdown report: control characters (a forged `sub` may
/// carry newlines to fake a heading) become spaces, and `<`, `>`, `|`, `*`,
/// `_`, `` ` ``, `[`, `]`, `#` are escaped.
fn s(v: &Value) -> String {
    let raw = match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '*' | '_' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The report as Markdown.
pub fn markdown(r: &Value) -> String {
    let mut o = String::new();
    let inc = &r["incident"];
    o.push_str(&format!(
        "# Incident {} — {}\n\n",
        s(&inc["id"]),
        s(&inc["title"])
    ));
    o.push_str(&format!(
        "State **{}**, severity **{}**. Opened {}; aware since {}. Report generated {}.\n\n",
        s(&inc["state"]),
        s(&inc["severity"]),
        s(&inc["opened_at"]),
        s(&inc["aware_at"]),
        s(&r["generated_at"])
    ));
    o.push_str("## Nature of the breach\n\n");
    o.push_str(&format!("{}\n\n", s(&r["nature"])));
    o.push_str("## Attack vector\n\n");
    for v in r["attack_vector"].as_array().into_iter().flatten() {
        o.push_str(&format!("- {}\n", s(v)));
    }
    o.push_str(&format!(
        "\nFirst malicious use: {}. Last: {}. Awareness: {}.\n\n",
        s(&r["first_malicious_use"]),
        s(&r["last_malicious_use"]),
        s(&r["awareness"])
    ));
    let a = &r["affected"];
    o.push_str("## Affected subjects and records\n\n");
    o.push_str("| | exposed (allowed) | attempted (blocked) |\n| --- | ---: | ---: |\n");
    o.push_str(&format!(
        "| subjects | {} | {} |\n",
        s(&a["subjects_exposed"]),
        s(&a["subjects_attempted_only"])
    ));
    o.push_str(&format!(
        "| records (requests) | {} | {} |\n\n",
        s(&a["records_exposed"]),
        s(&a["records_attempted"])
    ));
    o.push_str(
        "| data category | subjects exposed | subjects attempted only |\n| --- | ---: | ---: |\n",
    );
    for c in a["categories"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "| {} | {} | {} |\n",
            s(&c["category"]),
            s(&c["subjects_exposed"]),
            s(&c["subjects_attempted_only"])
        ));
    }
    let logs: Vec<String> = a["access_logs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    o.push_str(&format!(
        "\n{} access events examined (access logs: {}); {} requests carried forged tokens.\n\n",
        s(&a["events_scanned"]),
        if logs.is_empty() {
            "none".to_string()
        } else {
            logs.join(", ")
        },
        s(&a["forged_requests"])
    ));
    o.push_str("## Likely consequences\n\n");
    for c in r["likely_consequences"].as_array().into_iter().flatten() {
        o.push_str(&format!("- {}\n", s(c)));
    }
    o.push_str("\n## Measures taken\n\n");
    let taken = r["measures_taken"].as_array().cloned().unwrap_or_default();
    if taken.is_empty() {
        o.push_str("None yet.\n");
    }
    for m in &taken {
        o.push_str(&format!(
            "- {} — {} ({}): {}\n",
            s(&m["at"]),
            s(&m["kind"]),
            s(&m["by"]),
            s(&m["what"])
        ));
    }
    o.push_str("\n## Measures proposed\n\n");
    let proposed = r["measures_proposed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if proposed.is_empty() {
        o.push_str("None outstanding.\n");
    }
    for m in &proposed {
        o.push_str(&format!("- {}\n", s(m)));
    }
    o.push_str("\n## Contacts\n\n");
    let contacts = r["contacts"].as_object().cloned().unwrap_or_default();
    if contacts.is_empty() {
        o.push_str("None configured (`[contacts]` in tally.toml).\n");
    }
    for (k, v) in &contacts {
        o.push_str(&format!("- {k}: {}\n", s(v)));
    }
    o.push_str("\n## Reporting obligations\n\n");
    for g in r["regimes"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "### {} — {}\n\nClock started {}; due **{}** ({}). Status: {}.\n\nThe report must contain:\n\n",
            s(&g["name"]), s(&g["authority"]), s(&g["clock_starts_at"]), s(&g["due_at"]), s(&g["remaining"]), s(&g["status"]["state"])
        ));
        for f in g["required_fields"].as_array().into_iter().flatten() {
            o.push_str(&format!("- {}\n", s(f)));
        }
        o.push('\n');
    }
    o.push_str("## Detections\n\n| id | rule | severity | first seen | last seen | count | summary |\n| --- | --- | --- | --- | --- | ---: | --- |\n");
    for d in r["detections"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s(&d["id"]),
            s(&d["rule"]),
            s(&d["severity"]),
            s(&d["first_seen"]),
            s(&d["last_seen"]),
            s(&d["count"]),
            s(&d["summary"])
        ));
    }
    o.push_str("\n## Timeline\n\n");
    for t in r["timeline"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "- {} — {} by {}: {}\n",
            s(&t["at"]),
            s(&t["kind"]),
            s(&t["by"]),
            s(&t["what"])
        ));
    }
    o
}

/// Undoes the Markdown escaping of [`s`] (for the HTML rendering, which
/// escapes for HTML itself).
fn unmd(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && "|*_`[]#\\".contains(n)
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out.replace("&lt;", "<").replace("&gt;", ">")
}

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Requests per minute by verdict as an inline SVG (stacked bars: exposed
/// verdicts in red, refused in grey).
pub fn chart_svg(per_minute: &BTreeMap<i64, BTreeMap<String, u64>>) -> String {
    let (w, h, pad) = (760.0f64, 220.0f64, 36.0f64);
    if per_minute.is_empty() {
        return format!(
            "<svg width=\"{w}\" height=\"40\" role=\"img\" aria-label=\"no attack requests\"><text x=\"4\" y=\"24\">No attack requests in the access log.</text></svg>"
        );
    }
    let first = *per_minute.keys().next().unwrap_or(&0);
    let last = *per_minute.keys().last().unwrap_or(&0);
    let span = (last - first + 1).max(1) as f64;
    let max = per_minute
        .values()
        .map(|v| v.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = ((w - pad * 2.0) / span).max(1.0);
    let mut verdicts: BTreeSet<&str> = BTreeSet::new();
    for v in per_minute.values() {
        verdicts.extend(v.keys().map(String::as_str));
    }
    let palette = [
        "#b91c1c", "#6b7280", "#d97706", "#2563eb", "#7c3aed", "#059669",
    ];
    let colour = |v: &str| -> &str {
        if v == "ok" {
            return "#b91c1c";
        }
        let i = verdicts.iter().position(|x| *x == v).unwrap_or(0);
        palette[1 + i % (palette.len() - 1)]
    };
    let mut o = format!(
        "<svg width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"attack requests per minute by verdict\">",
        h + 40.0,
        h + 40.0
    );
    o.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        h - pad + 10.0,
        w - pad,
        h - pad + 10.0
    ));
    o.push_str(&format!(
        "<text x=\"2\" y=\"14\" font-size=\"11\">{max} / min</text>"
    ));
    for (m, v) in per_minute {
        let x = pad + (m - first) as f64 * bw;
        let mut y = h - pad + 10.0;
        for (verdict, n) in v {
            let bh = (*n as f64 / max) * (h - pad - 10.0);
            y -= bh;
            o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {n}</title></rect>",
                (bw - 0.5).max(0.5),
                colour(verdict),
                esc(&utc(m * 60)),
                esc(verdict)
            ));
        }
    }
    o.push_str(&format!(
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text>",
        h + 4.0,
        esc(&utc(first * 60))
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        w - pad,
        h + 4.0,
        esc(&utc(last * 60))
    ));
    let mut lx = pad;
    for v in &verdicts {
        o.push_str(&format!("<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>", h + 18.0, colour(v), lx + 14.0, h + 27.0, esc(if *v == "ok" { "ok (exposed)" } else { v })));
        lx += 120.0;
    }
    o.push_str("</svg>");
    o
}

/// The report as one self-contained HTML page (no scripts, no external
/// resources: it opens offline).
pub fn html(r: &Value, per_minute: &BTreeMap<i64, BTreeMap<String, u64>>) -> String {
    let md = markdown(r);
    let mut body = String::new();
    let mut in_list = false;
    let mut in_table = false;
    for line in md.lines() {
        let close_list = |body: &mut String, in_list: &mut bool| {
            if *in_list {
                body.push_str("</ul>\n");
                *in_list = false;
            }
        };
        if line.starts_with("| ---") {
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            close_list(&mut body, &mut in_list);
            let cells: Vec<&str> = row
                .trim_end_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            if !in_table {
                body.push_str("<table>\n<tr>");
                for c in &cells {
                    body.push_str(&format!("<th>{}</th>", esc(&unmd(c))));
                }
                body.push_str("</tr>\n");
                in_table = true;
            } else {
                body.push_str("<tr>");
                for c in &cells {
                    body.push_str(&format!("<td>{}</td>", esc(&unmd(c))));
                }
                body.push_str("</tr>\n");
            }
            continue;
        }
        if in_table {
            body.push_str("</table>\n");
            in_table = false;
        }
        if let Some(item) = line.strip_prefix("- ") {
            if !in_list {
                body.push_str("<ul>\n");
                in_list = true;
            }
            body.push_str(&format!("<li>{}</li>\n", esc(&unmd(item))));
            continue;
        }
        close_list(&mut body, &mut in_list);
        if let Some(t) = line.strip_prefix("### ") {
            body.push_str(&format!("<h3>{}</h3>\n", esc(&unmd(t))));
        } else if let Some(t) = line.strip_prefix("## ") {
            body.push_str(&format!("<h2>{}</h2>\n", esc(&unmd(t))));
            if t == "Affected subjects and records" {
                body.push_str("<figure>");
                body.push_str(&chart_svg(per_minute));
                body.push_str("<figcaption>Attack requests per minute, by verdict (from the access log).</figcaption></figure>\n");
            }
        } else if let Some(t) = line.strip_prefix("# ") {
            body.push_str(&format!("<h1>{}</h1>\n", esc(&unmd(t))));
        } else if !line.trim().is_empty() {
            // **bold** (the report's own markup; values are escaped by `s`).
            let t = line.to_string();
            let mut out = String::new();
            for (i, part) in t.split("**").enumerate() {
                if i % 2 == 1 {
                    out.push_str(&format!("<strong>{}</strong>", esc(&unmd(part))));
                } else {
                    out.push_str(&esc(&unmd(part)));
                }
            }
            body.push_str(&format!("<p>{out}</p>\n"));
        }
    }
    if in_list {
        body.push_str("</ul>\n");
    }
    if in_table {
        body.push_str("</table>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Incident {} report</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111;line-height:1.45}}table{{border-collapse:collapse;margin:0.5rem 0}}td,th{{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;vertical-align:top}}th{{background:#f3f4f6}}h2{{border-bottom:1px solid #ddd;margin-top:2rem}}figure{{margin:1rem 0;overflow-x:auto}}figcaption{{font-size:0.85rem;color:#444}}</style></head><body>\n{}</body></html>\n",
        esc(&s(&r["incident"]["id"])),
        body
    )
}

/// Affected customers as CSV (`subject,categories,first_access,last_access,status,exposed_requests,attempted_requests`).
pub fn affected_csv(impact: &Impact) -> String {
    let mut o = String::from(
        "subject,categories,first_access,last_access,status,exposed_requests,attempted_requests\n",
    );
    // Every field quoted (a `;` must not split a cell in semicolon locales),
    // and a value a spreadsheet would take for a formula defused with `'`.
    let field = |s: &str| {
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    for a in impact.subjects.values() {
        o.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            field(&a.subject),
            field(&a.categories.iter().cloned().collect::<Vec<_>>().join(";")),
            utc(a.first_ms.div_euclid(1000)),
            utc(a.last_ms.div_euclid(1000)),
            a.status,
            a.exposed_requests,
            a.attempted_requests
        ));
    }
    o
}

/// Everything the report needs, read from the stores.
pub fn report_for(
    store: &IncidentStore,
    logs: &[Source<'_>],
    id: i64,
    regimes: &[Regime],
    contacts: &BTreeMap<String, String>,
    now: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<(Value, Impact), String> {
    let case = Case::load(store, id)?;
    let impact = impact_of(logs, &case.detections, progress)?;
    Ok((build(&case, &impact, regimes, contacts, now), impact))
}

/// An incident's legal clocks at `now`, as JSON (`regime`, `name`,
/// `starts_at`, `due_at`, `status`, `remaining`).
pub fn clocks_json(
    store: &IncidentStore,
    inc: &Incident,
    regimes: &[Regime],
    now: i64,
) -> Vec<Value> {
    let facts = crate::facts::facts_of(store, inc);
    let subs = store.submissions(inc.id).unwrap_or_default();
    clock_states(regimes, &facts, &subs, now)
        .into_iter()
        .map(|(c, status)| {
            json!({
                "regime": c.regime_id, "name": c.name, "starts_at": c.starts_at, "due_at": c.due_at,
                "status": status,
                "remaining": clocks::format_duration(c.due_at - now),
            })
        })
        .collect()
}

/// Every clock that runs for `facts`, with where it stands at `now` given
/// the reports made (matched to clocks by [`crate::facts::submitted_at`]).
pub fn clock_states(
    regimes: &[Regime],
    facts: &IncidentFacts,
    submissions: &[crate::store::Submission],
    now: i64,
) -> Vec<(clocks::Clock, clocks::ClockStatus)> {
    let all = clocks::clocks(regimes, facts);
    let sent = crate::facts::submitted_at(&all, submissions);
    all.into_iter()
        .zip(sent)
        .map(|(c, submitted)| {
            let status = clocks::status(&c, now, submitted);
            (c, status)
        })
        .collect()
}

/// One incident as JSON: the summary (`id`, `state`, `severity`, `title`,
/// times, `clocks`, `next_deadline`) and, with `detail`, its detections and
/// timeline.
pub fn incident_json(
    store: &IncidentStore,
    inc: &Incident,
    regimes: &[Regime],
    now: i64,
    detail: bool,
) -> Value {
    let clocks = clocks_json(store, inc, regimes, now);
    let next = clocks
        .iter()
        .filter(|k| k["status"]["state"] == "running" || k["status"]["state"] == "overdue")
        .min_by_key(|k| k["due_at"].as_i64().unwrap_or(i64::MAX))
        .cloned();
    let mut doc = json!({
        "id": inc.id, "state": inc.state.as_str(), "severity": inc.severity.as_str(),
        "title": inc.title, "opened_at": inc.opened_at, "aware_at": inc.aware_at,
        "materiality_at": inc.materiality_at, "updated_at": inc.updated_at,
        "clocks": clocks, "next_deadline": next,
    });
    if detail {
        let dets = store.detections(inc.id).unwrap_or_default();
        let timeline = store.timeline(inc.id).unwrap_or_default();
        doc["detections"] = Value::from(
            dets.iter()
                .map(|d| json!({"id": d.id, "detection": d.detection}))
                .collect::<Vec<_>>(),
        );
        doc["timeline"] = Value::from(
            timeline
                .iter()
                .map(|t| json!({"at": t.at, "actor": t.actor, "kind": t.kind, "body": t.body}))
                .collect::<Vec<_>>(),
        );
    }
    doc
}
