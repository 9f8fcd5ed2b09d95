//! JWK (RFC 7517, RFC 7518 section 6, RFC 8037 section 2) import and export
//! of public signature keys, and RFC 7638 thumbprints.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use super::b64;
use super::key::{KeyError, PublicKey, VerifyingKey};

/// JWK members that carry private or symmetric key material. A public JWK
/// containing any of them is refused: it means a secret is being published.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl VerifyingKey {
    /// The RFC 7638 JWK thumbprint with SHA-256, base64url without padding.
    ///
    /// Hashes the required members only, lexicographically ordered, without
    /// whitespace: `{"crv","kty","x"}` (OKP), `{"crv","kty","x","y"}` (EC),
    /// `{"e","kty","n"}` (RSA).
    #[must_use]
    pub fn thumbprint(&self) -> String {
        let canonical = thumbprint_input(&self.public);
        b64::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The key as an RFC 7517 JWK with `kty`, `crv`/`x`/`y` or `n`/`e`, plus
    /// `kid`, `alg` and `"use":"sig"`.
    #[must_use]
    pub fn to_jwk(&self) -> Value {
        let mut jwk = Map::new();
        let mut put = |name: &str, value: String| {
            jwk.insert(name.to_owned(), Value::String(value));
        };
        match &self.public {
            PublicKey::Ed25519(x) => {
                put("kty", "OKP".to_owned());
                put("crv", "Ed25519".to_owned());
                put("x", b64::encode(x));
            }
            PublicKey::P256 { x, y } => {
                put("kty", "EC".to_owned());
                put("crv", "P-256".to_owned());
                put("x", b64::encode(x));
                put("y", b64::encode(y));
            }
            PublicKey::Rsa { n, e } => {
                put("kty", "RSA".to_owned());
                put("n", b64::encode(n));
                put("e", b64::encode(e));
            }
        }
        put("kid", self.kid.clone());
        put("alg", self.alg.name().to_owned());
        put("use", "sig".to_owned());
        Value::Object(jwk)
    }

    /// Reads a public JWK: `OKP`/`Ed25519`, `EC`/`P-256` or `RSA`
    /// (2048..=8192 bits).
    ///
    /// Strict: members are base64url without padding; EC coordinates are
    /// exactly 32 bytes and must be on the curve; RSA `n`/`e` have no leading
    /// zero octets (RFC 7518 section 2, `Base64urlUInt`). Optional `alg` must be
    /// the algorithm the key type implies (`EdDSA`, `ES256`, `RS256`), `use`
    /// must be `sig`, and `key_ops` must include `verify`. A JWK with private
    /// members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) is refused. `kid`,
    /// if present, must be a non-empty string; otherwise the thumbprint is used.
    ///
    /// # Errors
    /// [`KeyError::InvalidJwk`], [`KeyError::UnsupportedKeyType`],
    /// [`KeyError::RsaKeySize`] or [`KeyError::InvalidKey`].
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let obj = jwk
            .as_object()
            .ok_or(KeyError::InvalidJwk("JWK is not a JSON object"))?;
        if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(KeyError::InvalidJwk("JWK contains private key material"));
        }
        let public = match string_member(obj, "kty")? {
            Some("OKP") => {
                expect_crv(obj, "Ed25519")?;
                PublicKey::Ed25519(bytes_member::<32>(obj, "x")?)
            }
            Some("EC") => {
                expect_crv(obj, "P-256")?;
                PublicKey::P256 {
                    x: bytes_member::<32>(obj, "x")?,
                    y: bytes_member::<32>(obj, "y")?,
                }
            }
            Some("RSA") => PublicKey::Rsa {
                n: uint_member(obj, "n")?,
                e: uint_member(obj, "e")?,
            },
            Some("oct") => {
                return Err(KeyError::UnsupportedKeyType(
                    "symmetric keys are not accepted",
                ));
            }
            Some(_) => return Err(KeyError::UnsupportedKeyType("unknown JWK kty")),
            None => return Err(KeyError::InvalidJwk("missing kty")),
        };
        let mut key = Self::from_public(public)?;

        if let Some(alg) = string_member(obj, "alg")?
            && alg != key.alg.name()
        {
            return Err(KeyError::InvalidJwk("alg does not match the key type"));
        }
        if let Some(usage) = string_member(obj, "use")?
            && usage != "sig"
        {
            return Err(KeyError::InvalidJwk("use is not \"sig\""));
        }
        if let Some(ops) = obj.get("key_ops") {
            let ops = ops
                .as_array()
                .ok_or(KeyError::InvalidJwk("key_ops is not an array"))?;
            let mut verify = false;
            for op in ops {
                match op.as_str() {
                    Some("verify") => verify = true,
                    Some(_) => {}
                    None => return Err(KeyError::InvalidJwk("key_ops member is not a string")),
                }
            }
            if !verify {
                return Err(KeyError::InvalidJwk("key_ops does not include \"verify\""));
            }
        }
        if let Some(kid) = string_member(obj, "kid")? {
            if kid.is_empty() {
                return Err(KeyError::InvalidJwk("empty kid"));
            }
            kid.clone_into(&mut key.kid);
        }
        Ok(key)
    }
}

/// The RFC 7638 section 3.2 canonical JSON of the required members. Every
/// value is base64url or a fixed name, so nothing needs escaping.
pub(crate) fn thumbprint_input(public: &PublicKey) -> String {
    match public {
        PublicKey::Ed25519(x) => {
            format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64::encode(x)
            )
        }
        PublicKey::P256 { x, y } => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64::encode(x),
            b64::encode(y)
        ),
        PublicKey::Rsa { n, e } => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            b64::encode(e),
            b64::encode(n)
        ),
    }
}

/// An optional member that, when present, must be a string.
fn string_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::InvalidJwk("JWK member is not a string")),
    }
}

fn expect_crv(obj: &Map<String, Value>, crv: &str) -> Result<(), KeyError> {
    match string_member(obj, "crv")? {
        Some(c) if c == crv => Ok(()),
        Some(_) => Err(KeyError::UnsupportedKeyType("unsupported curve")),
        None => Err(KeyError::InvalidJwk("missing crv")),
    }
}

/// A required base64url member of exactly `N` bytes.
fn bytes_member<const N: usize>(obj: &Map<String, Value>, name: &str) -> Result<[u8; N], KeyError> {
    let text = string_member(obj, name)?.ok_or(KeyError::InvalidJwk("missing key member"))?;
    b64::decode_array::<N>(text.as_bytes())
        .map_err(|_| KeyError::InvalidJwk("key member is not strict base64url of the right length"))
}

/// A required `Base64urlUInt` member: non-empty, no leading zero octet.
fn uint_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = string_member(obj, name)?.ok_or(KeyError::InvalidJwk("missing key member"))?;
    let bytes = b64::decode(text.as_bytes())
        .map_err(|_| KeyError::InvalidJwk("key member is not strict base64url"))?;
    match bytes.first() {
        None => Err(KeyError::InvalidJwk("empty integer")),
        Some(0) => Err(KeyError::InvalidJwk("integer has a leading zero octet")),
        Some(_) => Ok(bytes),
    }
}
