//! The recipes for gateways in front of tally (docs/nginx.conf,
//! docs/Caddyfile), run by real nginx and real Caddy: a client cannot choose
//! the address tally sees (IP blocks hold, the access log names the real
//! address, spoofed addresses do not make a token look replayed), cannot
//! choose the identity the upstream sees, and DPoP works through them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::fixture::Upstreams;
use crate::http::{self, Answer};
use crate::support::caddy::{Caddy, caddy_binary};
use crate::support::nginx::{Nginx, nginx_binary};
use crate::support::*;

/// Which gateway stands in front.
#[derive(Clone, Copy, Debug)]
pub enum Gateway {
    Nginx,
    Caddy,
}

/// A running gateway, whichever it is.
enum Running {
    Nginx(Nginx),
    Caddy(Caddy),
}

/// tally behind a gateway, in front of the WSGI upstream.
pub struct Stack {
    gateway: Running,
    pub server: Server,
    pub data: PathBuf,
    pub token: String,
    pub forged: String,
    _upstreams: Upstreams,
    pub tmp: TempDir,
}

impl Stack {
    /// `None` when the gateway is not installed here (a skip, which fails
    /// under CI).
    pub fn start(which: Gateway) -> Option<Stack> {
        let (nginx, caddy) = match which {
            Gateway::Nginx => (nginx_binary(), None),
            Gateway::Caddy => (None, caddy_binary()),
        };
        if nginx.is_none() && caddy.is_none() {
            skip(&format!("{which:?} is not installed"));
            return None;
        }
        let tmp = TempDir::new("gateway");
        let up = Upstreams::start(tmp.path());
        let data = tmp.path().join("data");
        let d = data.to_str().unwrap();
        let cfg = tmp.path().join("tally.toml");
        std::fs::write(&cfg, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();
        init(d);
        let insider = import_insider_key(tmp.path(), d, "k1");
        add_user(d, "alice", "alice-passphrase");
        let server = Server::start(&data, Some(&cfg));
        let token = login(&server, "alice", "alice-passphrase");
        let mut claims = payload(&token);
        claims["jti"] = json!("forged-through-gateway");
        claims["sub"] = json!("root");
        let forged = jws(
            &insider,
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}).to_string(),
            &claims.to_string(),
        );
        let tally = server.base.trim_start_matches("http://").to_string();
        let upstream = format!("127.0.0.1:{}", up.wsgi);
        let gw_dir = tmp.path().join("gateway");
        let gateway = match (nginx, caddy) {
            (Some(bin), _) => Running::Nginx(Nginx::from_doc(&bin, &gw_dir, &tally, &upstream)),
            (_, Some(bin)) => Running::Caddy(Caddy::from_doc(&bin, &gw_dir, &tally, &upstream)),
            _ => unreachable!(),
        };
        Some(Stack {
            gateway,
            server,
            data,
            token,
            forged,
            _upstreams: up,
            tmp,
        })
    }

    /// The gateway's `host:port`.
    pub fn addr(&self) -> &str {
        match &self.gateway {
            Running::Nginx(n) => &n.addr,
            Running::Caddy(c) => &c.addr,
        }
    }

    /// `GET path` through the gateway with `headers`.
    pub fn get(&self, path: &str, headers: &[&str]) -> Answer {
        http::get(self.addr(), path, headers).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn d(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// The client addresses of the newest access events.
    pub fn logged_addresses(&self) -> Vec<String> {
        tally_ok(
            &["access", "tail", "--limit", "200", "--data", self.d()],
            None,
        )
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["client_ip"].as_str().map(str::to_string))
        .collect()
    }
}

/// What the WSGI upstream says it saw, from a 200 answer.
fn upstream_saw(a: &Answer) -> Result<Value, String> {
    if a.status != 200 {
        return Err(format!("status {} ({})", a.status, a.body));
    }
    serde_json::from_str(&a.body).map_err(|e| format!("{e}: {}", a.body))
}

/// A client that claims other addresses in `X-Forwarded-For` is still seen
/// at its own: three "addresses" using one token are not a replay, the log
/// holds the real one, and a block on the real one holds whatever it claims.
pub fn client_address(which: Gateway) -> Result<(), String> {
    let Some(s) = Stack::start(which) else {
        return Ok(());
    };
    let auth = format!("Authorization: Bearer {}", s.token);
    for spoof in ["203.0.113.1", "203.0.113.2", "203.0.113.3, 203.0.113.4"] {
        let a = s.get("/api/x", &[&auth, &format!("X-Forwarded-For: {spoof}")]);
        upstream_saw(&a)?;
    }
    let mut logged = Vec::new();
    eventually("the three decisions are in the access log", || {
        logged = s.logged_addresses();
        logged.len() >= 3
    });
    if logged.iter().any(|a| a != "127.0.0.1") {
        return Err(format!(
            "the log holds addresses the client chose: {logged:?}"
        ));
    }
    // The detector had its chance: no replay from three "places".
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let incidents = tally_ok(
        &["incident", "list", "--format", "json", "--data", s.d()],
        None,
    );
    if incidents.contains("token_replay") {
        return Err(format!(
            "spoofed addresses raised token_replay: {incidents}"
        ));
    }
    tally_ok(
        &[
            "block",
            "add",
            "--ip",
            "127.0.0.1",
            "--reason",
            "containment test",
            "--data",
            s.d(),
        ],
        None,
    );
    let mut last = None;
    eventually("the block reaches the server", || {
        let a = s.get("/api/x", &[&auth, "X-Forwarded-For: 198.51.100.7"]);
        let blocked = a.status == 403 && a.header("x-tally-verdict") == Some("blocked_actor");
        last = Some(a);
        blocked
    });
    Ok(())
}

/// Client headers that claim tally's identity or describe another request
/// never reach the upstream or tally's route choice; a forgery is refused
/// with its verdict, through the gateway.
pub fn identity_headers(which: Gateway) -> Result<(), String> {
    let Some(s) = Stack::start(which) else {
        return Ok(());
    };
    let auth = format!("Authorization: Bearer {}", s.token);
    let a = s.get(
        "/api/x",
        &[
            &auth,
            "X_Tally_Subject: root",
            "X-Tally-Subject: root",
            "x_tally_token_id: t-1",
            "X-Tally-Verdict: ok",
        ],
    );
    let saw = upstream_saw(&a)?;
    let tally = &saw["tally"];
    if tally["HTTP_X_TALLY_SUBJECT"] != "alice"
        || tally["HTTP_X_TALLY_VERDICT"] != "ok"
        || a.body.contains("root")
        || a.body.contains("t-1")
    {
        return Err(format!("the upstream saw {saw}"));
    }
    let a = s.get("/api/x", &[&format!("Authorization: Bearer {}", s.forged)]);
    if a.status != 403 || a.header("x-tally-verdict") != Some("not_issued") {
        return Err(format!("forged token: {a:?}"));
    }
    let a = s.get(
        "/api/x",
        &["X-Tally-Subject: root", "X_Tally_Subject: root"],
    );
    if a.status != 401 || a.body.contains("root") {
        return Err(format!("no token, spoofed identity: {a:?}"));
    }
    Ok(())
}

/// A PyJWT-made DPoP key and proofs (an implementation independent of
/// tally's), as in the DPoP end-to-end test.
pub fn dpop(dir: &Path, args: &[&str]) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dpop_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A DPoP-bound token passes through the gateway with a proof for the URL
/// the client used; as a bearer token, or with a replayed proof, it does not.
pub fn dpop_through(which: Gateway) -> Result<(), String> {
    if Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        skip("PyJWT is not installed (DPoP through a gateway)");
        return Ok(());
    }
    let Some(s) = Stack::start(which) else {
        return Ok(());
    };
    let keys = s.tmp.path().join("dpop");
    std::fs::create_dir_all(&keys).unwrap();
    dpop(&keys, &["keygen"])?;
    let login_url = s.server.url("/v1/login");
    let login_proof = dpop(&keys, &["proof", "POST", &login_url])?;
    let resp = client()
        .post(&login_url)
        .header("DPoP", &login_proof)
        .json(&json!({"username": "alice", "password": "alice-passphrase"}))
        .send()
        .map_err(|e| e.to_string())?;
    let body: Value = resp.json().map_err(|e| e.to_string())?;
    let token = body["access_token"].as_str().ok_or("no token")?.to_string();
    let url = format!("http://{}/api/orders", s.addr());
    let proof = dpop(&keys, &["proof", "GET", &url, &token])?;
    let a = s.get(
        "/api/orders",
        &[
            &format!("Authorization: DPoP {token}"),
            &format!("DPoP: {proof}"),
        ],
    );
    let saw = upstream_saw(&a)?;
    if saw["tally"]["HTTP_X_TALLY_SUBJECT"] != "alice" {
        return Err(format!("the upstream saw {saw}"));
    }
    let replay = s.get(
        "/api/orders",
        &[
            &format!("Authorization: DPoP {token}"),
            &format!("DPoP: {proof}"),
        ],
    );
    let bearer = s.get("/api/orders", &[&format!("Authorization: Bearer {token}")]);
    for (what, a) in [("replayed proof", replay), ("bearer", bearer)] {
        if a.status != 401 && a.status != 403
            || a.header("x-tally-verdict") != Some("binding_mismatch")
        {
            return Err(format!("{what}: {a:?}"));
        }
    }
    Ok(())
}
