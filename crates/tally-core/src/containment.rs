//! Containment: block lists for client addresses (IP or CIDR), device ids,
//! subjects and token ids, each with a reason and an optional expiry. A
//! request matching an unexpired block is refused as `blocked_actor`.

use std::net::IpAddr;

/// What a block matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockTarget {
    /// A client address range.
    Cidr(Cidr),
    /// A device id (from the configured device header).
    Device(String),
    /// A token subject.
    Subject(String),
    /// A token id (`jti`).
    Token(String),
}

/// One block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its id in the store.
    pub id: i64,
    /// What it matches.
    pub target: BlockTarget,
    /// Why (for the record and the log).
    pub reason: String,
    /// Unix seconds after which it no longer applies.
    pub expires_at: Option<i64>,
}

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`. Host bits
    /// must be zero (`10.0.0.1/8` is refused, since it is probably a mistake).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        if cidr.masked(addr) != addr {
            return Err(format!(
                "{s:?}: host bits are set; did you mean {}?",
                Cidr {
                    addr: cidr.masked(addr),
                    prefix
                }
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix as u32)
                };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix as u32)
                };
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Whether `ip` is in this range (IPv4-mapped IPv6 addresses match IPv4 ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Who is asking, as far as containment is concerned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Actor<'a> {
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The device id.
    pub device: Option<&'a str>,
    /// The token's subject, once known.
    pub subject: Option<&'a str>,
    /// The token's id, once known.
    pub token_id: Option<&'a str>,
}

/// The blocks in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockList {
    blocks: Vec<Block>,
}

impl BlockList {
    /// A list of `blocks`.
    pub fn new(blocks: Vec<Block>) -> BlockList {
        BlockList { blocks }
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The first unexpired block matching `actor` at `now`.
    pub fn matching(&self, actor: &Actor<'_>, now: i64) -> Option<&Block> {
        self.blocks.iter().find(|b| {
            b.expires_at.is_none_or(|e| now < e)
                && match &b.target {
                    BlockTarget::Cidr(c) => actor.ip.is_some_and(|ip| c.contains(ip)),
                    BlockTarget::Device(d) => actor.device == Some(d.as_str()),
                    BlockTarget::Subject(s) => actor.subject == Some(s.as_str()),
                    BlockTarget::Token(t) => actor.token_id == Some(t.as_str()),
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.77".parse().unwrap()));
        assert!(!c.contains("203.0.114.1".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let one = Cidr::parse("198.51.100.7").unwrap();
        assert!(one.contains("198.51.100.7".parse().unwrap()));
        assert!(!one.contains("198.51.100.8".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nope",
            "1.2.3.4/",
            "::/129",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Cidr::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
    }

    #[test]
    fn matching_respects_kind_and_expiry() {
        let list = BlockList::new(vec![
            Block {
                id: 1,
                target: BlockTarget::Subject("mallory".into()),
                reason: "r".into(),
                expires_at: Some(100),
            },
            Block {
                id: 2,
                target: BlockTarget::Device("dev-9".into()),
                reason: "r".into(),
                expires_at: None,
            },
            Block {
                id: 3,
                target: BlockTarget::Cidr(Cidr::parse("10.1.0.0/16").unwrap()),
                reason: "r".into(),
                expires_at: None,
            },
            Block {
                id: 4,
                target: BlockTarget::Token("jti-1".into()),
                reason: "r".into(),
                expires_at: None,
            },
        ]);
        let who = |s: Option<&'static str>| Actor {
            subject: s,
            ..Default::default()
        };
        assert_eq!(
            list.matching(&who(Some("mallory")), 99).map(|b| b.id),
            Some(1)
        );
        assert_eq!(list.matching(&who(Some("mallory")), 100), None);
        assert_eq!(list.matching(&who(Some("alice")), 0), None);
        let dev = Actor {
            device: Some("dev-9"),
            ..Default::default()
        };
        assert_eq!(list.matching(&dev, 0).map(|b| b.id), Some(2));
        let ip = Actor {
            ip: Some("10.1.2.3".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(list.matching(&ip, 0).map(|b| b.id), Some(3));
        let tok = Actor {
            token_id: Some("jti-1"),
            ..Default::default()
        };
        assert_eq!(list.matching(&tok, 0).map(|b| b.id), Some(4));
        assert_eq!(list.matching(&Actor::default(), 0), None);
    }
}
