//! The PROXY protocol (v1/v2) header a route sends its backend before the client's bytes,
//! through the `proxy-header` crate. IPv4 clients are always sent as TCP4, even when they
//! reached an IPv6 socket as `::ffff:a.b.c.d` (XrayR #256).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proxy_header::{ProxiedAddress, ProxyHeader};

use crate::config::ProxyProtocol;

/// The address as the outside world knows it: `::ffff:a.b.c.d` becomes `a.b.c.d`.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Encodes the header for a connection from `client` that arrived at `local`; empty for
/// [`ProxyProtocol::None`].
pub fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let source = canonical(client);
    let destination = same_family(source, canonical(local));
    let header = ProxyHeader::with_address(ProxiedAddress::stream(source, destination));
    let mut out = Vec::with_capacity(108);
    let encoded = match version {
        ProxyProtocol::None => return out,
        ProxyProtocol::V1 => header.encode_v1(&mut out),
        ProxyProtocol::V2 => header.encode_v2(&mut out),
    };
    // Both addresses are TCP and of one family, the only cases the encoder refuses.
    debug_assert!(encoded.is_ok(), "{encoded:?}");
    out
}

/// A header carries one address family; express `destination` in `source`'s family.
fn same_family(source: SocketAddr, destination: SocketAddr) -> SocketAddr {
    let ip = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => {
            IpAddr::V4(v6.to_ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED))
        }
        (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (_, ip) => ip,
    };
    SocketAddr::new(ip, destination.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_header::ParseConfig;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_ipv4_client_is_sent_as_tcp4() {
        let out = encode(
            ProxyProtocol::V1,
            addr("[::ffff:192.0.2.7]:5000"),
            addr("[::ffff:127.0.0.1]:443"),
        );
        assert_eq!(out, b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 443\r\n");
    }

    #[test]
    fn v4_client_on_v6_listener_gets_a_v4_destination() {
        let out = encode(ProxyProtocol::V1, addr("192.0.2.7:5000"), addr("[::]:443"));
        assert_eq!(out, b"PROXY TCP4 192.0.2.7 0.0.0.0 5000 443\r\n");
    }

    #[test]
    fn v2_round_trips_through_the_parser() {
        let out = encode(
            ProxyProtocol::V2,
            addr("[2001:db8::1]:1234"),
            addr("[2001:db8::2]:443"),
        );
        let (header, used) = ProxyHeader::parse(&out, ParseConfig::default()).unwrap();
        assert_eq!(used, out.len());
        let a = header.proxied_address().unwrap();
        assert_eq!(a.source, addr("[2001:db8::1]:1234"));
        assert_eq!(a.destination, addr("[2001:db8::2]:443"));
        assert!(encode(ProxyProtocol::None, a.source, a.destination).is_empty());
    }
}
