//! A minimal Redis client (RESP2 over TCP), for the fleet's shared counts.
//!
//! tally needs four commands (`PFADD`, `PFCOUNT`, `EXPIRE`, `SET … NX EX`)
//! sent in pipelines from one background thread; a small client with hard
//! timeouts and strict reply parsing is less to trust than a general one.
//! Replies are bounded: a bulk string or array larger than tally could ever
//! ask for is an error, not an allocation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    /// The URL is not `redis://host:port[/db]`.
    #[error("redis url must look like redis://127.0.0.1:6379 (got {0})")]
    Url(String),
}

const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1 << 16;
/// Replies (of any kind) one pipeline may bring back in all.
const MAX_ITEMS: usize = 1 << 20;

/// A connection.
pub struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Redis {
    /// Connects to `redis://[user:password@]host:port[/db]` (timeouts of 2 s),
    /// authenticating with `AUTH` (Redis 6 ACL users; an empty user name is
    /// the `default` user). The password never appears in an error.
    pub fn connect(url: &str) -> Result<Redis, RedisError> {
        let shown = crate::config::redact_url(url);
        let bad = || RedisError::Url(shown.clone());
        let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
        let (rest, db) = match rest.split_once('/') {
            Some((a, d)) if !d.is_empty() => (a, Some(d)),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        let (auth, addr) = match rest.rsplit_once('@') {
            Some((userinfo, addr)) => {
                let (user, password) = userinfo.split_once(':').ok_or_else(bad)?;
                (Some((user.to_string(), password.to_string())), addr)
            }
            None => (None, rest),
        };
        let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.set_nodelay(true)?;
        let mut r = Redis {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        if let Some((user, password)) = auth {
            let user = if user.is_empty() {
                "default".to_string()
            } else {
                user
            };
            let cmd = vec![b"AUTH".to_vec(), user.into_bytes(), password.into_bytes()];
            match r.pipeline(&[cmd])?[..] {
                [Reply::Status(_)] => {}
                // The server's words only: they never echo the password.
                [Reply::Error(ref e)] => {
                    return Err(RedisError::Protocol(format!("AUTH refused: {e}")));
                }
                ref other => return Err(RedisError::Protocol(format!("AUTH: {other:?}"))),
            }
        }
        if let Some(db) = db {
            let db: u32 = db.parse().map_err(|_| bad())?;
            match r.pipeline(&[vec![b"SELECT".to_vec(), db.to_string().into_bytes()]])?[..] {
                [Reply::Status(_)] => {}
                ref other => return Err(RedisError::Protocol(format!("SELECT: {other:?}"))),
            }
        }
        Ok(r)
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
        self.writer.write_all(&out)?;
        let mut budget = MAX_ITEMS;
        (0..commands.len())
            .map(|_| read_reply(&mut self.reader, 0, &mut budget))
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
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but Redis at {base} is unreachable: {e}"
                );
                eprintln!("skipping: Redis at {base} is unreachable ({e})");
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

    #[test]
    fn urls() {
        assert!(matches!(
            Redis::connect("http://x:1"),
            Err(RedisError::Url(_))
        ));
        match Redis::connect("redis://user@127.0.0.1:1") {
            Err(RedisError::Url(u)) => assert!(!u.contains("pw")),
            other => panic!("{:?}", other.err()),
        }
        match Redis::connect("redis://user:s3cret@") {
            Err(e) => assert!(!e.to_string().contains("s3cret"), "{e}"),
            Ok(_) => panic!("no address"),
        }
    }
}
