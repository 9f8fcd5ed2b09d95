//! The detector: access events and signals in, [`Finding`]s out.
//!
//! Pure and bounded: the caller feeds every access decision as an
//! [`Observation`] and every fact raised elsewhere (issuance of a token for a
//! subject that does not exist, refresh-token reuse, a tampered ledger, a key
//! too old, ...) as a [`Signal`], with the time as a parameter. Memory is
//! bounded by `max_actors` per counting rule, whatever the traffic.
//!
//! Rules (stable codes, as in [`Rule::code`]):
//!
//! | rule | raised when | severity |
//! | --- | --- | --- |
//! | `forged_token` | a validly signed token the ledger cannot tally (`not_issued`, `altered`) | critical |
//! | `mass_access` | an actor (client address, device, token, signing key) touches more than `mass_access_threshold` distinct subjects within `mass_access_window_secs` | high |
//! | `canary_account` | any access to a configured honey account | critical |
//! | `token_replay` | one token used from at least `replay_min_sources` client addresses or devices within `replay_window_secs` | high |
//! | `unknown_subject` | issuance was asked for a subject that is not in the directory | high |
//! | `refresh_reuse` | a spent refresh token was presented again | high |
//! | `signer_ledger_mismatch` | a key's signature count and the ledger disagree | critical |
//! | `ledger_tampered` | the ledger's stored history no longer verifies | critical |
//! | `key_too_old` | the active key is older than its maximum age | medium |
//! | `departed_custodian_key` | a key guarded by an offboarded custodian still signs | high |
//!
//! A finding carries a `key` that names what it is about (`forged_token:kid=K`,
//! `mass_access:ip=203.0.113.7`): a [`DetectionBook`] merges findings with the
//! same key into one [`Detection`] with first and last sighting and a count.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sketch::{BuildPreHashed, WindowedDistinct};
use tally_core::verdict::Verdict;

/// How bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Needs attention this week.
    Medium,
    /// An incident: opens one or joins the open one.
    High,
    /// An incident, now.
    Critical,
}

impl Severity {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// A detection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A validly signed token the ledger cannot tally.
    ForgedToken,
    /// Too many distinct subjects per actor.
    MassAccess,
    /// Access to a honey account.
    CanaryAccount,
    /// One token from many places.
    TokenReplay,
    /// Issuance for a subject not in the directory.
    UnknownSubject,
    /// A spent refresh token presented again.
    RefreshReuse,
    /// Signature count and ledger disagree.
    SignerLedgerMismatch,
    /// The ledger no longer verifies.
    LedgerTampered,
    /// A state row that grants access fails its MAC.
    StateTampered,
    /// The active key is past its maximum age.
    KeyTooOld,
    /// A key of an offboarded custodian still signs.
    DepartedCustodianKey,
    /// Refusals arrive faster than the access log's byte budget: they are
    /// counted in aggregate rows instead of written one by one.
    AccessFlood,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 12] = [
        Rule::ForgedToken,
        Rule::MassAccess,
        Rule::CanaryAccount,
        Rule::TokenReplay,
        Rule::UnknownSubject,
        Rule::RefreshReuse,
        Rule::SignerLedgerMismatch,
        Rule::LedgerTampered,
        Rule::StateTampered,
        Rule::KeyTooOld,
        Rule::DepartedCustodianKey,
        Rule::AccessFlood,
    ];

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Rule::ForgedToken => "forged_token",
            Rule::MassAccess => "mass_access",
            Rule::CanaryAccount => "canary_account",
            Rule::TokenReplay => "token_replay",
            Rule::UnknownSubject => "unknown_subject",
            Rule::RefreshReuse => "refresh_reuse",
            Rule::SignerLedgerMismatch => "signer_ledger_mismatch",
            Rule::LedgerTampered => "ledger_tampered",
            Rule::StateTampered => "state_tampered",
            Rule::KeyTooOld => "key_too_old",
            Rule::DepartedCustodianKey => "departed_custodian_key",
            Rule::AccessFlood => "access_flood",
        }
    }

    /// Parses [`Rule::code`].
    pub fn parse(code: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The severity findings of this rule carry.
    pub fn severity(self) -> Severity {
        match self {
            Rule::ForgedToken
            | Rule::CanaryAccount
            | Rule::SignerLedgerMismatch
            | Rule::LedgerTampered
            | Rule::StateTampered => Severity::Critical,
            Rule::MassAccess
            | Rule::TokenReplay
            | Rule::UnknownSubject
            | Rule::RefreshReuse
            | Rule::DepartedCustodianKey => Severity::High,
            Rule::KeyTooOld | Rule::AccessFlood => Severity::Medium,
        }
    }
}

/// Who did something: the kinds of actor tally can block or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// Client address.
    Ip,
    /// Device id.
    Device,
    /// Token id (`jti`).
    Token,
    /// Signing key id.
    Key,
    /// Token subject.
    Subject,
}

impl ActorKind {
    /// Stable lower-case name (also the block kind, except `key`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Ip => "ip",
            ActorKind::Device => "device",
            ActorKind::Token => "token",
            ActorKind::Key => "key",
            ActorKind::Subject => "subject",
        }
    }
}

/// One actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Actor {
    /// What kind.
    pub kind: ActorKind,
    /// Its value.
    pub value: String,
}

/// A containment step a finding suggests (and a rule may take automatically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Containment {
    /// Block the actor at the gate.
    BlockActor {
        /// The actor.
        actor: Actor,
    },
    /// Revoke every live token of a subject.
    RevokeSubject {
        /// The subject.
        subject: String,
    },
    /// Declare the key compromised (and rotate if it is the active one).
    CompromiseKey {
        /// The key id.
        kid: String,
    },
}

/// One access decision as the detector sees it.
#[derive(Clone, Debug, Default)]
pub struct Observation<'a> {
    /// Unix seconds.
    pub at: i64,
    /// Client address.
    pub client_ip: Option<&'a str>,
    /// Device id.
    pub device: Option<&'a str>,
    /// Token subject (for refused tokens only when the signature verified).
    pub subject: Option<&'a str>,
    /// Token id.
    pub token_id: Option<&'a str>,
    /// Signing key id.
    pub kid: Option<&'a str>,
    /// Route.
    pub route: &'a str,
    /// The verdict's stable code.
    pub verdict: &'a str,
    /// The refusal's detail, if any (e.g. [`tally_core::gate::ECDSA_TWIN`]).
    pub detail: Option<&'a str>,
    /// A third party asked about the token (a resource server introspecting
    /// it): the caller's address and device say nothing about where the
    /// token is used, so they are not counted against it (`mass_access`,
    /// `token_replay`). A forgery it reveals is one all the same.
    pub inquiry: bool,
}

/// A fact raised outside the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Issuance asked for a subject that is not in the directory.
    UnknownSubject {
        /// The subject asked for.
        subject: String,
        /// Who asked (client id or issuer).
        requested_by: String,
    },
    /// A spent refresh token was presented again; the session was revoked.
    RefreshReuse {
        /// The session's subject.
        subject: String,
        /// The session (family) id.
        session: String,
    },
    /// A key's signature count and the ledger disagree.
    SignerLedgerMismatch {
        /// The key.
        kid: String,
        /// Signatures counted.
        signed: u64,
        /// Records in the ledger.
        recorded: u64,
    },
    /// The ledger's stored history no longer verifies.
    LedgerTampered {
        /// What was found.
        detail: String,
    },
    /// A state row that grants access (user, client, session, refresh
    /// token) fails its MAC: someone wrote it without the master key.
    StateTampered {
        /// Which row.
        detail: String,
    },
    /// The active key is past its maximum age.
    KeyTooOld {
        /// The key.
        kid: String,
        /// Its age in seconds.
        age_secs: i64,
    },
    /// A key guarded by an offboarded custodian still signs.
    DepartedCustodianKey {
        /// The key.
        kid: String,
        /// The custodian.
        custodian: String,
    },
    /// The access log's budget bit: refusals were counted, not written one
    /// by one (every one is still accounted for).
    AccessFlood {
        /// Refusals counted because the byte budget was spent.
        for_bytes: u64,
        /// Refusals counted because the writer's queue was full.
        for_queue: u64,
        /// Refusals counted per verdict because too many actors came at once.
        for_actors: u64,
    },
}

/// What a rule found, once.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Its severity.
    pub severity: Severity,
    /// What it is about: findings with the same key are one detection.
    pub key: String,
    /// Unix seconds.
    pub at: i64,
    /// The actors involved.
    pub actors: Vec<Actor>,
    /// A sample of the evidence (never secret material).
    pub evidence: Value,
    /// What to do about it.
    pub suggested: Vec<Containment>,
    /// A one-line summary for people.
    pub summary: String,
}

/// Thresholds, from `[detector]` in `tally.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// `mass_access`: window length, seconds.
    pub mass_access_window_secs: i64,
    /// `mass_access`: distinct subjects per actor in the window above which it fires.
    pub mass_access_threshold: u64,
    /// `token_replay`: window length, seconds.
    pub replay_window_secs: i64,
    /// `token_replay`: distinct client addresses or devices per token that fire it.
    pub replay_min_sources: u64,
    /// Honey accounts: any access to one is critical.
    pub canary_accounts: Vec<String>,
    /// Actors tracked per counting rule (least recently seen evicted beyond).
    pub max_actors: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            mass_access_window_secs: 600,
            mass_access_threshold: 100,
            replay_window_secs: 300,
            replay_min_sources: 3,
            canary_accounts: Vec::new(),
            max_actors: 1_000_000,
        }
    }
}

/// An actor a counting rule counts against: its kind and value.
pub type CountedActor<'a> = (ActorKind, &'a str);

/// The actors `mass_access` counts `o`'s subject against: its client address
/// and device; its token and signing key only when the token is untallied
/// (a signing key legitimately touches every customer, and a tallied token
/// has the one subject the ledger recorded).
pub fn mass_access_actors<'a>(o: &Observation<'a>) -> [Option<CountedActor<'a>>; 4] {
    let forged = tally_core::gate::proves_stolen_key(o.verdict, o.detail);
    let holder = !o.inquiry;
    [
        o.client_ip.filter(|_| holder).map(|v| (ActorKind::Ip, v)),
        o.device.filter(|_| holder).map(|v| (ActorKind::Device, v)),
        o.token_id.filter(|_| forged).map(|v| (ActorKind::Token, v)),
        o.kid.filter(|_| forged).map(|v| (ActorKind::Key, v)),
    ]
}

/// What `token_replay` counts for `o`: the token and the places it came from
/// (address, device), for tokens the gate allowed only (a refused token, e.g.
/// an expired one, must not let its holder set off containment), and never
/// for an inquiry (see [`Observation::inquiry`]).
pub fn replay_sources<'a>(o: &Observation<'a>) -> Option<(&'a str, [Option<CountedActor<'a>>; 2])> {
    let tid = o
        .token_id
        .filter(|_| o.verdict == Verdict::Ok.code() && !o.inquiry)?;
    Some((
        tid,
        [
            o.client_ip.map(|v| (ActorKind::Ip, v)),
            o.device.map(|v| (ActorKind::Device, v)),
        ],
    ))
}

/// The `mass_access` finding for `actor`, who touched about `n` distinct
/// subjects within the window, as counted by one node (`scope = "node"`) or
/// by the whole fleet (`"fleet"`). Both give the same detection key, so the
/// two merge into one detection.
pub fn mass_access_finding(
    cfg: &DetectorConfig,
    actor: Actor,
    n: u64,
    at: i64,
    route: &str,
    scope: &str,
) -> Finding {
    let window = cfg.mass_access_window_secs;
    let (kind, value) = (actor.kind, actor.value.clone());
    let suggested = match kind {
        ActorKind::Key => vec![Containment::CompromiseKey { kid: value.clone() }],
        _ => vec![Containment::BlockActor {
            actor: actor.clone(),
        }],
    };
    Finding {
        rule: Rule::MassAccess,
        severity: Severity::High,
        key: format!("mass_access:{}={value}", kind.as_str()),
        at,
        evidence: json!({
            "actor": actor, "distinct_subjects": n,
            "window_secs": window, "threshold": cfg.mass_access_threshold,
            "route": route, "counted_by": scope,
        }),
        summary: format!(
            "{} {value} touched about {n} distinct accounts in {}",
            kind.as_str(),
            crate::clocks::format_duration(window)
        ),
        actors: vec![actor],
        suggested,
    }
}

/// The `token_replay` finding for token `tid` of `subject`, used from `n`
/// distinct places within the window (see [`mass_access_finding`] for
/// `scope`).
pub fn token_replay_finding(
    cfg: &DetectorConfig,
    tid: &str,
    subject: &str,
    actors: Vec<Actor>,
    n: u64,
    at: i64,
    scope: &str,
) -> Finding {
    Finding {
        rule: Rule::TokenReplay,
        severity: Severity::High,
        key: format!("token_replay:token={tid}"),
        at,
        actors,
        evidence: json!({
            "token_id": tid, "subject": subject, "distinct_sources": n,
            "window_secs": cfg.replay_window_secs, "counted_by": scope,
        }),
        suggested: vec![
            Containment::BlockActor {
                actor: Actor {
                    kind: ActorKind::Token,
                    value: tid.to_string(),
                },
            },
            Containment::RevokeSubject {
                subject: subject.to_string(),
            },
        ],
        summary: format!("token {tid} of {subject} used from {n} places"),
    }
}

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

/// Slices per counting window.
pub const SLICES: usize = 6;

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
        let forged = tally_core::gate::proves_stolen_key(o.verdict, o.detail);
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
                    "verdict": o.verdict,
                    "kid": o.kid,
                    "token_id": o.token_id,
                    "subject": o.subject,
                    "client_ip": o.client_ip,
                    "route": o.route,
                }),
                suggested,
                summary: format!(
                    "a token signed with key {kid} that the ledger cannot tally ({}): the key is in the wrong hands",
                    o.verdict
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

/// Findings merged by key: what the detections feed shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The finding key (stable id of what it is about).
    pub key: String,
    /// Rule code.
    pub rule: Rule,
    /// Severity.
    pub severity: Severity,
    /// First sighting, unix seconds.
    pub first_seen: i64,
    /// Last sighting, unix seconds.
    pub last_seen: i64,
    /// Findings merged.
    pub count: u64,
    /// Actors (at most [`MAX_ACTORS_PER_DETECTION`], first seen first).
    pub actors: Vec<Actor>,
    /// Samples of evidence (at most [`MAX_SAMPLES`]: the first ones).
    pub samples: Vec<Value>,
    /// Suggested containment (union, in order).
    pub suggested: Vec<Containment>,
    /// Summary of the first finding.
    pub summary: String,
}

/// Actors kept per detection.
pub const MAX_ACTORS_PER_DETECTION: usize = 50;
/// Evidence samples kept per detection.
pub const MAX_SAMPLES: usize = 5;

impl Detection {
    /// A detection made of one finding.
    pub fn from_finding(f: &Finding) -> Detection {
        let mut d = Detection {
            key: f.key.clone(),
            rule: f.rule,
            severity: f.severity,
            first_seen: f.at,
            last_seen: f.at,
            count: 0,
            actors: Vec::new(),
            samples: Vec::new(),
            suggested: Vec::new(),
            summary: f.summary.clone(),
        };
        d.merge(f);
        d
    }

    /// Adds a finding with the same key.
    pub fn merge(&mut self, f: &Finding) {
        self.count += 1;
        self.first_seen = self.first_seen.min(f.at);
        self.last_seen = self.last_seen.max(f.at);
        self.severity = self.severity.max(f.severity);
        for a in &f.actors {
            if self.actors.len() < MAX_ACTORS_PER_DETECTION && !self.actors.contains(a) {
                self.actors.push(a.clone());
            }
        }
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(f.evidence.clone());
        }
        for s in &f.suggested {
            if self.suggested.len() < MAX_ACTORS_PER_DETECTION && !self.suggested.contains(s) {
                self.suggested.push(s.clone());
            }
        }
    }
}

impl Detection {
    /// Merges another view of the same detection (same key), such as the one
    /// another server of a fleet has built from its own findings: first
    /// sighting the earlier, last sighting the later, severity the higher;
    /// actors, evidence samples and suggested containment the union, in
    /// order (this view's first), within the caps that [`Detection::merge`]
    /// keeps ([`MAX_ACTORS_PER_DETECTION`], [`MAX_SAMPLES`]); the summary of
    /// the view seen first.
    ///
    /// `count` is left alone: two views may hold the same findings (a server
    /// hands over its cumulative view each time), so only the caller knows
    /// how many of `other`'s are new.
    pub fn absorb(&mut self, other: &Detection) {
        if other.first_seen < self.first_seen {
            self.summary = other.summary.clone();
        }
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.severity = self.severity.max(other.severity);
        for a in &other.actors {
            if self.actors.len() < MAX_ACTORS_PER_DETECTION && !self.actors.contains(a) {
                self.actors.push(a.clone());
            }
        }
        for e in &other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(e) {
                self.samples.push(e.clone());
            }
        }
        for s in &other.suggested {
            if self.suggested.len() < MAX_ACTORS_PER_DETECTION && !self.suggested.contains(s) {
                self.suggested.push(s.clone());
            }
        }
    }
}

/// Detections by key, with the set changed since the last [`DetectionBook::take_dirty`].
#[derive(Debug, Default)]
pub struct DetectionBook {
    by_key: HashMap<String, Detection>,
    dirty: HashSet<String>,
    fresh: HashSet<String>,
}

impl DetectionBook {
    /// An empty book.
    pub fn new() -> DetectionBook {
        DetectionBook::default()
    }

    /// Puts back a stored detection (at start).
    pub fn restore(&mut self, d: Detection) {
        self.by_key.insert(d.key.clone(), d);
    }

    /// Records a finding.
    pub fn add(&mut self, f: &Finding) {
        match self.by_key.get_mut(&f.key) {
            Some(d) => d.merge(f),
            None => {
                self.by_key
                    .insert(f.key.clone(), Detection::from_finding(f));
                self.fresh.insert(f.key.clone());
            }
        }
        self.dirty.insert(f.key.clone());
    }

    /// Detections changed since the last call, each with whether it is new.
    pub fn take_dirty(&mut self) -> Vec<(Detection, bool)> {
        let mut out: Vec<(Detection, bool)> = self
            .dirty
            .drain()
            .filter_map(|k| {
                let new = self.fresh.remove(&k);
                self.by_key.get(&k).map(|d| (d.clone(), new))
            })
            .collect();
        out.sort_by(|a, b| {
            a.0.first_seen
                .cmp(&b.0.first_seen)
                .then(a.0.key.cmp(&b.0.key))
        });
        out
    }

    /// Marks a detection changed again (its store write failed).
    pub fn requeue(&mut self, key: &str, new: bool) {
        if self.by_key.contains_key(key) {
            self.dirty.insert(key.to_string());
            if new {
                self.fresh.insert(key.to_string());
            }
        }
    }

    /// Forgets detections last seen before `cutoff` (they stay stored).
    pub fn forget_before(&mut self, cutoff: i64) {
        self.by_key
            .retain(|k, d| d.last_seen >= cutoff || self.dirty.contains(k));
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn finding(at: i64, ip: &str, rule: Rule) -> Finding {
        Finding {
            rule,
            severity: rule.severity(),
            key: "k".into(),
            at,
            actors: vec![Actor {
                kind: ActorKind::Ip,
                value: ip.into(),
            }],
            evidence: json!({"ip": ip}),
            suggested: vec![Containment::BlockActor {
                actor: Actor {
                    kind: ActorKind::Ip,
                    value: ip.into(),
                },
            }],
            summary: format!("seen from {ip}"),
        }
    }

    #[test]
    fn absorbing_another_view_merges_within_the_caps() {
        let mut a = Detection::from_finding(&finding(100, "192.0.2.1", Rule::MassAccess));
        a.merge(&finding(110, "192.0.2.2", Rule::MassAccess));
        let mut b = Detection::from_finding(&finding(90, "192.0.2.2", Rule::MassAccess));
        b.merge(&finding(200, "192.0.2.3", Rule::MassAccess));
        b.severity = Severity::Critical;
        let mut m = a.clone();
        m.absorb(&b);
        assert_eq!((m.first_seen, m.last_seen), (90, 200));
        assert_eq!(m.severity, Severity::Critical);
        assert_eq!(m.count, a.count, "counts are the caller's business");
        assert_eq!(
            m.summary, "seen from 192.0.2.2",
            "the summary of the earlier view"
        );
        let ips: Vec<&str> = m.actors.iter().map(|x| x.value.as_str()).collect();
        assert_eq!(ips, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        assert_eq!(m.samples.len(), 3, "no sample twice");
        assert_eq!(m.suggested.len(), 3);
        // Absorbing the same view again changes nothing.
        let again = {
            let mut x = m.clone();
            x.absorb(&b);
            x.absorb(&a);
            x
        };
        assert_eq!(again, m);
        // Absorbing an older, lesser view keeps the higher severity.
        let mut c = b.clone();
        c.absorb(&a);
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!((c.first_seen, c.last_seen), (90, 200));
        // The caps hold.
        let mut big = Detection::from_finding(&finding(1, "198.51.100.0", Rule::MassAccess));
        for i in 1..200 {
            let mut other =
                Detection::from_finding(&finding(i, &format!("198.51.100.{i}"), Rule::MassAccess));
            other.samples = vec![json!(i)];
            big.absorb(&other);
        }
        assert_eq!(big.actors.len(), MAX_ACTORS_PER_DETECTION);
        assert_eq!(big.samples.len(), MAX_SAMPLES);
        assert_eq!(big.suggested.len(), MAX_ACTORS_PER_DETECTION);
        assert_eq!(big.actors[0].value, "198.51.100.0", "first seen first");
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
