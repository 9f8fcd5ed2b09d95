//! Typed JWT claims (RFC 7519 section 4.1) and the policy that checks them.

use serde_json::{Map, Value};

use super::rejection::Rejection;

/// Default clock-skew allowance, in seconds, for `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: i64 = 60;

/// The claims of a verified token.
///
/// Registered claims are typed; every other member is kept in `other`.
/// Parsing is strict: `exp`, `nbf`, `iat` must be JSON integers that fit in
/// `i64` (no floats, no strings); `iss`, `sub`, `jti`, `client_id` must be
/// strings; `aud` must be a string or an array of strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// `iss`: the issuer.
    pub iss: Option<String>,
    /// `sub`: the subject.
    pub sub: Option<String>,
    /// `aud`: the audiences; a single string becomes a one-element list and
    /// an absent claim an empty one.
    pub aud: Vec<String>,
    /// `exp`: expiry, unix seconds.
    pub exp: Option<i64>,
    /// `nbf`: not-before, unix seconds.
    pub nbf: Option<i64>,
    /// `iat`: issued-at, unix seconds.
    pub iat: Option<i64>,
    /// `jti`: the token identifier.
    pub jti: Option<String>,
    /// `client_id` (RFC 8693 section 4.3, RFC 9068): the OAuth client.
    pub client_id: Option<String>,
    /// Every other member, unchanged.
    pub other: Map<String, Value>,
}

impl Claims {
    /// Types the members of a claims object, moving the rest to `other`.
    pub(crate) fn from_map(mut map: Map<String, Value>) -> Result<Self, &'static str> {
        Ok(Self {
            iss: take_string(&mut map, "iss", "iss is not a string")?,
            sub: take_string(&mut map, "sub", "sub is not a string")?,
            aud: take_audience(&mut map)?,
            exp: take_int(&mut map, "exp", "exp is not an integer")?,
            nbf: take_int(&mut map, "nbf", "nbf is not an integer")?,
            iat: take_int(&mut map, "iat", "iat is not an integer")?,
            jti: take_string(&mut map, "jti", "jti is not a string")?,
            client_id: take_string(&mut map, "client_id", "client_id is not a string")?,
            other: map,
        })
    }

    /// The claims as a JSON object, suitable for [`super::SigningKey::sign_jwt`].
    ///
    /// Typed fields win over same-named members of `other`. `aud` is written
    /// as a string when it has exactly one element, as an array when it has
    /// several, and omitted when empty.
    #[must_use]
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = self.other.clone();
        for name in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id"] {
            map.remove(name);
        }
        let strings = [
            ("iss", &self.iss),
            ("sub", &self.sub),
            ("jti", &self.jti),
            ("client_id", &self.client_id),
        ];
        for (name, value) in strings {
            if let Some(v) = value {
                map.insert(name.to_owned(), Value::String(v.clone()));
            }
        }
        for (name, value) in [("exp", self.exp), ("nbf", self.nbf), ("iat", self.iat)] {
            if let Some(v) = value {
                map.insert(name.to_owned(), Value::Number(v.into()));
            }
        }
        match self.aud.as_slice() {
            [] => {}
            [one] => {
                map.insert("aud".to_owned(), Value::String(one.clone()));
            }
            many => {
                let list = many.iter().cloned().map(Value::String).collect();
                map.insert("aud".to_owned(), Value::Array(list));
            }
        }
        map
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    name: &str,
    err: &'static str,
) -> Result<Option<String>, &'static str> {
    match map.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err),
    }
}

fn take_int(
    map: &mut Map<String, Value>,
    name: &str,
    err: &'static str,
) -> Result<Option<i64>, &'static str> {
    match map.remove(name) {
        None => Ok(None),
        // `as_i64` is `None` for floats (`1.0`, `1e3`) and for integers
        // beyond `i64::MAX`.
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(err),
        Some(_) => Err(err),
    }
}

fn take_audience(map: &mut Map<String, Value>) -> Result<Vec<String>, &'static str> {
    const ERR: &str = "aud is not a string or an array of strings";
    match map.remove("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ERR),
            })
            .collect(),
        Some(_) => Err(ERR),
    }
}

/// What a relying party requires of a verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsPolicy {
    /// Required exact `iss`.
    pub issuer: String,
    /// An audience `aud` must contain...
    pub audience: String,
    /// ...or one of these (audiences of individual gate routes, which then
    /// require their own audience of the tokens they admit).
    pub also_audiences: Vec<String>,
    /// Clock-skew allowance in seconds for `exp` and `nbf` (default
    /// [`DEFAULT_LEEWAY_SECS`]); negative values count as zero.
    pub leeway_secs: i64,
    /// Whether a token without `exp` is refused (default `true`).
    pub require_exp: bool,
}

impl ClaimsPolicy {
    /// A policy for `issuer` and `audience` with the default leeway and
    /// `exp` required.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            also_audiences: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            require_exp: true,
        }
    }

    /// Checks `claims` at unix time `now`, in this order:
    ///
    /// 1. `exp`: refused with [`Rejection::Expired`] when
    ///    `now - leeway >= exp` (RFC 7519: the current time must be before
    ///    `exp`); absent while required is [`Rejection::Malformed`];
    /// 2. `nbf`: refused with [`Rejection::NotYetValid`] when
    ///    `now + leeway < nbf`;
    /// 3. `iss` must equal the issuer, else [`Rejection::WrongIssuer`];
    /// 4. `aud` must contain the audience or one of `also_audiences`, else
    ///    [`Rejection::WrongAudience`].
    ///
    /// `iat` is not checked. Arithmetic saturates, so extreme values cannot
    /// overflow.
    ///
    /// # Errors
    /// The first failed check, as above.
    pub fn check(&self, claims: &Claims, now: i64) -> Result<(), Rejection> {
        let leeway = self.leeway_secs.max(0);
        match claims.exp {
            Some(exp) if now.saturating_sub(leeway) >= exp => return Err(Rejection::Expired),
            None if self.require_exp => return Err(Rejection::Malformed("missing exp claim")),
            Some(_) | None => {}
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(leeway) < nbf
        {
            return Err(Rejection::NotYetValid);
        }
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(Rejection::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience)
            && !self.also_audiences.iter().any(|a| claims.aud.contains(a))
        {
            return Err(Rejection::WrongAudience);
        }
        Ok(())
    }
}
