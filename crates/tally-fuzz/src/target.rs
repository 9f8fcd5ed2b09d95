//! The request-target normaliser ([`tally_core::target::RequestTarget`]).

use tally_core::target::{RequestTarget, is_route_prefix};

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let prefix_ok = is_route_prefix(raw);
    let Ok(t) = RequestTarget::parse(raw) else {
        assert!(!prefix_ok, "a prefix that does not parse was accepted");
        return;
    };
    let path = t.path();
    assert!(path.starts_with('/'));
    assert!(!path.contains("//"), "merged slashes remain in {path:?}");
    assert!(!path.contains('\\'));
    assert!(!path.contains('?') && !path.contains('#'));
    for segment in path.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or(segment);
        assert!(
            bare != "." && bare != "..",
            "a dot segment remains in {path:?}"
        );
    }
    // An encoded delimiter never survives, in either case.
    let upper = path.to_ascii_uppercase();
    for encoded in ["%2F", "%5C", "%25", "%00"] {
        assert!(!upper.contains(encoded), "{encoded} remains in {path:?}");
    }
    // The normal form is a fixed point: forwarding it and normalising again
    // decides the same route.
    let again = RequestTarget::parse(t.as_str()).expect("the normal form parses");
    assert_eq!(again.as_str(), t.as_str(), "normalising is not idempotent");
    assert_eq!(t.query(), raw.split_once('?').map(|(_, q)| q));
    // Without path parameters, the normal path is itself a route prefix, and
    // that route covers it.
    if !path.contains(';') {
        assert!(is_route_prefix(path), "{path:?} is not a route prefix");
        assert!(t.within(path));
    }
    if prefix_ok {
        assert_eq!(path, raw);
        assert!(t.within(raw));
    }
}
