//! Shared fixtures and token-crafting helpers.

use crate::jose::key::PublicKey;
use crate::jose::{Algorithm, KeySet, SigningKey, b64};

/// kid of the fixture's Ed25519 key.
pub(super) const ED_KID: &str = "ed-key";
/// kid of the fixture's P-256 key.
pub(super) const ES_KID: &str = "es-key";
/// kid of the fixture's RSA-2048 key (also named by the precomputed
/// RSA-1024 token).
pub(super) const RS_KID: &str = "rs256-key";

/// Test-only keys and artefacts under `testdata/jose/` (see its README).
pub(super) const RSA2048_PEM: &str = include_str!("../../../testdata/jose/rsa2048.pk8.pem");
pub(super) const RSA1024_PEM: &str = include_str!("../../../testdata/jose/rsa1024.pk8.pem");
pub(super) const RSA1024_JWK: &str = include_str!("../../../testdata/jose/rsa1024.pub.jwk.json");
pub(super) const RSA1024_TOKEN: &str = include_str!("../../../testdata/jose/rs256_rsa1024.jwt");
pub(super) const ED25519_PEM: &str = include_str!("../../../testdata/jose/ed25519.pk8.pem");
pub(super) const P256_PEM: &str = include_str!("../../../testdata/jose/p256.pk8.pem");
pub(super) const P384_PEM: &str = include_str!("../../../testdata/jose/p384.pk8.pem");

/// A claims set every fixture token uses unless a test says otherwise.
pub(super) const CLAIMS: &str = r#"{"iss":"https://issuer.example","sub":"alice","aud":"tally","exp":4102444800,"iat":1700000000}"#;

/// Keys for the attack table: three trusted keys plus untrusted look-alikes.
pub(super) struct Fixture {
    pub(super) ed: SigningKey,
    pub(super) es: SigningKey,
    pub(super) rs: SigningKey,
    /// Not in the key set: an attacker's Ed25519 key.
    pub(super) other_ed: SigningKey,
    /// Not in the key set: an attacker's P-256 key.
    pub(super) other_es: SigningKey,
    pub(super) keys: KeySet,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let es = SigningKey::generate(Algorithm::ES256).unwrap();
        let rs = SigningKey::from_pkcs8_pem(RSA2048_PEM).unwrap();
        let mut keys = KeySet::new();
        keys.insert(ed.verifying_key().with_kid(ED_KID.to_owned()));
        keys.insert(es.verifying_key().with_kid(ES_KID.to_owned()));
        keys.insert(rs.verifying_key().with_kid(RS_KID.to_owned()));
        Self {
            ed,
            es,
            rs,
            other_ed: SigningKey::generate(Algorithm::EdDSA).unwrap(),
            other_es: SigningKey::generate(Algorithm::ES256).unwrap(),
            keys,
        }
    }
}

/// `{"alg":alg,"kid":kid,"typ":"JWT"}`.
pub(super) fn hdr(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#)
}

/// `BASE64URL(header) "." BASE64URL(payload)`.
pub(super) fn signing_input(header: &[u8], payload: &[u8]) -> String {
    format!("{}.{}", b64::encode(header), b64::encode(payload))
}

/// A compact token over raw header and payload bytes, signed by `key`
/// whatever the header says.
pub(super) fn signed_bytes(key: &SigningKey, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let input = signing_input(header, payload);
    let sig = key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&sig)).into_bytes()
}

/// [`signed_bytes`] for text.
pub(super) fn signed(key: &SigningKey, header: &str, payload: &str) -> Vec<u8> {
    signed_bytes(key, header.as_bytes(), payload.as_bytes())
}

/// A token with an arbitrary signature segment (already encoded).
pub(super) fn with_sig_segment(header: &str, payload: &str, sig_segment: &str) -> Vec<u8> {
    format!(
        "{}.{sig_segment}",
        signing_input(header.as_bytes(), payload.as_bytes())
    )
    .into_bytes()
}

/// The three segments of a token, as strings.
pub(super) fn segments(token: &[u8]) -> Vec<String> {
    String::from_utf8(token.to_vec())
        .unwrap()
        .split('.')
        .map(str::to_owned)
        .collect()
}

/// Re-joins segments.
pub(super) fn join(segments: &[String]) -> Vec<u8> {
    segments.join(".").into_bytes()
}

/// The fixture's valid EdDSA token.
pub(super) fn valid_ed(f: &Fixture) -> Vec<u8> {
    signed(&f.ed, &hdr("EdDSA", ED_KID), CLAIMS)
}

/// The fixture's valid ES256 token.
pub(super) fn valid_es(f: &Fixture) -> Vec<u8> {
    signed(&f.es, &hdr("ES256", ES_KID), CLAIMS)
}

/// The fixture's valid RS256 token.
pub(super) fn valid_rs(f: &Fixture) -> Vec<u8> {
    signed(&f.rs, &hdr("RS256", RS_KID), CLAIMS)
}

/// An HS256 token whose HMAC secret is `secret` (the classic "verify the
/// HMAC with the public key" confusion).
pub(super) fn hs256(kid: &str, secret: &[u8]) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let input = signing_input(hdr("HS256", kid).as_bytes(), CLAIMS.as_bytes());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64::encode(tag.as_ref())).into_bytes()
}

/// The raw public key bytes of a key (x, x||y, or n).
pub(super) fn raw_public(key: &SigningKey) -> Vec<u8> {
    match &key.verifying_key().public {
        PublicKey::Ed25519(x) => x.to_vec(),
        PublicKey::P256 { x, y } => [&x[..], &y[..]].concat(),
        PublicKey::Rsa { n, .. } => n.clone(),
    }
}

/// Deterministic SplitMix64, so failures reproduce.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(super) fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}
