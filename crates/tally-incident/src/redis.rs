//! A minimal Redis client (RESP2 over TCP or TLS), for the fleet's shared
//! counts.
//!
//! tally needs four commands (`PFADD`, `PFCOUNT`, `EXPIRE`, `SET … NX EX`)
//! sent in pipelines from one background thread; a small client with hard
//! timeouts and strict reply parsing is less to trust than a general one.
//! Replies are bounded: a bulk string or array larger than tally could ever
//! ask for is an error, not an allocation.
//!
//! `rediss://` speaks TLS (rustls, AWS-LC) and always checks the server's
//! certificate chain and name: against Mozilla's roots (`webpki-roots`), or
//! against `cacert=PATH` alone. `cert=PATH&key=PATH` present a client
//! certificate, for servers that ask for one (Redis's `tls-auth-clients yes`,
//! its default when TLS is on). There is no switch to skip the check.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `:n`
    Int(i64),
    /// `$n …` (`None` for the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*n …` (`None` for the null array).
    Array(Option<Vec<Reply>>),
    /// `-ERR …`
    Error(String),
}

/// Redis failures.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Connecting, reading or writing failed.
    #[error("redis: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not RESP2 within tally's limits.
    #[error("redis: malformed reply: {0}")]
    Protocol(String),
    /// The URL is not `redis[s]://[user:password@]host:port[/db][?…]`.
    #[error(
        "redis url must look like redis://127.0.0.1:6379 or rediss://host:6380?cacert=/path/ca.pem (got {0})"
    )]
    Url(String),
    /// The URL names a parameter this client does not know.
    #[error("redis url {0}")]
    Parameter(String),
    /// The TLS settings cannot be used, or the handshake failed (the
    /// server's certificate was refused, or it refused ours).
    #[error("redis: TLS: {0}")]
    Tls(String),
}

const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1 << 16;
/// Replies (of any kind) one pipeline may bring back in all.
const MAX_ITEMS: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed URL: where to connect, as whom, and how.
#[derive(Clone)]
pub struct Target {
    /// `host:port`, resolved at each connection (a managed Redis moves its
    /// name to a new address on fail-over).
    addr: String,
    auth: Option<(String, zeroize::Zeroizing<String>)>,
    db: Option<u32>,
    /// With TLS: the client configuration and the name the certificate must
    /// carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("db", &self.db)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `redis://[user:password@]host:port[/db]` or the same with
    /// `rediss://` and, optionally, `?cacert=PATH&cert=PATH&key=PATH`. Reads
    /// the PEM files now, so a wrong path is found at start-up. Errors never
    /// repeat the password.
    pub fn parse(url: &str) -> Result<Target, RedisError> {
        let shown = tally_core::endpoint::redact_url(url);
        let bad = || RedisError::Url(shown.clone());
        let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(bad()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (rest, db) = match rest.split_once('/') {
            Some((a, d)) if !d.is_empty() => (a, Some(d.parse::<u32>().map_err(|_| bad())?)),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, addr)) => {
                let (user, password) = userinfo.split_once(':').ok_or_else(bad)?;
                let user = if user.is_empty() { "default" } else { user };
                let password = zeroize::Zeroizing::new(password.to_string());
                (Some((user.to_string(), password)), addr)
            }
            None => (None, rest),
        };
        let host = match hostport.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {
                h.trim_start_matches('[').trim_end_matches(']')
            }
            _ => return Err(bad()),
        };
        let mut files = TlsFiles::default();
        for p in query.split('&').filter(|p| !p.is_empty()) {
            match p.split_once('=') {
                Some(("cacert", v)) if tls => files.ca = Some(v.to_string()),
                Some(("cert", v)) if tls => files.cert = Some(v.to_string()),
                Some(("key", v)) if tls => files.key = Some(v.to_string()),
                _ => {
                    let name = p.split('=').next().unwrap_or(p);
                    return Err(RedisError::Parameter(format!(
                        "{shown}: unknown parameter {name:?} (rediss:// takes cacert, cert and key; redis:// takes none)"
                    )));
                }
            }
        }
        let tls = if tls {
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| RedisError::Tls(format!("{host:?} is not a host name")))?;
            Some((files.client_config()?, name))
        } else {
            None
        };
        Ok(Target {
            addr: hostport.to_string(),
            auth,
            db,
            tls,
        })
    }
}

/// The PEM files named in a `rediss://` URL.
#[derive(Default)]
struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsFiles {
    fn client_config(&self) -> Result<Arc<ClientConfig>, RedisError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                for c in CertificateDer::pem_file_iter(path)
                    .map_err(|e| RedisError::Tls(format!("cacert={path}: {e}")))?
                {
                    let c = c.map_err(|e| RedisError::Tls(format!("cacert={path}: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| RedisError::Tls(format!("cacert={path}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(RedisError::Tls(format!(
                        "cacert={path} holds no certificate"
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| RedisError::Tls(e.to_string()))?
        .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| RedisError::Tls(format!("cert={cert}: {e}")))?;
                if chain.is_empty() {
                    return Err(RedisError::Tls(format!("cert={cert} holds no certificate")));
                }
                // The key's own error text is not repeated: it could quote
                // the file.
                let key = PrivateKeyDer::from_pem_file(key).map_err(|_| {
                    RedisError::Tls(format!("key={key}: no readable PEM private key"))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| RedisError::Tls(format!("cert={cert} and its key: {e}")))?
            }
            _ => {
                return Err(RedisError::Tls(
                    "cert and key go together: name both, or neither".into(),
                ));
            }
        };
        Ok(Arc::new(config))
    }
}

/// The byte stream under RESP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Resolves `hostport` and connects to the first address that answers.
fn dial(hostport: &str) -> Result<TcpStream, RedisError> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(hostport)?.collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{hostport} resolves to no address"),
        )
        .into(),
    })
}

/// A connection.
pub struct Redis {
    io: BufReader<Conn>,
}

impl Redis {
    /// Parses `url` (see [`Target::parse`]) and connects.
    pub fn connect(url: &str) -> Result<Redis, RedisError> {
        Redis::open(&Target::parse(url)?)
    }

    /// Connects (timeouts of 2 s), completes the TLS handshake if asked,
    /// authenticates with `AUTH` (Redis 6 ACL users; an empty user name is
    /// the `default` user), selects the database, and checks with `PING`
    /// that the server answers: a server that refused our certificate says
    /// so here, not on the first count.
    pub fn open(target: &Target) -> Result<Redis, RedisError> {
        let stream = dial(&target.addr)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        let conn = match &target.tls {
            None => Conn::Plain(stream),
            Some((config, name)) => {
                let mut tls = ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| RedisError::Tls(e.to_string()))?;
                let mut stream = stream;
                while tls.is_handshaking() {
                    tls.complete_io(&mut stream).map_err(|e| {
                        RedisError::Tls(format!("handshake with {} failed: {e}", target.addr))
                    })?;
                }
                Conn::Tls(Box::new(StreamOwned::new(tls, stream)))
            }
        };
        let mut r = Redis {
            io: BufReader::new(conn),
        };
        match r.greet(target) {
            Ok(()) => Ok(r),
            // Under TLS 1.3 a server that wanted our certificate says so
            // after the handshake, on the first read.
            Err(RedisError::Io(e))
                if target.tls.is_some() && e.kind() == std::io::ErrorKind::InvalidData =>
            {
                Err(RedisError::Tls(format!(
                    "the server ended the session: {e} (if it asks for a client certificate, name one with cert=PATH&key=PATH)"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// `AUTH`, `SELECT` and `PING` on a new connection.
    fn greet(&mut self, target: &Target) -> Result<(), RedisError> {
        if let Some((user, password)) = &target.auth {
            let cmd = vec![
                b"AUTH".to_vec(),
                user.as_bytes().to_vec(),
                password.as_bytes().to_vec(),
            ];
            match self.pipeline(&[cmd])?[..] {
                [Reply::Status(_)] => {}
                // The server's words only: they never echo the password.
                [Reply::Error(ref e)] => {
                    return Err(RedisError::Protocol(format!("AUTH refused: {e}")));
                }
                ref other => return Err(RedisError::Protocol(format!("AUTH: {other:?}"))),
            }
        }
        if let Some(db) = target.db {
            match self.pipeline(&[vec![b"SELECT".to_vec(), db.to_string().into_bytes()]])?[..] {
                [Reply::Status(_)] => {}
                ref other => return Err(RedisError::Protocol(format!("SELECT: {other:?}"))),
            }
        }
        match self.pipeline(&[vec![b"PING".to_vec()]])?[..] {
            [Reply::Status(ref s)] if s == "PONG" => Ok(()),
            ref other => Err(RedisError::Protocol(format!("PING: {other:?}"))),
        }
    }

    /// Sends `commands` at once and reads one reply per command.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut out = Vec::new();
        for c in commands {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for arg in c {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        let w = self.io.get_mut();
        w.write_all(&out)?;
        w.flush()?;
        let mut budget = MAX_ITEMS;
        (0..commands.len())
            .map(|_| read_reply(&mut self.io, 0, &mut budget))
            .collect()
    }
}

fn line(r: &mut impl BufRead) -> Result<String, RedisError> {
    let mut buf = Vec::new();
    r.by_ref().take(4096).read_until(b'\n', &mut buf)?;
    if !buf.ends_with(b"\r\n") {
        return Err(RedisError::Protocol("line not terminated".into()));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| RedisError::Protocol("line not UTF-8".into()))
}

fn read_reply(r: &mut impl BufRead, depth: usize, budget: &mut usize) -> Result<Reply, RedisError> {
    if depth > 4 {
        return Err(RedisError::Protocol("nested too deep".into()));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| RedisError::Protocol("more replies than were asked for".into()))?;
    let l = line(r)?;
    let (kind, rest) = l.split_at(l.len().min(1));
    let num = || -> Result<i64, RedisError> {
        rest.parse()
            .map_err(|_| RedisError::Protocol(format!("bad number {rest:?}")))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(num()?)),
        "$" => {
            let n = num()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > MAX_BULK {
                return Err(RedisError::Protocol(format!("bulk of {n} bytes")));
            }
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(RedisError::Protocol("bulk not terminated".into()));
            }
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > MAX_ARRAY {
                return Err(RedisError::Protocol(format!("array of {n} items")));
            }
            let items = (0..n)
                .map(|_| read_reply(r, depth + 1, budget))
                .collect::<Result<_, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        other => Err(RedisError::Protocol(format!(
            "unknown reply type {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, RedisError> {
        read_reply(&mut BufReader::new(bytes), 0, &mut 16)
    }

    #[test]
    fn replies_parse_and_hostile_ones_are_refused() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b":42\r\n").unwrap(), Reply::Int(42));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Reply::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n-ERR no\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Int(1), Reply::Error("ERR no".into())]))
        );
        for bad in [
            &b"$99999999999\r\n"[..],
            b"*99999999\r\n",
            b":abc\r\n",
            b"?x\r\n",
            b"+no end",
            b"$3\r\nabcd\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            // within every per-item limit, but more items than asked for
            b"*20\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Against the real Redis (127.0.0.1:6379 or `TALLY_TEST_REDIS_URL`):
    /// an ACL user with a password, right and wrong.
    #[test]
    fn acl_users_authenticate() {
        let base = std::env::var("TALLY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut admin = match Redis::connect(&base) {
            Ok(r) => r,
            Err(e) => {
                tally_testkit::skip(&format!("Redis at {base} is unreachable ({e})"));
                return;
            }
        };
        let user = format!("tally-test-{}", std::process::id());
        let arg = |s: &str| s.as_bytes().to_vec();
        let made = admin
            .pipeline(&[vec![
                arg("ACL"),
                arg("SETUSER"),
                arg(&user),
                arg("on"),
                arg(">s3cret-pass"),
                arg("~tally:*"),
                arg("+@all"),
            ]])
            .unwrap();
        assert_eq!(made, vec![Reply::Status("OK".into())]);
        let host = base.trim_start_matches("redis://");
        let mut r = Redis::connect(&format!("redis://{user}:s3cret-pass@{host}")).unwrap();
        let key = format!("tally:acltest:{}", std::process::id());
        let out = r
            .pipeline(&[
                vec![arg("PFADD"), arg(&key), arg("a"), arg("b")],
                vec![arg("PFCOUNT"), arg(&key)],
                vec![arg("DEL"), arg(&key)],
            ])
            .unwrap();
        assert_eq!(out[1], Reply::Int(2));
        match Redis::connect(&format!("redis://{user}:not-the-password-7@{host}")) {
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("AUTH refused"), "{m}");
                assert!(
                    !m.contains("not-the-password-7"),
                    "the password is not echoed: {m}"
                );
            }
            Ok(_) => panic!("a wrong password was accepted"),
        }
        admin
            .pipeline(&[vec![arg("ACL"), arg("DELUSER"), arg(&user)]])
            .unwrap();
    }

    /// A directory of PEM files made with the `openssl` command line, and
    /// the `redis-server` processes started over them; both go on drop.
    struct Pki {
        dir: std::path::PathBuf,
        servers: Vec<std::process::Child>,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            for s in &mut self.servers {
                let _ = s.kill();
                let _ = s.wait();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Pki {
        fn new() -> Pki {
            let dir = std::env::temp_dir().join(format!("tally-redis-tls-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Pki {
                dir,
                servers: Vec::new(),
            }
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }

        fn openssl(&self, args: &[&str]) {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .expect("the openssl command line");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// A self-signed CA: `NAME.pem`, `NAME.key`.
        fn ca(&self, name: &str) {
            self.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }

        /// A leaf `NAME.pem`/`NAME.key` signed by `ca`, for `san`
        /// (`IP:127.0.0.1`, `DNS:…`).
        fn leaf(&self, name: &str, ca: &str, san: &str) {
            self.openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(
                self.dir.join(format!("{name}.ext")),
                format!("subjectAltName={san}\n"),
            )
            .unwrap();
            self.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }

        /// Starts `redis-server` speaking only TLS with `cert`, trusting
        /// client certificates from `ca`; returns its port.
        fn server(&mut self, cert: &str, ca: &str, client_certs: &str) -> u16 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    "0",
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &self.path(&format!("{cert}.pem"))])
                .args(["--tls-key-file", &self.path(&format!("{cert}.key"))])
                .args(["--tls-ca-cert-file", &self.path(&format!("{ca}.pem"))])
                .args(["--tls-auth-clients", client_certs])
                .args(["--dir", &self.dir.display().to_string()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server");
            self.servers.push(child);
            for _ in 0..300 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return port;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("redis-server did not listen on {port}");
        }
    }

    fn has(program: &str, version: &str) -> bool {
        std::process::Command::new(program)
            .arg(version)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `rediss://` against real `redis-server` processes speaking TLS only:
    /// the chain and the name are checked, a client certificate is
    /// presented when named, and a plain connection gets no answer.
    #[test]
    fn tls_checks_the_server_and_presents_a_client_certificate() {
        if !has("redis-server", "--version") || !has("openssl", "version") {
            tally_testkit::skip("redis-server or openssl is not installed");
            return;
        }
        let mut pki = Pki::new();
        pki.ca("ca");
        pki.ca("stranger");
        pki.leaf("server", "ca", "IP:127.0.0.1");
        pki.leaf("elsewhere", "ca", "DNS:elsewhere.test");
        pki.leaf("client", "ca", "DNS:gate-1.test");
        let strict = pki.server("server", "ca", "yes");
        let misnamed = pki.server("elsewhere", "ca", "no");
        let ca = pki.path("ca.pem");
        let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));

        // Trusted CA, client certificate: counts work.
        let url = format!("rediss://127.0.0.1:{strict}/2?cacert={ca}&cert={cert}&key={key}");
        let mut r = Redis::connect(&url).unwrap();
        let arg = |s: &str| s.as_bytes().to_vec();
        let out = r
            .pipeline(&[
                vec![arg("PFADD"), arg("tally:tls"), arg("a"), arg("b"), arg("c")],
                vec![arg("PFCOUNT"), arg("tally:tls")],
            ])
            .unwrap();
        assert_eq!(out[1], Reply::Int(3));

        let refused = |url: String, why: &str| match Redis::connect(&url) {
            Ok(_) => panic!("{url} was accepted; expected a refusal ({why})"),
            Err(e) => e.to_string(),
        };
        // The server asks for a client certificate and gets none.
        let e = refused(
            format!("rediss://127.0.0.1:{strict}?cacert={ca}"),
            "no client certificate",
        );
        assert!(
            e.contains("CertificateRequired") && e.contains("cert=PATH"),
            "{e}"
        );
        // Mozilla's roots do not lead to a private CA.
        let e = refused(
            format!("rediss://127.0.0.1:{strict}?cert={cert}&key={key}"),
            "private CA, public roots",
        );
        assert!(e.contains("UnknownIssuer"), "{e}");
        // A CA that did not sign the server's certificate.
        let e = refused(
            format!(
                "rediss://127.0.0.1:{strict}?cacert={}&cert={cert}&key={key}",
                pki.path("stranger.pem")
            ),
            "another CA",
        );
        assert!(e.contains("UnknownIssuer"), "{e}");
        // A certificate from the right CA for another name.
        let e = refused(
            format!("rediss://127.0.0.1:{misnamed}?cacert={ca}"),
            "wrong name",
        );
        assert!(e.contains("not valid for name"), "{e}");
        // The same port without TLS: no RESP answer comes back.
        refused(
            format!("redis://127.0.0.1:{strict}"),
            "plain TCP to a TLS port",
        );

        // Settings that cannot work are refused before any connection.
        for (url, says) in [
            (
                format!(
                    "rediss://127.0.0.1:{strict}?cacert={}",
                    pki.path("none.pem")
                ),
                "cacert=",
            ),
            (
                format!(
                    "rediss://127.0.0.1:{strict}?cacert={}",
                    pki.path("client.key")
                ),
                "holds no certificate",
            ),
            (
                format!("rediss://127.0.0.1:{strict}?cacert={ca}&cert={cert}"),
                "cert and key go together",
            ),
            (
                format!("rediss://127.0.0.1:{strict}?cacert={ca}&insecure=1"),
                "unknown parameter",
            ),
            (
                format!("redis://127.0.0.1:{strict}?cacert={ca}"),
                "unknown parameter",
            ),
        ] {
            match Target::parse(&url) {
                Ok(_) => panic!("{url} was accepted"),
                Err(e) => assert!(e.to_string().contains(says), "{url}: {e}"),
            }
        }
    }

    #[test]
    fn urls() {
        assert!(matches!(
            Redis::connect("http://x:1"),
            Err(RedisError::Url(_))
        ));
        // A user without a password: refused as a URL, shown as given.
        match Redis::connect("redis://user@127.0.0.1:1") {
            Err(RedisError::Url(u)) => assert_eq!(u, "redis://user@127.0.0.1:1"),
            other => panic!("{:?}", other.err()),
        }
        match Redis::connect("redis://user:s3cret@") {
            Err(e) => assert!(!e.to_string().contains("s3cret"), "{e}"),
            Ok(_) => panic!("no address"),
        }
    }
}
