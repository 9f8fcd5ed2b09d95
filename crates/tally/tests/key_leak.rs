//! No API, log line, error or metric ever contains secret material.
//!
//! One full session against the real binary, with `TALLY_LOG=trace` for the
//! server and for every command: init; key imports (good, and broken or
//! refused files holding a real key); users, clients, custodians, TOTP
//! enrolment; a server whose every endpoint is called with good and hostile
//! requests (logins good, failed and malformed, second factors, the gate with
//! good, forged, altered and garbage tokens, refresh, revoke, introspect,
//! logout, issuance registration, JWKS, metrics, health, OpenAPI, checkpoint,
//! verifier key, proofs, entries, 404s and 405s); offboarding, rotation and
//! compromise while it runs; every read-only admin command; failing commands
//! (duplicate user and kid, unknown kid and person, bad PEM paths and
//! contents, wrong or malformed master keys, an unsafe master key mode); and a
//! restart. Every byte the server and each command wrote to stdout and
//! stderr, and every HTTP status line, header and body, is kept.
//!
//! Afterwards every secret is collected: each key in `state.db` unsealed
//! (token keys as PKCS#8, the ledger key's Ed25519 seed, TOTP secrets), the
//! PKCS#8 of the keys the test imported or tried to, the master key, the
//! passwords and client secret, and their argon2 outputs. All are searched
//! for in everything kept. A TOTP secret may appear only in the output of
//! `tally users totp`, which shows it to the operator once.
//!
//! What is searched, for each secret `S` (see [`needles`]):
//! - the whole of `S`: raw bytes, lower- and upper-case hex, standard base64
//!   (padded and unpadded), base64url (unpadded and padded), base32, Rust
//!   `{:?}` and `{:x?}` byte lists, and for PKCS#8 keys each PEM body line
//!   (64 characters, 48 bytes) holding at least 8 private bytes;
//! - every 16-byte window of `S`, at every offset, holding at least 8 bytes
//!   of its private part, as raw bytes, hex, upper-case hex, `{:?}` and
//!   `{:x?}`;
//! - every 12-byte run, at every offset, holding at least 8 private bytes, as
//!   the 16 characters of its base64 and of its base64url; and every such
//!   10-byte run as the 16 characters of its base32. These are whole groups,
//!   so they do not depend on neighbouring bytes: any 16 contiguous private
//!   bytes leaked in base64, base64url or base32 are found at any alignment.
//!
//! The private part of a PKCS#8 key is located by parsing its DER: the 32-byte
//! seed of Ed25519, the 32-byte scalar of P-256 (after `04 20` inside the
//! ECPrivateKey), and everything from the private exponent `d` on for RSA.
//! Requiring 8 private bytes in every window means the ASN.1 framing shared by
//! every key (the 16-byte Ed25519 prefixes `302e020100300506032b657004220420`
//! of PKCS#8 v1 and `3051020101…04220420` of v2, the P-256 and RSA headers)
//! and the public key bytes (published in the JWKS) are never searched alone.
//!
//! Issued access and refresh tokens are bearer secrets too: HTTP answers carry
//! them legitimately, so they are searched in logs and command output only
//! (the access token's signature, the refresh token after its prefix).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use support::{BIN, RawKey, TempDir, jws, pem};
use tally_core::jose::{Algorithm, SigningKey};
use tally_core::seal::MasterKey;
use tally_core::totp::{Totp, TotpSecret};

// ---------------------------------------------------------------------------
// The matcher
// ---------------------------------------------------------------------------

/// The one capture allowed to show a TOTP secret.
const TOTP_ENROLMENT: &str = "`tally users totp bob` stdout";

/// Window length for partial leaks.
const WINDOW: usize = 16;
/// A window is searched only if at least this many of its bytes are private.
const MIN_PRIVATE: usize = 8;
/// Base64 needles encode this many bytes (four whole groups, 16 characters).
const B64_CORE: usize = 12;
/// Base32 needles encode this many bytes (two whole groups, 16 characters).
const B32_CORE: usize = 10;
/// Needles are indexed by their first `PREFIX` bytes.
const PREFIX: usize = 8;

/// Where a secret may legitimately appear.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Scope {
    /// Nowhere at all.
    Everywhere,
    /// Only in HTTP answers (a token handed to the client it was issued to).
    NotInLogs,
    /// Only in the capture with this exact place (the command that shows it
    /// to the operator once, such as a TOTP enrolment).
    ShownAt(&'static str),
}

/// What kind of captured text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Server stdout/stderr, command stdout/stderr.
    Log,
    /// An HTTP answer: status, headers, body.
    Http,
}

/// A secret to hunt for. `private` is the part of `bytes` that is secret.
struct Secret {
    label: String,
    bytes: Vec<u8>,
    private: Range<usize>,
    pem: bool,
    scope: Scope,
}

impl Secret {
    fn whole(label: impl Into<String>, bytes: &[u8]) -> Secret {
        Secret {
            label: label.into(),
            bytes: bytes.to_vec(),
            private: 0..bytes.len(),
            pem: false,
            scope: Scope::Everywhere,
        }
    }

    /// A PKCS#8 private key; its private part is found by parsing the DER.
    fn pkcs8(label: impl Into<String>, der: &[u8]) -> Secret {
        let label = label.into();
        let private = pkcs8_private_range(der)
            .unwrap_or_else(|| panic!("{label}: not a PKCS#8 key this test can parse"));
        Secret {
            label,
            bytes: der.to_vec(),
            private,
            pem: true,
            scope: Scope::Everywhere,
        }
    }

    fn bearer(label: impl Into<String>, token: &str, private: Range<usize>) -> Secret {
        Secret {
            label: label.into(),
            bytes: token.as_bytes().to_vec(),
            private,
            pem: false,
            scope: Scope::NotInLogs,
        }
    }
}

/// Captured output.
struct Capture {
    kind: Kind,
    place: String,
    bytes: Vec<u8>,
}

/// A secret found where it must not be. Never holds the secret itself.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
struct Finding {
    secret: String,
    encoding: String,
    place: String,
    line: usize,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} found as {} in {} (line {})",
            self.secret, self.encoding, self.place, self.line
        )
    }
}

/// One DER TLV: (tag, content range, end of the whole element).
fn tlv(d: &[u8], at: usize) -> Option<(u8, Range<usize>, usize)> {
    let tag = *d.get(at)?;
    let first = *d.get(at + 1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 3 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *d.get(at + 2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let start = at + hdr;
    let end = start.checked_add(len)?;
    (end <= d.len()).then_some((tag, start..end, end))
}

/// The children of a constructed element.
fn children(d: &[u8], content: Range<usize>) -> Option<Vec<(u8, Range<usize>, usize)>> {
    let mut out = Vec::new();
    let mut at = content.start;
    while at < content.end {
        let t = tlv(d, at)?;
        at = t.2;
        out.push((t.0, t.1.clone(), at));
    }
    (at == content.end).then_some(out)
}

/// The secret part of a PKCS#8 `PrivateKeyInfo`: the Ed25519 seed, the EC
/// private scalar, or the RSA components from `d` on.
fn pkcs8_private_range(der: &[u8]) -> Option<Range<usize>> {
    let (tag, content, _) = tlv(der, 0)?;
    if tag != 0x30 {
        return None;
    }
    let top = children(der, content)?;
    let (tag, pk, _) = top.get(2)?.clone();
    if tag != 0x04 {
        return None;
    }
    let (inner_tag, inner, inner_end) = tlv(der, pk.start)?;
    if inner_end != pk.end {
        return None;
    }
    match inner_tag {
        // Ed25519: OCTET STRING { OCTET STRING (32) seed }.
        0x04 => Some(inner),
        0x30 => {
            let parts = children(der, inner.clone())?;
            match parts.get(1) {
                // ECPrivateKey: SEQUENCE { INTEGER 1, OCTET STRING scalar, ... }.
                Some((0x04, scalar, _)) => Some(scalar.clone()),
                // RSAPrivateKey: SEQUENCE { version, n, e, d, p, q, dp, dq, qinv }.
                Some((0x02, _, _)) => {
                    let e_end = parts.get(2)?.2;
                    Some(e_end..inner.end)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// RFC 4648 base32, upper case, no padding (as in `otpauth://` URIs).
fn base32(b: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &x in b {
        acc = (acc << 8) | x as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn overlap(a: &Range<usize>, b: &Range<usize>) -> usize {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}

fn dec_list(b: &[u8]) -> String {
    b.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex_list(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every rendering of `s` this test looks for, with a name for each.
fn needles(s: &Secret) -> Vec<(String, Vec<u8>)> {
    let b = &s.bytes[..];
    assert!(
        s.private.len() >= WINDOW,
        "{}: private part shorter than a window",
        s.label
    );
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("raw bytes".into(), b.to_vec()),
        ("hex".into(), hex(b).into_bytes()),
        ("upper-case hex".into(), hex(b).to_uppercase().into_bytes()),
        ("base64".into(), STANDARD.encode(b).into_bytes()),
        (
            "base64 without padding".into(),
            STANDARD_NO_PAD.encode(b).into_bytes(),
        ),
        ("base64url".into(), URL_SAFE_NO_PAD.encode(b).into_bytes()),
        (
            "base64url with padding".into(),
            URL_SAFE.encode(b).into_bytes(),
        ),
        ("base32".into(), base32(b).into_bytes()),
        ("{:?} byte list".into(), dec_list(b).into_bytes()),
        ("{:x?} byte list".into(), hex_list(b).into_bytes()),
    ];
    if s.pem {
        let body = STANDARD.encode(b);
        for (i, line) in body.as_bytes().chunks(64).enumerate() {
            let covers = 48 * i..(48 * i + 48).min(b.len());
            if line.len() >= WINDOW && overlap(&covers, &s.private) >= MIN_PRIVATE {
                out.push((format!("PEM body line {}", i + 1), line.to_vec()));
            }
        }
    }
    for start in 0..=b.len() - WINDOW {
        let w = &b[start..start + WINDOW];
        let at = |what: &str| format!("{what} of the 16 bytes at offset {start}");
        if overlap(&(start..start + WINDOW), &s.private) >= MIN_PRIVATE {
            out.push((at("raw bytes"), w.to_vec()));
            out.push((at("hex"), hex(w).into_bytes()));
            out.push((at("upper-case hex"), hex(w).to_uppercase().into_bytes()));
            out.push((at("{:?} byte list"), dec_list(w).into_bytes()));
            out.push((at("{:x?} byte list"), hex_list(w).into_bytes()));
        }
    }
    // Base64 of 12 bytes (16 characters) at every offset: every 16-byte run
    // of the secret, base64-encoded at any alignment, contains one of these.
    for start in 0..=b.len() - B64_CORE {
        let core = &b[start..start + B64_CORE];
        if overlap(&(start..start + B64_CORE), &s.private) >= MIN_PRIVATE {
            let at = |what: &str| format!("{what} of the 12 bytes at offset {start}");
            out.push((at("base64"), STANDARD.encode(core).into_bytes()));
            out.push((at("base64url"), URL_SAFE_NO_PAD.encode(core).into_bytes()));
        }
    }
    // Base32 of 10 bytes (16 characters, two whole groups) at every offset.
    for start in 0..=b.len() - B32_CORE {
        if overlap(&(start..start + B32_CORE), &s.private) >= MIN_PRIVATE {
            out.push((
                format!("base32 of the 10 bytes at offset {start}"),
                base32(&b[start..start + B32_CORE]).into_bytes(),
            ));
        }
    }
    let mut seen = HashSet::new();
    out.retain(|(_, n)| seen.insert(n.clone()));
    out
}

/// A multiplicative hasher for the 8-byte prefixes (debug builds hash a lot).
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Finds any rendering of any secret in captured text.
struct Matcher {
    labels: Vec<(String, Scope)>,
    needles: Vec<(usize, String, Vec<u8>)>,
    by_prefix: HashMap<u64, Vec<usize>, BuildHasherDefault<PrefixHasher>>,
}

fn prefix_key(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..PREFIX].try_into().unwrap())
}

impl Matcher {
    fn new(secrets: &[Secret]) -> Matcher {
        let mut m = Matcher {
            labels: Vec::new(),
            needles: Vec::new(),
            by_prefix: HashMap::default(),
        };
        for (i, s) in secrets.iter().enumerate() {
            m.labels.push((s.label.clone(), s.scope.clone()));
            for (enc, n) in needles(s) {
                assert!(n.len() >= PREFIX.max(WINDOW));
                m.by_prefix
                    .entry(prefix_key(&n))
                    .or_default()
                    .push(m.needles.len());
                m.needles.push((i, enc, n));
            }
        }
        m
    }

    fn needle_count(&self) -> usize {
        self.needles.len()
    }

    /// Every needle found in `cap`, one finding per (secret, encoding).
    fn scan(&self, cap: &Capture) -> Vec<Finding> {
        let hay = &cap.bytes[..];
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if hay.len() < PREFIX {
            return out;
        }
        for at in 0..=hay.len() - PREFIX {
            let Some(cands) = self.by_prefix.get(&prefix_key(&hay[at..])) else {
                continue;
            };
            for &n in cands {
                let (secret, enc, needle) = &self.needles[n];
                let (label, scope) = &self.labels[*secret];
                match scope {
                    Scope::NotInLogs if cap.kind == Kind::Http => continue,
                    Scope::ShownAt(p) if *p == cap.place => continue,
                    _ => {}
                }
                if hay[at..].starts_with(needle) && seen.insert(n) {
                    out.push(Finding {
                        secret: label.clone(),
                        encoding: enc.clone(),
                        place: cap.place.clone(),
                        line: 1 + hay[..at].iter().filter(|&&c| c == b'\n').count(),
                    });
                }
            }
        }
        out
    }

    fn scan_all(&self, caps: &[Capture]) -> Vec<Finding> {
        caps.iter().flat_map(|c| self.scan(c)).collect()
    }
}

// ---------------------------------------------------------------------------
// The session harness: commands, a trace-level server, HTTP calls
// ---------------------------------------------------------------------------

/// A `tally serve` child at `TALLY_LOG=trace`, with stdout and stderr kept
/// byte for byte (a leaked raw key need not be UTF-8).
struct TraceServer {
    child: Option<Child>,
    base: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl TraceServer {
    fn start(data: &Path) -> TraceServer {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("TALLY_LOG", "trace")
            .env_remove("TALLY_MASTER_KEY")
            .env_remove("TALLY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut out_pipe = child.stdout.take().unwrap();
        let out2 = stdout.clone();
        let r1 = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let err2 = stderr.clone();
        let err_pipe = child.stderr.take().unwrap();
        let r2 = std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut r = BufReader::new(err_pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(rest) = line.strip_prefix(b"tally listening on http://")
                    && let Some(t) = tx.take()
                {
                    let rest = String::from_utf8_lossy(rest);
                    let _ = t.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                err2.lock().unwrap().extend_from_slice(&line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            // A start-up failure is not a leak finding: show why.
            panic!(
                "server did not start:\n{}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        };
        TraceServer {
            child: Some(child),
            base: format!("http://{addr}"),
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM, wait, and hand back (exit status, stdout, stderr).
    fn stop(mut self) -> (ExitStatus, Vec<u8>, Vec<u8>) {
        let mut child = self.child.take().unwrap();
        support::terminate(&child);
        let status = support::wait_with_deadline(&mut child, Duration::from_secs(30));
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = std::mem::take(&mut *self.stdout.lock().unwrap());
        let err = std::mem::take(&mut *self.stderr.lock().unwrap());
        (status, out, err)
    }
}

impl Drop for TraceServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP answer.
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A request body: content type and bytes.
type Body<'a> = Option<(&'a str, Vec<u8>)>;

/// Everything one session produced.
struct Session {
    data: PathBuf,
    caps: Vec<Capture>,
    http: reqwest::blocking::Client,
    calls: usize,
}

impl Session {
    fn d(&self) -> String {
        self.data.to_str().unwrap().to_string()
    }

    /// Runs `tally ARGS --data DIR` at trace level and keeps both streams.
    fn run(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let d = self.d();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--data")
            .arg(&d)
            .env("TALLY_LOG", "trace")
            .env_remove("TALLY_MASTER_KEY")
            .env_remove("TALLY_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            // A command that refuses early may exit before reading its input.
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        let env_note = if env.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
            format!(" (with {})", names.join(", "))
        };
        let place = format!("`tally {}`{env_note}", args.join(" "));
        self.caps.push(Capture {
            kind: Kind::Log,
            place: format!("{place} stdout"),
            bytes: out.stdout.clone(),
        });
        self.caps.push(Capture {
            kind: Kind::Log,
            place: format!("{place} stderr"),
            bytes: out.stderr.clone(),
        });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.run(args, stdin, &[]);
        assert!(ok, "tally {args:?} failed:\n{out}\n{err}");
        out
    }

    fn fails(&mut self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> String {
        let (ok, out, err) = self.run(args, stdin, env);
        assert!(!ok, "tally {args:?} should have failed:\n{out}\n{err}");
        err
    }

    /// One HTTP call; status line, headers and body are kept.
    fn call(
        &mut self,
        srv: &TraceServer,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, srv.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ctype, bytes)) = body {
            req = req.header("content-type", ctype).body(bytes);
        }
        let resp = req.send().unwrap();
        self.calls += 1;
        let status = resp.status().as_u16();
        let hdrs = resp.headers().clone();
        let body = resp.bytes().unwrap().to_vec();
        let mut text = format!("HTTP {status}\n").into_bytes();
        for (k, v) in &hdrs {
            text.extend_from_slice(k.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(v.as_bytes());
            text.push(b'\n');
        }
        text.push(b'\n');
        text.extend_from_slice(&body);
        let mut shown = path.to_string();
        if shown.len() > 80 {
            shown.truncate(80);
            shown.push('…');
        }
        self.caps.push(Capture {
            kind: Kind::Http,
            place: format!("HTTP call #{} {method} {shown} -> {status}", self.calls),
            bytes: text,
        });
        Resp {
            status,
            headers: hdrs,
            body,
        }
    }

    fn get(&mut self, srv: &TraceServer, path: &str) -> Resp {
        self.call(srv, "GET", path, &[], None)
    }

    fn post_json(&mut self, srv: &TraceServer, path: &str, body: &str) -> Resp {
        self.call(
            srv,
            "POST",
            path,
            &[],
            Some(("application/json", body.as_bytes().to_vec())),
        )
    }

    fn check(&mut self, srv: &TraceServer, auth: Option<&str>) -> Resp {
        let mut h = vec![
            ("X-Original-URI", "/account/keys"),
            ("X-Original-Method", "GET"),
        ];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = self.call(srv, "GET", "/v1/check", &h, None);
        assert!(r.header("x-tally-verdict").is_some(), "no verdict header");
        r
    }

    fn login(&mut self, srv: &TraceServer, user: &str, password: &str) -> Resp {
        self.post_json(
            srv,
            "/v1/login",
            &json!({"username": user, "password": password}).to_string(),
        )
    }

    fn keep_server_output(&mut self, tag: &str, out: Vec<u8>, err: Vec<u8>) {
        self.caps.push(Capture {
            kind: Kind::Log,
            place: format!("server ({tag}) stdout"),
            bytes: out,
        });
        self.caps.push(Capture {
            kind: Kind::Log,
            place: format!("server ({tag}) stderr"),
            bytes: err,
        });
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn random_text(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b).unwrap();
    URL_SAFE_NO_PAD.encode(b)
}

fn kid_of(token: &str) -> String {
    let h: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap_or("").to_string()
}

/// A successful login's (access token, refresh token).
fn tokens(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "login failed");
    let v = r.json();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap_or("").to_string(),
    )
}

/// The private parts of bearer tokens: an access token's signature segment,
/// a refresh token after its public prefix.
fn bearer_secrets(access: &[String], refresh: &[String]) -> Vec<Secret> {
    let mut out = Vec::new();
    for (i, t) in access.iter().enumerate() {
        let sig = t.rfind('.').unwrap() + 1;
        out.push(Secret::bearer(
            format!("access token #{i} (signature)"),
            t,
            sig..t.len(),
        ));
    }
    for (i, t) in refresh.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
        let p = if t.starts_with("tally_rt_") { 9 } else { 0 };
        out.push(Secret::bearer(format!("refresh token #{i}"), t, p..t.len()));
    }
    out
}

/// The argon2 output inside a PHC string (its last `$` field).
fn phc_hash(phc: &str) -> Vec<u8> {
    STANDARD_NO_PAD
        .decode(phc.rsplit('$').next().unwrap())
        .unwrap()
}

/// Every secret in the data directory, read after the session ended.
fn secrets_at_rest(data: &Path, kids: &mut Vec<(String, String)>) -> Vec<Secret> {
    let master_hex = std::fs::read_to_string(data.join("master.key")).unwrap();
    let master_hex = master_hex.trim();
    assert_eq!(master_hex.len(), 64);
    let master = MasterKey::from_hex(master_hex).unwrap();
    let mut out = vec![Secret::whole("master key", &unhex(master_hex))];
    let db = rusqlite::Connection::open_with_flags(
        data.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = db
        .prepare("SELECT kid, alg, purpose, sealed FROM keys ORDER BY created_at")
        .unwrap();
    let rows: Vec<(String, String, String, Vec<u8>)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kid, alg, purpose, sealed) in rows {
        let plain = master.open(&format!("tally/key/{kid}"), &sealed).unwrap();
        kids.push((kid.clone(), alg.clone()));
        if purpose == "ledger" {
            assert_eq!(plain.len(), 32, "ledger seed");
            out.push(Secret::whole(
                format!("ledger key seed ({kid}, unsealed)"),
                &plain,
            ));
        } else {
            out.push(Secret::pkcs8(
                format!("{alg} signing key {kid} (unsealed PKCS#8)"),
                &plain,
            ));
        }
    }
    let mut q = db
        .prepare("SELECT name, totp_sealed FROM users WHERE totp_sealed IS NOT NULL")
        .unwrap();
    let rows: Vec<(String, Vec<u8>)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty(), "no TOTP secret at rest");
    for (name, sealed) in rows {
        let plain = master.open(&format!("tally/totp/{name}"), &sealed).unwrap();
        let mut secret = Secret::whole(format!("TOTP secret of {name} (unsealed)"), &plain);
        secret.scope = Scope::ShownAt(TOTP_ENROLMENT);
        out.push(secret);
    }
    for (sql, what) in [
        (
            "SELECT name, password_hash FROM users",
            "password hash of user",
        ),
        (
            "SELECT id, secret_hash FROM clients",
            "secret hash of client",
        ),
    ] {
        let mut q = db.prepare(sql).unwrap();
        let rows: Vec<(String, String)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (name, phc) in rows {
            out.push(Secret::whole(
                format!("{what} {name} (argon2 output)"),
                &phc_hash(&phc),
            ));
        }
    }
    out
}

fn pem_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Logs in until the token is signed by a key other than `old`.
fn login_until_new_kid(s: &mut Session, srv: &TraceServer, pw: &str, old: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.login(srv, "alice", pw);
        let (t, _) = tokens(&r);
        if kid_of(&t) != old {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "key change never reached the server"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn no_secret_in_any_log_answer_or_command_output() {
    let started = Instant::now();
    let tmp = TempDir::new("key-leak");
    let data = tmp.path().join("data");
    let mut s = Session {
        data: data.clone(),
        caps: Vec::new(),
        http: support::client(),
        calls: 0,
    };
    // Random, so a hit cannot be a coincidence with fixed text.
    let password = format!("pw-{}", random_text(18));
    let wrong_password = format!("wrong-{}", random_text(18));
    let client_secret = format!("cs-{}", random_text(18));
    let bob_password = format!("pw-{}", random_text(18));

    // Keys the operator brings: an Ed25519 and a P-256 key, plus one that
    // only ever reaches tally in broken or refused files.
    let ed_der = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .to_vec();
    let es_der = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .to_vec();
    let spare_der = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .to_vec();
    let ed_pem = pem_file(tmp.path(), "ed.pem", &pem(&ed_der));
    let es_pem = pem_file(tmp.path(), "es.pem", &pem(&es_der));
    let spare_pem = pem_file(tmp.path(), "spare.pem", &pem(&spare_der));
    let truncated = pem_file(
        tmp.path(),
        "truncated.pem",
        &pem(&spare_der[..spare_der.len() - 7]),
    );
    let mut flipped_der = spare_der.clone();
    flipped_der[1] ^= 0x01; // a wrong outer length: not DER
    let flipped = pem_file(tmp.path(), "flipped.pem", &pem(&flipped_der));
    // Two characters of the base64 body (not the header) replaced.
    let spare_text = pem(&spare_der);
    let (header, body) = spare_text.split_once('\n').unwrap();
    let body = body.replacen('A', "!", 1).replacen('B', "*", 1);
    let bad_char = pem_file(tmp.path(), "badchar.pem", &format!("{header}\n{body}"));
    let sec1 = pem_file(
        tmp.path(),
        "sec1.pem",
        &pem(&spare_der).replace("PRIVATE KEY", "EC PRIVATE KEY"),
    );
    let no_footer = pem_file(
        tmp.path(),
        "nofooter.pem",
        pem(&spare_der)
            .trim_end()
            .trim_end_matches("-----END PRIVATE KEY-----"),
    );
    let raw_der = tmp.path().join("spare.der");
    std::fs::write(&raw_der, &spare_der).unwrap();
    let raw_der = raw_der.to_str().unwrap().to_string();
    let missing = tmp.path().join("nope.pem").to_str().unwrap().to_string();

    // --- Offline setup, good and failing commands ---------------------------
    s.ok(&["init"], None);
    s.ok(&["init"], None);
    s.ok(
        &["keys", "import", "--kid", "imp-ed", "--pem", &ed_pem],
        None,
    );
    s.ok(
        &["keys", "import", "--kid", "imp-es", "--pem", &es_pem],
        None,
    );
    for bad in [
        &missing, &truncated, &flipped, &bad_char, &sec1, &no_footer, &raw_der,
    ] {
        s.fails(
            &["keys", "import", "--kid", "spare", "--pem", bad],
            None,
            &[],
        );
    }
    s.fails(
        &["keys", "import", "--kid", "bad kid", "--pem", &spare_pem],
        None,
        &[],
    );
    s.fails(
        &["keys", "import", "--kid", "imp-ed", "--pem", &spare_pem],
        None,
        &[],
    );
    s.fails(&["keys", "import", "--pem"], None, &[]);
    let pw_line = format!("{password}\n");
    s.ok(
        &["users", "add", "alice", "--password-stdin"],
        Some(&pw_line),
    );
    s.fails(
        &["users", "add", "alice", "--password-stdin"],
        Some(&pw_line),
        &[],
    );
    s.fails(
        &["users", "add", "bad name!", "--password-stdin"],
        Some(&pw_line),
        &[],
    );
    s.fails(
        &["users", "add", "bob", "--password-stdin"],
        Some(&format!("{password}\n{password}\n")),
        &[],
    );
    s.fails(&["users", "add", "bob", "--password-stdin"], Some(""), &[]);
    // Passwords the policy refuses, too short and too long, made of the
    // password itself: neither message may quote them.
    s.fails(
        &["users", "add", "bob", "--password-stdin"],
        Some(&format!("{}\n", &password[..10])),
        &[],
    );
    s.fails(
        &["users", "add", "bob", "--password-stdin"],
        Some(&format!("{}\n", password.repeat(60))),
        &[],
    );
    s.ok(
        &["users", "add", "bob", "--password-stdin"],
        Some(&format!("{bob_password}\n")),
    );
    // TOTP enrolment shows the secret to the operator, once, on stdout.
    let enrolment = s.ok(&["users", "totp", "bob"], None);
    let b32 = enrolment
        .split("secret=")
        .nth(1)
        .and_then(|r| r.split(['&', '\n']).next())
        .expect("otpauth URI with a secret");
    let totp_secret = TotpSecret::from_base32(b32).unwrap();
    s.fails(&["users", "totp", "nobody"], None, &[]);
    let cs_line = format!("{client_secret}\n");
    s.ok(&["clients", "add", "svc", "--secret-stdin"], Some(&cs_line));
    s.fails(
        &["clients", "add", "svc", "--secret-stdin"],
        Some(&cs_line),
        &[],
    );
    for person in ["mallory", "olivia"] {
        s.ok(
            &[
                "keys",
                "custodian",
                "add",
                "imp-es",
                person,
                "--actor",
                "ciso",
            ],
            None,
        );
    }
    s.fails(
        &["keys", "custodian", "add", "no-such-kid", "mallory"],
        None,
        &[],
    );
    s.fails(&["keys", "custodian", "add", "imp-es", ""], None, &[]);
    s.ok(&["users", "list"], None);
    s.ok(&["keys", "list"], None);

    // --- A trace-level server and every endpoint ---------------------------
    let srv = TraceServer::start(&data);
    let before = now();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/.well-known/jwks.json",
        "/v1/ledger/key",
        "/v1/ledger/checkpoint",
    ] {
        let r = s.get(&srv, p);
        assert_eq!(r.status, 200, "{p}");
    }
    let jwks = s.get(&srv, "/.well-known/jwks.json").json();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("d").is_none() && k.get("p").is_none() && k.get("q").is_none())
    );

    let mut access = Vec::new();
    let mut refresh = Vec::new();
    let (t1, r1) = tokens(&s.login(&srv, "alice", &password));
    assert_eq!(kid_of(&t1), "imp-es");
    access.push(t1.clone());
    refresh.push(r1.clone());

    // Failed and malformed logins.
    assert_eq!(s.login(&srv, "alice", &wrong_password).status, 401);
    assert_eq!(s.login(&srv, "nobody", &password).status, 401);
    let long_user = "x".repeat(200);
    s.login(&srv, &long_user, &password);
    let malformed = [
        String::new(),
        "{".into(),
        "null".into(),
        "[]".into(),
        format!("{{\"username\":\"alice\",\"password\":\"{password}\""),
        format!("{{\"username\":\"alice\",\"password\":\"{password}\",\"extra\":1}}"),
        format!(
            "{{\"username\":\"alice\",\"password\":\"{password}\",\"password\":\"{password}\"}}"
        ),
        format!("{{\"username\":\"alice\",\"password\":\"{password}\",\"client_id\":\"\"}}"),
        format!("{{\"username\":\"alice\",\"password\":\"{password}\",\"client_id\":7}}"),
        "{\"username\":\"alice\",\"password\":7}".into(),
        "{\"username\":\"alice\"}".into(),
        format!(
            "{{\"username\":\"alice\",\"password\":\"{}\"}}",
            "p".repeat(2000)
        ),
        // A client that sends the bare password string instead of the object.
        json!(password).to_string(),
    ];
    for body in &malformed {
        let r = s.post_json(&srv, "/v1/login", body);
        assert!(r.status >= 400, "malformed login accepted");
    }
    for ctype in ["text/plain", "application/x-www-form-urlencoded"] {
        let form = format!("username=alice&password={password}");
        s.call(
            &srv,
            "POST",
            "/v1/login",
            &[],
            Some((ctype, form.into_bytes())),
        );
    }
    s.call(
        &srv,
        "POST",
        "/v1/login",
        &[],
        Some(("application/json", vec![b'{'; 70 * 1024])),
    );
    s.call(
        &srv,
        "POST",
        "/v1/login",
        &[],
        Some(("application/json", vec![0xff, 0xfe, b'{', 0x80])),
    );

    // A second factor: missing, wrong, the password typed as the code, right.
    for totp in [None, Some("abcdef".to_string()), Some(bob_password.clone())] {
        let mut body = json!({"username": "bob", "password": bob_password});
        if let Some(t) = totp {
            body["totp"] = json!(t);
        }
        let r = s.post_json(&srv, "/v1/login", &body.to_string());
        assert!(r.status >= 400, "bob logged in without his code");
    }
    let code = Totp::default().code_at(&totp_secret, now() as u64);
    let body = json!({"username": "bob", "password": bob_password, "totp": code});
    let (t_bob, r_bob) = tokens(&s.post_json(&srv, "/v1/login", &body.to_string()));
    access.push(t_bob);
    refresh.push(r_bob);

    // The gate: good, missing, garbage and forged tokens.
    assert_eq!(s.check(&srv, Some(&format!("Bearer {t1}"))).status, 200);
    s.check(&srv, None);
    let insider_es = RawKey::from_pkcs8(&es_der);
    let insider_ed = RawKey::from_pkcs8(&ed_der);
    let mut claims = support::payload(&t1);
    claims["jti"] = json!("forged-by-insider");
    claims["sub"] = json!("admin");
    let forged_es = jws(
        &insider_es,
        &json!({"alg":"ES256","kid":"imp-es","typ":"at+jwt"}).to_string(),
        &claims.to_string(),
    );
    let forged_ed = jws(
        &insider_ed,
        &json!({"alg":"EdDSA","kid":"imp-ed","typ":"at+jwt"}).to_string(),
        &claims.to_string(),
    );
    let forged_wrong_key = jws(
        &insider_ed,
        &json!({"alg":"EdDSA","kid":"imp-es","typ":"at+jwt"}).to_string(),
        &claims.to_string(),
    );
    assert_eq!(
        s.check(&srv, Some(&format!("Bearer {forged_es}")))
            .header("x-tally-verdict")
            .as_deref(),
        Some("not_issued")
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"imp-es"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let jwk_header = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(
            json!({"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"BBBB"}})
                .to_string()
        ),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    );
    let mut altered = t1.clone();
    altered.pop();
    altered.push(if t1.ends_with('A') { 'B' } else { 'A' });
    for auth in [
        format!("Bearer {forged_ed}"),
        format!("Bearer {forged_wrong_key}"),
        format!("Bearer {alg_none}"),
        format!("Bearer {jwk_header}"),
        format!("Bearer {altered}"),
        "Bearer garbage".into(),
        "Bearer a.b.c".into(),
        "Bearer ".into(),
        format!("Basic {}", STANDARD.encode(format!("alice:{password}"))),
        format!("Bearer {}", "A".repeat(20_000)),
    ] {
        s.check(&srv, Some(&auth));
    }

    // Sessions: refresh (good, reused, garbage), revoke, introspect, logout.
    let rr = s.post_json(
        &srv,
        "/v1/refresh",
        &json!({"refresh_token": r1}).to_string(),
    );
    if rr.status == 200 {
        let (t, r) = tokens(&rr);
        access.push(t);
        refresh.push(r);
    }
    s.post_json(
        &srv,
        "/v1/refresh",
        &json!({"refresh_token": r1}).to_string(),
    );
    s.post_json(
        &srv,
        "/v1/refresh",
        &json!({"refresh_token": "tally_rt_short"}).to_string(),
    );
    s.post_json(&srv, "/v1/refresh", "{\"refresh_token\":");
    s.call(
        &srv,
        "POST",
        "/v1/refresh",
        &[],
        Some(("text/plain", r1.clone().into_bytes())),
    );
    let (t_intro, r_intro) = tokens(&s.login(&srv, "alice", &password));
    access.push(t_intro.clone());
    refresh.push(r_intro.clone());
    let good_basic = format!("Basic {}", STANDARD.encode(format!("svc:{client_secret}")));
    let bad_basic = format!("Basic {}", STANDARD.encode(format!("svc:{wrong_password}")));
    for (auth, token) in [
        (Some(good_basic.as_str()), t_intro.as_str()),
        (Some(good_basic.as_str()), r_intro.as_str()),
        (Some(good_basic.as_str()), forged_es.as_str()),
        (Some(bad_basic.as_str()), t_intro.as_str()),
        (Some("Basic !!!"), t_intro.as_str()),
        (None, t_intro.as_str()),
    ] {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let form = format!("token={token}&token_type_hint=access_token");
        s.call(
            &srv,
            "POST",
            "/v1/introspect",
            &h,
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        );
    }
    s.call(
        &srv,
        "POST",
        "/v1/introspect",
        &[("Authorization", good_basic.as_str())],
        Some(("application/json", b"{\"token\":".to_vec())),
    );
    let (t_out, r_out) = tokens(&s.login(&srv, "alice", &password));
    access.push(t_out.clone());
    refresh.push(r_out.clone());
    for body in [
        Some((
            "application/x-www-form-urlencoded",
            format!("token={}", "garbage"),
        )),
        Some(("application/json", json!({"token": forged_es}).to_string())),
        Some(("application/json", "{\"tok".to_string())),
        Some(("text/plain", format!("token={r_out}"))),
        None,
    ] {
        s.call(
            &srv,
            "POST",
            "/v1/revoke",
            &[],
            body.map(|(c, b)| (c, b.into_bytes())),
        );
    }
    let (t_rev, r_rev) = tokens(&s.login(&srv, "alice", &password));
    access.push(t_rev.clone());
    refresh.push(r_rev.clone());
    s.call(
        &srv,
        "POST",
        "/v1/revoke",
        &[],
        Some((
            "application/x-www-form-urlencoded",
            format!("token={r_rev}").into_bytes(),
        )),
    );
    s.check(&srv, Some(&format!("Bearer {t_rev}")));
    let bearer_out = format!("Bearer {t_out}");
    s.call(
        &srv,
        "POST",
        "/v1/logout",
        &[("Authorization", bearer_out.as_str())],
        None,
    );
    s.call(&srv, "POST", "/v1/logout", &[], None);
    let bearer_forged = format!("Bearer {forged_es}");
    s.call(
        &srv,
        "POST",
        "/v1/logout",
        &[("Authorization", bearer_forged.as_str())],
        None,
    );

    // The ledger API: proofs, entries, good and bad queries.
    let jti = support::payload(&t1)["jti"].as_str().unwrap().to_string();
    let size = {
        let cp = s.get(&srv, "/v1/ledger/checkpoint");
        String::from_utf8_lossy(&cp.body)
            .lines()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(size >= 2, "ledger size {size}");
    for p in [
        format!("/v1/ledger/proof/inclusion?token_id={jti}"),
        format!("/v1/ledger/proof/inclusion?token_id={jti}&size={size}"),
        format!("/v1/ledger/proof/inclusion?token_id={jti}&size=0"),
        "/v1/ledger/proof/inclusion?token_id=nope".into(),
        "/v1/ledger/proof/inclusion".into(),
        "/v1/ledger/proof/inclusion?token_id=x&evil=1".into(),
        format!("/v1/ledger/proof/consistency?from=1&to={size}"),
        "/v1/ledger/proof/consistency?from=5&to=1".into(),
        "/v1/ledger/proof/consistency?from=a".into(),
        format!("/v1/ledger/entries?start=0&end={size}"),
        "/v1/ledger/entries?start=0&end=99999".into(),
        "/v1/ledger/entries?start=-1&end=1".into(),
        "/v1/ledger/entries".into(),
        "/nope".into(),
        "/v1/keys".into(),
        "/.well-known/openid-configuration".into(),
        "/v1/login".into(),
        "/%ff%fe".into(),
    ] {
        s.get(&srv, &p);
    }
    // External-issuer registration: no credential, a wrong one, bad JSON.
    let wrong_credential = format!("Bearer {client_secret}");
    for auth in [None, Some(wrong_credential.as_str())] {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let body = json!({"token": t1}).to_string().into_bytes();
        s.call(
            &srv,
            "POST",
            "/v1/issuances",
            &h,
            Some(("application/json", body)),
        );
    }
    s.call(
        &srv,
        "POST",
        "/v1/issuances",
        &[("Authorization", wrong_credential.as_str())],
        Some(("application/json", b"{\"token\":".to_vec())),
    );
    s.call(&srv, "POST", "/healthz", &[], None);
    s.call(&srv, "DELETE", "/.well-known/jwks.json", &[], None);

    // --- Key lifecycle while the server runs --------------------------------
    // Mallory leaves: imp-es rotates into a generated key (same algorithm).
    s.ok(&["keys", "offboard", "mallory", "--actor", "ciso"], None);
    s.ok(
        &["keys", "offboard", "nobody-at-all", "--actor", "ciso"],
        None,
    );
    let r = login_until_new_kid(&mut s, &srv, &password, "imp-es");
    let (t2, r2) = tokens(&r);
    let k2 = kid_of(&t2);
    access.push(t2.clone());
    refresh.push(r2);
    // A plain rotation into an RSA key.
    s.ok(
        &["keys", "rotate", "--alg", "RS256", "--actor", "ciso"],
        None,
    );
    s.fails(&["keys", "rotate", "--alg", "HS256"], None, &[]);
    let r = login_until_new_kid(&mut s, &srv, &password, &k2);
    let (t3, r3) = tokens(&r);
    access.push(t3.clone());
    refresh.push(r3);
    s.ok(
        &[
            "keys",
            "custodian",
            "add",
            &kid_of(&t3),
            "olivia",
            "--actor",
            "ciso",
        ],
        None,
    );
    // imp-es was compromised all along.
    let since = (before - 1).to_string();
    s.ok(
        &[
            "keys",
            "compromise",
            "imp-es",
            "--since",
            &since,
            "--actor",
            "ciso",
        ],
        None,
    );
    s.fails(&["keys", "compromise", "no-such-kid"], None, &[]);
    s.fails(
        &["keys", "compromise", "imp-ed", "--since", "yesterday"],
        None,
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.check(&srv, Some(&format!("Bearer {t1}"))).status == 200 {
        assert!(Instant::now() < deadline, "t1 never revoked");
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(s.check(&srv, Some(&format!("Bearer {t3}"))).status, 200);
    s.check(&srv, Some(&format!("Bearer {forged_es}")));
    s.check(&srv, Some(&format!("Bearer {forged_ed}")));
    for p in [
        "/.well-known/jwks.json",
        "/metrics",
        "/readyz",
        "/v1/ledger/checkpoint",
    ] {
        s.get(&srv, p);
    }

    // Every read-only admin command, and failing ones, while it runs.
    let verifier_key = s.ok(&["ledger", "key"], None).trim().to_string();
    s.ok(&["keys", "list"], None);
    s.ok(&["keys", "log"], None);
    s.ok(&["keys", "log", "--limit", "1"], None);
    s.ok(&["users", "list"], None);
    s.ok(&["ledger", "verify"], None);
    s.ok(&["ledger", "verify", "--key", &verifier_key], None);
    s.ok(&["ledger", "checkpoint"], None);
    s.ok(&["ledger", "prove", &jti], None);
    s.fails(&["ledger", "prove", "-no-such-token"], None, &[]);
    s.fails(&["ledger", "verify", "--key", "garbage+1+AAAA"], None, &[]);

    let (status, out, err) = srv.stop();
    assert!(status.success(), "server exit {status:?}");
    s.keep_server_output("first run", out, err);

    // --- After the server: wrong master keys, bad permissions, a restart ---
    let master_hex = std::fs::read_to_string(data.join("master.key")).unwrap();
    let master_hex = master_hex.trim().to_string();
    let mut not_hex = master_hex.clone();
    not_hex.pop();
    not_hex.push('g');
    let other_master = hex(&unhex(&master_hex).iter().map(|b| !b).collect::<Vec<_>>());
    s.fails(
        &["keys", "list"],
        None,
        &[("TALLY_MASTER_KEY", not_hex.as_str())],
    );
    s.fails(
        &["ledger", "verify"],
        None,
        &[("TALLY_MASTER_KEY", other_master.as_str())],
    );
    s.fails(
        &["ledger", "key"],
        None,
        &[("TALLY_MASTER_KEY", other_master.as_str())],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mk = data.join("master.key");
        std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o644)).unwrap();
        s.fails(&["keys", "list"], None, &[]);
        std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    s.ok(&["ledger", "verify"], None);

    let srv = TraceServer::start(&data);
    for p in ["/readyz", "/.well-known/jwks.json", "/metrics"] {
        s.get(&srv, p);
    }
    assert_eq!(s.check(&srv, Some(&format!("Bearer {t3}"))).status, 200);
    let (status, out, err) = srv.stop();
    assert!(status.success(), "server exit {status:?}");
    s.keep_server_output("restart", out, err);

    // --- Collect every secret and search everything kept --------------------
    let mut kids = Vec::new();
    let mut secrets = secrets_at_rest(&data, &mut kids);
    let algs: Vec<&str> = kids.iter().map(|(_, a)| a.as_str()).collect();
    for want in ["EdDSA", "ES256", "RS256", "note-ed25519"] {
        assert!(algs.contains(&want), "no {want} key at rest: {kids:?}");
    }
    assert!(
        kids.len() >= 6,
        "expected init, two imports, offboarding and rotation keys, and the ledger key: {kids:?}"
    );
    secrets.push(Secret::pkcs8(
        "imported Ed25519 key imp-ed (test's PKCS#8)",
        &ed_der,
    ));
    secrets.push(Secret::pkcs8(
        "imported P-256 key imp-es (test's PKCS#8)",
        &es_der,
    ));
    secrets.push(Secret::pkcs8(
        "refused import key spare (test's PKCS#8)",
        &spare_der,
    ));
    secrets.push(Secret::whole("password of alice", password.as_bytes()));
    secrets.push(Secret::whole(
        "wrong password tried",
        wrong_password.as_bytes(),
    ));
    secrets.push(Secret::whole("client secret", client_secret.as_bytes()));
    secrets.push(Secret::whole("password of bob", bob_password.as_bytes()));
    let mut totp = Secret::whole(
        "TOTP secret of bob (from enrolment)",
        totp_secret.as_bytes(),
    );
    totp.scope = Scope::ShownAt(TOTP_ENROLMENT);
    secrets.push(totp);
    secrets.extend(bearer_secrets(&access, &refresh));

    let matcher = Matcher::new(&secrets);
    let log_bytes: usize = s
        .caps
        .iter()
        .filter(|c| c.kind == Kind::Log)
        .map(|c| c.bytes.len())
        .sum();
    let server_log = s
        .caps
        .iter()
        .filter(|c| c.place.starts_with("server"))
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect::<String>();
    // The capture really ran at trace level and saw the session.
    for needle in [
        "token issued",
        "DEBUG",
        "forged_token",
        "signing keys reloaded",
    ] {
        assert!(server_log.contains(needle), "server log lacks {needle:?}");
    }
    let findings = matcher.scan_all(&s.caps);
    eprintln!(
        "key_leak: {} secrets, {} renderings searched in {} captures ({} log bytes, {} HTTP answers) in {:?}",
        secrets.len(),
        matcher.needle_count(),
        s.caps.len(),
        log_bytes,
        s.caps.iter().filter(|c| c.kind == Kind::Http).count(),
        started.elapsed()
    );
    assert!(
        findings.is_empty(),
        "secret material leaked (the secrets themselves are not shown):\n{}",
        report(&findings)
    );
}

/// Findings grouped by secret and place: the whole encodings found, and how
/// many partial windows of each encoding.
fn report(findings: &[Finding]) -> String {
    type Group = (BTreeSet<usize>, BTreeSet<String>, BTreeMap<String, usize>);
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for f in findings {
        let g = groups
            .entry((f.secret.clone(), f.place.clone()))
            .or_default();
        g.0.insert(f.line);
        match f.encoding.split_once(" of the ") {
            Some((kind, _)) => *g.2.entry(kind.to_string()).or_default() += 1,
            None => {
                g.1.insert(f.encoding.clone());
            }
        }
    }
    let mut out = String::new();
    for ((secret, place), (lines, whole, partial)) in groups {
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        let mut how: Vec<String> = whole.into_iter().map(|w| format!("whole, {w}")).collect();
        how.extend(
            partial
                .into_iter()
                .map(|(k, n)| format!("{n} partial window(s), {k}")),
        );
        out.push_str(&format!(
            "  - {secret}: in {place}, line {}: {}\n",
            lines.join(","),
            how.join("; ")
        ));
    }
    out
}

/// The matcher finds each encoding of each kind of secret, partial and
/// misaligned leaks included, and stays silent on public material.
#[test]
fn matcher_detects_every_encoding() {
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let ed_der = ed.to_pkcs8_der().unwrap().to_vec();
    let es_der = es.to_pkcs8_der().unwrap().to_vec();
    let rsa_der = rsa.to_pkcs8_der().unwrap().to_vec();
    let master = MasterKey::generate().unwrap();
    let master_hex = master.to_hex().to_string();
    let master_raw = unhex(&master_hex);
    let password = format!("pw-{}", random_text(18));

    // The private parts are where the formats put them.
    let ed_priv = pkcs8_private_range(&ed_der).unwrap();
    assert_eq!(ed_priv.len(), 32);
    // PKCS#8 v1 (`302e020100…`) or v2 with the public key (`3051020101…`, what
    // aws-lc writes): the seed follows the same 16-byte framing either way.
    assert!(
        [
            "302e020100300506032b657004220420",
            "3051020101300506032b657004220420"
        ]
        .contains(&hex(&ed_der[..16]).as_str()),
        "{}",
        hex(&ed_der[..16])
    );
    assert_eq!(ed_priv.start, 16);
    let es_priv = pkcs8_private_range(&es_der).unwrap();
    assert_eq!(es_priv.len(), 32);
    assert_eq!(&es_der[es_priv.start - 2..es_priv.start], &[0x04, 0x20]);
    let rsa_priv = pkcs8_private_range(&rsa_der).unwrap();
    assert!(rsa_priv.len() > 900, "RSA private part {}", rsa_priv.len());
    let seed = ed_der[ed_priv.clone()].to_vec();
    let scalar = es_der[es_priv.clone()].to_vec();

    let secrets = vec![
        Secret::pkcs8("ed", &ed_der),
        Secret::pkcs8("es", &es_der),
        Secret::pkcs8("rsa", &rsa_der),
        Secret::whole("master", &master_raw),
        Secret::whole("password", password.as_bytes()),
        Secret::bearer("bearer", "head.body.SIGNATURE-SIGNATURE-SIG", 10..33),
    ];
    let m = Matcher::new(&secrets);
    let cap = |kind: Kind, bytes: Vec<u8>| Capture {
        kind,
        place: "injected".into(),
        bytes,
    };
    let wrap = |s: &str| format!("2026-01-01T00:00:00Z TRACE x: detail={s} end\n").into_bytes();
    let found = |c: Capture| -> Vec<String> {
        m.scan(&c).into_iter().map(|f| f.secret).collect::<Vec<_>>()
    };
    let expect = |what: &str, secret: &str, c: Capture| {
        let got = found(c);
        assert!(
            got.iter().any(|s| s == secret),
            "{what}: {secret} not detected (got {got:?})"
        );
    };

    // Whole encodings.
    let mut raw = b"\x00binary noise\xff".to_vec();
    raw.extend_from_slice(&ed_der);
    raw.extend_from_slice(b"\x01more");
    expect("raw DER", "ed", cap(Kind::Log, raw));
    expect("hex", "ed", cap(Kind::Log, wrap(&hex(&ed_der))));
    expect(
        "HEX",
        "es",
        cap(Kind::Log, wrap(&hex(&es_der).to_uppercase())),
    );
    expect(
        "base64",
        "es",
        cap(Kind::Log, wrap(&STANDARD.encode(&es_der))),
    );
    expect(
        "base64 no pad",
        "ed",
        cap(Kind::Log, wrap(&STANDARD_NO_PAD.encode(&ed_der))),
    );
    expect(
        "base64url",
        "rsa",
        cap(Kind::Http, wrap(&URL_SAFE_NO_PAD.encode(&rsa_der))),
    );
    expect("PEM", "rsa", cap(Kind::Http, pem(&rsa_der).into_bytes()));
    expect(
        "one PEM line",
        "ed",
        cap(Kind::Log, wrap(pem(&ed_der).lines().nth(1).unwrap())),
    );
    expect(
        "debug list",
        "es",
        cap(Kind::Log, format!("{:?}", &es_der[..]).into_bytes()),
    );
    expect(
        "hex debug list",
        "es",
        cap(Kind::Log, format!("{:x?}", &es_der[..]).into_bytes()),
    );

    // The bare private parts: a JWK's "d", seeds in any encoding.
    expect(
        "JWK d (P-256)",
        "es",
        cap(
            Kind::Http,
            json!({"kty":"EC","d": URL_SAFE_NO_PAD.encode(&scalar)})
                .to_string()
                .into_bytes(),
        ),
    );
    expect(
        "JWK d (Ed25519)",
        "ed",
        cap(Kind::Http, wrap(&URL_SAFE_NO_PAD.encode(&seed))),
    );
    expect("seed hex", "ed", cap(Kind::Log, wrap(&hex(&seed))));
    expect("raw scalar", "es", cap(Kind::Log, scalar.clone()));

    // Partial and misaligned: 16 bytes from the middle, behind 1 or 2 other bytes.
    for shift in 0..3 {
        let mut buf = vec![0x5a; shift];
        buf.extend_from_slice(&seed[5..21]);
        expect(
            "misaligned base64 of part of the seed",
            "ed",
            cap(Kind::Log, wrap(&STANDARD.encode(&buf))),
        );
        expect(
            "misaligned base64url of part of the scalar",
            "es",
            cap(Kind::Log, {
                let mut b = vec![0xa5; shift];
                b.extend_from_slice(&scalar[9..25]);
                wrap(&URL_SAFE_NO_PAD.encode(&b))
            }),
        );
    }
    expect(
        "part of RSA d in hex",
        "rsa",
        cap(
            Kind::Log,
            wrap(&hex(&rsa_der[rsa_priv.start + 300..rsa_priv.start + 316])),
        ),
    );
    expect(
        "part of the seed as debug list",
        "ed",
        cap(Kind::Log, format!("{:?}", &seed[3..19]).into_bytes()),
    );

    // The master key: its file text, upper case, raw, base64.
    expect("master hex", "master", cap(Kind::Log, wrap(&master_hex)));
    expect(
        "master HEX half",
        "master",
        cap(Kind::Log, wrap(&master_hex[10..42].to_uppercase())),
    );
    expect("master raw", "master", cap(Kind::Log, master_raw.clone()));
    expect(
        "master base64",
        "master",
        cap(Kind::Http, wrap(&STANDARD.encode(&master_raw))),
    );

    // The password: plain, inside JSON, base64 (HTTP Basic), hex, partial.
    expect(
        "password in JSON",
        "password",
        cap(
            Kind::Log,
            json!({"password": password}).to_string().into_bytes(),
        ),
    );
    expect(
        "password in Basic",
        "password",
        cap(
            Kind::Log,
            wrap(&STANDARD.encode(format!("alice:{password}"))),
        ),
    );
    expect(
        "password hex",
        "password",
        cap(Kind::Log, wrap(&hex(password.as_bytes()))),
    );
    expect(
        "password prefix",
        "password",
        cap(Kind::Log, wrap(&password[..16])),
    );

    // Bearer secrets are found in logs, not in HTTP answers.
    expect(
        "bearer in a log",
        "bearer",
        cap(
            Kind::Log,
            b"token=head.body.SIGNATURE-SIGNATURE-SIG".to_vec(),
        ),
    );
    assert!(
        found(cap(
            Kind::Http,
            b"head.body.SIGNATURE-SIGNATURE-SIG".to_vec()
        ))
        .is_empty()
    );

    // Silence on public material and shared ASN.1 framing.
    let mut public = Vec::new();
    for k in [&ed, &es, &rsa] {
        let vk = k.verifying_key();
        public.extend_from_slice(format!("{vk:?} {}\n", vk.to_jwk()).as_bytes());
    }
    let jwk_like = json!({
        "x": URL_SAFE_NO_PAD.encode(&ed_der[ed_der.len() - 32..]),
        "es_tail": URL_SAFE_NO_PAD.encode(&es_der[es_priv.end..]),
        "es_tail_hex": hex(&es_der[es_priv.end..]),
        "rsa_head": STANDARD.encode(&rsa_der[..rsa_priv.start]),
        "rsa_head_hex": hex(&rsa_der[..rsa_priv.start]),
        "ed_prefix": hex(&ed_der[..ed_priv.start]),
        "ed_prefix_b64": STANDARD.encode(&ed_der[..ed_priv.start]),
        "es_prefix_hex": hex(&es_der[..es_priv.start]),
    });
    public.extend_from_slice(jwk_like.to_string().as_bytes());
    public.extend_from_slice(&ed_der[..ed_priv.start + 7]);
    public.extend_from_slice(b"\n");
    public.extend_from_slice(&password.as_bytes()[..15]);
    let got = found(cap(Kind::Log, public));
    assert!(
        got.is_empty(),
        "false positives on public material: {got:?}"
    );

    // The finding names the secret, the encoding and the place, not the bytes.
    let f = m.scan(&cap(Kind::Log, wrap(&hex(&seed))));
    let text = f[0].to_string();
    assert!(text.contains("ed found as hex") && text.contains("injected (line 1)"));
    assert!(!text.contains(&hex(&seed)[..8]));
}
