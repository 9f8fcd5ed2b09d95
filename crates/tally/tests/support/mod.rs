//! Shared helpers for the black-box tests of the `tally` binary: temp data
//! directories, a server child process, and raw JWS construction for forgeries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod caddy;
pub mod nginx;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const BIN: &str = env!("CARGO_BIN_EXE_tally");

/// The binary the helpers run: this build's, or the one `TALLY_TEST_BIN`
/// names (to show what another build, an older one say, does with the same
/// tests).
pub fn bin() -> String {
    std::env::var("TALLY_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A directory of one test (`tempfile`), removed when it goes.
pub struct TempDir(pub PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = tempfile::Builder::new()
            .prefix(&format!("tally-e2e-{tag}-"))
            .tempdir()
            .unwrap();
        TempDir(d.path().to_path_buf(), d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A test cannot run here because something it needs is missing: the
/// suites' one rule (`tally_testkit::skip`): under `CI=true` a failure;
/// elsewhere said, counted and named at the end of `tools/test`.
#[allow(unused_imports)]
pub use tally_testkit::skip;

/// Runs `tally ARGS` with `stdin`, returning its output.
pub fn tally(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("TALLY_LOG", "warn")
        .env_remove("TALLY_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        // A command that refuses early may exit before reading its input.
        if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Runs `tally ARGS` and asserts success; returns stdout.
pub fn tally_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = tally(args, stdin);
    assert!(
        out.status.success(),
        "tally {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `tally serve` child process.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(data: &Path, config: Option<&Path>) -> Server {
        Server::start_with_env(data, config, &[])
    }

    pub fn start_with_env(data: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Server {
        Server::start_on(data, config, env, "127.0.0.1:0")
    }

    /// [`Server::start_with_env`], listening on `listen`.
    pub fn start_on(
        data: &Path,
        config: Option<&Path>,
        env: &[(&str, &str)],
        listen: &str,
    ) -> Server {
        let mut args = vec![
            "--data".as_ref(),
            data.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ];
        if let Some(c) = config {
            args.extend(["--config".as_ref(), c.as_os_str()]);
        }
        Server::serve(&args, env)
    }

    /// `tally serve ARGS` with the variables `env`, once it listens.
    pub fn serve(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.env_remove("TALLY_MASTER_KEY")
            .env_remove("TALLY_STORAGE_URL")
            .env_remove("TALLY_DATA");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg("serve")
            .args(args)
            .env("TALLY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("tally listening on http://")
                    && let Some(t) = tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = t.send(addr);
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        terminate(&child);
        wait_with_deadline(&mut child, Duration::from_secs(30))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Waits until `port` on 127.0.0.1 accepts connections; fails with `logs()`
/// if `child` exits first or `limit` passes.
pub fn wait_listening(
    name: &str,
    child: &mut Child,
    port: u16,
    limit: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < deadline,
            "{name} did not start ({exited:?}):\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client() -> reqwest::blocking::Client {
    // reqwest is built with rustls (for tally's JWKS fetching), which needs a
    // process-wide crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What the gate says of `token` on `/v1/check`: the status and the
/// `X-Tally-Verdict` header (empty when there is none).
pub fn checked(server: &Server, token: &str) -> (u16, String) {
    let r = client()
        .get(server.url("/v1/check"))
        .bearer_auth(token)
        .send()
        .unwrap();
    let verdict = r
        .headers()
        .get("x-tally-verdict")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (r.status().as_u16(), verdict)
}

/// The body of `GET path` on the server.
pub fn get_text(server: &Server, path: &str) -> String {
    client()
        .get(server.url(path))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The server's published key set.
pub fn jwks(server: &Server) -> serde_json::Value {
    client()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Logs in and returns the access token.
pub fn login(server: &Server, user: &str, password: &str) -> String {
    let resp = client()
        .post(server.url("/v1/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "login failed: {:?}", resp.text());
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_string()
}

/// The decoded JSON payload of a compact token.
pub fn payload(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCS#8 DER as PEM.
pub fn pem(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// A private key held outside tally: the insider's copy.
pub enum RawKey {
    Ed(Ed25519KeyPair),
    Es(EcdsaKeyPair),
}

impl RawKey {
    pub fn from_pkcs8(der: &[u8]) -> RawKey {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return RawKey::Ed(k);
        }
        RawKey::Es(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).unwrap())
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            RawKey::Ed(k) => k.sign(msg).as_ref().to_vec(),
            RawKey::Es(k) => k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
        }
    }
}

/// `b64u(header).b64u(payload).b64u(sig over the two)`.
/// What an insider with a copy of signing key `kid` (EdDSA) mints: the
/// claims of the genuine token `like`, with subject `sub` and id `jti`, under
/// a valid signature and with no issuance record.
pub fn forge(insider: &RawKey, kid: &str, like: &str, jti: &str, sub: &str) -> String {
    let mut claims = payload(like);
    claims["jti"] = serde_json::json!(jti);
    claims["sub"] = serde_json::json!(sub);
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
    jws(insider, &header.to_string(), &claims.to_string())
}

pub fn jws(key: &RawKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64u(header.as_bytes()), b64u(payload.as_bytes()));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64u(&sig))
}

/// The ECDSA twin `(r, n - s)` of an ES256 token: a different token whose
/// signature also verifies.
pub fn es256_twin(token: &str) -> String {
    // P-256 group order n, big-endian.
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    let s = &sig[32..];
    let mut twin_s = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = N[i] as i16 - s[i] as i16 - borrow;
        twin_s[i] = d.rem_euclid(256) as u8;
        borrow = if d < 0 { 1 } else { 0 };
    }
    let mut out = sig[..32].to_vec();
    out.extend_from_slice(&twin_s);
    format!("{input}.{}", b64u(&out))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `kid` in a compact token's header.
pub fn kid_of(token: &str) -> String {
    let h: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap_or("").to_string()
}

/// Polls until `f` holds (changes reach a running server within a second);
/// fails after 15 seconds.
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(15), f)
}

/// [`eventually`], with a deadline of `within`.
pub fn eventually_within(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Imports a fresh Ed25519 key into the data directory `data` as the active
/// token key `kid` (writing its PEM into `dir`), and returns the copy an
/// insider kept: whatever it signs has a valid signature.
pub fn import_insider_key(dir: &Path, data: &str, kid: &str) -> RawKey {
    import_insider_key_with(dir, &["--data", data], kid)
}

/// [`import_insider_key`] with the store named by `store_args` (`--data
/// DIR`, and `--config FILE` for a fleet).
pub fn import_insider_key_with(dir: &Path, store_args: &[&str], kid: &str) -> RawKey {
    let key = tally_core::jose::SigningKey::generate(tally_core::jose::Algorithm::EdDSA).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let pem_path = dir.join(format!("{kid}.pem"));
    std::fs::write(&pem_path, pem(&der)).unwrap();
    let mut args = vec![
        "keys",
        "import",
        "--kid",
        kid,
        "--pem",
        pem_path.to_str().unwrap(),
    ];
    args.extend_from_slice(store_args);
    tally_ok(&args, None);
    RawKey::from_pkcs8(&der)
}

/// Creates the data directory `data` (`tally init`): only `init` and `serve`
/// create one, every other command needs it to exist.
pub fn init(data: &str) {
    tally_ok(&["init", "--data", data], None);
}

/// Adds user `name` with `password` to the data directory `data`.
pub fn add_user(data: &str, name: &str, password: &str) {
    tally_ok(
        &["users", "add", name, "--password-stdin", "--data", data],
        Some(&format!("{password}\n")),
    );
}

/// The committed test fixtures (`crates/tally/tests/fixtures`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tarball() -> PathBuf {
    fixtures().join("datadir-v1.tar.gz")
}

/// Unpacks a copy of the fixture into `tmp`; returns its data directory.
pub fn unpack(tmp: &TempDir) -> PathBuf {
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tarball())
        .arg("-C")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = tmp.path().join("data");
    assert!(data.join("master.key").is_file(), "no data/ in the fixture");
    data
}
