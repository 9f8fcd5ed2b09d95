//! Listen addresses as operators write them: `IP:PORT` or `HOST:PORT`.

use std::net::SocketAddr;

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now (`localhost:9000`
/// is 127.0.0.1:9000; an IPv4 address is preferred when a name has both).
pub fn listen_address(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s).ok()?.collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
}
