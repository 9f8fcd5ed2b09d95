//! The shared fixture of request rows: a real `tally serve` whose reverse
//! proxy stands in front of real Python upstreams (`upstream.py`), a user
//! with a live token, and an insider's copy of the signing key.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::http::{self, Answer};
use crate::support::*;

/// Which port a probe goes to.
#[derive(Clone, Copy, Debug)]
pub enum Door {
    /// The reverse proxy (`[gate] listen`).
    Gate,
    /// The API port (`/v1/check`, `/v1/logout`, …).
    Api,
}

/// A request row: the raw request (with `{host}`, `{token}` and `{forged}`
/// replaced by the door's address, alice's live token and a token the
/// insider minted), and what must come back.
pub struct Probe {
    pub to: Door,
    pub request: &'static str,
    pub expect: Expect,
}

/// What a probe's answer must show.
pub struct Expect {
    /// The status.
    pub status: u16,
    /// `X-Tally-Verdict`, when it must be there.
    pub verdict: Option<&'static str>,
    /// Text the body must hold (what the upstream saw, say).
    pub body_has: &'static [&'static str],
    /// Text the body must not hold (the private file, a spoofed subject).
    pub body_lacks: &'static [&'static str],
}

impl Expect {
    /// Refused with `status` and `verdict`, and the secret file never served.
    pub const fn refused(status: u16, verdict: &'static str) -> Expect {
        Expect {
            status,
            verdict: Some(verdict),
            body_has: &[],
            body_lacks: &[SECRET],
        }
    }
}

/// The secret of the API client `rs`.
pub const CLIENT_SECRET: &str = "rs-secret-5d1e";

/// The content of `private/secret` on the file upstream.
pub const SECRET: &str = "SECRET-7f3a91";
/// The content of `public/index.html`.
pub const PUBLIC: &str = "PUBLIC-PAGE-c2e4";

/// Python's upstreams, stopped when dropped (they also exit when their
/// stdin closes, so a killed test leaves nothing behind).
pub struct Upstreams {
    child: Child,
    /// The file server.
    pub files: u16,
    /// The WSGI application.
    pub wsgi: u16,
    /// More WSGI upstreams, each answering with its name.
    pub named: Vec<(String, u16)>,
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upstreams {
    /// Starts `upstream.py` over a directory under `dir`.
    pub fn start(dir: &Path) -> Upstreams {
        Upstreams::start_named(dir, &[])
    }

    /// [`Upstreams::start`], plus one WSGI upstream per name in `names`.
    pub fn start_named(dir: &Path, names: &[&str]) -> Upstreams {
        let root = dir.join("www");
        std::fs::create_dir_all(root.join("public")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("public/index.html"), PUBLIC).unwrap();
        std::fs::write(root.join("private/secret"), SECRET).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attacks/upstream.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&root)
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the upstreams");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut port = |name: &str| -> u16 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let (n, p) = line.trim().split_once(' ').unwrap();
            assert_eq!(n, name);
            p.parse().unwrap()
        };
        let files = port("files");
        let wsgi = port("wsgi");
        let named = names.iter().map(|n| (n.to_string(), port(n))).collect();
        Upstreams {
            child,
            files,
            wsgi,
            named,
        }
    }
}

/// The running fixture.
pub struct Fixture {
    pub tmp: TempDir,
    _upstreams: Upstreams,
    pub server: Server,
    /// The data directory (for admin commands).
    pub data: std::path::PathBuf,
    /// The insider's copy of the active signing key `k1`.
    pub insider: RawKey,
    /// An API client allowed to introspect: `rs` / [`CLIENT_SECRET`].
    pub client: &'static str,
    /// `host:port` of the reverse proxy.
    pub gate: String,
    /// `host:port` of the API.
    pub api: String,
    /// alice's live token.
    pub token: String,
    /// A token for `root` signed by the insider's copy of the active key.
    pub forged: String,
}

/// The address in a `tally gate listening on http://ADDR` line.
pub fn gate_addr(server: &Server) -> String {
    eventually("the gate listens", || {
        server
            .log_text()
            .contains("tally gate listening on http://")
    });
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("tally gate listening on http://"))
        .unwrap();
    line.trim_start_matches("tally gate listening on http://")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

impl Fixture {
    /// Starts everything.
    pub fn start() -> Fixture {
        let tmp = TempDir::new("attacks");
        let up = Upstreams::start(tmp.path());
        let data = tmp.path().join("data");
        let d = data.to_str().unwrap();
        let cfg = tmp.path().join("tally.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"
trusted_proxies = ["127.0.0.1"]
# Unknown tokens (each a signature check) per client address: low, so that
# a row can show the limit at work without racing the clock.
miss_rate_per_sec = 1
miss_burst = 20

[gate]
listen = "127.0.0.1:0"
upstream_timeout_secs = 5

[[gate.routes]]
prefix = "/public"
upstream = "http://127.0.0.1:{files}"
require_token = false

[[gate.routes]]
prefix = "/private"
upstream = "http://127.0.0.1:{files}"

[[gate.routes]]
prefix = "/whoami"
upstream = "http://127.0.0.1:{wsgi}"

[[gate.routes]]
prefix = "/open"
upstream = "http://127.0.0.1:{wsgi}"
require_token = false

[[gate.routes]]
prefix = "/orders"
upstream = "http://127.0.0.1:{wsgi}"
audience = "orders"

[[gate.routes]]
prefix = "/watched"
upstream = "http://127.0.0.1:{wsgi}"
mode = "monitor"
"#,
                files = up.files,
                wsgi = up.wsgi
            ),
        )
        .unwrap();
        init(d);
        let insider = import_insider_key(tmp.path(), d, "k1");
        add_user(d, "alice", "alice-passphrase");
        add_user(d, "root", "pw-root-unused");
        tally_ok(
            &["clients", "add", "rs", "--secret-stdin", "--data", d],
            Some(&format!("{CLIENT_SECRET}\n")),
        );
        let server = Server::start(&data, Some(&cfg));
        let gate = gate_addr(&server);
        let api = server.base.trim_start_matches("http://").to_string();
        let token = login(&server, "alice", "alice-passphrase");
        let mut claims = payload(&token);
        claims["jti"] = json!("forged-attack-table");
        claims["sub"] = json!("root");
        let forged = jws(
            &insider,
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}).to_string(),
            &claims.to_string(),
        );
        Fixture {
            tmp,
            _upstreams: up,
            server,
            data,
            insider,
            client: "rs",
            gate,
            api,
            token,
            forged,
        }
    }

    /// A token for `sub` with id `jti`, signed by the insider's copy of the
    /// active key: a valid signature, and no issuance record.
    pub fn forge(&self, jti: &str, sub: &str) -> String {
        let mut claims = payload(&self.token);
        claims["jti"] = json!(jti);
        claims["sub"] = json!(sub);
        jws(
            &self.insider,
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}).to_string(),
            &claims.to_string(),
        )
    }

    /// The data directory, as an argument.
    pub fn d(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// The newest access events (JSON), newest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        tally_ok(
            &["access", "tail", "--limit", "500", "--data", self.d()],
            None,
        )
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
    }

    /// Sends a probe and checks its answer.
    pub fn probe(&self, p: &Probe) -> Result<(), String> {
        let addr = match p.to {
            Door::Gate => &self.gate,
            Door::Api => &self.api,
        };
        let req = p
            .request
            .replace("{host}", addr)
            .replace("{token}", &self.token)
            .replace("{forged}", &self.forged)
            .replace('\n', "\r\n");
        let a = http::send(addr, req.as_bytes())?;
        check(&a, &p.expect)
    }
}

/// Whether `a` is what `e` asks for.
pub fn check(a: &Answer, e: &Expect) -> Result<(), String> {
    let verdict = a.header("x-tally-verdict");
    let mut wrong = Vec::new();
    if a.status != e.status {
        wrong.push(format!("status {} (wanted {})", a.status, e.status));
    }
    if let Some(v) = e.verdict
        && verdict != Some(v)
    {
        wrong.push(format!("verdict {verdict:?} (wanted {v})"));
    }
    for s in e.body_has {
        if !a.body.contains(s) {
            wrong.push(format!("body lacks {s:?}"));
        }
    }
    for s in e.body_lacks {
        if a.body.contains(s) {
            wrong.push(format!("body holds {s:?}"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; body: {:.300}", wrong.join(", "), a.body))
    }
}
