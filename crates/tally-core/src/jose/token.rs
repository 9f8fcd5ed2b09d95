//! Compact JWS parsing and the [`verify`] pipeline.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use super::alg::Algorithm;
use super::claims::Claims;
use super::key::{KeySet, VerifyingKey};
use super::rejection::{MAX_TOKEN_BYTES, Rejection};
use super::{b64, json};

/// Header members whose presence alone refuses a token (see the module
/// documentation for the reasons).
const FORBIDDEN_HEADER_MEMBERS: [(&str, &str); 9] = [
    ("jwk", "embedded jwk header is not accepted"),
    ("jku", "jku header is not accepted"),
    ("x5u", "x5u header is not accepted"),
    ("x5c", "x5c header is not accepted"),
    ("x5t", "x5t header is not accepted"),
    ("x5t#S256", "x5t#S256 header is not accepted"),
    ("crit", "crit header: no extensions are understood"),
    ("b64", "b64 header (RFC 7797) is not accepted"),
    ("zip", "zip header is not accepted"),
];

/// The protected header of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`, equal to the algorithm of the key that verified the token.
    pub alg: Algorithm,
    /// `kid`, the name of that key in the [`KeySet`].
    pub kid: String,
    /// `typ`, if present (not interpreted here; e.g. `"at+jwt"`, RFC 9068).
    pub typ: Option<String>,
}

/// A token whose signature verified under a key in the set. Only [`verify`]
/// can build one.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    header: Header,
    claims: Claims,
    digest: [u8; 32],
}

impl VerifiedToken {
    /// The protected header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The claims (not yet checked against any policy; see
    /// [`super::ClaimsPolicy::check`]).
    #[must_use]
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// SHA-256 of the exact token bytes that verified.
    ///
    /// Use this, never the signature, to identify a token: ECDSA signatures
    /// are malleable, so one set of claims can verify under several
    /// encodings, and each encoding has a different digest.
    #[must_use]
    pub fn token_digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// A compact JWS split and base64url-decoded, nothing else checked.
pub(crate) struct Compact<'a> {
    /// `BASE64URL(header) "." BASE64URL(payload)`, as received.
    pub(crate) signing_input: &'a [u8],
    /// Decoded protected header bytes.
    pub(crate) header: Vec<u8>,
    /// Decoded payload bytes.
    pub(crate) payload: Vec<u8>,
    /// Decoded signature bytes.
    pub(crate) signature: Vec<u8>,
}

/// Steps 1 and 2: size, then segments and strict base64url.
pub(crate) fn split_compact(token: &[u8]) -> Result<Compact<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Malformed("token exceeds 8192 bytes"));
    }
    let mut dots = token
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'.')
        .map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(Rejection::Malformed("expected exactly three segments"));
    };
    // `first < second < token.len() <= MAX_TOKEN_BYTES`, so the ranges below
    // are in bounds; `get` keeps this panic-free regardless.
    let seg = |from: usize, to: usize| token.get(from..to).unwrap_or_default();
    let (header, payload, signature) = (
        seg(0, first),
        seg(first + 1, second),
        seg(second + 1, token.len()),
    );
    if header.is_empty() {
        return Err(Rejection::Malformed("empty header segment"));
    }
    if payload.is_empty() {
        return Err(Rejection::Malformed("empty payload segment"));
    }
    if signature.is_empty() {
        // An unsecured JWS (RFC 7519 section 6) has an empty signature: name it
        // for what it is, so `alg: none` always reads as `unsupported_alg`.
        if let Ok(h) = b64::decode(header)
            && let Ok(map) = json::parse_object(&h)
            && matches!(map.get("alg"), Some(Value::String(a)) if a.eq_ignore_ascii_case("none"))
        {
            return Err(Rejection::UnsupportedAlg(
                "alg none: unsecured tokens are never accepted",
            ));
        }
        return Err(Rejection::Malformed("empty signature segment"));
    }
    Ok(Compact {
        signing_input: seg(0, second),
        header: b64::decode(header).map_err(Rejection::Malformed)?,
        payload: b64::decode(payload).map_err(Rejection::Malformed)?,
        signature: b64::decode(signature).map_err(Rejection::Malformed)?,
    })
}

/// Steps 3 and 4 (and the `kid` type of step 5): the header as JSON, then
/// the header rules. Returns the algorithm, kid and typ.
pub(crate) fn check_header(
    header: &[u8],
) -> Result<(Algorithm, Option<String>, Option<String>), Rejection> {
    let map = json::parse_object(header).map_err(Rejection::Malformed)?;
    let alg = header_alg(&map)?;
    for (name, why) in FORBIDDEN_HEADER_MEMBERS {
        if map.contains_key(name) {
            return Err(Rejection::UnsupportedAlg(why));
        }
    }
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Rejection::Malformed("typ header is not a string")),
    };
    if map.get("cty").is_some_and(|c| !c.is_string()) {
        return Err(Rejection::Malformed("cty header is not a string"));
    }
    let kid = match map.get("kid") {
        Some(Value::String(k)) => Some(k.clone()),
        _ => None,
    };
    Ok((alg, kid, typ))
}

fn header_alg(map: &Map<String, Value>) -> Result<Algorithm, Rejection> {
    let name = match map.get("alg") {
        None => return Err(Rejection::UnsupportedAlg("missing alg")),
        Some(Value::String(name)) => name,
        Some(_) => return Err(Rejection::UnsupportedAlg("alg is not a string")),
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(Rejection::UnsupportedAlg("alg none is never accepted"));
    }
    Algorithm::from_name(name).ok_or(Rejection::UnsupportedAlg(
        "alg is not EdDSA, ES256 or RS256",
    ))
}

/// Steps 6 and 7: the key's binding and the signature.
pub(crate) fn check_signature(
    key: &VerifyingKey,
    alg: Algorithm,
    compact: &Compact<'_>,
) -> Result<(), Rejection> {
    if key.algorithm() != alg {
        return Err(Rejection::UnsupportedAlg(
            "alg differs from the algorithm the key is bound to",
        ));
    }
    key.verify_signature(compact.signing_input, &compact.signature)
}

/// Step 8: the payload as strict claims.
pub(crate) fn parse_claims(payload: &[u8]) -> Result<Claims, Rejection> {
    let map = json::parse_object(payload).map_err(Rejection::Malformed)?;
    Claims::from_map(map).map_err(Rejection::Malformed)
}

/// Verifies a compact JWS JWT against `keys`, in the order documented on the
/// [module](super).
///
/// The token is the exact bytes received; nothing is trimmed. Only the
/// signature is checked here: apply a [`super::ClaimsPolicy`] to the claims.
///
/// # Errors
/// The first [`Rejection`] in the documented order.
pub fn verify(token: &[u8], keys: &KeySet) -> Result<VerifiedToken, Rejection> {
    let compact = split_compact(token)?;
    let (alg, kid, typ) = check_header(&compact.header)?;
    let kid = kid.ok_or(Rejection::UnknownKey)?;
    let key = keys.get(&kid).ok_or(Rejection::UnknownKey)?;
    check_signature(key, alg, &compact)?;
    let claims = parse_claims(&compact.payload)?;
    let digest = digest::digest(&digest::SHA256, token);
    let mut out = [0u8; 32];
    // Invariant: a SHA-256 digest is always 32 bytes, so the lengths match.
    out.copy_from_slice(digest.as_ref());
    Ok(VerifiedToken {
        header: Header { alg, kid, typ },
        claims,
        digest: out,
    })
}
