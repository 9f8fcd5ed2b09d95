//! The impact of an attack, read from the access logs: which events belong
//! to it ([`Evidence`]), and what they did ([`Impact`]: affected customers,
//! exposed and attempted requests, requests per minute by verdict).
//!
//! Invariants: every event of the attack is counted, none sampled or
//! estimated; an aggregate row counts every decision it stands for; a
//! customer is `exposed` once any request for them went through, and then
//! keeps only the categories of exposed requests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::access::AccessLog;
use crate::detect::{ActorKind, Rule};
use crate::store::StoredDetection;

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
    /// For a request refused before its token decided anything: what the
    /// token alone got.
    #[serde(default)]
    pub examined: Option<StoredExamined>,
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

/// What a token alone got, as the log keeps it (see
/// [`tally_core::gate::Examined`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct StoredExamined {
    /// Verdict code.
    pub verdict: String,
    /// Its detail.
    #[serde(default)]
    pub detail: Option<String>,
}

impl StoredEvent {
    /// Whether this event's request carried a token that proves a signing
    /// key is in the wrong hands ([`tally_core::gate::proves_stolen_key`]):
    /// the token was refused for it, or the request was refused by
    /// containment first and its token, examined for the record, proves it.
    pub fn proves_stolen_key(&self) -> bool {
        tally_core::gate::proves_stolen_key(&self.verdict, self.detail.as_deref())
            || self.examined.as_ref().is_some_and(|e| {
                tally_core::gate::proves_stolen_key(&e.verdict, e.detail.as_deref())
            })
    }

    /// Whether the request was refused before its token decided anything and
    /// the token could not be examined (the budget for blocked clients was
    /// spent, or the ledger could not answer): whether it was forged is not
    /// known.
    pub fn unexamined(&self) -> bool {
        self.examined
            .as_ref()
            .is_some_and(|e| e.verdict == tally_core::verdict::Verdict::Unavailable.code())
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
    /// Client addresses and devices that presented forged tokens: their
    /// requests refused by containment whose tokens could not be examined
    /// belong to the attack too (counted apart, not as forged).
    pub forgers: HashSet<(ActorKind, String)>,
}

impl Evidence {
    /// The evidence of an incident's detections.
    pub fn of(detections: &[StoredDetection]) -> Evidence {
        let mut e = Evidence::default();
        for d in detections {
            let det = &d.detection;
            if det.rule == Rule::ForgedToken {
                for a in &det.actors {
                    match a.kind {
                        ActorKind::Key => {
                            e.forged_kids.insert(a.value.clone());
                        }
                        ActorKind::Ip | ActorKind::Device => {
                            e.forgers.insert((a.kind, a.value.clone()));
                        }
                        _ => {}
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
        let named = |set: &HashSet<(ActorKind, String)>, kind, v: &Option<String>| {
            v.as_ref().is_some_and(|v| set.contains(&(kind, v.clone())))
        };
        if ev.unexamined()
            && (named(&self.forgers, ActorKind::Ip, &ev.client_ip)
                || named(&self.forgers, ActorKind::Device, &ev.device))
        {
            return true;
        }
        let hit = |kind, v: &Option<String>| named(&self.actors, kind, v);
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
    /// Of them, those refused by containment (a blocked address or device)
    /// before their tokens were weighed: the gate examined the tokens for
    /// the record.
    #[serde(default)]
    pub forged_refused_by_containment: u64,
    /// Attack requests refused by containment whose tokens the gate did not
    /// examine (its budget for blocked clients was spent): whether they
    /// were forged is not known, and they are not counted as forged.
    #[serde(default)]
    pub requests_unexamined: u64,
    /// Requests refused by containment, not examined, and counted in a
    /// flood's per-verdict aggregate without their address or device (too
    /// many actors in that second), during the attack: they cannot be told
    /// apart from other clients' and may belong to it. Counted apart from
    /// everything above.
    #[serde(default)]
    pub requests_unexamined_unattributed: u64,
    /// Attack requests the gate refused (they did not go on).
    #[serde(default)]
    pub requests_refused: u64,
    /// Attack requests the gate judged a refusal but let through, as monitor
    /// mode does (exposed when the upstream answered with success).
    #[serde(default)]
    pub requests_allowed_monitor: u64,
    /// Attack requests with a valid token the gate let through.
    #[serde(default)]
    pub requests_allowed_valid: u64,
    /// Subjects the attack named that are not in the directory (member ids
    /// that do not exist), with the requests for each: evidence of minting,
    /// not affected people, so kept out of `subjects`.
    #[serde(default)]
    pub unknown_subjects: BTreeMap<String, u64>,
    /// Distinct token ids that named a subject not in the directory.
    #[serde(default)]
    pub unknown_subject_tokens: u64,
    /// Per client address or device a detection names: the distinct
    /// subjects its requests in the access log asked for (exact, where a
    /// detection gives an estimate), and per stolen key the distinct
    /// subjects its forged tokens named. Keyed `ip 203.0.113.9`,
    /// `device d-1`, `token t-1`, `key k-1`.
    #[serde(default)]
    pub subjects_by_actor: BTreeMap<String, u64>,
    /// The token ids that named them (to count each once).
    #[serde(skip)]
    pub unknown_tokens: HashSet<String>,
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

    fn add(&mut self, ev: &StoredEvent, known: Known<'_>) {
        let n = ev.decisions();
        let last = ev.last_ms.unwrap_or(ev.at_ms).max(ev.at_ms);
        if ev.proves_stolen_key() {
            self.forged_requests += n;
            if ev.examined.is_some() {
                self.forged_refused_by_containment += n;
            }
        } else if ev.unexamined() {
            self.requests_unexamined += n;
        }
        let exposed = ev.exposed();
        if exposed {
            self.requests_exposed += n;
        } else {
            self.requests_attempted += n;
        }
        if !ev.inquiry {
            if !ev.passed {
                self.requests_refused += n;
            } else if ev.verdict != "ok" {
                self.requests_allowed_monitor += n;
            } else {
                self.requests_allowed_valid += n;
            }
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
        // A subject already counted is known; one not in the directory is
        // counted apart (asked once per subject).
        if !self.subjects.contains_key(sub)
            && (self.unknown_subjects.contains_key(sub) || !known(sub.as_str()))
        {
            *self.unknown_subjects.entry(sub.clone()).or_default() += n;
            if let Some(t) = ev.token_id.as_ref()
                && self.unknown_tokens.insert(t.clone())
            {
                self.unknown_subject_tokens += 1;
            }
            return;
        }
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

/// Whether a subject is in the directory (a user the state store knows).
/// A subject it denies is a member id that does not exist: counted apart,
/// never as an affected customer.
pub type Known<'a> = &'a dyn Fn(&str) -> bool;

/// Every subject is known (when there is no directory to ask).
pub fn all_known(_: &str) -> bool {
    true
}

/// Scans the access logs in `[from_ms, until_ms)` for events `select` keeps.
/// In a fleet each node keeps its own log: give every node's to count every
/// affected customer.
pub fn scan(
    logs: &[Source<'_>],
    from_ms: i64,
    until_ms: i64,
    select: &mut dyn FnMut(&StoredEvent) -> bool,
    known: Known<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Impact, String> {
    let mut impact = Impact::default();
    for (name, log) in logs {
        scan_into(&mut impact, log, from_ms, until_ms, select, known, progress)?;
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
    known: Known<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), String> {
    let mut bad = 0u64;
    let before = impact.scanned;
    let scanned = log
        .scan(from_ms, until_ms, |_, _, body| {
            match serde_json::from_slice::<StoredEvent>(body) {
                Ok(ev) => {
                    if select(&ev) {
                        impact.add(&ev, known);
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
/// Subjects `known` denies are counted apart ([`Impact::unknown_subjects`]).
pub fn impact_of(
    logs: &[Source<'_>],
    detections: &[StoredDetection],
    known: Known<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Impact, String> {
    let evidence = Evidence::of(detections);
    // The distinct subjects each client address, device or token a
    // detection names asked for, and those each stolen key's forged tokens
    // named, exactly (a detection's own count is a sketch's estimate).
    let mut by_actor: HashMap<String, HashSet<String>> = HashMap::new();
    // Per-verdict aggregates of blocked requests not examined: (first, last,
    // count), at most one a second.
    let mut anonymous: Vec<(i64, i64, u64)> = Vec::new();
    let mut impact = scan(
        logs,
        i64::MIN,
        i64::MAX,
        &mut |ev| {
            if !evidence.matches(ev) {
                if ev.unexamined() && ev.client_ip.is_none() && ev.device.is_none() {
                    anonymous.push((ev.at_ms, ev.last_ms.unwrap_or(ev.at_ms), ev.decisions()));
                }
                return false;
            }
            if let Some(sub) = ev.subject.as_ref().filter(|s| !s.is_empty()) {
                if ev.proves_stolen_key()
                    && let Some(kid) = &ev.kid
                {
                    by_actor
                        .entry(format!("{} {kid}", ActorKind::Key.as_str()))
                        .or_default()
                        .insert(sub.clone());
                }
                for (kind, v) in [
                    (ActorKind::Ip, &ev.client_ip),
                    (ActorKind::Device, &ev.device),
                    (ActorKind::Token, &ev.token_id),
                ] {
                    if let Some(v) = v
                        && evidence.actors.contains(&(kind, v.clone()))
                    {
                        by_actor
                            .entry(format!("{} {v}", kind.as_str()))
                            .or_default()
                            .insert(sub.clone());
                    }
                }
            }
            true
        },
        known,
        progress,
    )?;
    impact.subjects_by_actor = by_actor
        .into_iter()
        .map(|(k, v)| (k, v.len() as u64))
        .collect();
    if let (Some(first), Some(last)) = (impact.first_ms, impact.last_ms) {
        impact.requests_unexamined_unattributed = anonymous
            .iter()
            .filter(|(a, b, _)| *b >= first && *a <= last)
            .map(|(_, _, n)| n)
            .sum();
    }
    Ok(impact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: serde_json::Value) -> StoredEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn monitor_mode_refusals_let_through_are_allowed_not_blocked() {
        let mut i = Impact::default();
        let known = |s: &str| s.starts_with("cust-");
        // Monitor mode: judged not_issued, let through, the shop answered.
        i.add(
            &ev(serde_json::json!({"at_ms": 1000, "subject": "cust-1", "route": "/p/", "verdict": "not_issued", "passed": true, "upstream_status": 200, "token_id": "f-1"})),
            &known,
        );
        // Monitor mode for a member id that does not exist: the shop has nothing.
        i.add(
            &ev(serde_json::json!({"at_ms": 2000, "subject": "m9000001", "route": "/p/", "verdict": "not_issued", "passed": true, "upstream_status": 404, "token_id": "f-2"})),
            &known,
        );
        i.add(
            &ev(serde_json::json!({"at_ms": 2500, "subject": "m9000001", "route": "/o/", "verdict": "not_issued", "passed": true, "upstream_status": 404, "token_id": "f-2"})),
            &known,
        );
        // Enforce mode: refused, in an aggregate row of three.
        i.add(
            &ev(serde_json::json!({"at_ms": 3000, "subject": "cust-2", "route": "/p/", "verdict": "blocked", "passed": false, "count": 3})),
            &known,
        );
        assert_eq!(i.requests_allowed_monitor, 3);
        assert_eq!(i.requests_refused, 3);
        assert_eq!(i.requests_allowed_valid, 0);
        assert_eq!((i.requests_exposed, i.requests_attempted), (1, 5));
        // The member id that does not exist is not an affected customer.
        assert_eq!(i.subjects.keys().collect::<Vec<_>>(), ["cust-1", "cust-2"]);
        assert_eq!(i.unknown_subjects, BTreeMap::from([("m9000001".into(), 2)]));
        assert_eq!(i.unknown_subject_tokens, 1);
        assert_eq!((i.exposed_subjects(), i.attempted_subjects()), (1, 1));
    }

    /// A request refused by containment, as the gate books it: verdict
    /// `blocked_actor`, with what its token alone got.
    fn blocked(
        sub: Option<&str>,
        tid: &str,
        examined: tally_core::verdict::Verdict,
        detail: Option<&'static str>,
    ) -> StoredEvent {
        use tally_core::gate::{Examined, Refusal};
        use tally_core::verdict::Verdict;
        let mut r = Refusal::new(Verdict::BlockedActor);
        r.kid = Some("shop-1".into());
        r.subject = sub.map(str::to_string);
        r.token_id = Some(tid.into());
        r.examined = Some(Examined {
            verdict: examined,
            detail,
        });
        r.detail = Some("blocked by containment");
        let request = crate::access::Request {
            at_ms: 5_000,
            client_ip: Some("203.0.113.66".parse().unwrap()),
            device: None,
            route: "/p/",
            method: "GET",
            path: "/p/x",
            data: &[],
        };
        let e = crate::access::event(&Err(r), &request, false, std::time::Duration::ZERO);
        serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap()
    }

    /// A stored `forged_token` detection of key `shop-1` naming `actors`.
    fn forged_token_detection(actors: &[(ActorKind, &str)]) -> StoredDetection {
        use crate::detect::{Actor, Detection};
        StoredDetection {
            id: 1,
            incident_id: Some(1),
            detection: Detection {
                key: "forged_token:kid=shop-1".into(),
                rule: Rule::ForgedToken,
                severity: Rule::ForgedToken.severity(),
                first_seen: 5,
                last_seen: 9,
                count: 2,
                actors: actors
                    .iter()
                    .map(|(kind, value)| Actor {
                        kind: *kind,
                        value: value.to_string(),
                    })
                    .collect(),
                samples: vec![],
                suggested: vec![],
                summary: String::new(),
            },
        }
    }

    #[test]
    fn forged_tokens_refused_by_containment_count_as_forged_and_name_their_subjects() {
        use tally_core::verdict::Verdict;
        let mut i = Impact::default();
        let known = |s: &str| s.starts_with("cust-");
        // Blocked before its token was weighed; examined: forged.
        let forged = blocked(Some("cust-1"), "f-1", Verdict::NotIssued, None);
        assert!(forged.proves_stolen_key());
        i.add(&forged, &known);
        // A genuine token from the blocked address: refused, not forged.
        let genuine = blocked(Some("cust-2"), "t-2", Verdict::Ok, None);
        assert!(!genuine.proves_stolen_key() && !genuine.unexamined());
        i.add(&genuine, &known);
        // The ECDSA twin of an issued token proves nothing about the key.
        let twin = blocked(
            None,
            "t-3",
            Verdict::NotIssued,
            Some(tally_core::gate::ECDSA_TWIN),
        );
        assert!(!twin.proves_stolen_key());
        i.add(&twin, &known);
        // Beyond the examination budget: not known, not counted as forged.
        let unexamined = blocked(
            None,
            "u-4",
            Verdict::Unavailable,
            Some(tally_core::gate::NOT_EXAMINED),
        );
        assert!(unexamined.unexamined());
        i.add(&unexamined, &known);
        assert_eq!(i.forged_requests, 1);
        assert_eq!(i.forged_refused_by_containment, 1);
        assert_eq!(i.requests_unexamined, 1);
        assert_eq!(i.requests_refused, 4);
        assert_eq!(i.subjects.keys().collect::<Vec<_>>(), ["cust-1", "cust-2"]);
    }

    #[test]
    fn an_aggregate_of_blocked_refusals_keeps_what_their_tokens_got() {
        use tally_core::flood::{FloodAccount, FloodPolicy, RefusalKey, Sample};
        use tally_core::gate::Examined;
        use tally_core::verdict::Verdict;
        let mut f = FloodAccount::new(FloodPolicy {
            max_keys: 0,
            ..FloodPolicy::default()
        });
        let key = RefusalKey {
            passed: false,
            client_ip: Some("203.0.113.66"),
            device: None,
            verdict: "blocked_actor",
            token_id: None,
            examined: Some(Examined {
                verdict: Verdict::NotIssued,
                detail: None,
            }),
        };
        for _ in 0..7 {
            f.admit(&key, 100, true, 9_000, Sample::default);
        }
        let rows: Vec<StoredEvent> = f
            .take_all()
            .into_iter()
            .map(|a| {
                let e = crate::access::AccessEvent::of_aggregate(a);
                serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap()
            })
            .collect();
        let mut i = Impact::default();
        for r in &rows {
            i.add(r, &all_known);
        }
        assert_eq!(i.forged_requests, 7);
        assert_eq!(i.forged_refused_by_containment, 7);
    }

    #[test]
    fn requests_not_examined_belong_to_the_attack_only_from_a_forging_address() {
        use tally_core::verdict::Verdict;
        let detection =
            forged_token_detection(&[(ActorKind::Ip, "203.0.113.66"), (ActorKind::Key, "shop-1")]);
        let evidence = Evidence::of(&[detection]);
        let unexamined = blocked(
            None,
            "u-1",
            Verdict::Unavailable,
            Some(tally_core::gate::NOT_EXAMINED),
        );
        assert!(evidence.matches(&unexamined));
        let mut elsewhere = blocked(
            None,
            "u-2",
            Verdict::Unavailable,
            Some(tally_core::gate::NOT_EXAMINED),
        );
        elsewhere.client_ip = Some("198.51.100.1".into());
        assert!(
            !evidence.matches(&elsewhere),
            "another address's requests are not the attack's"
        );
        // A genuine token from the forging address is not the attack's.
        assert!(!evidence.matches(&blocked(Some("cust-2"), "t-2", Verdict::Ok, None)));
        // A forged one from anywhere is.
        let mut forged = blocked(Some("cust-3"), "f-3", Verdict::NotIssued, None);
        forged.client_ip = Some("198.51.100.1".into());
        assert!(evidence.matches(&forged));
    }

    #[test]
    fn blocked_requests_counted_without_their_address_during_the_attack_are_reported_apart() {
        use tally_core::flood::{FloodAccount, FloodPolicy, RefusalKey, Sample};
        use tally_core::gate::{Examined, NOT_EXAMINED};
        use tally_core::verdict::Verdict;
        let dir = std::env::temp_dir().join(format!(
            "tally-unattributed-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = AccessLog::open(&dir.join("access.db")).unwrap();
        let row = |e: &crate::access::AccessEvent| (e.at_ms, serde_json::to_vec(e).unwrap());
        // The attack: a forged token from the blocked address at 5 s.
        let mut forged = tally_core::gate::Refusal::new(Verdict::BlockedActor);
        forged.kid = Some("shop-1".into());
        forged.subject = Some("cust-1".into());
        forged.token_id = Some("f-1".into());
        forged.examined = Some(Examined {
            verdict: Verdict::NotIssued,
            detail: None,
        });
        let request = |at_ms| crate::access::Request {
            at_ms,
            client_ip: Some("203.0.113.66".parse().unwrap()),
            device: None,
            route: "/p/",
            method: "GET",
            path: "/p/x",
            data: &[],
        };
        let zero = std::time::Duration::ZERO;
        let first = crate::access::event(&Err(forged.clone()), &request(5_000), false, zero);
        let last = crate::access::event(&Err(forged), &request(9_000), false, zero);
        // A flood of blocked clients too many to tell apart: per-verdict
        // aggregates of tokens not examined, one inside the attack's span
        // and one long after it.
        let unexamined = Examined {
            verdict: Verdict::Unavailable,
            detail: Some(NOT_EXAMINED),
        };
        let mut aggregates = Vec::new();
        for (at, n) in [(7_000i64, 40u32), (900_000, 7)] {
            let mut f = FloodAccount::new(FloodPolicy {
                max_keys: 0,
                ..FloodPolicy::default()
            });
            for i in 0..n {
                let ip = format!("198.51.100.{i}");
                let key = RefusalKey {
                    passed: false,
                    client_ip: Some(&ip),
                    device: None,
                    verdict: "blocked_actor",
                    token_id: None,
                    examined: Some(unexamined),
                };
                f.admit(&key, 100, true, at, Sample::default);
            }
            aggregates.extend(
                f.take_all()
                    .into_iter()
                    .map(crate::access::AccessEvent::of_aggregate),
            );
        }
        let mut rows = vec![row(&first), row(&last)];
        rows.extend(aggregates.iter().map(row));
        log.append(&rows).unwrap();
        let detection = forged_token_detection(&[(ActorKind::Key, "shop-1")]);
        let impact = impact_of(
            &[("access.db".into(), &log)],
            &[detection],
            &all_known,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(impact.forged_requests, 2);
        assert_eq!(impact.requests_unexamined, 0);
        assert_eq!(impact.requests_unexamined_unattributed, 40);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
