//! Which addresses the gateway listens on cannot all be bound at once: an address given twice,
//! or an address on the port a wildcard of its family already takes. Listeners set
//! `SO_REUSEADDR` (restarts need it) but not `SO_REUSEPORT`, and IPv6 ones are v6-only, so
//! on Linux a second bind on the same port fails exactly when the two addresses are equal or
//! one of them is the unspecified address of the same family.

use std::net::SocketAddr;

use super::error::Problem;

/// Why `addr` cannot be bound beside `other` (written at the key path `other_key`), if it
/// cannot. Port 0 (any free port, chosen at bind) never clashes.
pub fn clash(addr: SocketAddr, other: SocketAddr, other_key: &str) -> Option<Problem> {
    if addr.port() != other.port() || addr.port() == 0 || addr.is_ipv4() != other.is_ipv4() {
        return None;
    }
    if addr.ip() == other.ip() {
        return Some(Problem::AddressTwice {
            addr: addr.to_string(),
            other: other_key.to_string(),
        });
    }
    if addr.ip().is_unspecified() || other.ip().is_unspecified() {
        return Some(Problem::AddressOverlap {
            addr: addr.to_string(),
            other: other_key.to_string(),
            other_addr: other.to_string(),
            port: addr.port(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clashes(a: &str, b: &str) -> Option<String> {
        clash(a.parse().unwrap(), b.parse().unwrap(), "listen[0]").map(|p| p.to_string())
    }

    #[test]
    fn equal_and_wildcard_addresses_clash_on_one_port() {
        assert_eq!(
            clashes("127.0.0.1:443", "127.0.0.1:443").as_deref(),
            Some("127.0.0.1:443 is also listen[0]; `run` could bind it only once")
        );
        assert_eq!(
            clashes("127.0.0.1:443", "0.0.0.0:443").as_deref(),
            Some(
                "127.0.0.1:443 overlaps listen[0] (0.0.0.0:443): a wildcard address takes port \
                 443 on every address of its family, so `run` could bind only one of them"
            )
        );
        assert!(clashes("[::]:443", "[::1]:443").is_some());
        assert!(clashes("[::]:443", "[::]:443").is_some());
    }

    #[test]
    fn other_ports_families_and_port_zero_do_not() {
        assert_eq!(clashes("127.0.0.1:443", "127.0.0.1:444"), None);
        assert_eq!(clashes("127.0.0.1:443", "127.0.0.2:443"), None);
        // IPv6 listeners are v6-only: the two wildcards coexist.
        assert_eq!(clashes("0.0.0.0:443", "[::]:443"), None);
        assert_eq!(clashes("127.0.0.1:0", "127.0.0.1:0"), None);
    }
}
