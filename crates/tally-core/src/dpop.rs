//! OAuth 2.0 Demonstrating Proof of Possession (DPoP, RFC 9449): proof
//! verification and a bounded replay cache.
//!
//! * [`verify_proof`] checks one `DPoP` header value against the request it
//!   arrived with (RFC 9449 section 4.3) and returns the [`DpopProof`], whose
//!   [`DpopProof::jkt`] is the key thumbprint a DPoP-bound token is bound to;
//! * [`ReplayCache`] remembers `(jkt, jti)` pairs until they expire, so that
//!   each proof is accepted once.
//!
//! Like the rest of `tally-core` there is no I/O and no clock: the caller
//! passes unix seconds.
//!
//! # Decision order of [`verify_proof`]
//!
//! 1. size: more than [`MAX_PROOF_BYTES`] bytes is [`DpopError::Malformed`],
//!    before anything is decoded;
//! 2. shape, exactly as for every other token of this crate: three non-empty
//!    segments of strict unpadded base64url, a protected header that is a
//!    UTF-8 JSON object without duplicate members at any depth
//!    ([`DpopError::Malformed`]; an unsecured `alg: none` JWS with an empty
//!    signature is [`DpopError::Algorithm`]);
//! 3. `typ` must be exactly the string `dpop+jwt` ([`DpopError::Type`]);
//! 4. `alg` must be exactly `EdDSA`, `ES256` or `RS256`; `none` and the HMAC
//!    algorithms are never accepted ([`DpopError::Algorithm`]);
//! 5. `crit`, `b64` and `zip` are refused whatever their value
//!    ([`DpopError::Malformed`]); `jku`, `x5u`, `x5c`, `x5t`, `x5t#S256` are
//!    refused ([`DpopError::Key`]): the key is the `jwk` header and nothing
//!    else. Other header members (such as `kid`) are ignored;
//! 6. `jwk` must be a public key object: any private member (`d`, `p`, `q`,
//!    `dp`, `dq`, `qi`, `oth`, `k`) is refused, and it must be acceptable to
//!    [`VerifyingKey::from_jwk`] (so a `jwk` member `alg` must match the key
//!    type) ([`DpopError::Key`]);
//! 7. the header `alg` must be the algorithm the `jwk` is used with
//!    ([`DpopError::Algorithm`]);
//! 8. the signature must verify under the `jwk` ([`DpopError::Signature`]);
//! 9. the payload must be a strict JSON object ([`DpopError::Malformed`]),
//!    then the claims are checked in this order:
//!    * `jti`: a non-empty string of at most [`MAX_JTI_BYTES`] bytes
//!      ([`DpopError::Malformed`]);
//!    * `htm`: a string ([`DpopError::Malformed`]) equal to the request
//!      method, case-sensitively ([`DpopError::Method`]);
//!    * `htu`: a string ([`DpopError::Malformed`]) equal to the request URL
//!      after both are normalized ([`DpopError::Url`], see below);
//!    * `iat`: a JSON integer ([`DpopError::Malformed`]) with
//!      `now - max_age - leeway <= iat` ([`DpopError::Stale`]) and
//!      `iat <= now + leeway` ([`DpopError::Future`]);
//!    * `ath`: with an access token it is required and must equal
//!      `BASE64URL(SHA-256(access_token))`; without one it must be absent
//!      ([`DpopError::Ath`]);
//!    * `nonce`: when present it must be a string ([`DpopError::Malformed`]);
//!      when the server expects a nonce it is required
//!      ([`DpopError::NonceRequired`]) and must be equal
//!      ([`DpopError::Nonce`]).
//!
//! Other claims are ignored.
//!
//! # URL comparison
//!
//! `htu` and the request URL are compared after the same normalization
//! (RFC 9449 section 4.3 point 9, RFC 3986 sections 6.2.2 and 6.2.3): the
//! query and fragment are removed; the scheme must be `http` or `https` and is
//! lowercased, as is the host; a port equal to the scheme's default (80, 443)
//! or empty is dropped, and any other port is written without leading zeros;
//! an empty path becomes `/`; percent-encodings get uppercase hex digits and
//! encoded unreserved characters are decoded; `.` and `..` segments are
//! removed. The path is otherwise compared exactly (case-sensitively). A URL
//! with user information (`@`), a percent-encoded host, bytes outside
//! printable ASCII, or an invalid port matches nothing.
//!
//! # Replay
//!
//! [`verify_proof`] does not look at the replay cache: after it succeeds, call
//! [`ReplayCache::check_and_insert`] with the proof's `jkt` and `jti` and an
//! expiry from [`DpopPolicy::replay_expires_at`], and refuse the request if it
//! returns `false`.
//!
//! ```
//! use tally_core::dpop::{DpopError, DpopPolicy, ReplayCache, verify_proof};
//! let policy = DpopPolicy::default();
//! let err = verify_proof("not.a.proof", "GET", "https://h/x", None, None, 0, &policy);
//! assert!(matches!(err, Err(DpopError::Malformed(_))));
//! let cache = ReplayCache::new(1000);
//! assert!(cache.check_and_insert("jkt", "jti-1", policy.replay_expires_at(100), 100));
//! assert!(!cache.check_and_insert("jkt", "jti-1", policy.replay_expires_at(100), 101));
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::jose::token::split_compact;
use crate::jose::{Algorithm, KeyError, Rejection, VerifyingKey, b64, json};

/// Largest accepted proof, in bytes. Longer input is [`DpopError::Malformed`]
/// before any decoding happens.
pub const MAX_PROOF_BYTES: usize = 4096;

/// Longest accepted `jti`, in bytes (also the longest `jti` a
/// [`ReplayCache`] stores).
pub const MAX_JTI_BYTES: usize = 256;

/// Longest `jkt` a [`ReplayCache`] stores, in bytes. A SHA-256 thumbprint is
/// 43 characters.
pub const MAX_JKT_BYTES: usize = 128;

/// The one accepted `typ` header value (RFC 9449 section 4.2).
const DPOP_TYP: &str = "dpop+jwt";

/// JWK members that carry private or symmetric key material.
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Header members whose presence alone refuses a proof.
const REFUSED_HEADER_MEMBERS: [(&str, DpopError); 8] = [
    (
        "crit",
        DpopError::Malformed("crit header: no extensions are understood"),
    ),
    (
        "b64",
        DpopError::Malformed("b64 header (RFC 7797) is not accepted"),
    ),
    ("zip", DpopError::Malformed("zip header is not accepted")),
    ("jku", DpopError::Key("the key must be given by jwk only")),
    ("x5u", DpopError::Key("the key must be given by jwk only")),
    ("x5c", DpopError::Key("the key must be given by jwk only")),
    ("x5t", DpopError::Key("the key must be given by jwk only")),
    (
        "x5t#S256",
        DpopError::Key("the key must be given by jwk only"),
    ),
];

/// Time limits for [`verify_proof`].
#[derive(Clone, Debug)]
pub struct DpopPolicy {
    /// How old a proof may be: `iat` must be at least `now - max_age_secs -
    /// leeway_secs`. Default 60. Negative values count as 0.
    pub max_age_secs: i64,
    /// Allowed clock difference with the client, in both directions.
    /// Default 5. Negative values count as 0.
    pub leeway_secs: i64,
}

impl Default for DpopPolicy {
    fn default() -> Self {
        Self {
            max_age_secs: 60,
            leeway_secs: 5,
        }
    }
}

impl DpopPolicy {
    /// The `expires_at` to give [`ReplayCache::check_and_insert`] for a proof
    /// with this `iat`: the first second at which [`verify_proof`] refuses the
    /// proof as [`DpopError::Stale`] (`iat + max_age + leeway + 1`,
    /// saturating). Remembering the `jti` until then closes the replay window
    /// exactly.
    #[must_use]
    pub fn replay_expires_at(&self, iat: i64) -> i64 {
        iat.saturating_add(self.max_age())
            .saturating_add(self.leeway())
            .saturating_add(1)
    }

    fn max_age(&self) -> i64 {
        self.max_age_secs.max(0)
    }

    fn leeway(&self) -> i64 {
        self.leeway_secs.max(0)
    }
}

/// A verified DPoP proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 SHA-256 thumbprint (base64url, unpadded) of the header `jwk`:
    /// the value of `cnf.jkt` for a token bound to this key.
    pub jkt: String,
    /// The `jti` claim (non-empty, at most [`MAX_JTI_BYTES`] bytes).
    pub jti: String,
    /// The `iat` claim, in unix seconds.
    pub iat: i64,
    /// The `htm` claim (equal to the request method).
    pub htm: String,
    /// The `htu` claim exactly as the proof carries it (it matched the
    /// request URL after normalization).
    pub htu: String,
    /// The `nonce` claim, if the proof carries one.
    pub nonce: Option<String>,
}

/// Why a DPoP proof was refused.
///
/// Details are fixed strings chosen by this module and never contain proof
/// content, so they are safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// Not a well-formed proof: size, segments, base64url, JSON, duplicate
    /// members, refused header extensions, or a missing or ill-typed claim.
    #[error("malformed DPoP proof: {0}")]
    Malformed(&'static str),
    /// The `typ` header is not exactly `dpop+jwt`.
    #[error("DPoP proof typ is not dpop+jwt")]
    Type,
    /// `alg` is not `EdDSA`, `ES256` or `RS256`, or not the `jwk`'s algorithm.
    #[error("DPoP proof alg is not accepted")]
    Algorithm,
    /// The `jwk` header is missing, private, invalid or unsupported, or the
    /// key is offered another way (`jku`, `x5c`, ...).
    #[error("DPoP proof key refused: {0}")]
    Key(&'static str),
    /// The signature does not verify under the `jwk`.
    #[error("DPoP proof signature does not verify")]
    Signature,
    /// `htm` differs from the request method.
    #[error("DPoP proof htm does not match the request method")]
    Method,
    /// `htu` differs from the request URL (or either is not an http(s) URL).
    #[error("DPoP proof htu does not match the request URL")]
    Url,
    /// `iat` is older than the policy allows.
    #[error("DPoP proof is too old")]
    Stale,
    /// `iat` is further in the future than the leeway allows.
    #[error("DPoP proof is issued in the future")]
    Future,
    /// `ath` is missing, wrong, or present on a request without access token.
    #[error("DPoP proof ath does not match the access token")]
    Ath,
    /// The server expects a nonce and the proof has none.
    #[error("DPoP proof needs a server nonce")]
    NonceRequired,
    /// The proof's nonce is not the expected one.
    #[error("DPoP proof nonce does not match")]
    Nonce,
}

impl DpopError {
    /// A stable, machine-readable code: `"use_dpop_nonce"` for
    /// [`DpopError::NonceRequired`] (the client should retry with the nonce
    /// the server supplies), `"binding_mismatch"` for everything else.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NonceRequired => "use_dpop_nonce",
            _ => "binding_mismatch",
        }
    }

    /// A fixed, human-readable detail (never proof content).
    #[must_use]
    pub fn detail(&self) -> &'static str {
        match self {
            Self::Malformed(d) | Self::Key(d) => d,
            Self::Type => "typ is not dpop+jwt",
            Self::Algorithm => "alg is not EdDSA, ES256 or RS256, or not the algorithm of the jwk",
            Self::Signature => "signature does not verify under the jwk",
            Self::Method => "htm does not match the request method",
            Self::Url => "htu does not match the request URL",
            Self::Stale => "iat is too old",
            Self::Future => "iat is in the future",
            Self::Ath => "ath is missing, unexpected, or does not match the access token",
            Self::NonceRequired => "a DPoP nonce is required",
            Self::Nonce => "nonce does not match",
        }
    }
}

/// Verifies a DPoP proof JWT for a request: `method` (e.g. `"GET"`), `url`
/// (the full request URL as the server sees it, e.g.
/// `"http://127.0.0.1:8080/v1/login"`), `access_token` (`Some` for resource
/// requests: then `ath` is required and must equal
/// `BASE64URL(SHA-256(access_token))`; `None` for token requests: `ath` must
/// be absent), `expected_nonce` (`Some`: the proof's `nonce` claim must equal
/// it), `now` (unix seconds).
///
/// The proof is taken exactly as received: nothing is trimmed. The checks
/// and their order are described on the [module](self). Replay is not
/// checked here: see [`ReplayCache`].
///
/// # Errors
/// The first [`DpopError`] in the documented order.
pub fn verify_proof(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    expected_nonce: Option<&str>,
    now: i64,
    policy: &DpopPolicy,
) -> Result<DpopProof, DpopError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::Malformed("proof exceeds 4096 bytes"));
    }
    let compact = split_compact(proof.as_bytes()).map_err(from_rejection)?;
    let header = json::parse_object(&compact.header).map_err(DpopError::Malformed)?;

    if !matches!(header.get("typ"), Some(Value::String(t)) if t == DPOP_TYP) {
        return Err(DpopError::Type);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name).ok_or(DpopError::Algorithm)?,
        _ => return Err(DpopError::Algorithm),
    };
    for (name, err) in REFUSED_HEADER_MEMBERS {
        if header.contains_key(name) {
            return Err(err);
        }
    }
    let key = header_key(&header)?;
    if key.algorithm() != alg {
        return Err(DpopError::Algorithm);
    }
    key.verify_signature(compact.signing_input, &compact.signature)
        .map_err(|_| DpopError::Signature)?;

    let claims = json::parse_object(&compact.payload).map_err(DpopError::Malformed)?;
    let jti = match claims.get("jti") {
        None => return Err(DpopError::Malformed("missing jti")),
        Some(Value::String(j)) if j.is_empty() => return Err(DpopError::Malformed("empty jti")),
        Some(Value::String(j)) if j.len() > MAX_JTI_BYTES => {
            return Err(DpopError::Malformed("jti exceeds 256 bytes"));
        }
        Some(Value::String(j)) => j.clone(),
        Some(_) => return Err(DpopError::Malformed("jti is not a string")),
    };
    let htm = string_claim(&claims, "htm", "missing htm", "htm is not a string")?;
    if htm != method {
        return Err(DpopError::Method);
    }
    let htu = string_claim(&claims, "htu", "missing htu", "htu is not a string")?;
    match (normalize_url(htu), normalize_url(url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(DpopError::Url),
    }
    let iat = match claims.get("iat") {
        None => return Err(DpopError::Malformed("missing iat")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or(DpopError::Malformed("iat is not an integer"))?,
        Some(_) => return Err(DpopError::Malformed("iat is not an integer")),
    };
    if iat
        < now
            .saturating_sub(policy.max_age())
            .saturating_sub(policy.leeway())
    {
        return Err(DpopError::Stale);
    }
    if iat > now.saturating_add(policy.leeway()) {
        return Err(DpopError::Future);
    }
    check_ath(claims.get("ath"), access_token)?;
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(DpopError::Malformed("nonce is not a string")),
    };
    if let Some(expected) = expected_nonce {
        let Some(got) = nonce.as_deref() else {
            return Err(DpopError::NonceRequired);
        };
        if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(DpopError::Nonce);
        }
    }
    Ok(DpopProof {
        jkt: key.thumbprint(),
        jti,
        iat,
        htm: htm.to_owned(),
        htu: htu.to_owned(),
        nonce,
    })
}

/// Maps a rejection from the shared compact-JWS splitter.
fn from_rejection(rejection: Rejection) -> DpopError {
    match rejection {
        Rejection::Malformed(detail) => DpopError::Malformed(detail),
        Rejection::UnsupportedAlg(_) => DpopError::Algorithm,
        _ => DpopError::Malformed("not a compact JWS"),
    }
}

/// The header `jwk` as a verifying key (step 6).
fn header_key(header: &Map<String, Value>) -> Result<VerifyingKey, DpopError> {
    let jwk = match header.get("jwk") {
        None => return Err(DpopError::Key("missing jwk header")),
        Some(jwk @ Value::Object(members)) => {
            if PRIVATE_JWK_MEMBERS.iter().any(|m| members.contains_key(*m)) {
                return Err(DpopError::Key("jwk contains private key material"));
            }
            jwk
        }
        Some(_) => return Err(DpopError::Key("jwk header is not an object")),
    };
    VerifyingKey::from_jwk(jwk).map_err(|e| match e {
        KeyError::InvalidJwk(d) | KeyError::UnsupportedKeyType(d) | KeyError::InvalidKey(d) => {
            DpopError::Key(d)
        }
        KeyError::RsaKeySize => DpopError::Key("RSA modulus must be 2048 to 8192 bits"),
        _ => DpopError::Key("jwk is not an acceptable public key"),
    })
}

/// A required string claim.
fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
    missing: &'static str,
    not_string: &'static str,
) -> Result<&'a str, DpopError> {
    match claims.get(name) {
        None => Err(DpopError::Malformed(missing)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DpopError::Malformed(not_string)),
    }
}

/// The `ath` rule: required and equal with an access token, absent without.
fn check_ath(ath: Option<&Value>, access_token: Option<&str>) -> Result<(), DpopError> {
    match (access_token, ath) {
        (None, None) => Ok(()),
        (Some(token), Some(Value::String(ath))) => {
            let expected = b64::encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
            if bool::from(ath.as_bytes().ct_eq(expected.as_bytes())) {
                Ok(())
            } else {
                Err(DpopError::Ath)
            }
        }
        _ => Err(DpopError::Ath),
    }
}

/// Normalizes an absolute `http`/`https` URL for comparison (see the module
/// documentation), or `None` if it is not one this module accepts.
fn normalize_url(input: &str) -> Option<String> {
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let end = input.find(['?', '#']).unwrap_or(input.len());
    let (scheme, rest) = input.get(..end)?.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port: u16 = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    if authority.contains(['@', '%']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        // An IP literal: `[` ... `]`, then an optional `:port`.
        let close = authority.find(']')?;
        let host = authority.get(..=close)?;
        let port = match authority.get(close + 1..)? {
            "" => None,
            tail => Some(tail.strip_prefix(':')?),
        };
        if host.len() < 3 || host.get(1..close)?.contains('[') {
            return None;
        }
        (host, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() || host.contains(['[', ']']) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>().ok()? {
            n if n == default_port => None,
            n => Some(n),
        },
        Some(_) => return None,
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        remove_dot_segments(&normalize_percent(path)?)
    };
    let mut out = scheme;
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(&path);
    Some(out)
}

/// RFC 3986 section 6.2.2.1 and 6.2.2.2: uppercase hex digits in
/// percent-encodings and decode the unreserved characters; `None` for a `%`
/// not followed by two hex digits.
fn normalize_percent(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            let decoded = (hi << 4) | lo;
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                out.push(char::from(HEX_UPPER.get(usize::from(hi)).copied()?));
                out.push(char::from(HEX_UPPER.get(usize::from(lo)).copied()?));
            }
            i += 3;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 section 5.2.4 for an absolute path (starting with `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// A bounded, thread-safe memory of `(jkt, jti)` pairs, each kept until its
/// expiry, so that a DPoP proof is accepted at most once (RFC 9449
/// section 11.1).
///
/// Memory is bounded: at most `capacity` entries, each with a `jkt` of at
/// most [`MAX_JKT_BYTES`] and a `jti` of at most [`MAX_JTI_BYTES`] bytes.
/// Expired entries are dropped at every call. When the cache is full of
/// unexpired entries it **fails closed**: new pairs are refused (reported as
/// not new) until entries expire, so a flood of proofs can deny DPoP
/// requests for at most one proof lifetime but can never make a replay pass.
/// Size `capacity` for the expected proof rate times
/// [`DpopPolicy::replay_expires_at`]`(0)` seconds.
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<ReplayInner>,
}

#[derive(Default)]
struct ReplayInner {
    /// Entry key to its expiry.
    entries: HashMap<Arc<str>, i64>,
    /// The same entries ordered by expiry, for cheap eviction.
    by_expiry: BTreeSet<(i64, Arc<str>)>,
}

impl ReplayInner {
    /// Drops every entry with `expires_at <= now`.
    fn evict_expired(&mut self, now: i64) {
        while let Some((expires_at, _)) = self.by_expiry.first()
            && *expires_at <= now
        {
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.entries.remove(&key);
            }
        }
    }
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` entries (0 refuses
    /// everything).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(ReplayInner::default()),
        }
    }

    /// Records `(jkt, jti)` until `expires_at` and returns `true` if the pair
    /// was not already held (the proof is new); returns `false` for a replay.
    ///
    /// An entry is expired, and its pair free again, once
    /// `expires_at <= now`. Fails closed, returning `false`, when the pair
    /// cannot be remembered: the cache is full of unexpired entries, `jkt` or
    /// `jti` is longer than [`MAX_JKT_BYTES`] / [`MAX_JTI_BYTES`], or
    /// `expires_at <= now` (the entry would already be expired; see
    /// [`DpopPolicy::replay_expires_at`]).
    pub fn check_and_insert(&self, jkt: &str, jti: &str, expires_at: i64, now: i64) -> bool {
        if jkt.len() > MAX_JKT_BYTES || jti.len() > MAX_JTI_BYTES || expires_at <= now {
            return false;
        }
        // The length prefix makes the key unambiguous for any jkt and jti.
        let key = format!("{}:{jkt}{jti}", jkt.len());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.evict_expired(now);
        if inner.entries.contains_key(key.as_str()) || inner.entries.len() >= self.capacity {
            return false;
        }
        let key: Arc<str> = Arc::from(key);
        inner.entries.insert(Arc::clone(&key), expires_at);
        inner.by_expiry.insert((expires_at, key));
        true
    }

    /// Number of entries held (entries that expired since the last
    /// [`ReplayCache::check_and_insert`] are still counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Whether the cache holds no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum number of entries.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::discriminant;

    use serde_json::json;

    use super::*;
    use crate::jose::SigningKey;

    const NOW: i64 = 1_700_000_000;
    const URL: &str = "https://api.example.com/v1/items";
    const TOKEN: &str = "Kz~8mXK1EalYznwH-access.token";

    /// RFC 9449 section 4.1 (Figure 3) example key, and its RFC 7638
    /// thumbprint as given in section 6.1 (the `cnf.jkt` example).
    const RFC_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
    const RFC_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
    const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    /// RFC 9449 section 4.1: proof for `POST https://server.example.com/token`.
    const RFC_TOKEN_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgt",
        "MzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VO",
        "SmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19",
        ".",
        "eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4",
        "YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ",
        ".",
        "2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg",
    );
    const RFC_TOKEN_IAT: i64 = 1_562_262_616;
    /// RFC 9449 section 7.1: proof for `GET https://resource.example.org/protectedresource`
    /// with the access token below.
    const RFC_RESOURCE_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgt",
        "MzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VO",
        "SmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19",
        ".",
        "eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5l",
        "eGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJa",
        "M0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9",
        ".",
        "2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA",
    );
    const RFC_RESOURCE_IAT: i64 = 1_562_262_618;
    const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";

    fn key(alg: Algorithm) -> SigningKey {
        SigningKey::generate(alg).expect("key generation")
    }

    fn ath_of(token: &str) -> String {
        b64::encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
    }

    /// The minimal public JWK (`kty`, `crv`/`x`/`y` or `n`/`e`).
    fn public_jwk(key: &SigningKey) -> Value {
        let mut jwk = key.verifying_key().to_jwk();
        if let Some(members) = jwk.as_object_mut() {
            for name in ["kid", "alg", "use"] {
                members.remove(name);
            }
        }
        jwk
    }

    fn header_for(key: &SigningKey) -> Value {
        json!({"typ": "dpop+jwt", "alg": key.algorithm().name(), "jwk": public_jwk(key)})
    }

    fn claims() -> Value {
        json!({"jti": "proof-1", "htm": "GET", "htu": URL, "iat": NOW})
    }

    fn resource_claims() -> Value {
        let mut c = claims();
        c["ath"] = json!(ath_of(TOKEN));
        c
    }

    /// Signs raw header and payload bytes (so duplicate members can be sent).
    fn sign_bytes(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
        let mut proof = b64::encode(header);
        proof.push('.');
        proof.push_str(&b64::encode(payload));
        let signature = key.sign_raw(proof.as_bytes()).expect("signing");
        proof.push('.');
        proof.push_str(&b64::encode(&signature));
        proof
    }

    fn sign(key: &SigningKey, header: &Value, claims: &Value) -> String {
        sign_bytes(
            key,
            &serde_json::to_vec(header).expect("header"),
            &serde_json::to_vec(claims).expect("claims"),
        )
    }

    fn verify(
        proof: &str,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<DpopProof, DpopError> {
        verify_proof(proof, "GET", URL, token, nonce, NOW, &DpopPolicy::default())
    }

    fn with(mut value: Value, name: &str, member: Value) -> Value {
        value[name] = member;
        value
    }

    fn without(mut value: Value, name: &str) -> Value {
        if let Some(members) = value.as_object_mut() {
            members.remove(name);
        }
        value
    }

    #[test]
    fn policy_defaults_and_replay_expiry() {
        let policy = DpopPolicy::default();
        assert_eq!((policy.max_age_secs, policy.leeway_secs), (60, 5));
        assert_eq!(policy.replay_expires_at(100), 166);
        assert_eq!(policy.replay_expires_at(i64::MAX), i64::MAX);
        let odd = DpopPolicy {
            max_age_secs: -10,
            leeway_secs: -3,
        };
        assert_eq!(odd.replay_expires_at(100), 101);
    }

    #[test]
    fn good_token_request_proofs_verify() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let k = key(alg);
            let proof = sign(&k, &header_for(&k), &claims());
            let got = verify(&proof, None, None).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(
                got,
                DpopProof {
                    jkt: k.verifying_key().thumbprint(),
                    jti: "proof-1".to_owned(),
                    iat: NOW,
                    htm: "GET".to_owned(),
                    htu: URL.to_owned(),
                    nonce: None,
                },
                "{alg}"
            );
            assert_eq!(got.jkt.len(), 43);
        }
    }

    #[test]
    fn good_resource_request_with_ath_verifies() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let k = key(alg);
            let proof = sign(&k, &header_for(&k), &resource_claims());
            let got = verify(&proof, Some(TOKEN), None).expect("resource proof");
            assert_eq!(got.jkt, k.verifying_key().thumbprint());
            // The same proof is not a token-request proof, nor one for another token.
            assert_eq!(verify(&proof, None, None), Err(DpopError::Ath));
            assert_eq!(verify(&proof, Some("other"), None), Err(DpopError::Ath));
        }
    }

    #[test]
    fn accepted_variations() {
        let k = key(Algorithm::EdDSA);
        let h = header_for(&k);
        let accept = |proof: &str, method: &str, url: &str, nonce: Option<&str>, now: i64| {
            verify_proof(proof, method, url, None, nonce, now, &DpopPolicy::default())
        };
        // htu query and fragment are ignored, on both sides.
        let p = sign(
            &k,
            &h,
            &with(claims(), "htu", json!(format!("{URL}?a=1#frag"))),
        );
        assert!(accept(&p, "GET", URL, None, NOW).is_ok());
        assert!(accept(&p, "GET", &format!("{URL}?b=2"), None, NOW).is_ok());
        let p = sign(&k, &h, &claims());
        assert!(accept(&p, "GET", &format!("{URL}?b=2#x"), None, NOW).is_ok());
        // Scheme and host case, default port.
        for htu in [
            "HTTPS://API.Example.COM/v1/items",
            "https://api.example.com:443/v1/items",
            "https://api.example.com:/v1/items",
            "https://api.example.com/v1/./x/../items",
            "https://api.example.com/v1/%69tems",
        ] {
            let p = sign(&k, &h, &with(claims(), "htu", json!(htu)));
            let got = accept(&p, "GET", URL, None, NOW).unwrap_or_else(|e| panic!("{htu}: {e:?}"));
            assert_eq!(got.htu, htu, "htu is returned as sent");
        }
        // The server's URL is normalized too.
        let p = sign(&k, &h, &claims());
        assert!(accept(&p, "GET", "https://API.EXAMPLE.COM:443/v1/items", None, NOW).is_ok());
        // iat boundaries are inclusive.
        for iat in [NOW - 65, NOW + 5] {
            let p = sign(&k, &h, &with(claims(), "iat", json!(iat)));
            assert!(accept(&p, "GET", URL, None, NOW).is_ok(), "iat {iat}");
        }
        // A matching nonce; a nonce nobody asked for is returned, not refused.
        let p = sign(&k, &h, &with(claims(), "nonce", json!("n-1")));
        assert_eq!(
            accept(&p, "GET", URL, Some("n-1"), NOW).map(|d| d.nonce),
            Ok(Some("n-1".to_owned()))
        );
        assert_eq!(
            accept(&p, "GET", URL, None, NOW).map(|d| d.nonce),
            Ok(Some("n-1".to_owned()))
        );
        // Full JWK (kid, alg, use), a kid header, unknown claims and members.
        let mut full = h.clone();
        full["jwk"] = k.verifying_key().to_jwk();
        full["kid"] = json!("whatever");
        full["x-extra"] = json!({"a": [1, 2]});
        let p = sign(&k, &full, &with(claims(), "exp", json!("ignored")));
        let got = accept(&p, "GET", URL, None, NOW).expect("full jwk");
        assert_eq!(got.jkt, k.verifying_key().thumbprint());
        // Other methods, compared exactly.
        let p = sign(&k, &h, &with(claims(), "htm", json!("POST")));
        assert!(accept(&p, "POST", URL, None, NOW).is_ok());
    }

    #[test]
    fn proof_size_limit_is_exact() {
        let k = key(Algorithm::EdDSA);
        let h = header_for(&k);
        let mut pad = 2500;
        let proof = loop {
            let p = sign(&k, &h, &with(claims(), "pad", json!("x".repeat(pad))));
            if p.len() >= MAX_PROOF_BYTES - 2 {
                break p;
            }
            pad += 1;
        };
        assert!(proof.len() <= MAX_PROOF_BYTES, "{}", proof.len());
        assert!(verify(&proof, None, None).is_ok());
        let p = sign(&k, &h, &with(claims(), "pad", json!("x".repeat(pad + 3))));
        assert!(p.len() > MAX_PROOF_BYTES);
        assert_eq!(
            verify(&p, None, None),
            Err(DpopError::Malformed("proof exceeds 4096 bytes"))
        );
    }

    /// Every hostile proof is refused with the expected error. An expected
    /// `Malformed("")` or `Key("")` matches any detail.
    #[test]
    fn hostile_proofs_are_refused() {
        type E = DpopError;
        let k = key(Algorithm::EdDSA);
        let ec = key(Algorithm::ES256);
        let other = key(Algorithm::EdDSA);
        let h = header_for(&k);
        let c = claims();
        let good = sign(&k, &h, &c);
        assert_eq!(
            verify(&good, None, None).map(|p| p.jti),
            Ok("proof-1".to_owned())
        );
        let parts: Vec<&str> = good.split('.').collect();
        let [good_h, good_p, good_s] = parts[..] else {
            panic!("three segments");
        };
        let h_bytes = serde_json::to_vec(&h).expect("json");
        let ed_d = json!(b64::encode(&[7u8; 32]));
        let priv_key = E::Key("jwk contains private key material");
        let by_jwk_only = E::Key("the key must be given by jwk only");
        let dup = E::Malformed("duplicate JSON member");
        let segments = E::Malformed("expected exactly three segments");
        let not_int = E::Malformed("iat is not an integer");

        // Proofs signed by `k` with one header member or claim changed.
        let hdr = |name: &str, v: Value| sign(&k, &with(h.clone(), name, v), &c);
        let hdr_del = |name: &str| sign(&k, &without(h.clone(), name), &c);
        let jwk = |name: &str, v: Value| hdr("jwk", with(public_jwk(&k), name, v));
        let clm = |name: &str, v: Value| sign(&k, &h, &with(c.clone(), name, v));
        let clm_del = |name: &str| sign(&k, &h, &without(c.clone(), name));
        let htu = |url: &str| clm("htu", json!(url));
        let raw_claims = |extra: &str| {
            let text = format!(r#"{{"jti":"j","htm":"GET","htu":"{URL}","iat":{NOW}{extra}}}"#);
            sign_bytes(&k, &h_bytes, text.as_bytes())
        };
        let ec_hdr = |v: Value| sign(&ec, &v, &c);
        let unsigned_none = {
            let hb = serde_json::to_vec(&with(h.clone(), "alg", json!("none"))).expect("json");
            format!("{}.{good_p}.", b64::encode(&hb))
        };
        let payload_swapped = {
            let post = clm("htm", json!("POST"));
            let post_p = post.split('.').nth(1).unwrap_or_default().to_owned();
            format!("{good_h}.{post_p}.{good_s}")
        };
        let dup_header = {
            let text = serde_json::to_string(&h).expect("json");
            let text = text.replacen('{', r#"{"typ":"dpop+jwt","#, 1);
            sign_bytes(&k, text.as_bytes(), &serde_json::to_vec(&c).expect("json"))
        };
        let dup_jwk = {
            let x = public_jwk(&k)["x"].as_str().unwrap_or_default().to_owned();
            let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","x":"{x}"}}"#);
            let text = format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{jwk}}}"#);
            sign_bytes(&k, text.as_bytes(), &serde_json::to_vec(&c).expect("json"))
        };

        let cases: Vec<(&str, String, E)> = vec![
            // typ
            ("typ JWT", hdr("typ", json!("JWT")), E::Type),
            ("typ missing", hdr_del("typ"), E::Type),
            ("typ case", hdr("typ", json!("DPoP+JWT")), E::Type),
            (
                "typ media type",
                hdr("typ", json!("application/dpop+jwt")),
                E::Type,
            ),
            ("typ not a string", hdr("typ", json!(["dpop+jwt"])), E::Type),
            // alg
            ("alg none, signed", hdr("alg", json!("none")), E::Algorithm),
            ("alg none, unsigned", unsigned_none, E::Algorithm),
            ("alg HS256", hdr("alg", json!("HS256")), E::Algorithm),
            ("alg missing", hdr_del("alg"), E::Algorithm),
            ("alg case", hdr("alg", json!("eddsa")), E::Algorithm),
            ("alg not a string", hdr("alg", json!(1)), E::Algorithm),
            (
                "alg ES256, Ed25519 jwk",
                hdr("alg", json!("ES256")),
                E::Algorithm,
            ),
            (
                "alg EdDSA, P-256 jwk",
                ec_hdr(with(header_for(&ec), "alg", json!("EdDSA"))),
                E::Algorithm,
            ),
            // key
            ("jwk missing", hdr_del("jwk"), E::Key("missing jwk header")),
            (
                "jwk not an object",
                hdr("jwk", json!("x")),
                E::Key("jwk header is not an object"),
            ),
            ("jwk with d", jwk("d", ed_d.clone()), priv_key),
            ("jwk with null d", jwk("d", Value::Null), priv_key),
            ("jwk with p", jwk("p", ed_d.clone()), priv_key),
            (
                "EC jwk with d",
                ec_hdr(with(
                    header_for(&ec),
                    "jwk",
                    with(public_jwk(&ec), "d", ed_d.clone()),
                )),
                priv_key,
            ),
            (
                "oct jwk",
                hdr("jwk", json!({"kty": "oct", "k": ed_d})),
                priv_key,
            ),
            (
                "jwk alg mismatch",
                jwk("alg", json!("ES256")),
                E::Key("alg does not match the key type"),
            ),
            ("jwk use enc", jwk("use", json!("enc")), E::Key("")),
            (
                "jwk off-curve",
                ec_hdr(with(
                    header_for(&ec),
                    "jwk",
                    with(public_jwk(&ec), "y", json!(b64::encode(&[1u8; 32]))),
                )),
                E::Key(""),
            ),
            (
                "jwk unknown kty",
                hdr("jwk", json!({"kty": "XYZ"})),
                E::Key(""),
            ),
            ("x5c", hdr("x5c", json!(["MIIB"])), by_jwk_only),
            (
                "jku",
                hdr("jku", json!("https://e.example/jwks")),
                by_jwk_only,
            ),
            (
                "crit",
                hdr("crit", json!([])),
                E::Malformed("crit header: no extensions are understood"),
            ),
            (
                "b64 false",
                hdr("b64", json!(false)),
                E::Malformed("b64 header (RFC 7797) is not accepted"),
            ),
            // signature
            ("signed by another key", sign(&other, &h, &c), E::Signature),
            (
                "jwk of another key",
                sign(&k, &header_for(&other), &c),
                E::Signature,
            ),
            ("payload swapped", payload_swapped, E::Signature),
            (
                "short signature",
                format!("{good_h}.{good_p}.{}", b64::encode(&[0u8; 63])),
                E::Signature,
            ),
            // htm
            ("htm POST", clm("htm", json!("POST")), E::Method),
            ("htm lowercase", clm("htm", json!("get")), E::Method),
            ("htm missing", clm_del("htm"), E::Malformed("missing htm")),
            (
                "htm not a string",
                clm("htm", json!(1)),
                E::Malformed("htm is not a string"),
            ),
            // htu
            (
                "htu other path",
                htu("https://api.example.com/v1/other"),
                E::Url,
            ),
            (
                "htu path case",
                htu("https://api.example.com/V1/items"),
                E::Url,
            ),
            (
                "htu trailing slash",
                htu("https://api.example.com/v1/items/"),
                E::Url,
            ),
            (
                "htu other host",
                htu("https://evil.example.com/v1/items"),
                E::Url,
            ),
            ("htu http", htu("http://api.example.com/v1/items"), E::Url),
            (
                "htu other port",
                htu("https://api.example.com:8443/v1/items"),
                E::Url,
            ),
            ("htu relative", htu("/v1/items"), E::Url),
            (
                "htu userinfo",
                htu("https://u@api.example.com/v1/items"),
                E::Url,
            ),
            ("htu wss", htu("wss://api.example.com/v1/items"), E::Url),
            ("htu missing", clm_del("htu"), E::Malformed("missing htu")),
            // iat
            ("iat too old", clm("iat", json!(NOW - 66)), E::Stale),
            ("iat far past", clm("iat", json!(i64::MIN)), E::Stale),
            ("iat too new", clm("iat", json!(NOW + 6)), E::Future),
            ("iat far future", clm("iat", json!(i64::MAX)), E::Future),
            ("iat float", clm("iat", json!(1.7e9)), not_int),
            ("iat beyond i64", clm("iat", json!(u64::MAX)), not_int),
            ("iat string", clm("iat", json!(NOW.to_string())), not_int),
            ("iat missing", clm_del("iat"), E::Malformed("missing iat")),
            // ath on a token request
            (
                "ath on token request",
                sign(&k, &h, &resource_claims()),
                E::Ath,
            ),
            ("ath null on token request", clm("ath", Value::Null), E::Ath),
            // jti
            ("jti missing", clm_del("jti"), E::Malformed("missing jti")),
            (
                "jti empty",
                clm("jti", json!("")),
                E::Malformed("empty jti"),
            ),
            (
                "jti too long",
                clm("jti", json!("j".repeat(257))),
                E::Malformed("jti exceeds 256 bytes"),
            ),
            (
                "jti not a string",
                clm("jti", json!(5)),
                E::Malformed("jti is not a string"),
            ),
            (
                "nonce not a string",
                clm("nonce", json!(1)),
                E::Malformed("nonce is not a string"),
            ),
            // strict parsing
            (
                "oversized",
                clm("pad", json!("x".repeat(4000))),
                E::Malformed("proof exceeds 4096 bytes"),
            ),
            (
                "oversized garbage",
                "a".repeat(100_000),
                E::Malformed("proof exceeds 4096 bytes"),
            ),
            ("duplicate claim", raw_claims(r#","jti":"k""#), dup),
            (
                "duplicate escaped claim",
                raw_claims(r#","\u0068tm":"GET""#),
                dup,
            ),
            ("duplicate header member", dup_header, dup),
            ("duplicate jwk member", dup_jwk, dup),
            (
                "claims not an object",
                sign_bytes(&k, &h_bytes, b"[1]"),
                E::Malformed("JSON is not an object"),
            ),
            (
                "claims not JSON",
                sign_bytes(&k, &h_bytes, b"{"),
                E::Malformed("invalid JSON"),
            ),
            (
                "header not JSON",
                format!("{}.{good_p}.{good_s}", b64::encode(b"{x")),
                E::Malformed("invalid JSON"),
            ),
            ("2 segments", format!("{good_h}.{good_p}"), segments),
            ("4 segments", format!("{good}.{good_s}"), segments),
            ("empty", String::new(), segments),
            (
                "empty signature",
                format!("{good_h}.{good_p}."),
                E::Malformed("empty signature segment"),
            ),
            (
                "padding",
                format!("{good}=="),
                E::Malformed("base64url padding is not allowed"),
            ),
            (
                "leading space",
                format!(" {good}"),
                E::Malformed("whitespace is not allowed"),
            ),
            (
                "trailing newline",
                format!("{good}\n"),
                E::Malformed("whitespace is not allowed"),
            ),
            ("standard alphabet", format!("{good}+/"), E::Malformed("")),
        ];
        for (name, proof, want) in &cases {
            assert_refused(name, verify(proof, None, None), *want);
        }

        // Cases that depend on the access token or the expected nonce.
        let with_ath = |ath: Value| clm("ath", ath);
        let nonce = |n: &str| clm("nonce", json!(n));
        // (name, proof, access token, expected nonce, error)
        type Bound = (
            &'static str,
            String,
            Option<&'static str>,
            Option<&'static str>,
            E,
        );
        let bound: Vec<Bound> = vec![
            ("ath missing", good.clone(), Some(TOKEN), None, E::Ath),
            (
                "ath wrong",
                with_ath(json!(ath_of("other"))),
                Some(TOKEN),
                None,
                E::Ath,
            ),
            (
                "ath of padded b64",
                with_ath(json!(format!("{}=", ath_of(TOKEN)))),
                Some(TOKEN),
                None,
                E::Ath,
            ),
            (
                "ath not a string",
                with_ath(json!(1)),
                Some(TOKEN),
                None,
                E::Ath,
            ),
            (
                "nonce required",
                good.clone(),
                None,
                Some("n-1"),
                E::NonceRequired,
            ),
            (
                "nonce required, ath ok",
                sign(&k, &h, &resource_claims()),
                Some(TOKEN),
                Some("n-1"),
                E::NonceRequired,
            ),
            ("nonce mismatch", nonce("n-2"), None, Some("n-1"), E::Nonce),
            ("nonce prefix", nonce("n-"), None, Some("n-1"), E::Nonce),
            ("nonce empty", nonce(""), None, Some("n-1"), E::Nonce),
        ];
        for (name, proof, token, expected_nonce, want) in &bound {
            assert_refused(name, verify(proof, *token, *expected_nonce), *want);
        }
        assert!(
            cases.len() + bound.len() >= 80,
            "{}",
            cases.len() + bound.len()
        );
    }

    fn assert_refused(name: &str, got: Result<DpopProof, DpopError>, want: DpopError) {
        let Err(err) = got else {
            panic!("{name}: accepted: {got:?}");
        };
        assert_eq!(
            discriminant(&err),
            discriminant(&want),
            "{name}: got {err:?}, want {want:?}"
        );
        if !want.detail().is_empty() {
            assert_eq!(err, want, "{name}");
        }
    }

    #[test]
    fn rfc9449_example_proofs() {
        // Section 6.1 thumbprint of the section 4.1 key.
        let jwk = json!({"kty": "EC", "x": RFC_X, "y": RFC_Y, "crv": "P-256"});
        let key = VerifyingKey::from_jwk(&jwk).expect("RFC jwk");
        assert_eq!(key.thumbprint(), RFC_JKT);

        let policy = DpopPolicy::default();
        let url = "https://server.example.com/token";
        let got = verify_proof(
            RFC_TOKEN_PROOF,
            "POST",
            url,
            None,
            None,
            RFC_TOKEN_IAT,
            &policy,
        )
        .expect("RFC 9449 section 4.1 proof");
        assert_eq!(
            got,
            DpopProof {
                jkt: RFC_JKT.to_owned(),
                jti: "-BwC3ESc6acc2lTc".to_owned(),
                iat: RFC_TOKEN_IAT,
                htm: "POST".to_owned(),
                htu: url.to_owned(),
                nonce: None,
            }
        );
        let alt_url = "HTTPS://Server.Example.com:443/token?x=1#y";
        assert!(
            verify_proof(
                RFC_TOKEN_PROOF,
                "POST",
                alt_url,
                None,
                None,
                RFC_TOKEN_IAT,
                &policy
            )
            .is_ok()
        );
        let at = |now| verify_proof(RFC_TOKEN_PROOF, "POST", url, None, None, now, &policy);
        assert!(at(RFC_TOKEN_IAT + 65).is_ok());
        assert_eq!(at(RFC_TOKEN_IAT + 66), Err(DpopError::Stale));
        assert!(at(RFC_TOKEN_IAT - 5).is_ok());
        assert_eq!(at(RFC_TOKEN_IAT - 6), Err(DpopError::Future));
        assert_eq!(
            verify_proof(
                RFC_TOKEN_PROOF,
                "GET",
                url,
                None,
                None,
                RFC_TOKEN_IAT,
                &policy
            ),
            Err(DpopError::Method)
        );
        assert_eq!(
            verify_proof(
                RFC_TOKEN_PROOF,
                "POST",
                url,
                None,
                Some("n"),
                RFC_TOKEN_IAT,
                &policy
            ),
            Err(DpopError::NonceRequired)
        );

        // Section 7.1: the resource request proof with `ath`.
        let rurl = "https://resource.example.org/protectedresource";
        let got = verify_proof(
            RFC_RESOURCE_PROOF,
            "GET",
            rurl,
            Some(RFC_ACCESS_TOKEN),
            None,
            RFC_RESOURCE_IAT,
            &policy,
        )
        .expect("RFC 9449 section 7.1 proof");
        assert_eq!(got.jkt, RFC_JKT);
        assert_eq!(got.jti, "e1j3V_bKic8-LAEB");
        let r = |token| {
            verify_proof(
                RFC_RESOURCE_PROOF,
                "GET",
                rurl,
                token,
                None,
                RFC_RESOURCE_IAT,
                &policy,
            )
        };
        assert_eq!(r(None), Err(DpopError::Ath));
        assert_eq!(
            r(Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxV")),
            Err(DpopError::Ath)
        );
    }

    #[test]
    fn mutated_proofs_never_verify_and_never_panic() {
        let k = key(Algorithm::EdDSA);
        let good = sign(&k, &header_for(&k), &claims());
        assert!(verify(&good, None, None).is_ok());
        let bytes = good.as_bytes();
        let mut checked = 0;
        for i in 0..bytes.len() {
            for replacement in [b'A', b'_', b'.', b'='] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut mutated = bytes.to_vec();
                mutated[i] = replacement;
                let mutated = String::from_utf8(mutated).expect("ASCII");
                assert!(
                    verify(&mutated, None, None).is_err(),
                    "byte {i} -> {replacement}"
                );
                checked += 1;
            }
        }
        for len in 0..good.len() {
            assert!(
                verify(good.get(..len).unwrap_or_default(), None, None).is_err(),
                "prefix {len}"
            );
        }
        assert!(checked > 1000);
        // Non-ASCII input is refused, not a panic.
        assert!(verify("é.é.é", None, None).is_err());
    }

    #[test]
    fn url_normalization() {
        let n = normalize_url;
        assert_eq!(
            n("https://h.example/a").as_deref(),
            Some("https://h.example/a")
        );
        assert_eq!(
            n("HTTP://H.Example:80").as_deref(),
            Some("http://h.example/")
        );
        assert_eq!(n("http://h:0080/a?q#f").as_deref(), Some("http://h/a"));
        assert_eq!(n("http://h:443/a").as_deref(), Some("http://h:443/a"));
        assert_eq!(n("https://h:08443/a").as_deref(), Some("https://h:8443/a"));
        assert_eq!(
            n("http://127.0.0.1:8080/v1/login").as_deref(),
            Some("http://127.0.0.1:8080/v1/login")
        );
        assert_eq!(
            n("http://[::1]:8080/x").as_deref(),
            Some("http://[::1]:8080/x")
        );
        assert_eq!(
            n("http://[FE80::A]/x").as_deref(),
            Some("http://[fe80::a]/x")
        );
        assert_eq!(
            n("http://h/a/b/../../c/./d/..").as_deref(),
            Some("http://h/c/")
        );
        assert_eq!(n("http://h/../../a").as_deref(), Some("http://h/a"));
        assert_eq!(n("http://h/a//b").as_deref(), Some("http://h/a//b"));
        assert_eq!(
            n("http://h/%7e%41%2f%2F%c3%a9").as_deref(),
            Some("http://h/~A%2F%2F%C3%A9")
        );
        assert_eq!(n("http://h/%2E%2E/a").as_deref(), Some("http://h/a"));
        assert_eq!(n("http://h?x").as_deref(), Some("http://h/"));
        assert_eq!(n("http://h#/x").as_deref(), Some("http://h/"));
        for bad in [
            "",
            "h/a",
            "//h/a",
            "ftp://h/a",
            "http:/h/a",
            "http://",
            "http:///a",
            "http://:80/a",
            "http://u:p@h/a",
            "http://h:x/a",
            "http://h:65536/a",
            "http://h:-1/a",
            "http://h:1:2/a",
            "http://[::1/a",
            "http://[]/a",
            "http://[::1]x/a",
            "http://h]/a",
            "http://h%41/a",
            "http://h/%zz",
            "http://h/%4",
            "http://h/a b",
            "http://h/\u{e9}",
            "http://h/\n",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn error_codes_and_details() {
        let all = [
            DpopError::Malformed("m"),
            DpopError::Type,
            DpopError::Algorithm,
            DpopError::Key("k"),
            DpopError::Signature,
            DpopError::Method,
            DpopError::Url,
            DpopError::Stale,
            DpopError::Future,
            DpopError::Ath,
            DpopError::NonceRequired,
            DpopError::Nonce,
        ];
        for e in all {
            let want = if e == DpopError::NonceRequired {
                "use_dpop_nonce"
            } else {
                "binding_mismatch"
            };
            assert_eq!(e.code(), want, "{e:?}");
            assert!(!e.detail().is_empty(), "{e:?}");
            assert!(!e.to_string().is_empty(), "{e:?}");
        }
        assert_eq!(DpopError::Malformed("m").detail(), "m");
        assert_eq!(DpopError::Key("k").detail(), "k");
    }

    #[test]
    fn replay_cache_refuses_duplicates() {
        let cache = ReplayCache::new(10);
        assert!(cache.is_empty());
        assert!(cache.check_and_insert("jkt-a", "j1", 200, 100));
        assert!(!cache.check_and_insert("jkt-a", "j1", 200, 100), "replay");
        assert!(
            !cache.check_and_insert("jkt-a", "j1", 500, 150),
            "replay, other expiry"
        );
        assert!(
            cache.check_and_insert("jkt-b", "j1", 200, 100),
            "same jti, other key"
        );
        assert!(
            cache.check_and_insert("jkt-a", "j2", 200, 100),
            "same key, other jti"
        );
        // The composite key is unambiguous.
        assert!(cache.check_and_insert("ab", "c", 200, 100));
        assert!(cache.check_and_insert("a", "bc", 200, 100));
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.capacity(), 10);
    }

    #[test]
    fn replay_cache_expiry_frees_entries() {
        let cache = ReplayCache::new(10);
        assert!(cache.check_and_insert("k", "j", 200, 100));
        assert!(
            !cache.check_and_insert("k", "j", 300, 199),
            "held until its expiry"
        );
        assert!(cache.check_and_insert("k", "j", 300, 200), "expired at 200");
        assert!(!cache.check_and_insert("k", "j", 400, 250));
        assert_eq!(cache.len(), 1);
        // An entry that would already be expired cannot be remembered: refused.
        assert!(!cache.check_and_insert("k", "new", 250, 250));
        assert!(!cache.check_and_insert("k", "new", 10, 250));
        // Oversized members are refused, keeping memory bounded.
        assert!(!cache.check_and_insert("k", &"j".repeat(MAX_JTI_BYTES + 1), 400, 250));
        assert!(!cache.check_and_insert(&"k".repeat(MAX_JKT_BYTES + 1), "j", 400, 250));
        assert!(cache.check_and_insert("k", &"j".repeat(MAX_JTI_BYTES), 400, 250));
    }

    #[test]
    fn replay_cache_is_bounded_and_fails_closed() {
        let cache = ReplayCache::new(3);
        assert!(cache.check_and_insert("k", "a", 110, 100));
        assert!(cache.check_and_insert("k", "b", 120, 100));
        assert!(cache.check_and_insert("k", "c", 130, 100));
        // Full of live entries: a new pair is refused, and so is a replay.
        assert!(!cache.check_and_insert("k", "d", 130, 100));
        assert!(!cache.check_and_insert("k", "a", 130, 105));
        assert_eq!(cache.len(), 3);
        // Once one expires, there is room for exactly one more.
        assert!(cache.check_and_insert("k", "d", 130, 110));
        assert!(!cache.check_and_insert("k", "e", 130, 110));
        assert_eq!(cache.len(), 3);
        // "a" expired, so it is a new pair again.
        assert!(!cache.check_and_insert("k", "a", 140, 119));
        assert!(cache.check_and_insert("k", "a", 140, 120));
        for i in 0..1000 {
            cache.check_and_insert("k", &format!("x{i}"), 1000, 121);
            assert!(cache.len() <= 3);
        }
        assert!(cache.check_and_insert("k", "z", 2000, 1000));
        assert_eq!(cache.len(), 1, "everything else expired");
        let zero = ReplayCache::new(0);
        assert!(!zero.check_and_insert("k", "j", 200, 100));
        assert!(format!("{zero:?}").contains("capacity: 0"));
    }

    #[test]
    fn replay_cache_is_thread_safe() {
        let cache = Arc::new(ReplayCache::new(10_000));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|i| cache.check_and_insert("k", &format!("j{i}"), 200, 100))
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(accepted, 500, "each jti accepted exactly once");
        assert_eq!(cache.len(), 500);
    }
}
