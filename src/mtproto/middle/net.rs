//! How the middle-proxy client reaches the network: the settings it follows (replaced on
//! reload) and the dial of one ME connection, directly or through `mtproto.via`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::handshake::{handshake, Ends, HandshakeError};
use super::mux::MeConn;
use crate::config::datacenters::DcAddr;
use crate::config::middle::MiddleProxySettings;
use crate::config::via::ViaUpstream;
use crate::config::MtprotoSettings;
use crate::mtproto::upstreams;

/// The settings the middle-proxy client works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeNet {
    /// SOCKS5 upstreams for every ME connection and configuration fetch.
    pub via: Vec<ViaUpstream>,
    /// Connect (and handshake answer) timeout.
    pub connect_timeout: Duration,
    /// Dial IPv6 middle proxies first.
    pub prefer_ipv6: bool,
    /// The middle-proxy block.
    pub middle: MiddleProxySettings,
}

impl MeNet {
    /// The part of `settings` the middle-proxy client uses.
    pub fn of(settings: &MtprotoSettings) -> MeNet {
        MeNet {
            via: settings.via.clone(),
            connect_timeout: settings.connect_timeout,
            prefer_ipv6: settings.prefer_ipv6,
            middle: settings.middle.clone(),
        }
    }
}

/// Why no ME connection could be opened to a DC.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No configuration yet (never fetched, nothing cached).
    #[error("no middle-proxy configuration yet (fetch failed and nothing cached)")]
    NoConfig,
    /// The configuration names no middle proxy for this DC.
    #[error("the middle-proxy configuration names no proxy for DC {0}")]
    NoProxyForDc(i16),
    /// The TCP (or SOCKS5) connection failed.
    #[error("cannot reach middle proxy {addr}: {error}")]
    Connect {
        /// The middle proxy.
        addr: SocketAddr,
        /// Why.
        error: io::Error,
    },
    /// A dial failed moments ago; not tried again yet.
    #[error("{0} (moments ago; retried after {secs}s)", secs = super::mux::REDIAL_AFTER.as_secs())]
    Recently(String),
    /// The handshake failed.
    #[error("middle proxy {addr}: {error}")]
    Handshake {
        /// The middle proxy.
        addr: SocketAddr,
        /// Why.
        error: HandshakeError,
    },
}

/// Opens and hands over an ME connection to one of `addresses` for `dc`, the first that
/// completes the handshake; the error is the last one.
pub async fn dial(
    dc: i16,
    addresses: &[SocketAddr],
    secret: &[u8],
    net: &MeNet,
) -> Result<Arc<MeConn>, DialError> {
    let mut last = DialError::NoProxyForDc(dc);
    for &addr in addresses {
        let connected = connect(addr, net).await;
        let (stream, local) = match connected {
            Ok(pair) => pair,
            Err(error) => {
                last = DialError::Connect { addr, error };
                continue;
            }
        };
        let client = SocketAddr::new(net.middle.public_ip.unwrap_or(local.ip()), local.port());
        let ends = Ends {
            client,
            server: addr,
        };
        match handshake(stream, ends, secret, net.connect_timeout).await {
            Ok(link) => return Ok(MeConn::start(link, dc, addr, client)),
            Err(error) => last = DialError::Handshake { addr, error },
        }
    }
    Err(last)
}

/// TCP to `addr` (through the upstreams when there are any) and the address the middle
/// proxy sees this end at, before `public_ip` (the local one, or the SOCKS server's
/// outgoing one when it reports it).
async fn connect(addr: SocketAddr, net: &MeNet) -> io::Result<(TcpStream, SocketAddr)> {
    if net.via.is_empty() {
        let stream = tokio::time::timeout(net.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true).ok();
        let local = stream.local_addr()?;
        return Ok((stream, local));
    }
    let target = [DcAddr::Ip(addr)];
    let (stream, _, bound) =
        upstreams::connect_via_bound(&net.via, &target, net.connect_timeout).await?;
    let local = match bound {
        Some(bound) => bound,
        None => stream.local_addr()?,
    };
    Ok((stream, local))
}
