//! The [`Detector`]: observations and signals in, [`Finding`]s out.
//!
//! Pure and bounded: no I/O and no clock (times come with the input), and
//! the counting state holds at most `max_actors` actors per counting rule,
//! whatever the traffic. A counting finding is raised at most once per
//! actor (or token) and window.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::counting::{
    SLICES, mass_access_actors, mass_access_finding, replay_sources, token_replay_finding,
};
use super::finding::{Actor, ActorKind, Containment, Finding};
use super::input::{Observation, Signal};
use super::rules::{DetectorConfig, Rule, Severity};
use crate::sketch::{BuildPreHashed, WindowedDistinct};

/// The detector's state.
///
/// Actors and subjects are counted under 64-bit SipHash values keyed per
/// process, so that nobody, not even an attacker who picks the subjects of
/// forged tokens, can aim collisions at the counts; the common path (an
/// ordinary request under every threshold) allocates nothing. Counts merged
/// across processes need one shared key (or [`crate::sketch::subject_hash`]).
pub struct Detector {
    cfg: DetectorConfig,
    canaries: HashSet<String>,
    hasher: std::collections::hash_map::RandomState,
    /// Distinct subjects per actor.
    subjects: WindowedDistinct<u64, BuildPreHashed>,
    /// Distinct sources (addresses, devices) per token id.
    sources: WindowedDistinct<u64, BuildPreHashed>,
    /// Counting findings already raised (by actor key), and when: not raised
    /// again within the window.
    raised: HashMap<u64, i64, BuildPreHashed>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("cfg", &self.cfg)
            .field("actors", &self.subjects.len())
            .finish_non_exhaustive()
    }
}

/// Moves a token's actor key into the replay rule's namespace.
const REPLAY_SALT: u64 = 0x5bd1_e995_9e37_79b9;

/// Tag of subject hashes.
const SUBJECT_TAG: u8 = 201;

impl Detector {
    /// A detector with `cfg`.
    pub fn new(cfg: DetectorConfig) -> Detector {
        let max = cfg.max_actors.max(16);
        Detector {
            canaries: cfg.canary_accounts.iter().cloned().collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            subjects: WindowedDistinct::with_hasher(
                cfg.mass_access_window_secs.max(1),
                SLICES,
                max,
            ),
            sources: WindowedDistinct::with_hasher(cfg.replay_window_secs.max(1), SLICES, max),
            raised: HashMap::default(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Approximate heap bytes held by the counting state.
    pub fn heap_bytes(&self) -> usize {
        self.subjects.heap_bytes() + self.sources.heap_bytes() + self.raised.capacity() * 24
    }

    /// Actors tracked by `mass_access`.
    pub fn tracked_actors(&self) -> usize {
        self.subjects.len()
    }

    /// Forgets actors with nothing left in their windows; call periodically.
    pub fn expire(&mut self, now: i64) {
        self.subjects.expire(now);
        self.sources.expire(now);
        let keep = self
            .cfg
            .mass_access_window_secs
            .max(self.cfg.replay_window_secs);
        self.raised.retain(|_, at| now - *at < keep);
    }

    fn key(&self, tag: u8, value: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write_u8(tag);
        h.write(value.as_bytes());
        h.finish()
    }

    fn first_in_window(&mut self, key: u64, now: i64, window: i64) -> bool {
        match self.raised.get(&key) {
            Some(at) if now - *at < window => false,
            _ => {
                self.raised.insert(key, now);
                true
            }
        }
    }

    /// Feeds one access decision; returns what it proves.
    pub fn observe(&mut self, o: &Observation<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        let actors_of = |o: &Observation<'_>| {
            let mut a = Vec::new();
            for (kind, v) in [
                (ActorKind::Ip, o.client_ip),
                (ActorKind::Device, o.device),
                (ActorKind::Token, o.token_id),
                (ActorKind::Key, o.kid),
            ] {
                if let Some(v) = v {
                    a.push(Actor {
                        kind,
                        value: v.to_string(),
                    });
                }
            }
            a
        };
        let forged = o.carries_forgery();
        if forged {
            let kid = o.kid.unwrap_or("");
            let mut suggested = vec![Containment::CompromiseKey {
                kid: kid.to_string(),
            }];
            if let Some(ip) = o.client_ip {
                suggested.push(Containment::BlockActor {
                    actor: Actor {
                        kind: ActorKind::Ip,
                        value: ip.to_string(),
                    },
                });
            }
            out.push(Finding {
                rule: Rule::ForgedToken,
                severity: Severity::Critical,
                key: format!("forged_token:kid={kid}"),
                at: o.at,
                actors: actors_of(o),
                evidence: json!({
                    "verdict": o.token_verdict(),
                    "kid": o.kid,
                    "token_id": o.token_id,
                    "subject": o.subject,
                    "client_ip": o.client_ip,
                    "route": o.route,
                }),
                suggested,
                summary: format!(
                    "a token signed with key {kid} that the ledger cannot tally ({}): the key is in the wrong hands",
                    o.token_verdict()
                ),
            });
        }
        let Some(subject) = o.subject.filter(|s| !s.is_empty()) else {
            return out;
        };
        if !self.canaries.is_empty() && self.canaries.contains(subject) {
            let mut suggested = Vec::new();
            if let Some(ip) = o.client_ip {
                suggested.push(Containment::BlockActor {
                    actor: Actor {
                        kind: ActorKind::Ip,
                        value: ip.to_string(),
                    },
                });
            }
            if let Some(kid) = o.kid.filter(|_| forged) {
                suggested.push(Containment::CompromiseKey {
                    kid: kid.to_string(),
                });
            }
            out.push(Finding {
                rule: Rule::CanaryAccount,
                severity: Severity::Critical,
                key: format!("canary_account:sub={subject}"),
                at: o.at,
                actors: actors_of(o),
                evidence: json!({
                    "subject": subject, "verdict": o.verdict, "route": o.route,
                    "client_ip": o.client_ip, "token_id": o.token_id,
                }),
                suggested,
                summary: format!("access to honey account {subject}: nobody legitimate uses it"),
            });
        }
        // mass_access: distinct subjects per actor. Refusals count too: an
        // attacker who tries 10,000 accounts has shown what they are after.
        let h = self.key(SUBJECT_TAG, subject);
        let window = self.cfg.mass_access_window_secs;
        // Each actor's key is computed once and reused by token_replay.
        let ip_key = o.client_ip.map(|v| self.key(ActorKind::Ip as u8, v));
        let device_key = o.device.map(|v| self.key(ActorKind::Device as u8, v));
        let token_key = o.token_id.map(|v| self.key(ActorKind::Token as u8, v));
        for (kind, value) in mass_access_actors(o).into_iter().flatten() {
            let key = match kind {
                ActorKind::Ip => ip_key,
                ActorKind::Device => device_key,
                ActorKind::Token => token_key,
                _ => None,
            };
            let k = key.unwrap_or_else(|| self.key(kind as u8, value));
            let raised = self.raised.get(&k).is_some_and(|at| o.at - *at < window);
            let n = self.subjects.observe_with(&k, h, o.at, !raised);
            if raised
                || n <= self.cfg.mass_access_threshold
                || !self.first_in_window(k, o.at, window)
            {
                continue;
            }
            out.push(mass_access_finding(
                &self.cfg,
                Actor {
                    kind,
                    value: value.to_string(),
                },
                n,
                o.at,
                o.route,
                "node",
            ));
        }
        // token_replay: distinct sources per token, for tokens the gate
        // allowed (a refused token, e.g. an expired one, must not let its
        // holder set off containment against its subject).
        if let Some((tid, _)) = replay_sources(o) {
            // The replay rule's key for a token: its actor key, moved into
            // another namespace (keys are uniform, so a constant xor suffices).
            let tk =
                token_key.unwrap_or_else(|| self.key(ActorKind::Token as u8, tid)) ^ REPLAY_SALT;
            let raised = self
                .raised
                .get(&tk)
                .is_some_and(|at| o.at - *at < self.cfg.replay_window_secs);
            let mut n = 0;
            for hs in [ip_key, device_key].into_iter().flatten() {
                n = n.max(self.sources.observe_with(&tk, hs, o.at, !raised));
            }
            if n >= self.cfg.replay_min_sources
                && self.first_in_window(tk, o.at, self.cfg.replay_window_secs)
            {
                out.push(token_replay_finding(
                    &self.cfg,
                    tid,
                    subject,
                    actors_of(o),
                    n,
                    o.at,
                    "node",
                ));
            }
        }
        out
    }

    /// Turns a signal raised elsewhere into a finding.
    pub fn signal(&mut self, s: &Signal, now: i64) -> Finding {
        let f =
            |rule: Rule, key: String, actors: Vec<Actor>, evidence: Value, suggested, summary| {
                Finding {
                    rule,
                    severity: rule.severity(),
                    key,
                    at: now,
                    actors,
                    evidence,
                    suggested,
                    summary,
                }
            };
        let key_actor = |kid: &str| Actor {
            kind: ActorKind::Key,
            value: kid.to_string(),
        };
        match s {
            Signal::UnknownSubject {
                subject,
                requested_by,
            } => f(
                Rule::UnknownSubject,
                format!("unknown_subject:by={requested_by}"),
                vec![Actor {
                    kind: ActorKind::Subject,
                    value: subject.clone(),
                }],
                json!({"subject": subject, "requested_by": requested_by}),
                vec![],
                format!(
                    "{requested_by} asked for a token for {subject}, who is not in the directory"
                ),
            ),
            Signal::RefreshReuse { subject, session } => f(
                Rule::RefreshReuse,
                format!("refresh_reuse:session={session}"),
                vec![Actor {
                    kind: ActorKind::Subject,
                    value: subject.clone(),
                }],
                json!({"subject": subject, "session": session}),
                vec![Containment::RevokeSubject {
                    subject: subject.clone(),
                }],
                format!(
                    "a spent refresh token of {subject} was presented again: a copy is in someone else's hands"
                ),
            ),
            Signal::SignerLedgerMismatch {
                kid,
                signed,
                recorded,
            } => f(
                Rule::SignerLedgerMismatch,
                format!("signer_ledger_mismatch:kid={kid}"),
                vec![key_actor(kid)],
                json!({"kid": kid, "signed": signed, "recorded": recorded}),
                vec![Containment::CompromiseKey { kid: kid.clone() }],
                format!("key {kid} made {signed} signatures but the ledger records {recorded}"),
            ),
            Signal::LedgerTampered { detail } => f(
                Rule::LedgerTampered,
                "ledger_tampered".to_string(),
                vec![],
                json!({"detail": detail}),
                vec![],
                format!("the ledger no longer verifies: {detail}"),
            ),
            Signal::StateTampered { detail } => f(
                Rule::StateTampered,
                "state_tampered".to_string(),
                vec![],
                json!({"detail": detail}),
                vec![],
                format!(
                    "{detail} fails its MAC: someone with write access to the database, but not the master key, wrote it"
                ),
            ),
            Signal::KeyTooOld { kid, age_secs } => f(
                Rule::KeyTooOld,
                format!("key_too_old:kid={kid}"),
                vec![key_actor(kid)],
                json!({"kid": kid, "age_secs": age_secs}),
                vec![],
                format!(
                    "key {kid} is {} old",
                    crate::clocks::format_duration(*age_secs)
                ),
            ),
            Signal::DepartedCustodianKey { kid, custodian } => f(
                Rule::DepartedCustodianKey,
                format!("departed_custodian_key:kid={kid}"),
                vec![key_actor(kid)],
                json!({"kid": kid, "custodian": custodian}),
                vec![Containment::CompromiseKey { kid: kid.clone() }],
                format!("key {kid} still signs though its custodian {custodian} has left"),
            ),
            Signal::AccessFlood {
                for_bytes,
                for_queue,
                for_actors,
            } => f(
                Rule::AccessFlood,
                "access_flood".to_string(),
                vec![],
                json!({"counted_for_bytes": for_bytes, "counted_for_queue": for_queue, "counted_for_actors": for_actors}),
                vec![],
                "refusals arrive faster than the access log's budget: they are counted in aggregate rows, not written one by one".to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectionBook;

    fn obs<'a>(at: i64, ip: &'a str, sub: &'a str, verdict: &'a str) -> Observation<'a> {
        Observation {
            at,
            client_ip: Some(ip),
            device: None,
            subject: Some(sub),
            token_id: Some("t1"),
            kid: Some("k1"),
            route: "/api/",
            verdict,
            detail: None,
            examined: None,
            inquiry: false,
        }
    }

    #[test]
    fn a_forged_token_is_critical_and_names_the_key() {
        let mut d = Detector::new(DetectorConfig::default());
        let f = d.observe(&obs(100, "203.0.113.7", "alice", "not_issued"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::ForgedToken);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].key, "forged_token:kid=k1");
        assert!(
            f[0].suggested
                .contains(&Containment::CompromiseKey { kid: "k1".into() })
        );
        let f = d.observe(&obs(100, "203.0.113.7", "alice", "altered"));
        assert_eq!(f[0].rule, Rule::ForgedToken);
        // An ECDSA twin of an issued token is no evidence against the key.
        let mut twin = obs(100, "203.0.113.7", "alice", "altered");
        twin.detail = Some(tally_core::gate::ECDSA_TWIN);
        assert!(d.observe(&twin).iter().all(|f| f.rule != Rule::ForgedToken));
        // Ordinary refusals and allowed requests are not forgeries.
        for v in ["ok", "expired", "bad_signature", "revoked", "unknown_key"] {
            assert!(
                d.observe(&obs(101, "198.51.100.1", "bob", v)).is_empty(),
                "{v}"
            );
        }
    }

    #[test]
    fn mass_access_fires_once_per_window_above_the_threshold() {
        let cfg = DetectorConfig {
            mass_access_threshold: 50,
            mass_access_window_secs: 60,
            ..Default::default()
        };
        let mut d = Detector::new(cfg);
        let mut fired = Vec::new();
        for i in 0..200 {
            let sub = format!("member-{i}");
            let mut o = obs(1000 + i / 10, "203.0.113.9", &sub, "ok");
            o.token_id = None;
            o.kid = None;
            fired.extend(d.observe(&o));
        }
        let mass: Vec<_> = fired
            .iter()
            .filter(|f| f.rule == Rule::MassAccess)
            .collect();
        assert_eq!(mass.len(), 1, "{mass:?}");
        assert_eq!(mass[0].key, "mass_access:ip=203.0.113.9");
        assert_eq!(mass[0].actors[0].kind, ActorKind::Ip);
        // Crossed at the 51st distinct subject.
        assert_eq!(mass[0].evidence["distinct_subjects"], 51);
        // The same subject again and again is not mass access.
        let mut d = Detector::new(DetectorConfig {
            mass_access_threshold: 5,
            ..Default::default()
        });
        for i in 0..1000 {
            assert!(d.observe(&obs(i, "198.51.100.2", "alice", "ok")).is_empty());
        }
    }

    #[test]
    fn inquiries_count_forgeries_but_not_the_inquirer() {
        let mut d = Detector::new(DetectorConfig {
            mass_access_threshold: 5,
            replay_min_sources: 2,
            ..Default::default()
        });
        // A resource server introspecting many customers' tokens, and one
        // token asked about from several of its addresses.
        for i in 0..50 {
            let sub = format!("member-{i}");
            let mut o = obs(100, "10.0.0.5", &sub, "ok");
            o.token_id = Some("t-shared");
            o.inquiry = true;
            let mut again = o.clone();
            again.client_ip = Some("10.0.0.6");
            assert!(d.observe(&o).is_empty(), "{sub}");
            assert!(d.observe(&again).is_empty(), "{sub}");
        }
        // A forgery shown to the inquirer is a forgery.
        let mut forged = obs(101, "10.0.0.5", "root", "not_issued");
        forged.inquiry = true;
        let f = d.observe(&forged);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::ForgedToken);
    }

    #[test]
    fn canary_and_replay() {
        let cfg = DetectorConfig {
            canary_accounts: vec!["honey-1".into()],
            replay_min_sources: 3,
            ..Default::default()
        };
        let mut d = Detector::new(cfg);
        let mut honey = obs(5, "192.0.2.1", "honey-1", "ok");
        honey.token_id = Some("t-honey");
        let f = d.observe(&honey);
        assert_eq!(f[0].rule, Rule::CanaryAccount);
        assert_eq!(f[0].severity, Severity::Critical);
        // One token from three addresses.
        assert!(d.observe(&obs(10, "192.0.2.10", "bob", "ok")).is_empty());
        assert!(d.observe(&obs(11, "192.0.2.11", "bob", "ok")).is_empty());
        let f = d.observe(&obs(12, "192.0.2.12", "bob", "ok"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::TokenReplay);
        assert!(
            d.observe(&obs(13, "192.0.2.13", "bob", "ok")).is_empty(),
            "once per window"
        );
    }

    #[test]
    fn signals_become_findings_and_the_book_merges_by_key() {
        let mut d = Detector::new(DetectorConfig::default());
        let s = Signal::UnknownSubject {
            subject: "ghost".into(),
            requested_by: "shop".into(),
        };
        let f = d.signal(&s, 50);
        assert_eq!(f.rule, Rule::UnknownSubject);
        assert_eq!(f.severity, Severity::High);
        let mut book = DetectionBook::new();
        book.add(&f);
        book.add(&d.signal(
            &Signal::UnknownSubject {
                subject: "ghost-2".into(),
                requested_by: "shop".into(),
            },
            60,
        ));
        let dirty = book.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert!(dirty[0].1, "new");
        assert_eq!(dirty[0].0.count, 2);
        assert_eq!((dirty[0].0.first_seen, dirty[0].0.last_seen), (50, 60));
        assert_eq!(dirty[0].0.actors.len(), 2);
        assert!(book.take_dirty().is_empty());
        book.add(&f);
        let again = book.take_dirty();
        assert!(!again[0].1, "not new the second time");
        assert_eq!(again[0].0.count, 3);
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.code()), Some(rule));
        }
        assert_eq!(
            d.signal(&Signal::LedgerTampered { detail: "x".into() }, 1)
                .severity,
            Severity::Critical
        );
        assert_eq!(
            d.signal(
                &Signal::KeyTooOld {
                    kid: "k".into(),
                    age_secs: 1
                },
                1
            )
            .severity,
            Severity::Medium
        );
    }

    #[test]
    fn memory_stays_bounded_with_many_actors() {
        let cfg = DetectorConfig {
            max_actors: 1000,
            ..Default::default()
        };
        let mut d = Detector::new(cfg);
        for i in 0..20_000 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let sub = format!("m{i}");
            let mut o = obs(i, &ip, &sub, "ok");
            o.token_id = None;
            o.kid = None;
            d.observe(&o);
        }
        assert!(d.subjects.len() <= 1000);
    }
}
