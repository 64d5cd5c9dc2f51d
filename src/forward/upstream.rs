//! Connecting to one backend: resolving its name, and one connect bounded by
//! `timeouts.connect`. The order of the backends and their health are [`super::pool`]'s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::Upstream;

/// Every backend of the list failed; the message names each attempt.
#[derive(Debug, thiserror::Error)]
#[error("no backend reachable: {}", .attempts.join("; "))]
pub struct ConnectError {
    /// `address: reason` for every attempt made, in order.
    pub attempts: Vec<String>,
}

/// The addresses of `upstream`: its literal IP, or what its name resolves to within
/// `timeout`; the error is `upstream: reason`.
pub async fn resolve(upstream: &Upstream, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Some(addr) = upstream.literal() {
        return Ok(vec![addr]);
    }
    let lookup = tokio::net::lookup_host((upstream.host(), upstream.port()));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(e)) => Err(format!("{upstream}: cannot resolve: {e}")),
        Err(_) => Err(format!("{upstream}: name resolution timed out")),
    }
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
