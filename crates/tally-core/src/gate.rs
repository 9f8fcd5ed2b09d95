//! The gate's decision procedure, free of I/O.
//!
//! ```text
//!  token bytes ──► SHA-256 ──► registry hit? ──yes──► revoked? expired? ──► seen before? ──yes──► allow
//!                                   │                                          │ no
//!                                   │                                          ▼
//!                                   │                           verify signature + claims once, remember
//!                                   ▼ no
//!                  verify signature (parse, header rules, key, signature)
//!                                   │ valid
//!                                   ▼
//!                  ask the ledger about the token id  ──►  no record: not_issued
//!                  (the caller does the I/O)               other bytes: altered
//!                                                          these bytes: claim checks (expired, …)
//! ```
//!
//! Decision order: once a signature verifies, the ledger
//! question comes before any claim check, so a forged token is reported as
//! forged even if it is also expired or meant for another audience.
//!
//! [`Gate::check`] answers at once, or returns a [`LedgerQuestion`] that only the
//! caller can answer (it needs the store); [`Gate::resolve`] finishes the
//! decision. The only way to obtain a [`TalliedToken`] is through these two.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::digest::TokenDigest;
use crate::jose::{self, ClaimsPolicy, KeySet, Rejection, VerifiedToken};
use crate::registry::{Registry, TokenState};
use crate::verdict::Verdict;

/// Refusal detail of an `altered` token that is the ECDSA twin `(r, n - s)` of
/// an issued ES256 token: refused, but anyone who holds the issued token can
/// make it, so it proves nothing about the signing key.
pub const ECDSA_TWIN: &str = "ECDSA twin of an issued token (signature malleability)";

/// Whether a decision (its verdict code and refusal detail, as access events
/// record them) proves that a signing key is in the wrong hands: a validly
/// signed token the ledger cannot tally, except the ECDSA twin of an issued
/// token, which any holder of that token can make. The one rule the gate's
/// forgery report, the detector and the incident evidence all use.
pub fn proves_stolen_key(verdict: &str, detail: Option<&str>) -> bool {
    Verdict::from_code(verdict).is_some_and(Verdict::is_forgery) && detail != Some(ECDSA_TWIN)
}

impl Refusal {
    /// [`proves_stolen_key`] for this refusal's own verdict.
    pub fn proves_stolen_key(&self) -> bool {
        proves_stolen_key(self.verdict.code(), self.detail)
    }

    /// Whether the request carried a token that proves a stolen key, whether
    /// the token itself was refused for it or the request was refused for
    /// another reason first and its token examined ([`Refusal::examined`]).
    pub fn carried_forgery(&self) -> bool {
        self.proves_stolen_key() || self.examined.is_some_and(|e| e.proves_stolen_key())
    }
}

/// P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The digest of the ES256 token whose signature is `(r, n - s)` for this
/// token's `(r, s)`, or `None` if the signature is not 64 bytes of base64url
/// with `0 < s < n`.
pub fn ecdsa_twin_digest(token: &[u8]) -> Option<TokenDigest> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let dot = token.iter().rposition(|b| *b == b'.')?;
    let (input, sig) = (token.get(..=dot)?, token.get(dot + 1..)?);
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let s: [u8; 32] = sig.get(32..64)?.try_into().ok()?;
    if sig.len() != 64 || s == [0u8; 32] || s >= P256_N {
        return None;
    }
    let mut twin = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        twin[i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    let mut out = sig[..32].to_vec();
    out.extend_from_slice(&twin);
    let mut bytes = input.to_vec();
    bytes.extend_from_slice(URL_SAFE_NO_PAD.encode(out).as_bytes());
    Some(TokenDigest::of(&bytes))
}

/// Largest token the gate will even hash, in bytes (RFC-style limit; larger is `malformed`).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// How many verified tokens a gate remembers before it stops caching new ones.
pub const DEFAULT_SEEN_CAPACITY: usize = 1 << 20;

/// A token the gate allowed: its signature verified, its claims are acceptable,
/// and the ledger tallies its exact bytes. Only this module can build one.
#[derive(Clone, Debug)]
pub struct TalliedToken {
    seen: Arc<SeenToken>,
}

impl TalliedToken {
    /// The token's `sub` (empty if it had none).
    pub fn subject(&self) -> &str {
        &self.seen.subject
    }
    /// The token's `jti`.
    pub fn token_id(&self) -> &str {
        &self.seen.token_id
    }
    /// The signing key's id.
    pub fn kid(&self) -> &str {
        &self.seen.kid
    }
    /// `exp`, unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.seen.expires_at
    }
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`, RFC 9449),
    /// if it is bound: then only a request with a valid proof by that key may
    /// use it.
    pub fn jkt(&self) -> Option<&str> {
        self.seen.jkt.as_deref()
    }
    /// The token's audiences (`aud`).
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.seen.audiences.iter().map(|a| &**a)
    }
    /// Whether the token's `aud` contains `audience`.
    pub fn has_audience(&self, audience: &str) -> bool {
        self.seen.audiences.iter().any(|a| &**a == audience)
    }
}

/// A refused request, with what is known about the token for evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    verdict: Verdict,
    /// Why, in a few words, for operators (never secret material).
    pub detail: Option<&'static str>,
    /// `kid` of the token, when its header parsed.
    pub kid: Option<String>,
    /// `sub`, only when the signature verified.
    pub subject: Option<String>,
    /// `jti`, only when the signature verified.
    pub token_id: Option<String>,
    /// For a request refused before its token decided anything (a blocked
    /// client address or device): what the token alone got when it was
    /// examined for the record, so that a forged token is counted as one
    /// however the request was refused.
    pub examined: Option<Examined>,
}

/// The detail of a request refused by containment whose token was not
/// examined (the budget for blocked clients was spent).
pub const NOT_EXAMINED: &str = "not examined: budget for blocked clients spent";

/// What a token alone got, when the request carrying it was refused for
/// another reason first (see [`Refusal::examined`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Examined {
    /// The token's verdict ([`Verdict::Ok`] for a token the ledger tallies).
    pub verdict: Verdict,
    /// Its refusal's detail, if any.
    pub detail: Option<&'static str>,
}

impl serde::Serialize for Examined {
    /// `{"verdict": "<code>", "detail": "…"}` (detail only when there is one).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("verdict", self.verdict.code())?;
        if let Some(d) = self.detail {
            m.serialize_entry("detail", d)?;
        }
        m.end()
    }
}

impl Examined {
    /// What `decision` says of its token.
    pub fn of(decision: &Decision) -> Examined {
        match decision {
            Ok(_) => Examined {
                verdict: Verdict::Ok,
                detail: None,
            },
            Err(r) => Examined {
                verdict: r.verdict,
                detail: r.detail,
            },
        }
    }

    /// Whether the token proves a signing key is in the wrong hands
    /// ([`proves_stolen_key`]).
    pub fn proves_stolen_key(&self) -> bool {
        proves_stolen_key(self.verdict.code(), self.detail)
    }
}

impl Refusal {
    /// A refusal without token details. `verdict` must not be [`Verdict::Ok`];
    /// if it is, the refusal becomes [`Verdict::Unavailable`] (fail closed).
    pub fn new(verdict: Verdict) -> Refusal {
        let verdict = if verdict == Verdict::Ok {
            Verdict::Unavailable
        } else {
            verdict
        };
        Refusal {
            verdict,
            detail: None,
            kid: None,
            subject: None,
            token_id: None,
            examined: None,
        }
    }

    /// The verdict (never `ok`).
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    fn of_rejection(rejection: &Rejection) -> Refusal {
        let mut r = Refusal::new(verdict_of(rejection));
        r.detail = rejection.detail();
        r
    }

    /// A refusal about a token the gate tallied (a later check refused it:
    /// binding, audience, containment), naming its key, subject and id.
    pub fn of_token(verdict: Verdict, token: &TalliedToken) -> Refusal {
        Refusal::of_seen(verdict, &token.seen)
    }

    fn of_seen(verdict: Verdict, seen: &SeenToken) -> Refusal {
        let mut r = Refusal::new(verdict);
        r.kid = Some(seen.kid.to_string());
        r.subject = Some(seen.subject.to_string());
        r.token_id = Some(seen.token_id.to_string());
        r
    }

    fn about(verdict: Verdict, token: &VerifiedToken) -> Refusal {
        let mut r = Refusal::new(verdict);
        r.kid = Some(token.header().kid.clone());
        r.subject = token.claims().sub.clone();
        r.token_id = token.claims().jti.clone();
        r
    }
}

/// The outcome of a check.
pub type Decision = Result<TalliedToken, Refusal>;

/// The first step's outcome.
pub enum Step {
    /// Decided without the ledger store.
    Decided(Decision),
    /// The signature verified but the registry does not know these bytes: the
    /// caller must ask the ledger store about [`LedgerQuestion::token_id`] and call
    /// [`Gate::resolve`].
    AskLedger(Box<LedgerQuestion>),
}

/// A question for the ledger store about a validly signed token the registry
/// does not hold.
pub struct LedgerQuestion {
    token: VerifiedToken,
    digest: TokenDigest,
    /// For ES256: the digest of the token's ECDSA twin `(r, n - s)`.
    twin: Option<TokenDigest>,
}

impl LedgerQuestion {
    /// The token id to look up.
    pub fn token_id(&self) -> &str {
        self.token.claims().jti.as_deref().unwrap_or("")
    }

    /// The digest of the exact token bytes in question.
    pub fn digest(&self) -> &TokenDigest {
        &self.digest
    }
}

/// The ledger store's answer about a token id, from records whose leaf hashes
/// the caller has checked against the verified tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerAnswer {
    /// A record exists for this token id.
    Found {
        /// Digest of the bytes that were issued under this id.
        token_sha256: TokenDigest,
        /// `exp` recorded at issuance.
        expires_at: i64,
        /// Whether the token was revoked.
        revoked: bool,
    },
    /// No record for this token id.
    NotFound,
    /// The store could not answer.
    Unavailable,
}

#[derive(Debug)]
struct SeenToken {
    /// The key-set generation under which the signature was verified.
    generation: u64,
    subject: Arc<str>,
    token_id: Arc<str>,
    kid: Arc<str>,
    expires_at: i64,
    jkt: Option<Arc<str>>,
    audiences: Box<[Box<str>]>,
}

const SEEN_SHARDS: usize = 16;

type SeenShard = HashMap<[u8; 32], Arc<SeenToken>, RandomState>;

/// Generation, key set, and external issuer bindings (`kid` → `iss`).
type Trust = (u64, Arc<KeySet>, Arc<HashMap<String, String>>);

/// The decision procedure and its caches.
pub struct Gate {
    /// The key set in force and its generation, with the issuer each
    /// external key is bound to (`kid` → `iss`).
    keys: RwLock<Trust>,
    /// Bumped by every [`Gate::set_keys`]: a remembered verification from an
    /// older generation is never trusted again.
    generation: AtomicU64,
    policy: ClaimsPolicy,
    registry: Arc<Registry>,
    seen: Vec<RwLock<SeenShard>>,
    seen_capacity: usize,
}

impl Gate {
    /// A gate over `registry`, trusting `keys`, enforcing `policy`.
    pub fn new(keys: KeySet, policy: ClaimsPolicy, registry: Arc<Registry>) -> Gate {
        Gate {
            keys: RwLock::new((0, Arc::new(keys), Arc::new(HashMap::new()))),
            generation: AtomicU64::new(0),
            policy,
            registry,
            seen: (0..SEEN_SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(RandomState::new())))
                .collect(),
            seen_capacity: DEFAULT_SEEN_CAPACITY,
        }
    }

    /// Limits how many verified tokens are remembered (the rest are verified on
    /// every request).
    pub fn with_seen_capacity(mut self, n: usize) -> Gate {
        self.seen_capacity = n;
        self
    }

    /// The registry this gate consults.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The claims policy.
    pub fn policy(&self) -> &ClaimsPolicy {
        &self.policy
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys_and_generation().1
    }

    fn keys_and_generation(&self) -> (u64, Arc<KeySet>) {
        let guard = self.keys.read().unwrap_or_else(|e| e.into_inner());
        (guard.0, guard.1.clone())
    }

    /// The issuer a key is bound to: an external issuer's `iss` for its keys,
    /// the policy's issuer for tally's own.
    fn issuer_of(&self, kid: &str) -> Option<String> {
        let guard = self.keys.read().unwrap_or_else(|e| e.into_inner());
        guard.2.get(kid).cloned()
    }

    /// Replaces the key set. Every remembered verification is forgotten, so a
    /// key that left the set stops verifying on the very next request.
    pub fn set_keys(&self, keys: KeySet) {
        self.set_trust(keys, HashMap::new());
    }

    /// Replaces the key set, binding some keys to external issuers: a token
    /// signed by a key in `issuers` must carry that `iss` (instead of the
    /// policy's issuer). Forgets remembered verifications, like `set_keys`.
    pub fn set_trust(&self, keys: KeySet, issuers: HashMap<String, String>) {
        {
            let mut guard = self.keys.write().unwrap_or_else(|e| e.into_inner());
            let next = guard.0.wrapping_add(1);
            *guard = (next, Arc::new(keys), Arc::new(issuers));
            // A verification that started under the old keys and lands in the
            // cache after the clear below carries the old generation, and the
            // hot path ignores it.
            self.generation.store(next, Ordering::SeqCst);
        }
        for shard in &self.seen {
            shard.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Forgets remembered tokens that are expired at `cutoff` (`now - leeway`).
    pub fn evict_seen(&self, cutoff: i64) -> usize {
        let mut n = 0;
        for shard in &self.seen {
            let mut s = shard.write().unwrap_or_else(|e| e.into_inner());
            let before = s.len();
            s.retain(|_, t| t.expires_at > cutoff);
            n += before - s.len();
        }
        n
    }

    /// Number of remembered verified tokens.
    pub fn seen_len(&self) -> usize {
        self.seen
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn seen_shard(&self, d: &TokenDigest) -> &RwLock<SeenShard> {
        &self.seen[(d.as_bytes()[31] as usize) % SEEN_SHARDS]
    }

    /// First step of a decision for the compact token `token` at time `now`.
    pub fn check(&self, token: &[u8], now: i64) -> Step {
        self.check_guarded(token, now, &|| true)
    }

    /// [`Gate::check`], asking `allow_miss` before the expensive part of a
    /// registry miss (a signature verification): when it says no, the request
    /// is refused as `unavailable` without any cryptography.
    pub fn check_guarded(&self, token: &[u8], now: i64, allow_miss: &dyn Fn() -> bool) -> Step {
        if token.is_empty() {
            return Step::Decided(Err(Refusal::new(Verdict::Missing)));
        }
        if token.len() > MAX_TOKEN_BYTES {
            let mut r = Refusal::new(Verdict::Malformed);
            r.detail = Some("token too large");
            return Step::Decided(Err(r));
        }
        let digest = TokenDigest::of(token);
        let Some(entry) = self.registry.lookup(&digest) else {
            // A miss: verify, then the ledger decides between forged and real.
            if !allow_miss() {
                let mut r = Refusal::new(Verdict::Unavailable);
                r.detail = Some("too many unknown tokens from this client; slow down");
                return Step::Decided(Err(r));
            }
            let (_, keys) = self.keys_and_generation();
            return match jose::verify(token, &keys) {
                Err(rejection) => Step::Decided(Err(Refusal::of_rejection(&rejection))),
                Ok(vt) => {
                    if vt.claims().jti.as_deref().is_none_or(str::is_empty) {
                        // Nothing to look up: tally records every token by id.
                        let mut r = Refusal::about(Verdict::NotIssued, &vt);
                        r.detail = Some("validly signed token without jti");
                        Step::Decided(Err(r))
                    } else {
                        let twin = if vt.header().alg == jose::Algorithm::ES256 {
                            ecdsa_twin_digest(token)
                        } else {
                            None
                        };
                        Step::AskLedger(Box::new(LedgerQuestion {
                            token: vt,
                            digest,
                            twin,
                        }))
                    }
                }
            };
        };
        // The registry holds these bytes (by 128-bit digest prefix).
        let seen = self
            .seen_shard(&digest)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest.as_bytes())
            .cloned();
        if let Some(decision) = seen.and_then(|s| self.hot(s, entry.state, now)) {
            return Step::Decided(decision);
        }
        let (generation, keys) = self.keys_and_generation();
        let vt = match jose::verify(token, &keys) {
            Ok(vt) => vt,
            Err(rejection) => return Step::Decided(Err(Refusal::of_rejection(&rejection))),
        };
        let revoked = entry.state == TokenState::Revoked;
        Step::Decided(self.admit(&vt, &digest, revoked, generation, now))
    }

    /// Second step: the ledger store's answer about a [`LedgerQuestion`].
    pub fn resolve(&self, q: Box<LedgerQuestion>, answer: LedgerAnswer, now: i64) -> Decision {
        match answer {
            LedgerAnswer::Unavailable => Err(Refusal::about(Verdict::Unavailable, &q.token)),
            LedgerAnswer::NotFound => Err(Refusal::about(Verdict::NotIssued, &q.token)),
            LedgerAnswer::Found {
                token_sha256,
                expires_at,
                revoked,
            } => {
                if !token_sha256.ct_eq(&q.digest) {
                    let mut r = Refusal::about(Verdict::Altered, &q.token);
                    // Anyone holding an issued ES256 token can make its twin
                    // without any key: refused, but no proof of a stolen key.
                    if q.twin.is_some_and(|t| token_sha256.ct_eq(&t)) {
                        r.detail = Some(ECDSA_TWIN);
                    }
                    return Err(r);
                }
                // Really issued, but not in the registry: normally because it
                // expired and was evicted, or because this registry lags the
                // store. The signature was checked under the current key set or
                // an older one; an older generation makes the remembered entry
                // stale, never trusted.
                let generation = self.generation.load(Ordering::SeqCst);
                let decision = self.admit(&q.token, &q.digest, revoked, generation, now);
                if decision.is_ok() {
                    self.registry.insert(&q.digest, expires_at);
                }
                decision
            }
        }
    }

    /// A registry hit whose signature this process verified before. `None`
    /// when the remembered verification is from an older key set.
    fn hot(&self, seen: Arc<SeenToken>, state: TokenState, now: i64) -> Option<Decision> {
        if seen.generation != self.generation.load(Ordering::SeqCst) {
            return None;
        }
        let refuse = |verdict| Some(Err(Refusal::of_seen(verdict, &seen)));
        // The boundary of `ClaimsPolicy::check`: expired once now - leeway >= exp.
        if now.saturating_sub(self.policy.leeway_secs) >= seen.expires_at {
            return refuse(Verdict::Expired);
        }
        if state == TokenState::Revoked {
            return refuse(Verdict::Revoked);
        }
        Some(Ok(TalliedToken { seen }))
    }

    /// Claim checks, then revocation (the decision order above); an allowed token
    /// is remembered, so its next request needs only a hash and two lookups.
    fn admit(
        &self,
        vt: &VerifiedToken,
        digest: &TokenDigest,
        revoked: bool,
        generation: u64,
        now: i64,
    ) -> Decision {
        let checked = match self.issuer_of(&vt.header().kid) {
            None => self.policy.check(vt.claims(), now),
            Some(iss) => ClaimsPolicy {
                issuer: iss,
                ..self.policy.clone()
            }
            .check(vt.claims(), now),
        };
        checked.map_err(|rej| Refusal::about(verdict_of(&rej), vt))?;
        if revoked {
            return Err(Refusal::about(Verdict::Revoked, vt));
        }
        let claims = vt.claims();
        let seen = Arc::new(SeenToken {
            generation,
            subject: claims.sub.as_deref().unwrap_or("").into(),
            token_id: claims.jti.as_deref().unwrap_or("").into(),
            kid: vt.header().kid.as_str().into(),
            // ClaimsPolicy requires exp; i64::MAX only if a policy allows none.
            expires_at: claims.exp.unwrap_or(i64::MAX),
            // A `cnf` without a usable `jkt` binds the token to no key at all
            // (fail closed): no proof can ever match the empty thumbprint.
            jkt: claims
                .other
                .get("cnf")
                .map(|c| Arc::from(c.get("jkt").and_then(|j| j.as_str()).unwrap_or(""))),
            audiences: claims.aud.iter().map(|a| a.as_str().into()).collect(),
        });
        if self.seen_len_hint() < self.seen_capacity {
            self.seen_shard(digest)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*digest.as_bytes(), seen.clone());
        }
        Ok(TalliedToken { seen })
    }

    fn seen_len_hint(&self) -> usize {
        // One shard times the shard count: cheap and close enough for a cap.
        self.seen[0].read().unwrap_or_else(|e| e.into_inner()).len() * SEEN_SHARDS
    }
}

/// Maps a JOSE rejection to its verdict.
pub fn verdict_of(r: &Rejection) -> Verdict {
    Verdict::from_code(r.code()).unwrap_or(Verdict::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{Algorithm, SigningKey};
    use serde_json::{Map, Value, json};

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        key: SigningKey,
        kid: String,
        gate: Gate,
    }

    fn fixture() -> Fixture {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let kid = "k1".to_string();
        let mut keys = KeySet::new();
        keys.insert(key.verifying_key().with_kid(kid.clone()));
        let policy = ClaimsPolicy {
            issuer: "https://iss".into(),
            audience: "api".into(),
            also_audiences: vec!["orders".into()],
            leeway_secs: 60,
            require_exp: true,
        };
        Fixture {
            gate: Gate::new(keys, policy, Arc::new(Registry::new())),
            key,
            kid,
        }
    }

    fn claims(jti: &str, extra: Value) -> Map<String, Value> {
        let mut c = json!({
            "iss": "https://iss", "sub": "alice", "aud": "api",
            "exp": NOW + 900, "iat": NOW, "jti": jti,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.as_object().unwrap().clone()
    }

    impl Fixture {
        fn sign(&self, jti: &str, extra: Value) -> String {
            self.key
                .sign_jwt(&self.kid, "at+jwt", &claims(jti, extra))
                .unwrap()
        }

        /// Issues: signs and registers, as the issuer does after the ledger append.
        fn issue(&self, jti: &str, extra: Value) -> String {
            let t = self.sign(jti, extra);
            let exp = crate::jose::verify(t.as_bytes(), &self.gate.keys())
                .unwrap()
                .claims()
                .exp
                .unwrap();
            self.gate
                .registry()
                .insert(&TokenDigest::of(t.as_bytes()), exp);
            t
        }

        fn decide(&self, token: &str, now: i64, ledger: LedgerAnswer) -> Result<String, Verdict> {
            let d = match self.gate.check(token.as_bytes(), now) {
                Step::Decided(d) => d,
                Step::AskLedger(q) => self.gate.resolve(q, ledger, now),
            };
            d.map(|t| t.token_id().to_string()).map_err(|r| r.verdict())
        }
    }

    #[test]
    fn issued_token_passes_first_sight_and_hot_path() {
        let f = fixture();
        let t = f.issue("j1", json!({}));
        for _ in 0..3 {
            assert_eq!(
                f.decide(&t, NOW, LedgerAnswer::Unavailable),
                Ok("j1".into())
            );
        }
        assert_eq!(f.gate.seen_len(), 1);
    }

    #[test]
    fn claim_verdicts_for_issued_tokens() {
        let f = fixture();
        let nbf = f.issue("nbf", json!({"nbf": NOW + 3600, "exp": NOW + 7200}));
        assert_eq!(
            f.decide(&nbf, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::NotYetValid)
        );
        // Not remembered while refused: once nbf passes it is allowed.
        assert_eq!(
            f.decide(&nbf, NOW + 3600, LedgerAnswer::Unavailable),
            Ok("nbf".into())
        );
        let aud = f.issue("aud", json!({"aud": "other"}));
        assert_eq!(
            f.decide(&aud, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::WrongAudience)
        );
        let iss = f.issue("iss", json!({"iss": "https://evil"}));
        assert_eq!(
            f.decide(&iss, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::WrongIssuer)
        );
        let t = f.issue("exp", json!({}));
        assert!(f.decide(&t, NOW, LedgerAnswer::Unavailable).is_ok());
        // Hot path: the same boundary as a first sight (now - leeway >= exp).
        assert!(
            f.decide(&t, NOW + 900 + 59, LedgerAnswer::Unavailable)
                .is_ok()
        );
        assert_eq!(
            f.decide(&t, NOW + 900 + 60, LedgerAnswer::Unavailable),
            Err(Verdict::Expired)
        );
        let fresh_gate = Gate::new(
            f.gate.keys().as_ref().clone(),
            f.gate.policy().clone(),
            f.gate.registry().clone(),
        );
        assert!(matches!(
            fresh_gate.check(t.as_bytes(), NOW + 900 + 60),
            Step::Decided(Err(ref r)) if r.verdict() == Verdict::Expired
        ));
    }

    #[test]
    fn forgeries_are_classified_by_the_ledger_before_claims() {
        let f = fixture();
        // Never issued: signature valid, expired and for another audience too.
        let forged = f.sign("ghost", json!({"exp": NOW - 10_000, "aud": "x"}));
        assert_eq!(
            f.decide(&forged, NOW, LedgerAnswer::NotFound),
            Err(Verdict::NotIssued)
        );
        // A record exists for this jti, but for other bytes.
        let issued = f.issue("j2", json!({}));
        let altered = f.sign("j2", json!({"sub": "admin"}));
        let answer = LedgerAnswer::Found {
            token_sha256: TokenDigest::of(issued.as_bytes()),
            expires_at: NOW + 900,
            revoked: false,
        };
        assert_eq!(f.decide(&altered, NOW, answer), Err(Verdict::Altered));
        // The store cannot answer: fail closed.
        assert_eq!(
            f.decide(&forged, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::Unavailable)
        );
        // No jti at all: nothing to tally.
        let mut c = claims("x", json!({}));
        c.remove("jti");
        let no_jti = f.key.sign_jwt(&f.kid, "at+jwt", &c).unwrap();
        assert_eq!(
            f.decide(&no_jti, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::NotIssued)
        );
    }

    #[test]
    fn really_issued_but_evicted_token_is_expired_not_forged() {
        let f = fixture();
        let t = f.sign("old", json!({"exp": NOW - 3600}));
        let answer = LedgerAnswer::Found {
            token_sha256: TokenDigest::of(t.as_bytes()),
            expires_at: NOW - 3600,
            revoked: false,
        };
        assert_eq!(f.decide(&t, NOW, answer), Err(Verdict::Expired));
        // A registry that lags the store learns the token from the ledger.
        let fresh = f.sign("lag", json!({}));
        let answer = LedgerAnswer::Found {
            token_sha256: TokenDigest::of(fresh.as_bytes()),
            expires_at: NOW + 900,
            revoked: false,
        };
        assert_eq!(f.decide(&fresh, NOW, answer), Ok("lag".into()));
        assert!(
            f.gate
                .registry()
                .lookup(&TokenDigest::of(fresh.as_bytes()))
                .is_some()
        );
        let revoked = f.sign("rev", json!({}));
        let answer = LedgerAnswer::Found {
            token_sha256: TokenDigest::of(revoked.as_bytes()),
            expires_at: NOW + 900,
            revoked: true,
        };
        assert_eq!(f.decide(&revoked, NOW, answer), Err(Verdict::Revoked));
    }

    #[test]
    fn revocation_and_key_removal_apply_to_remembered_tokens() {
        let f = fixture();
        let t = f.issue("r1", json!({}));
        assert!(f.decide(&t, NOW, LedgerAnswer::Unavailable).is_ok());
        assert!(
            f.gate
                .registry()
                .revoke_until(&TokenDigest::of(t.as_bytes()), NOW + 900)
        );
        assert_eq!(
            f.decide(&t, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::Revoked)
        );

        let u = f.issue("r2", json!({}));
        assert!(f.decide(&u, NOW, LedgerAnswer::Unavailable).is_ok());
        f.gate.set_keys(KeySet::new());
        assert_eq!(f.gate.seen_len(), 0);
        assert_eq!(
            f.decide(&u, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::UnknownKey)
        );
    }

    #[test]
    fn empty_and_oversized_tokens() {
        let f = fixture();
        assert_eq!(
            f.decide("", NOW, LedgerAnswer::Unavailable),
            Err(Verdict::Missing)
        );
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            f.decide(&big, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::Malformed)
        );
    }

    #[test]
    fn refusal_never_carries_ok() {
        assert_eq!(Refusal::new(Verdict::Ok).verdict(), Verdict::Unavailable);
    }

    #[test]
    fn seen_cache_respects_its_capacity() {
        let f = fixture();
        let gate = Gate::new(
            f.gate.keys().as_ref().clone(),
            f.gate.policy().clone(),
            Arc::new(Registry::new()),
        )
        .with_seen_capacity(0);
        let t = f.sign("cap", json!({}));
        gate.registry()
            .insert(&TokenDigest::of(t.as_bytes()), NOW + 900);
        for _ in 0..2 {
            assert!(matches!(
                gate.check(t.as_bytes(), NOW),
                Step::Decided(Ok(_))
            ));
        }
        assert_eq!(gate.seen_len(), 0);
        assert_eq!(gate.evict_seen(NOW), 0);
    }

    /// Regression: a first-sight verification that races `set_keys` must not
    /// leave a trusted entry for a key that is gone.
    #[test]
    fn a_key_change_racing_first_sights_never_leaves_a_trusted_entry() {
        for trial in 0..10 {
            let f = fixture();
            let tokens: Vec<String> = (0..300)
                .map(|i| f.issue(&format!("t{i}"), json!({})))
                .collect();
            let gate = Arc::new(f.gate);
            let (g2, t2) = (gate.clone(), tokens.clone());
            let h = std::thread::spawn(move || {
                for t in &t2 {
                    let _ = g2.check(t.as_bytes(), NOW);
                }
            });
            std::thread::sleep(std::time::Duration::from_micros(200 * trial));
            gate.set_keys(KeySet::new());
            h.join().unwrap();
            for t in &tokens {
                assert!(
                    !matches!(gate.check(t.as_bytes(), NOW), Step::Decided(Ok(_))),
                    "trial {trial}: a token signed by a removed key was allowed"
                );
            }
        }
    }

    #[test]
    fn external_keys_are_bound_to_their_issuer() {
        let f = fixture();
        let idp = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut keys = f.gate.keys().as_ref().clone();
        keys.insert(idp.verifying_key().with_kid("idp-1".into()));
        let mut issuers = HashMap::new();
        issuers.insert("idp-1".to_string(), "https://idp".to_string());
        f.gate.set_trust(keys, issuers);
        let sign = |iss: &str, jti: &str| {
            let t = idp
                .sign_jwt("idp-1", "JWT", &claims(jti, json!({"iss": iss})))
                .unwrap();
            f.gate
                .registry()
                .insert(&TokenDigest::of(t.as_bytes()), NOW + 900);
            t
        };
        let ok = sign("https://idp", "e1");
        assert_eq!(
            f.decide(&ok, NOW, LedgerAnswer::Unavailable),
            Ok("e1".into())
        );
        // The IdP's key cannot vouch for tally's issuer, nor tally's for the IdP.
        let spoof = sign("https://iss", "e2");
        assert_eq!(
            f.decide(&spoof, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::WrongIssuer)
        );
        let own = f.issue("own", json!({"iss": "https://idp"}));
        assert_eq!(
            f.decide(&own, NOW, LedgerAnswer::Unavailable),
            Err(Verdict::WrongIssuer)
        );
    }

    #[test]
    fn only_untallied_tokens_prove_a_stolen_key() {
        assert!(proves_stolen_key("not_issued", None));
        assert!(proves_stolen_key("altered", None));
        assert!(!proves_stolen_key("altered", Some(ECDSA_TWIN)));
        for v in [
            "ok",
            "expired",
            "revoked",
            "bad_signature",
            "unknown_key",
            "nonsense",
        ] {
            assert!(!proves_stolen_key(v, None), "{v}");
        }
    }
}
