//! The request target a decision is made on.
//!
//! A gate that matches routes on the raw path can be walked around: the
//! upstream resolves `/public/../private/secret` (or `/public/%2e%2e/private`,
//! or `/public%2F..%2Fprivate`) to `/private/secret` while the gate decided it
//! as `/public`. tally therefore decides on one normal form of the path and
//! forwards exactly that form, so the upstream serves what was decided.
//!
//! [`RequestTarget::parse`] is the one normaliser (the proxy, `/v1/check`'s
//! `X-Original-URI` and the configuration's route prefixes all go through
//! it):
//!
//! * only origin-form targets (`/path?query`); no fragment;
//! * percent-encoded unreserved characters (RFC 3986 section 2.3) are
//!   decoded, every other percent-encoding is kept with upper-case hex
//!   (section 6.2.2.1);
//! * runs of `/` are merged into one;
//! * dot segments are removed (section 5.2.4), after decoding, so `%2e%2e`
//!   is `..`;
//! * refused, because some upstream would read them otherwise than tally
//!   does: an encoded `/`, `\` or `%` (decoded once more, or split as a
//!   path, by some servers), a `\` anywhere, NUL or any byte outside visible
//!   ASCII, a `..` that climbs above the root, a dot segment carrying path
//!   parameters (`..;x`, which servlet containers read as `..`), and targets
//!   longer than [`MAX_TARGET`].
//!
//! The query is kept byte for byte (it does not choose the route).
//!
//! Route prefixes match whole segments ([`RequestTarget::within`]):
//! `/public` covers `/public` and `/public/x`, never `/publicity`; a
//! segment's path parameters (`;…`) are ignored for the match, so
//! `/private;x/secret` is still under `/private`.
//!
//! ```
//! use tally_core::target::RequestTarget;
//! let t = RequestTarget::parse("/public/%2e%2e//private/%73ecret?x=1").unwrap();
//! assert_eq!(t.path(), "/private/secret");
//! assert_eq!(t.as_str(), "/private/secret?x=1");
//! assert!(t.within("/private"));
//! assert!(!t.within("/priv"));
//! assert!(RequestTarget::parse("/public%2F..%2Fprivate").is_err());
//! ```

use std::fmt;

/// The longest request target accepted, in bytes (what nginx accepts in a
/// request line by default is 8 KiB, headers included).
pub const MAX_TARGET: usize = 8192;

/// Why a request target cannot be normalised safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// Empty, or not of the form `/path[?query]` (absolute or `*` form).
    NotOriginForm,
    /// Longer than [`MAX_TARGET`].
    TooLong,
    /// A byte outside visible ASCII (NUL, control, space, non-ASCII), or `#`.
    BadByte,
    /// A `%` not followed by two hexadecimal digits.
    BadPercent,
    /// An encoded `/`, `\`, `%` or NUL: some upstream would decode it again.
    EncodedDelimiter,
    /// A `\`: some upstreams read it as `/`.
    Backslash,
    /// A `..` above the root.
    AboveRoot,
    /// A dot segment with path parameters (`..;x`).
    DotParameters,
    /// Two descriptions of one original request disagree (`X-Original-URI`
    /// and `X-Forwarded-Uri`, say): nobody can tell which the proxy meant.
    Conflicting,
}

impl TargetError {
    /// A stable code for logs and error bodies.
    pub fn code(self) -> &'static str {
        match self {
            TargetError::NotOriginForm => "target_not_origin_form",
            TargetError::TooLong => "target_too_long",
            TargetError::BadByte => "target_bad_byte",
            TargetError::BadPercent => "target_bad_percent",
            TargetError::EncodedDelimiter => "target_encoded_delimiter",
            TargetError::Backslash => "target_backslash",
            TargetError::AboveRoot => "target_above_root",
            TargetError::DotParameters => "target_dot_parameters",
            TargetError::Conflicting => "target_conflicting",
        }
    }
}

impl TargetError {
    /// What is wrong, for the client and the access log.
    pub fn message(self) -> &'static str {
        match self {
            TargetError::NotOriginForm => "the request target must be a path starting with /",
            TargetError::TooLong => "the request target is too long",
            TargetError::BadByte => {
                "the request target holds a byte outside visible ASCII, or a fragment"
            }
            TargetError::BadPercent => {
                "a % in the request target is not followed by two hex digits"
            }
            TargetError::EncodedDelimiter => {
                "the path holds an encoded /, \\, % or NUL, which upstreams read differently"
            }
            TargetError::Backslash => "the path holds a \\, which some upstreams read as /",
            TargetError::AboveRoot => "the path climbs above the root with ..",
            TargetError::DotParameters => "the path holds a dot segment with parameters (..;)",
            TargetError::Conflicting => {
                "two headers describe the original request differently (X-Original-* and X-Forwarded-*)"
            }
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TargetError {}

/// A request target in normal form: built only by [`RequestTarget::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTarget {
    /// The normalised path, then the query (with its `?`) when there is one.
    text: String,
    /// Where the path ends in `text`.
    path_len: usize,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A segment's name without its path parameters (`a;b=c` → `a`).
fn bare(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

impl RequestTarget {
    /// Normalises `raw` (a request target in origin form), or says why it
    /// cannot be normalised safely.
    pub fn parse(raw: &str) -> Result<RequestTarget, TargetError> {
        if raw.len() > MAX_TARGET {
            return Err(TargetError::TooLong);
        }
        let bytes = raw.as_bytes();
        if bytes
            .iter()
            .any(|&b| !(0x21..0x7f).contains(&b) || b == b'#')
        {
            return Err(TargetError::BadByte);
        }
        let (path, query) = match raw.find('?') {
            Some(i) => (&raw[..i], Some(&raw[i..])),
            None => (raw, None),
        };
        if !path.starts_with('/') {
            return Err(TargetError::NotOriginForm);
        }
        // Decode unreserved characters; keep the rest encoded, upper-case.
        let pb = path.as_bytes();
        let mut decoded = String::with_capacity(path.len());
        let mut i = 0;
        while i < pb.len() {
            match pb[i] {
                b'%' => {
                    let (Some(h), Some(l)) = (
                        pb.get(i + 1).copied().and_then(hex),
                        pb.get(i + 2).copied().and_then(hex),
                    ) else {
                        return Err(TargetError::BadPercent);
                    };
                    let v = h << 4 | l;
                    if matches!(v, b'/' | b'\\' | b'%' | 0) {
                        return Err(TargetError::EncodedDelimiter);
                    }
                    if unreserved(v) {
                        decoded.push(v as char);
                    } else {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                    }
                    i += 3;
                }
                b'\\' => return Err(TargetError::Backslash),
                b => {
                    decoded.push(b as char);
                    i += 1;
                }
            }
        }
        // Segments: empty ones (merged slashes) and `.` go, `..` climbs.
        let trailing = decoded.ends_with('/');
        let mut out: Vec<&str> = Vec::new();
        let mut ends_in_dir = trailing;
        for seg in decoded.split('/').skip(1) {
            match seg {
                "" => {}
                "." => ends_in_dir = true,
                ".." => {
                    if out.pop().is_none() {
                        return Err(TargetError::AboveRoot);
                    }
                    ends_in_dir = true;
                }
                s if matches!(bare(s), "." | "..") => return Err(TargetError::DotParameters),
                s => {
                    out.push(s);
                    ends_in_dir = false;
                }
            }
        }
        if trailing {
            ends_in_dir = true;
        }
        let mut text = String::with_capacity(decoded.len() + query.map_or(0, str::len));
        for s in &out {
            text.push('/');
            text.push_str(s);
        }
        if out.is_empty() || ends_in_dir {
            text.push('/');
        }
        let path_len = text.len();
        if let Some(q) = query {
            text.push_str(q);
        }
        Ok(RequestTarget { text, path_len })
    }

    /// The normalised path.
    pub fn path(&self) -> &str {
        &self.text[..self.path_len]
    }

    /// The query, without its `?`, when there is one.
    pub fn query(&self) -> Option<&str> {
        self.text.get(self.path_len + 1..)
    }

    /// Path and query, as forwarded upstream.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path lies under `prefix`, segment by segment. `prefix` is
    /// itself a normalised path (see [`is_route_prefix`]); a trailing `/` in
    /// it asks for something below it. Path parameters of the path's
    /// segments are ignored.
    pub fn within(&self, prefix: &str) -> bool {
        prefix_covers(prefix, self.path())
    }
}

/// Whether `prefix` covers the normalised `path`, segment by segment (see
/// [`RequestTarget::within`]).
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (want, below) = match prefix.strip_suffix('/') {
        Some(p) => (p, true),
        None => (prefix, false),
    };
    let mut have = path.split('/').skip(1);
    for w in want.split('/').skip(1) {
        match have.next() {
            Some(h) if bare(h) == w => {}
            _ => return false,
        }
    }
    // `/public/` asks for the directory: `/public` alone is not below it.
    !below || path.len() > want.len()
}

/// Whether `prefix` may be a route prefix: a path in normal form (what
/// [`RequestTarget::parse`] gives back), without query or path parameters.
pub fn is_route_prefix(prefix: &str) -> bool {
    !prefix.contains(['?', ';']) && RequestTarget::parse(prefix).is_ok_and(|t| t.path() == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, TargetError> {
        RequestTarget::parse(raw).map(|t| t.as_str().to_string())
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("/", "/"),
            ("/a/b/c", "/a/b/c"),
            ("/a/b/", "/a/b/"),
            ("/a//b", "/a/b"),
            ("//a", "/a"),
            ("/a/./b", "/a/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/public/../private/secret", "/private/secret"),
            ("/public/%2e%2e/private/secret", "/private/secret"),
            ("/public/%2E./private/secret", "/private/secret"),
            ("/publicity/../private/secret", "/private/secret"),
            ("/x/../orders/1", "/orders/1"),
            ("/%6frders/1", "/orders/1"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("/..a/b", "/..a/b"),
            ("/a.../b", "/a.../b"),
            ("/a%20b", "/a%20b"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/a?b=../c", "/a?b=../c"),
            ("/a/../b?q=%2F", "/b?q=%2F"),
            ("/a?", "/a?"),
            ("/p;x/s", "/p;x/s"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refusals() {
        use TargetError::*;
        let cases = [
            ("", NotOriginForm),
            ("*", NotOriginForm),
            ("http://h/a", NotOriginForm),
            ("a/b", NotOriginForm),
            ("?a", NotOriginForm),
            ("/public%2F..%2Fprivate/secret", EncodedDelimiter),
            ("/a%2fb", EncodedDelimiter),
            ("/a%5cb", EncodedDelimiter),
            ("/a%25b", EncodedDelimiter),
            ("/a%00b", EncodedDelimiter),
            ("/public\\..\\private/secret", Backslash),
            ("/a%", BadPercent),
            ("/a%4", BadPercent),
            ("/a%zz", BadPercent),
            ("/a b", BadByte),
            ("/a\0b", BadByte),
            ("/a#b", BadByte),
            ("/é", BadByte),
            ("/a\x7f", BadByte),
            ("/..", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/%2e%2e/x", AboveRoot),
            ("/public/..;/private", DotParameters),
            ("/a/.;x/b", DotParameters),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw), Err(want), "{raw:?}");
        }
        assert_eq!(norm(&format!("/{}", "a".repeat(MAX_TARGET))), Err(TooLong));
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for raw in [
            "/a/./b/../c//d/",
            "/%7euser/%41%42",
            "/x/%c3%a9/..",
            "/p;x/../q?z",
        ] {
            let once = norm(raw).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{raw}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let t = |p: &str| RequestTarget::parse(p).unwrap();
        assert!(t("/public").within("/public"));
        assert!(t("/public/").within("/public"));
        assert!(t("/public/x").within("/public"));
        assert!(!t("/publicity/x").within("/public"));
        assert!(!t("/publicity").within("/public"));
        assert!(t("/public/x").within("/public/"));
        assert!(t("/public/").within("/public/"));
        assert!(!t("/public").within("/public/"));
        assert!(t("/anything").within("/"));
        assert!(t("/private;jsessionid=1/secret").within("/private"));
        assert!(t("/a/b/c").within("/a/b"));
        assert!(!t("/a/bc").within("/a/b"));
        assert!(!t("/a").within("/a/b"));
    }

    #[test]
    fn route_prefixes_are_normal_paths() {
        for ok in ["/", "/a", "/a/", "/api/v1", "/a%20b"] {
            assert!(is_route_prefix(ok), "{ok}");
        }
        for bad in [
            "", "a", "/a//b", "/a/../b", "/a?x", "/%61", "/a;b", "/a%2fb",
        ] {
            assert!(!is_route_prefix(bad), "{bad}");
        }
    }
}
