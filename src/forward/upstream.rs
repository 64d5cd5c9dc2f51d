//! Connecting to a route's backends: each `to` entry in order, each resolved address in
//! order, every attempt bounded by `timeouts.connect`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// One `host:port` backend as written in the route file; a host name is resolved at connect
/// time, so DNS changes are picked up without a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Every backend of the list failed; the message names each attempt.
#[derive(Debug, thiserror::Error)]
#[error("no backend reachable: {}", .attempts.join("; "))]
pub struct ConnectError {
    /// `address: reason` for every attempt made, in order.
    pub attempts: Vec<String>,
}

/// Connects to the first reachable backend of `upstreams`; returns the stream and the address
/// it reached.
pub async fn connect(
    upstreams: &[Upstream],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut attempts = Vec::new();
    for upstream in upstreams {
        let addrs: Vec<SocketAddr> = match upstream.literal() {
            Some(addr) => vec![addr],
            None => match tokio::time::timeout(
                timeout,
                tokio::net::lookup_host((upstream.host(), upstream.port())),
            )
            .await
            {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    attempts.push(format!("{upstream}: cannot resolve: {e}"));
                    continue;
                }
                Err(_) => {
                    attempts.push(format!("{upstream}: name resolution timed out"));
                    continue;
                }
            },
        };
        for addr in addrs {
            match connect_one(addr, timeout).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => attempts.push(format!("{addr}: {e}")),
            }
        }
    }
    if attempts.is_empty() {
        attempts.push("the route has no backend".to_string());
    }
    Err(ConnectError { attempts })
}

/// One connect attempt bounded by `timeout`, with Nagle off (handshakes are latency bound).
pub async fn connect_one(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
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
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:99999",
            "host:0",
            "::1:80",
            "a b:x",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn falls_through_to_the_next_backend() {
        let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = refused.local_addr().unwrap();
        drop(refused);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let list = [
            Upstream::from(dead),
            Upstream::from(live.local_addr().unwrap()),
        ];
        let (_, reached) = connect(&list, Duration::from_secs(2)).await.unwrap();
        assert_eq!(reached, live.local_addr().unwrap());
        let err = connect(&list[..1], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("no backend reachable: {dead}: ")),
            "{err}"
        );
    }
}
