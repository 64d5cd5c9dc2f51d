//! A backend address as the route file writes it (`to:`): `host:port`, `a.b.c.d:port` or
//! `[v6]:port`; resolving and connecting are the forward stage's job.

use std::fmt;
use std::net::SocketAddr;

use super::table::validate_host_name;

/// One `host:port` backend as written in the route file; a host name is resolved at connect
/// time, so DNS changes are picked up without a reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    host: String,
    port: u16,
}

impl Upstream {
    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid address `{text}`: expected host:port, e.g. 127.0.0.1:8443 or [::1]:8443"
            )
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::from(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains(':') || host.contains('[') || port == 0 {
            return Err(bad());
        }
        // All digits and dots is an IPv4 address written wrong, never a host name (a name's
        // last label is not all digits), and the resolver would read `1.2.3` as 1.2.0.3.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "invalid address `{text}`: `{host}` is not an IPv4 address: write four numbers \
                 from 0 to 255, e.g. 192.0.2.10"
            ));
        }
        if let Err(why) = validate_host_name(host) {
            return Err(format!("invalid address `{text}`: host `{host}`: {why}"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The socket address when the host is a literal IP (no resolution needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The port part.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host part as written (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Self {
            host,
            port: addr.port(),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(
            Upstream::parse("127.0.0.1:8443").unwrap().literal(),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(Upstream::parse("[::1]:9").unwrap().to_string(), "[::1]:9");
        let named = Upstream::parse("Backend.local:80").unwrap();
        assert_eq!(
            (named.host(), named.port(), named.literal()),
            ("backend.local", 80, None)
        );
        let err = Upstream::parse("300.1.1.1:80").unwrap_err();
        assert_eq!(
            err,
            "invalid address `300.1.1.1:80`: `300.1.1.1` is not an IPv4 address: write four \
             numbers from 0 to 255, e.g. 192.0.2.10"
        );
        assert_eq!(
            Upstream::parse("backend_1.internal:80").unwrap().host(),
            "backend_1.internal"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:99999",
            "host:0",
            "::1:80",
            "a b:x",
            "a b:80",
            "300.1.1.1:80",
            "1.2.3:80",
            "10.0.0.256:443",
            "a..b:80",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
