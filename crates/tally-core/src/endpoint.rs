//! Which URLs tally will call, and how it shows them.
//!
//! tally fetches key sets and delivers alerts over HTTP. It calls `https://`
//! URLs, or `http://` only on a loopback address (a host that is parsed, not
//! prefix-matched: `http://localhost.evil.example` and
//! `http://127.0.0.1@evil.example` are refused). A URL written to a log or an
//! error has its password masked (in the user part or a `password=`
//! parameter).

/// A URL fit for logs: `postgres://user:secret@host/db?password=x` →
/// `postgres://user:***@host/db?password=***`.
pub fn redact_url(s: &str) -> String {
    let (base, query) = match s.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (s, None),
    };
    let mut out = match base.find("://") {
        Some(scheme_end) => {
            let rest = &base[scheme_end + 3..];
            match rest.rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    let masked = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else {
                        user.to_string()
                    };
                    format!("{}://{masked}@{}", &base[..scheme_end], &rest[at + 1..])
                }
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// Keys fetched in clear text could be swapped on the way: https only, except
/// on the loopback interface.
pub fn jwks_url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}
