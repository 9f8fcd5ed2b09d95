//! One access event: a gate decision as investigators will read it, with
//! every client-controlled field cut to [`limits`] (so a flood of huge paths
//! costs no more than a flood of small ones).

use serde::Serialize;
use tally_core::flood::Aggregate;
use tally_core::gate::Examined;
use tally_core::verdict::Verdict;

/// One decision, as investigators will read it.
#[derive(Clone, Debug, Serialize)]
pub struct AccessEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Client address.
    pub client_ip: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Token subject, when known.
    pub subject: Option<String>,
    /// Token id, when known.
    pub token_id: Option<String>,
    /// Signing key id, when known.
    pub kid: Option<String>,
    /// Route (proxy prefix), or `check` for the decision endpoint.
    pub route: String,
    /// HTTP method of the original request.
    pub method: String,
    /// Path of the original request.
    pub path: String,
    /// Data categories the route returns.
    pub data: Vec<String>,
    /// The verdict code.
    pub verdict: &'static str,
    /// Whether the request went on (monitor mode lets refusals through).
    pub passed: bool,
    /// Decision time in microseconds.
    pub latency_us: u64,
    /// For a request refused before its token decided anything (a blocked
    /// address or device): what the token alone got when examined for the
    /// record (`{"verdict": "not_issued"}` for a forged one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examined: Option<Examined>,
    /// Why a refusal was made, when it says more than the verdict (never
    /// secret material).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    /// The upstream's response status, for requests the gate forwarded
    /// (`None` for `/v1/check`, where nginx forwards, and for refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// A resource server asked about the token (introspection); the request
    /// did not use it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inquiry: bool,
    /// For an aggregate row: how many refusals of this actor, verdict and
    /// token it stands for (the request fields are the first one's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For an aggregate row: when the last of them was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
}

impl AccessEvent {
    /// What the event costs in the queue (its strings, and a fixed part).
    pub fn approx_bytes(&self) -> u64 {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        (256 + opt(&self.client_ip)
            + opt(&self.device)
            + opt(&self.subject)
            + opt(&self.token_id)
            + opt(&self.kid)
            + self.route.len()
            + self.method.len()
            + self.path.len()
            + self
                .examined
                .map_or(0, |e| 32 + e.detail.map_or(0, str::len))
            + self.data.iter().map(|d| d.len() + 8).sum::<usize>()) as u64
    }

    /// The row of an aggregate of refusals.
    pub(crate) fn of_aggregate(a: Aggregate) -> AccessEvent {
        AccessEvent {
            at_ms: a.first_ms,
            client_ip: a.client_ip,
            device: a.device,
            subject: a.sample.subject,
            token_id: a.token_id,
            kid: a.sample.kid,
            route: if a.overflow {
                "-".into()
            } else {
                a.sample.route
            },
            method: a.sample.method,
            path: a.sample.path,
            data: a.sample.data,
            verdict: a.verdict,
            passed: a.passed,
            latency_us: 0,
            examined: a.examined,
            detail: a
                .overflow
                .then_some("counted per verdict: too many actors in this second"),
            upstream_status: None,
            inquiry: false,
            count: Some(a.count),
            last_ms: Some(a.last_ms),
        }
    }

    /// How many decisions this row stands for.
    pub fn decisions(&self) -> u64 {
        self.count.unwrap_or(1)
    }
}

/// How much of each client-controlled field an access event keeps. A longer
/// value is cut at a character boundary and marked with the number of bytes
/// left out (`…[+N bytes]`), so that a flood of huge paths or device ids
/// costs the log and its queue no more than a flood of small ones.
pub mod limits {
    /// The request path (and query).
    pub const PATH: usize = 1024;
    /// The HTTP method.
    pub const METHOD: usize = 16;
    /// Device id, subject, token id and key id (the last three come from a
    /// token, which a forger chooses).
    pub const FIELD: usize = 256;
}

/// `s`, cut to at most `max` bytes, plus a marker saying how much was left
/// out and a digest of the whole value (so that values cut to the same
/// prefix still count as distinct, for the detector and for a report).
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let tag: String = d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}…[+{} bytes, sha256 {tag}]", &s[..end], s.len() - end)
}

/// The request a decision was made for, as the access log keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// When it arrived, in Unix milliseconds: the instant every other fact
    /// about it (the decision, its log line, the detector) uses.
    pub at_ms: i64,
    /// Client address.
    pub client_ip: Option<std::net::IpAddr>,
    /// Device id.
    pub device: Option<&'a str>,
    /// Route (proxy prefix), or the endpoint's name.
    pub route: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Path (normalised, when it could be).
    pub path: &'a str,
    /// Data categories the route returns.
    pub data: &'a [String],
}

/// Builds an event from a decision about `request`; `passed` says whether
/// the request went on, `latency` how long deciding took.
pub fn event(
    decision: &tally_core::gate::Decision,
    request: &Request<'_>,
    passed: bool,
    latency: std::time::Duration,
) -> AccessEvent {
    let Request {
        at_ms,
        client_ip,
        device,
        route,
        method,
        path,
        data,
    } = *request;
    let field = |s: Option<&str>| s.map(|s| bounded(s, limits::FIELD));
    let (verdict, subject, token_id, kid, examined) = match decision {
        Ok(t) => (
            Verdict::Ok,
            field(Some(t.subject())),
            field(Some(t.token_id())),
            field(Some(t.kid())),
            None,
        ),
        Err(r) => (
            r.verdict(),
            field(r.subject.as_deref()),
            field(r.token_id.as_deref()),
            field(r.kid.as_deref()),
            r.examined,
        ),
    };
    AccessEvent {
        at_ms,
        client_ip: client_ip.map(|i| i.to_string()),
        device: field(device),
        subject,
        token_id,
        kid,
        route: bounded(route, limits::PATH),
        method: bounded(method, limits::METHOD),
        path: bounded(path, limits::PATH),
        data: data.to_vec(),
        verdict: verdict.code(),
        passed,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        upstream_status: None,
        examined,
        detail: decision.as_ref().err().and_then(|r| r.detail),
        inquiry: false,
        count: None,
        last_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_keeps_values_apart() {
        assert_eq!(bounded("short", 16), "short");
        let long = "é".repeat(100);
        let cut = bounded(&long, 11);
        assert!(cut.starts_with("ééééé…[+190 bytes, sha256 "), "{cut}");
        assert!(cut.len() < 64);
        let (a, b) = ("x".repeat(300) + "a", "x".repeat(300) + "b");
        assert_ne!(bounded(&a, 256), bounded(&b, 256));
        let huge = bounded(&"y".repeat(100_000), limits::PATH);
        assert!(huge.len() <= limits::PATH + 48, "{}", huge.len());
    }
}
