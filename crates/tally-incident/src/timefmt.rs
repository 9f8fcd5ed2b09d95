//! Times for people: UTC, second precision, through the `time` crate.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `YYYY-MM-DD HH:MM:SSZ` for unix seconds (the number itself, with `s`,
/// for an instant outside the years 1–9999).
pub fn utc(secs: i64) -> String {
    let shown = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&shown).ok())
        .unwrap_or_else(|| format!("{secs}s"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339) for unix seconds.
pub fn rfc3339(secs: i64) -> String {
    utc(secs).replacen(' ', "T", 1)
}

/// A short age: `42s`, `17m`, `5h`, `12d`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Parses unix seconds, or RFC 3339 (`2026-11-26T21:00:00Z`, fractional seconds
/// and `+HH:MM` offsets accepted; a space may separate date and time) into
/// unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad =
        || format!("{s:?} is not unix seconds nor an RFC 3339 time like 2026-11-26T21:00:00Z");
    // RFC 3339 (section 5.6) lets applications use a space for the `T`.
    let normal = match s.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
        _ => s.to_string(),
    };
    let t = OffsetDateTime::parse(&normal, &Rfc3339).map_err(|_| bad())?;
    Ok(t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_795_730_400), "2026-11-26 22:00:00Z");
        assert_eq!(rfc3339(1_795_730_400), "2026-11-26T22:00:00Z");
        assert_eq!(parse_time(&rfc3339(1_795_730_400)), Ok(1_795_730_400));
        assert_eq!(age(59), "59s");
        assert_eq!(age(3600), "60m");
        assert_eq!(age(86_400 * 3), "3d");
        assert_eq!(parse_time("2026-11-26 22:00:00Z"), Ok(1_795_730_400));
        assert_eq!(parse_time("2026-11-26t22:00:00z"), Ok(1_795_730_400));
        assert_eq!(utc(i64::MAX), format!("{}s", i64::MAX));
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn rfc3339_and_unix() {
        assert_eq!(parse_time("1795730400"), Ok(1_795_730_400));
        assert_eq!(parse_time("2026-11-26T22:00:00Z"), Ok(1_795_730_400));
        assert_eq!(
            parse_time("2026-11-26T23:00:00.123+01:00"),
            Ok(1_795_730_400)
        );
        assert_eq!(parse_time("2026-11-26T21:30:00-00:30"), Ok(1_795_730_400));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400));
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-11-26",
            "2026-11-26T22:00:00",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26T22:00:00+1:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(
            utc(parse_time("1999-12-31T23:59:59Z").unwrap()),
            "1999-12-31 23:59:59Z"
        );
    }
}
