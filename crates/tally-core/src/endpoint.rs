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

/// Keys fetched in clear text could be swapped on the way: `https://` only,
/// except `http://` on the loopback interface (`localhost`, `127.0.0.0/8`,
/// `[::1]`). The URL is parsed (RFC 3986, WHATWG rules), so the host is the
/// host: `http://127.0.0.1@evil.example` names `evil.example`.
pub fn jwks_url_allowed(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match (u.scheme(), u.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_tally_calls() {
        assert!(jwks_url_allowed("https://idp.example/jwks.json"));
        assert!(jwks_url_allowed("http://127.0.0.1:8081/jwks"));
        assert!(jwks_url_allowed("http://localhost/jwks"));
        assert!(jwks_url_allowed("http://[::1]:9/k"));
        assert!(!jwks_url_allowed("http://idp.example/jwks.json"));
        assert!(!jwks_url_allowed("http://127.0.0.1.evil.example/jwks"));
        assert!(!jwks_url_allowed("http://localhost@evil.example/"));
        assert!(!jwks_url_allowed("http://127.0.0.1@evil.example/"));
        assert!(!jwks_url_allowed("http://localhost.evil.example/"));
        assert!(!jwks_url_allowed("ftp://127.0.0.1/jwks"));
        assert!(!jwks_url_allowed("https://"));
        assert!(!jwks_url_allowed("not a url"));
    }

    #[test]
    fn urls_are_masked_for_logs() {
        assert_eq!(
            redact_url("postgres://user:secret@host/db?password=x&sslmode=require"),
            "postgres://user:***@host/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("not a url:secret@x"), "not a url:secret@x");
    }
}
