//! Verdicts: the gate's answer for one request, with stable reason codes.

/// Why a request was allowed or refused. The [`Verdict::code`] strings are a
/// stable interface: they appear in logs, metrics, HTTP headers and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed.
    Ok,
    /// No token where one is required.
    Missing,
    /// Not a well-formed compact JWS, bad base64url, bad JSON, over size limits.
    Malformed,
    /// `none`, an algorithm not allowed for the key, or forbidden header members.
    UnsupportedAlg,
    /// `kid` absent or not in the key set.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past, beyond the allowed skew.
    Expired,
    /// `nbf` is in the future, beyond the allowed skew.
    NotYetValid,
    /// `aud` does not name this service.
    WrongAudience,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// Forged: the signature is valid but the ledger has no record of this token.
    NotIssued,
    /// Forged: the ledger has a record for this token id, but not these bytes.
    Altered,
    /// Issued, then revoked.
    Revoked,
    /// Sender binding (DPoP) missing or wrong.
    BindingMismatch,
    /// The client is blocked by containment.
    BlockedActor,
    /// The decision cannot be made safely: fail closed.
    Unavailable,
}

impl Verdict {
    /// Every verdict, in table order.
    pub const ALL: [Verdict; 16] = [
        Verdict::Ok,
        Verdict::Missing,
        Verdict::Malformed,
        Verdict::UnsupportedAlg,
        Verdict::UnknownKey,
        Verdict::BadSignature,
        Verdict::Expired,
        Verdict::NotYetValid,
        Verdict::WrongAudience,
        Verdict::WrongIssuer,
        Verdict::NotIssued,
        Verdict::Altered,
        Verdict::Revoked,
        Verdict::BindingMismatch,
        Verdict::BlockedActor,
        Verdict::Unavailable,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Missing => "missing",
            Verdict::Malformed => "malformed",
            Verdict::UnsupportedAlg => "unsupported_alg",
            Verdict::UnknownKey => "unknown_key",
            Verdict::BadSignature => "bad_signature",
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not_yet_valid",
            Verdict::WrongAudience => "wrong_audience",
            Verdict::WrongIssuer => "wrong_issuer",
            Verdict::NotIssued => "not_issued",
            Verdict::Altered => "altered",
            Verdict::Revoked => "revoked",
            Verdict::BindingMismatch => "binding_mismatch",
            Verdict::BlockedActor => "blocked_actor",
            Verdict::Unavailable => "unavailable",
        }
    }

    /// Parses a stable code.
    pub fn from_code(code: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.code() == code)
    }

    /// The HTTP status the decision endpoint answers with: `200` allowed,
    /// `401` no usable credentials, `403` forged, revoked or blocked,
    /// `503` when the decision cannot be made.
    pub fn http_status(self) -> u16 {
        match self {
            Verdict::Ok => 200,
            Verdict::NotIssued
            | Verdict::Altered
            | Verdict::Revoked
            | Verdict::BlockedActor
            | Verdict::BindingMismatch => 403,
            Verdict::Unavailable => 503,
            _ => 401,
        }
    }

    /// True for the two verdicts that prove a signing key is in the wrong hands.
    pub fn is_forgery(self) -> bool {
        matches!(self, Verdict::NotIssued | Verdict::Altered)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for v in Verdict::ALL {
            assert!(seen.insert(v.code()), "duplicate code {}", v.code());
            assert_eq!(Verdict::from_code(v.code()), Some(v));
        }
        assert_eq!(Verdict::from_code("OK"), None);
    }

    #[test]
    fn statuses_follow_the_design() {
        assert_eq!(Verdict::Ok.http_status(), 200);
        for v in [Verdict::NotIssued, Verdict::Altered, Verdict::Revoked] {
            assert_eq!(v.http_status(), 403);
            assert_eq!(v.is_forgery(), v != Verdict::Revoked);
        }
        for v in [
            Verdict::Missing,
            Verdict::Malformed,
            Verdict::UnsupportedAlg,
            Verdict::UnknownKey,
            Verdict::BadSignature,
            Verdict::Expired,
            Verdict::NotYetValid,
            Verdict::WrongAudience,
            Verdict::WrongIssuer,
        ] {
            assert_eq!(v.http_status(), 401, "{v}");
        }
    }
}
