//! A raw HTTP/1.1 client: attacks need requests that well-behaved clients
//! refuse to send (`\` in paths, underscores in header names, bare `%`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased; repeated headers joined with `, `.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `\r\n` line ends, ending with
/// the empty line and any body) to `addr` and reads the answer until the
/// server closes or the body is complete.
pub fn send(addr: &str, request: &[u8]) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    read_answer(&mut s)
}

/// Reads one response from `s` (Content-Length, chunked, or until close).
pub fn read_answer(s: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a response head ({} bytes)",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut headers: HashMap<String, String> = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            headers
                .entry(k)
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v)
                })
                .or_insert(v);
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while body.len() < n {
            let k = s.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
            if k == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..k]);
        }
        body.truncate(n);
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        while find(&body, b"0\r\n\r\n").is_none() {
            let k = s.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
            if k == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..k]);
        }
        body = dechunk(&body);
    } else if status >= 200 && status != 204 && status != 304 {
        let _ = s.read_to_end(&mut body);
    }
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

/// `GET target` with `headers` (each `Name: value`), `Connection: close`.
pub fn get(addr: &str, target: &str, headers: &[&str]) -> Result<Answer, String> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    send(addr, req.as_bytes())
}
