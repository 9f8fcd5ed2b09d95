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
    /// Connects to `redis://host:port[/db]` (timeouts of 2 s).
    pub fn connect(url: &str) -> Result<Redis, RedisError> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| RedisError::Url(url.to_string()))?;
        let (addr, db) = match rest.split_once('/') {
            Some((a, d)) if !d.is_empty() => (a, Some(d)),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        if addr.contains('@') {
            return Err(RedisError::Url(
                "credentials in the URL are not supported; use a local or network-restricted Redis"
                    .into(),
            ));
        }
        let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(|_| RedisError::Url(url.to_string()))?
            .next()
            .ok_or_else(|| RedisError::Url(url.to_string()))?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.set_nodelay(true)?;
        let mut r = Redis {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        if let Some(db) = db {
            let db: u32 = db.parse().map_err(|_| RedisError::Url(url.to_string()))?;
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

    #[test]
    fn urls() {
        assert!(matches!(
            Redis::connect("http://x:1"),
            Err(RedisError::Url(_))
        ));
        assert!(matches!(
            Redis::connect("redis://user:pw@127.0.0.1:6379"),
            Err(RedisError::Url(_))
        ));
    }
}
