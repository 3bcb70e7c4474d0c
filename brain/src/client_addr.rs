//! The address a request came from, for per-address limits and logs.
//!
//! A directly connected client is its socket's peer. Behind a reverse proxy every request has
//! the proxy's address, so one client could use up a per-address limit for everyone. With
//! `--trusted-proxies`, a request whose peer is a trusted proxy is attributed to the nearest
//! untrusted hop of its `X-Forwarded-For`, read right to left: the hops a trusted proxy
//! appended stand at the right, and whatever a client wrote itself stands left of them, so a
//! client cannot name an address of its choosing.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

/// One network in `--trusted-proxies`: `10.0.0.0/8`, `fd00::/8`, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed. Empty (the default): the header is
/// ignored and the peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts these networks.
    pub fn new(networks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client behind `peer`: the peer itself unless it is trusted, else the rightmost
    /// `X-Forwarded-For` hop that is not trusted (an unreadable hop stops the walk at the
    /// trusted address right of it).
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?.to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return Some(client);
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client's address (see the module header), or `None` when the request came without a
/// peer (tests that call the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S> FromRequestParts<S> for ClientAddr
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<ClientAddr, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(
            TrustedProxies::from_ref(state).client(peer, &parts.headers),
        ))
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn networks_parse_and_match_at_their_edges() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.255.255".parse().unwrap()));
        assert!(!net.contains("10.2.0.0".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.1".parse().unwrap()),
            "v4-mapped"
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(
            !all.contains("::2".parse().unwrap()),
            "v4 network, v6 address"
        );
        let one: Cidr = "fd00::1".parse().unwrap();
        assert!(one.contains("fd00::1".parse().unwrap()));
        assert!(!one.contains("fd00::2".parse().unwrap()));
        assert!("10.0.0.0/32".parse::<Cidr>().is_ok());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0/8",
            "proxy",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_peer() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.5"), &headers),
            ip("10.0.0.5"),
            "no proxy trusted: the header is ignored"
        );
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(trusted.client(ip("10.0.0.5"), &headers), ip("198.51.100.7"));
        assert_eq!(
            trusted.client(ip("192.0.2.1"), &headers),
            ip("192.0.2.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(trusted.client(None, &headers), None);
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_writing_the_header_itself() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client sent "1.1.1.1"; the proxy appended the client's real address.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7"]);
        assert_eq!(trusted.client(ip("10.0.0.5"), &headers), ip("198.51.100.7"));
        // Two trusted proxies in a row, and the header split over two lines.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7", "10.0.0.9"]);
        assert_eq!(trusted.client(ip("10.0.0.5"), &headers), ip("198.51.100.7"));
        // Garbage stops the walk at the trusted hop right of it.
        let headers = forwarded(&["198.51.100.7, not-an-ip, 10.0.0.9"]);
        assert_eq!(trusted.client(ip("10.0.0.5"), &headers), ip("10.0.0.9"));
        // Ports are dropped.
        let headers = forwarded(&["[2001:db8::1]:4711"]);
        assert_eq!(trusted.client(ip("10.0.0.5"), &headers), ip("2001:db8::1"));
        // No header at all: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
    }
}
