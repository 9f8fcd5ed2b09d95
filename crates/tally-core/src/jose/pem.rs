//! Strict PEM for unencrypted PKCS#8 private keys (RFC 7468 section 10,
//! "strict" grammar of section 3).
//!
//! Accepted: the line `-----BEGIN PRIVATE KEY-----`, one or more lines of
//! padded standard base64 (each exactly 64 characters except a shorter,
//! non-empty last one), the line `-----END PRIVATE KEY-----`, and at most one
//! final line ending. Lines end in `\n` or `\r\n`. Nothing else: no
//! explanatory text, no blank lines, no other labels (`RSA PRIVATE KEY`,
//! `EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY` are refused).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// The only accepted encapsulation boundary lines.
const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
/// See [`BEGIN`].
const END: &str = "-----END PRIVATE KEY-----";
/// RFC 7468 strict line length.
const LINE: usize = 64;

/// Decodes a PKCS#8 PEM document into DER; the result is zeroized on drop.
pub(crate) fn decode_private_key(pem: &str) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let text = pem
        .strip_suffix("\r\n")
        .or_else(|| pem.strip_suffix('\n'))
        .unwrap_or(pem);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));

    match lines.next() {
        Some(BEGIN) => {}
        Some(l) if l.starts_with("-----BEGIN ") => {
            return Err("only the PKCS#8 label \"PRIVATE KEY\" is accepted");
        }
        _ => return Err("missing \"-----BEGIN PRIVATE KEY-----\" line"),
    }

    let mut body = Zeroizing::new(String::new());
    let mut saw_short_line = false;
    let mut ended = false;
    for line in lines.by_ref() {
        if line == END {
            ended = true;
            break;
        }
        if line.is_empty() {
            return Err("blank line inside PEM body");
        }
        if saw_short_line || line.len() > LINE {
            return Err("PEM body lines must be 64 characters, except the last");
        }
        if !line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            return Err("invalid character in PEM body");
        }
        saw_short_line = line.len() < LINE;
        body.push_str(line);
    }
    if !ended {
        return Err("missing \"-----END PRIVATE KEY-----\" line");
    }
    if lines.next().is_some() {
        return Err("data after the END line");
    }
    if body.is_empty() {
        return Err("empty PEM body");
    }
    // STANDARD requires canonical padding and zero trailing bits.
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "invalid base64 in PEM body")?;
    Ok(Zeroizing::new(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(body: &str) -> String {
        format!("{BEGIN}\n{body}\n{END}\n")
    }

    #[test]
    fn accepts_strict_forms() {
        assert_eq!(*decode_private_key(&wrap("QUJD")).unwrap(), b"ABC");
        let crlf = format!("{BEGIN}\r\nQUJD\r\n{END}\r\n");
        assert_eq!(*decode_private_key(&crlf).unwrap(), b"ABC");
        let no_final_newline = format!("{BEGIN}\nQUJD\n{END}");
        assert_eq!(*decode_private_key(&no_final_newline).unwrap(), b"ABC");
        let long = "A".repeat(64);
        let two_lines = wrap(&format!("{long}\nQUJD"));
        assert_eq!(decode_private_key(&two_lines).unwrap().len(), 48 + 3);
    }

    #[test]
    fn refuses_everything_else() {
        let cases = [
            "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----\n".to_owned(),
            format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\nQUJD\n{END}\n"),
            format!("junk\n{BEGIN}\nQUJD\n{END}\n"),
            format!(" {BEGIN}\nQUJD\n{END}\n"),
            format!("{BEGIN}\nQUJD\n{END}\n\n"),
            format!("{BEGIN}\nQUJD\n{END}\ntrailer"),
            format!("{BEGIN}\nQUJD\n"),
            format!("{BEGIN}\n{END}\n"),
            format!("{BEGIN}\n\nQUJD\n{END}\n"),
            format!("{BEGIN}\nQU JD\n{END}\n"),
            format!("{BEGIN}\nQUJ-\n{END}\n"),
            format!("{BEGIN}\nQUI\n{END}\n"),
            format!("{BEGIN}\nQUJ=\n{END}\n"),
            format!("{BEGIN}\nQQ\n{END}\n"),
            format!("{BEGIN}\nQUJD\nQUJD\n{END}\n"),
            format!("{BEGIN}\n{}\n{END}\n", "A".repeat(68)),
            String::new(),
        ];
        for pem in &cases {
            assert!(decode_private_key(pem).is_err(), "{pem:?}");
        }
    }
}
