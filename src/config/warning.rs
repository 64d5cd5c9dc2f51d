//! What a valid route file may still get wrong: [`Warning`]s that `check` prints (exit 0)
//! and `run` logs at start, each at the node it is about. A warning never stops the gateway:
//! the file does what it says, but probably not what its author wants.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::error::At;
use super::secret::Secret;
use super::spans::Position;

/// The MTProto secrets printed in frontgate's own example file and docs: anyone who has read
/// them can use a proxy that still runs with them.
pub const PUBLIC_SECRETS: [&str; 2] = [
    "0123456789abcdef0123456789abcdef",
    "fedcba9876543210fedcba9876543210",
];

/// A concern about a valid route file, at the node it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file (or other origin) of the text.
    pub origin: String,
    /// Where the node is written.
    pub at: Option<Position>,
    /// The node's key path.
    pub key: String,
    /// What is of concern.
    pub concern: Concern,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Concern {
    /// A user's secret is one of [`PUBLIC_SECRETS`].
    #[error(
        "this secret is the public example one: anyone who read the example can use this \
         proxy; replace it (`frontgate secret` makes one)"
    )]
    PublicSecret,
    /// `metrics.listen` on a wildcard or public address: the endpoint has no authentication.
    #[error(
        "{addr} is reachable from other hosts, and the metrics endpoint has no \
         authentication: anyone who connects reads /metrics and /stats (routes, MTProto user \
         names, traffic); listen on 127.0.0.1 or firewall the port"
    )]
    OpenMetrics {
        /// The configured address.
        addr: SocketAddr,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}{}: {}",
            self.origin,
            At(self.at),
            self.key,
            self.concern
        )
    }
}

/// Whether `secret` is one of [`PUBLIC_SECRETS`].
pub fn is_public(secret: &Secret) -> bool {
    PUBLIC_SECRETS
        .iter()
        .filter_map(|hex| hex.parse::<Secret>().ok())
        .any(|public| public == *secret)
}

/// Whether a listener on `addr` can be reached from other hosts on the internet: the
/// wildcard, or a public unicast address (loopback, private and link-local ones are not).
pub fn is_public_address(addr: SocketAddr) -> bool {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => !(ip.is_loopback() || ip.is_private() || ip.is_link_local()),
        IpAddr::V6(ip) => !(ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()),
    }
}
