//! Signing keys, verifying keys and key sets.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::alg::Algorithm;
use super::claims::Claims;
use super::der::{self, Pkcs8Error, Pkcs8Kind};
use super::rejection::{MAX_TOKEN_BYTES, Rejection};
use super::{b64, pem};

/// Smallest accepted RSA modulus, in bits.
pub(crate) const RSA_MIN_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits (the `RSA_PKCS1_2048_8192_SHA256` range).
pub(crate) const RSA_MAX_BITS: usize = 8192;

/// Why a key could not be loaded, generated or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is of a type or curve this module does not support.
    #[error("unsupported key type: {0}")]
    UnsupportedKeyType(&'static str),
    /// An RSA modulus outside 2048..=8192 bits (1024-bit keys land here).
    #[error("RSA modulus must be 2048 to 8192 bits")]
    RsaKeySize,
    /// The key encoding or the key itself is invalid.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The PEM wrapper is not strict PKCS#8 PEM.
    #[error("invalid PEM: {0}")]
    InvalidPem(&'static str),
    /// The JWK is not an acceptable public signature key.
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    /// Claims handed to the signer would not pass this module's own verifier.
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// The token would be longer than [`MAX_TOKEN_BYTES`] and so unverifiable.
    #[error("token would exceed the maximum token size")]
    TokenTooLarge,
    /// The cryptographic library failed (key generation or signing).
    #[error("cryptographic operation failed")]
    Crypto,
}

/// The public half of a key, in the form JWKs and thumbprints need.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Ed25519 public key (RFC 8032).
    Ed25519([u8; 32]),
    /// P-256 affine coordinates, big-endian, full length.
    P256 {
        /// x coordinate.
        x: [u8; 32],
        /// y coordinate.
        y: [u8; 32],
    },
    /// RSA modulus and exponent, big-endian, no leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

impl PublicKey {
    /// The single algorithm this kind of key is used with.
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDSA,
            Self::P256 { .. } => Algorithm::ES256,
            Self::Rsa { .. } => Algorithm::RS256,
        }
    }
}

/// A public key bound to one algorithm and known by a key id (`kid`).
///
/// Built from a [`SigningKey`] or from a JWK. The default `kid` is the
/// RFC 7638 SHA-256 thumbprint.
#[derive(Clone)]
pub struct VerifyingKey {
    pub(super) kid: String,
    pub(super) alg: Algorithm,
    pub(super) public: PublicKey,
    pub(super) parsed: ParsedPublicKey,
}

impl VerifyingKey {
    /// Validates `public` and binds it to its algorithm; `kid` is the
    /// thumbprint.
    pub(crate) fn from_public(public: PublicKey) -> Result<Self, KeyError> {
        let parsed = match &public {
            PublicKey::Ed25519(x) => ParsedPublicKey::new(&ED25519, x)
                .map_err(|_| KeyError::InvalidKey("invalid Ed25519 public key"))?,
            PublicKey::P256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                // AWS-LC checks that the point is on the curve.
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                    .map_err(|_| KeyError::InvalidKey("P-256 point is not on the curve"))?
            }
            PublicKey::Rsa { n, e } => {
                check_rsa_public(n, e)?;
                RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                .map_err(|_| KeyError::InvalidKey("invalid RSA public key"))?
            }
        };
        let alg = public.algorithm();
        let mut key = Self {
            kid: String::new(),
            alg,
            public,
            parsed,
        };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// The key id tokens use to name this key.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Replaces the key id (the default is the RFC 7638 thumbprint).
    #[must_use]
    pub fn with_kid(mut self, kid: String) -> Self {
        self.kid = kid;
        self
    }

    /// The one algorithm this key verifies.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` over `signing_input` with this key's algorithm.
    ///
    /// The signature must have the exact length the algorithm implies
    /// (64 bytes for `EdDSA` and `ES256`, the modulus length for `RS256`).
    pub(crate) fn verify_signature(
        &self,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), Rejection> {
        let expected = match &self.public {
            PublicKey::Ed25519(_) | PublicKey::P256 { .. } => 64,
            PublicKey::Rsa { n, .. } => n.len(),
        };
        if signature.len() != expected {
            return Err(Rejection::BadSignature);
        }
        self.parsed
            .verify_sig(signing_input, signature)
            .map_err(|_| Rejection::BadSignature)
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.public == other.public
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

/// RSA public parameters acceptable for RS256: a 2048..=8192-bit odd modulus
/// and an odd exponent `3 <= e < 2^32`.
fn check_rsa_public(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    let Some(&top) = n.first() else {
        return Err(KeyError::InvalidKey("empty RSA modulus"));
    };
    if top == 0 {
        return Err(KeyError::InvalidKey("RSA modulus has a leading zero"));
    }
    // Exact bit length: (bytes - 1) * 8 + bits used in the top byte.
    // Invariant: `n` is non-empty (its first byte was just read), so the
    // subtraction cannot underflow.
    let bits = (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(KeyError::RsaKeySize);
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::InvalidKey("RSA modulus is even"));
    }
    match e {
        [] | [0, ..] => Err(KeyError::InvalidKey("RSA exponent is empty or not minimal")),
        _ if e.len() > 4 => Err(KeyError::InvalidKey("RSA exponent is too large")),
        [.., last] if last & 1 == 0 => Err(KeyError::InvalidKey("RSA exponent is even")),
        [1] => Err(KeyError::InvalidKey("RSA exponent is 1")),
        _ => Ok(()),
    }
}

/// The private key pair behind a [`SigningKey`].
enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key: Ed25519, P-256 or RSA (2048..=8192 bits).
///
/// The original PKCS#8 bytes are kept (for encrypted storage) in a buffer
/// that is zeroized on drop; AWS-LC frees its own copy of the key with
/// `OPENSSL_free`, which cleanses memory. `Debug` shows only the key id and
/// the algorithm.
pub struct SigningKey {
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
    verifying: VerifyingKey,
}

/// The header [`SigningKey::sign_jwt`] writes, member order fixed.
#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

impl SigningKey {
    /// Generates a fresh key for `alg`: Ed25519, P-256, or RSA 2048 bits.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the library fails to generate or encode the key.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let pkcs8: Zeroizing<Vec<u8>> = match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Crypto)?;
                let doc = pair.to_pkcs8().map_err(|_| KeyError::Crypto)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Crypto)?;
                let doc = pair.to_pkcs8v1().map_err(|_| KeyError::Crypto)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
            Algorithm::RS256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Crypto)?;
                let doc: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    pair.as_der().map_err(|_| KeyError::Crypto)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
        };
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Loads an unencrypted PKCS#8 (v1 or v2) DER private key, detecting
    /// Ed25519, P-256 or RSA from its algorithm identifier.
    ///
    /// # Errors
    /// [`KeyError::UnsupportedKeyType`] for other algorithms or curves,
    /// [`KeyError::RsaKeySize`] for RSA moduli outside 2048..=8192 bits,
    /// [`KeyError::InvalidKey`] for anything malformed or inconsistent.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let kind = der::pkcs8_kind(der).map_err(|e| match e {
            Pkcs8Error::Malformed(why) => KeyError::InvalidKey(why),
            Pkcs8Error::Unsupported(why) => KeyError::UnsupportedKeyType(why),
        })?;
        let (pair, public) = match kind {
            Pkcs8Kind::Ed25519 => {
                // Accepts v1 (as written by `openssl genpkey`) and v2; a v2
                // public key is checked against the private key.
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| KeyError::InvalidKey("invalid Ed25519 PKCS#8 key"))?;
                let x = <[u8; 32]>::try_from(pair.public_key().as_ref())
                    .map_err(|_| KeyError::InvalidKey("unexpected Ed25519 public key length"))?;
                (Pair::Ed25519(pair), PublicKey::Ed25519(x))
            }
            Pkcs8Kind::P256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| KeyError::InvalidKey("invalid P-256 PKCS#8 key"))?;
                let public = match pair.public_key().as_ref() {
                    [0x04, xy @ ..] if xy.len() == 64 => {
                        // Invariant: `xy` is 64 bytes (guard above), so
                        // `split_at(32)` is in bounds.
                        let (x, y) = xy.split_at(32);
                        PublicKey::P256 {
                            x: <[u8; 32]>::try_from(x)
                                .map_err(|_| KeyError::InvalidKey("bad P-256 point"))?,
                            y: <[u8; 32]>::try_from(y)
                                .map_err(|_| KeyError::InvalidKey("bad P-256 point"))?,
                        }
                    }
                    _ => return Err(KeyError::InvalidKey("unexpected P-256 public key encoding")),
                };
                (Pair::P256(pair), public)
            }
            Pkcs8Kind::Rsa => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| match e.description_() {
                    "TooSmall" | "TooLarge" => KeyError::RsaKeySize,
                    _ => KeyError::InvalidKey("invalid RSA PKCS#8 key"),
                })?;
                let (n, e) = der::rsa_public_key(pair.public_key().as_ref())
                    .ok_or(KeyError::InvalidKey("unexpected RSA public key encoding"))?;
                (Pair::Rsa(pair), PublicKey::Rsa { n, e })
            }
        };
        let verifying = VerifyingKey::from_public(public)?;
        Ok(Self {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
            verifying,
        })
    }

    /// Loads a strict `-----BEGIN PRIVATE KEY-----` PEM document (RFC 7468);
    /// see [`SigningKey::from_pkcs8_der`].
    ///
    /// # Errors
    /// [`KeyError::InvalidPem`] for anything but strict PKCS#8 PEM, then as
    /// [`SigningKey::from_pkcs8_der`].
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem::decode_private_key(pem).map_err(KeyError::InvalidPem)?;
        Self::from_pkcs8_der(&der)
    }

    /// The PKCS#8 DER bytes the key was loaded from (or generated as).
    ///
    /// # Errors
    /// Currently infallible; the `Result` leaves room for keys that cannot
    /// be exported.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        Ok(self.pkcs8.clone())
    }

    /// The one algorithm this key signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.verifying.alg
    }

    /// The matching public key; its `kid` is the RFC 7638 thumbprint.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying.clone()
    }

    /// Signs `message` with this key's algorithm, returning the JWS
    /// signature bytes (ES256 in the fixed `r || s` form).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Ed25519(pair) => pair
                .try_sign(message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto),
            Pair::P256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto),
            Pair::Rsa(pair) => {
                // Invariant: `RsaKeyPair::sign` requires the buffer to be
                // exactly `public_modulus_len()` bytes, which it is.
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| KeyError::Crypto)?;
                Ok(signature)
            }
        }
    }

    /// Signs a JWT with header `{"alg","kid","typ"}` and `claims` as payload.
    ///
    /// The claims are first checked with the same rules [`super::verify`]
    /// applies, and the token must fit in [`MAX_TOKEN_BYTES`], so every token
    /// this returns is one this module accepts.
    ///
    /// # Errors
    /// [`KeyError::InvalidClaims`], [`KeyError::TokenTooLarge`],
    /// [`KeyError::Crypto`].
    pub fn sign_jwt(
        &self,
        kid: &str,
        typ: &str,
        claims: &Map<String, Value>,
    ) -> Result<String, KeyError> {
        Claims::from_map(claims.clone()).map_err(KeyError::InvalidClaims)?;
        let header = serde_json::to_vec(&OutHeader {
            alg: self.algorithm().name(),
            kid,
            typ,
        })
        .map_err(|_| KeyError::InvalidClaims("header is not serializable"))?;
        let payload =
            serde_json::to_vec(claims).map_err(|_| KeyError::InvalidClaims("not serializable"))?;
        let mut token = b64::encode(&header);
        token.push('.');
        token.push_str(&b64::encode(&payload));
        // Every signature here is at most 1024 bytes (RSA-8192), 1366 chars.
        if token.len() + 1 > MAX_TOKEN_BYTES {
            return Err(KeyError::TokenTooLarge);
        }
        let signature = self.sign_raw(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64::encode(&signature));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(KeyError::TokenTooLarge);
        }
        Ok(token)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.verifying.kid)
            .field("alg", &self.verifying.alg)
            .finish_non_exhaustive()
    }
}

/// The verifier's trusted keys, by `kid`.
///
/// Lookup is exact string equality; a `kid` is never interpreted (no paths,
/// no URLs, no queries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeySet {
    /// An empty key set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` under its `kid`, returning the key it replaces, if any.
    pub fn insert(&mut self, key: VerifyingKey) -> Option<VerifyingKey> {
        self.keys.insert(key.kid.clone(), key)
    }

    /// Removes the key with this `kid`, returning it.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        self.keys.remove(kid)
    }

    /// The key with this `kid`.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, ordered by `kid`.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values()
    }

    /// The set as an RFC 7517 JWK Set, `{"keys":[...]}`, ordered by `kid`.
    #[must_use]
    pub fn to_jwks(&self) -> Value {
        let keys: Vec<Value> = self.iter().map(VerifyingKey::to_jwk).collect();
        let mut set = Map::new();
        set.insert("keys".to_owned(), Value::Array(keys));
        Value::Object(set)
    }

    /// Reads an RFC 7517 JWK Set; every key must be acceptable to
    /// [`VerifyingKey::from_jwk`] and `kid`s must be unique.
    ///
    /// # Errors
    /// [`KeyError::InvalidJwk`] (or the key's own error) on the first problem.
    pub fn from_jwks(jwks: &Value) -> Result<Self, KeyError> {
        let keys = jwks
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or(KeyError::InvalidJwk("JWK Set needs a \"keys\" array"))?;
        let mut set = Self::new();
        for jwk in keys {
            if set.insert(VerifyingKey::from_jwk(jwk)?).is_some() {
                return Err(KeyError::InvalidJwk("duplicate kid in JWK Set"));
            }
        }
        Ok(set)
    }
}

impl<'a> IntoIterator for &'a KeySet {
    type Item = &'a VerifyingKey;
    type IntoIter = std::collections::btree_map::Values<'a, String, VerifyingKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.values()
    }
}

impl FromIterator<VerifyingKey> for KeySet {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut set = Self::new();
        for key in iter {
            set.insert(key);
        }
        set
    }
}
