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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut announced = Vec::new();
        let (_, reached, last) = connect(&list, Duration::from_secs(2), |addr| {
            announced.push(addr);
            addr
        })
        .await
        .unwrap();
        assert_eq!(reached, live.local_addr().unwrap());
        assert_eq!(
            last, reached,
            "the successful attempt's announcement comes back"
        );
        assert_eq!(
            announced,
            [dead, reached],
            "every attempt is announced first"
        );
        let err = connect(&list[..1], Duration::from_secs(2), drop)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("no backend reachable: {dead}: ")),
            "{err}"
        );
    }
}
