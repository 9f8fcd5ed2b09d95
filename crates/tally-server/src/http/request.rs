//! What a request says about itself, read once: the credentials it carries
//! (`Authorization: Bearer|DPoP`), the client's address (the right-most
//! address not in `trusted_proxies`), and the original request a gateway
//! describes (`X-Original-URI`, `X-Forwarded-Method`/`-Uri`). A handler
//! reads them into [`Facts`] when the request arrives, with the one instant
//! the whole decision is made at, and passes that down.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use tally_core::target::TargetError;
use tally_core::verdict::Verdict;

use crate::app::App;

/// A request's facts, read once when it arrives: every decision, log line
/// and detector observation about it uses these, never a second reading.
pub(super) struct Facts<'a> {
    /// The request's headers.
    pub(super) headers: &'a HeaderMap,
    /// Whether the peer is a trusted proxy (so its forwarding headers count).
    pub(super) via_proxy: bool,
    /// The client's address ([`client_ip`]).
    pub(super) client: Option<IpAddr>,
    /// The device id (the configured `device_header`), if sent.
    pub(super) device: Option<&'a str>,
    /// The token in `Authorization`, with its scheme, or the verdict for
    /// its absence or its shape.
    pub(super) credentials: Result<(Scheme, &'a [u8]), Verdict>,
    /// When the request arrived, in Unix milliseconds (the app's clock).
    pub(super) at_ms: i64,
    /// When the request arrived, for the decision's latency.
    pub(super) started: std::time::Instant,
}

impl<'a> Facts<'a> {
    /// Reads the facts of a request from `peer` with `headers`.
    pub(super) fn read(app: &App, headers: &'a HeaderMap, peer: Option<SocketAddr>) -> Facts<'a> {
        Facts {
            headers,
            via_proxy: from_trusted_proxy(app, peer),
            client: client_ip(app, peer, headers),
            device: headers
                .get(app.config.device_header.as_str())
                .and_then(|v| v.to_str().ok()),
            credentials: credentials(headers),
            at_ms: app.clock.now_ms(),
            started: std::time::Instant::now(),
        }
    }

    /// When the request arrived, in Unix seconds.
    pub(super) fn now(&self) -> i64 {
        self.at_ms.div_euclid(1000)
    }
}

/// The TCP peer of a request, from its extensions.
pub(super) fn peer_of(ext: &axum::http::Extensions) -> Option<SocketAddr> {
    ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// How the client presented its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP` (RFC 9449), with a `DPoP` proof header.
    Dpop,
}

/// The scheme and token of the `Authorization` header.
pub(super) fn credentials(headers: &HeaderMap) -> Result<(Scheme, &[u8]), Verdict> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Verdict::Missing);
    };
    if values.next().is_some() {
        return Err(Verdict::Malformed);
    }
    let bytes = value.as_bytes();
    let (scheme, token) = if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        (Scheme::Bearer, &bytes[7..])
    } else if bytes.len() > 5 && bytes[..5].eq_ignore_ascii_case(b"dpop ") {
        (Scheme::Dpop, &bytes[5..])
    } else {
        return Err(Verdict::Malformed);
    };
    if token.is_empty() || token.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(Verdict::Malformed);
    }
    Ok((scheme, token))
}

/// How a token reached the endpoint deciding it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Presented<'a> {
    /// In `Authorization`, with its scheme: the caller uses the token as its
    /// own credential (the gate, the admin API, logout).
    Header(Scheme, &'a [u8]),
    /// In the request body, by its holder (RFC 7009 revocation): a
    /// sender-constrained token needs a proof by its key in the `DPoP`
    /// header all the same.
    Body(&'a [u8]),
    /// In the request body, by a resource server asking about it (RFC 7662
    /// introspection): the caller does not hold the token's key, and the
    /// answer tells it the binding instead.
    Inquiry(&'a [u8]),
}

impl Presented<'_> {
    /// The token's bytes.
    pub(super) fn token(&self) -> &[u8] {
        match self {
            Presented::Header(_, t) | Presented::Body(t) | Presented::Inquiry(t) => t,
        }
    }
}

/// The request a token is used for: what a DPoP proof must name.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// HTTP method.
    pub method: String,
    /// Full URL (scheme, host, path; a query is ignored by the comparison).
    pub url: String,
}

impl Target {
    /// The target described by a request's headers: `Host` and `path`, and,
    /// only when the request comes through a trusted proxy (`via_proxy`),
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` (a client could otherwise
    /// make a proof stolen from another site look like one for this one).
    pub(super) fn from_headers(
        headers: &HeaderMap,
        method: &str,
        path: &str,
        via_proxy: bool,
    ) -> Target {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let fwd = |n: &str| if via_proxy { h(n) } else { None };
        let scheme = fwd("x-forwarded-proto").unwrap_or("http");
        let host = fwd("x-forwarded-host")
            .or_else(|| h("host"))
            .unwrap_or("localhost");
        Target {
            method: method.to_string(),
            url: format!("{scheme}://{host}{path}"),
        }
    }
}

/// The method and target of the request a decision is asked for, as the
/// proxy in front names them: nginx `auth_request` with `X-Original-Method`
/// and `X-Original-URI`, Caddy `forward_auth` (and Traefik) with
/// `X-Forwarded-Method` and `X-Forwarded-Uri`. A request that carries both
/// spellings with different values is refused: one of them came from the
/// client, and nobody can tell which.
pub(super) fn original_request(
    headers: &HeaderMap,
) -> Result<(Option<&str>, Option<&str>), TargetError> {
    let one = |a: &str, b: &str| -> Result<Option<&str>, TargetError> {
        let get = |n: &str| match headers.get(n) {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| TargetError::BadByte),
        };
        match (get(a)?, get(b)?) {
            (Some(x), Some(y)) if x != y => Err(TargetError::Conflicting),
            (x, y) => Ok(x.or(y)),
        }
    };
    Ok((
        one("x-original-method", "x-forwarded-method")?,
        one("x-original-uri", "x-forwarded-uri")?,
    ))
}

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most address of `X-Forwarded-For` (every such header, in
/// order) that is not itself a trusted proxy. Addresses to its left were
/// written by someone tally does not trust (the client, to begin with) and
/// are never read. If that right-most entry is not an address, nobody can
/// say who the client is, and the peer is taken.
pub(super) fn client_ip(
    app: &App,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let trusted = |ip: IpAddr| app.config.trusted_proxies.iter().any(|c| c.contains(ip));
    client_of(peer?.ip(), headers, trusted)
}

/// [`client_ip`], with the trusted proxies as a predicate.
fn client_of(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    if !trusted(peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    for entry in entries.into_iter().rev() {
        match parse_forwarded_addr(entry) {
            Some(ip) if trusted(ip) => continue,
            Some(ip) => return Some(ip),
            None => return Some(peer),
        }
    }
    Some(peer)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Whether the peer is one of the configured trusted proxies.
pub(super) fn from_trusted_proxy(app: &App, peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| {
        app.config
            .trusted_proxies
            .iter()
            .any(|c| c.contains(p.ip()))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(headers: &HeaderMap) -> Result<&[u8], Verdict> {
        credentials(headers).map(|(_, t)| t)
    }

    fn h(v: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for x in v {
            m.append(header::AUTHORIZATION, HeaderValue::from_str(x).unwrap());
        }
        m
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&h(&[])), Err(Verdict::Missing));
        assert_eq!(bearer(&h(&["Bearer a.b.c"])), Ok(&b"a.b.c"[..]));
        assert_eq!(bearer(&h(&["bearer a.b.c"])), Ok(&b"a.b.c"[..]));
        assert_eq!(bearer(&h(&["Basic abc"])), Err(Verdict::Malformed));
        assert_eq!(bearer(&h(&["Bearer "])), Err(Verdict::Malformed));
        assert_eq!(bearer(&h(&["Bearer a b"])), Err(Verdict::Malformed));
        assert_eq!(
            bearer(&h(&["Bearer a", "Bearer b"])),
            Err(Verdict::Malformed)
        );
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let xff = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = ip("10.0.0.1");
        let cases: [(&[&str], &str); 8] = [
            // Not from a trusted proxy: the header is never read.
            (&["203.0.113.1"], "192.0.2.9"),
            // What the client wrote, then what the proxy appended.
            (&["203.0.113.1, 198.51.100.7"], "198.51.100.7"),
            // Trusted hops on the right are skipped.
            (&["203.0.113.1, 198.51.100.7, 10.0.0.2"], "198.51.100.7"),
            // Several headers are one list, in order.
            (&["203.0.113.1", "198.51.100.7"], "198.51.100.7"),
            // Garbage where the client should be: nobody knows; the peer.
            (&["198.51.100.7, garbage"], "10.0.0.1"),
            // Ports are allowed.
            (&["[2001:db8::1]:443"], "2001:db8::1"),
            // Only trusted hops: the peer.
            (&["10.0.0.3"], "10.0.0.1"),
            (&[], "10.0.0.1"),
        ];
        for (i, (vals, want)) in cases.iter().enumerate() {
            let from = if i == 0 { ip("192.0.2.9") } else { peer };
            assert_eq!(
                client_of(from, &xff(vals), trusted),
                Some(ip(want)),
                "{vals:?}"
            );
        }
    }
}
