//! Connecting to a route's backends: each `to` entry in order, each resolved address in
//! order, every attempt bounded by `timeouts.connect`.

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
