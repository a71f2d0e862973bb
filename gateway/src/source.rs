//! Whom a request counts against for the refusal budget (`guard`): the client
//! address, read through the proxies the operator trusts, and keyed so that
//! one network is one budget.
//!
//! - Behind an ingress every request arrives from the ingress: with its range
//!   in `gateway.trusted_proxies`, the client is the nearest address of
//!   `X-Forwarded-For` that is not itself a trusted proxy. From any other
//!   peer the header is ignored (anyone can send it).
//! - An IPv6 client is keyed by its /64: one host usually holds a whole /64,
//!   so keying by address would give it a fresh budget per request. An
//!   IPv4-mapped IPv6 address is its IPv4 address.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// Reads the budget key of a request.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    trusted: Vec<IpNet>,
}

impl Sources {
    /// `trusted`: CIDR ranges (validated with the config; anything that does
    /// not parse is left out, which trusts less, never more).
    pub fn new(trusted: &[String]) -> Self {
        Self {
            trusted: trusted.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        // Each proxy appends the address it heard from: read from the right,
        // past the trusted hops, to the first address that is not one.
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in forwarded.iter().rev() {
            let Some(addr) = parse_hop(hop) else {
                // Garbage where a proxy's entry should be: stop at the last
                // hop we could read.
                break;
            };
            client = addr;
            if !self.is_trusted(addr) {
                break;
            }
        }
        client
    }

    /// The budget key of a request from `peer` with `headers`.
    pub fn key(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        key(self.client(peer, headers))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One entry of `X-Forwarded-For`: an address, maybe bracketed or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
        .map(canonical)
}

/// The budget key of a client address: IPv4 as is, IPv6 by its /64.
pub fn key(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// How a key reads in an audit row: an IPv6 key names its /64.
pub fn describe(key: IpAddr) -> String {
    match key {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for f in forwarded {
            h.append("x-forwarded-for", f.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let none = Sources::default();
        let h = HeaderMap::new();
        let a = none.key(ip("2001:db8:1:2::1"), &h);
        let b = none.key(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), &h);
        let c = none.key(ip("2001:db8:1:3::1"), &h);
        assert_eq!(a, b, "one /64, one budget");
        assert_ne!(a, c, "another /64, another budget");
        assert_eq!(describe(a), "2001:db8:1:2::/64");
        assert_eq!(none.key(ip("::ffff:192.0.2.7"), &h), ip("192.0.2.7"));
        assert_eq!(none.key(ip("192.0.2.7"), &h), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let behind = Sources::new(&["10.0.0.0/8".into(), "fd00::/8".into()]);
        // From the ingress: the client it names.
        assert_eq!(
            behind.client(ip("10.1.2.3"), &headers(&["198.51.100.9"])),
            ip("198.51.100.9")
        );
        // Through two trusted hops; the leftmost entries are the client's to
        // write, so a forged one further left changes nothing.
        assert_eq!(
            behind.client(
                ip("10.1.2.3"),
                &headers(&["203.0.113.66, 198.51.100.9", "10.9.9.9"])
            ),
            ip("198.51.100.9")
        );
        assert_eq!(
            behind.client(ip("fd00::1"), &headers(&["[2001:db8::5]:4711"])),
            ip("2001:db8::5")
        );
        // Not from a trusted proxy: the header is anyone's to send.
        assert_eq!(
            behind.client(ip("198.51.100.20"), &headers(&["203.0.113.66"])),
            ip("198.51.100.20")
        );
        // A trusted proxy without the header, or with garbage: the proxy.
        assert_eq!(
            behind.client(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        assert_eq!(
            behind.client(ip("10.1.2.3"), &headers(&["not-an-address"])),
            ip("10.1.2.3")
        );
        // Only trusted hops: the farthest of them.
        assert_eq!(
            behind.client(ip("10.1.2.3"), &headers(&["10.7.7.7"])),
            ip("10.7.7.7")
        );
    }
}
