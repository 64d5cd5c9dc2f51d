//! Listening sockets: binding (IPv6 sockets are v6-only so `0.0.0.0:443` and `[::]:443` can
//! both be configured) and the accept loop that hands each connection to
//! [`crate::conn::driver::handle`] as a tracked task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::context::Context;
use crate::conn::driver;
use crate::forward::shutdown::ShutdownSwitch;

/// Pending-connection queue length asked of the kernel (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Binds `addr` with the socket options a public listener needs.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until `stop` fires; every connection runs as a task of `tracker` with its own
/// [`crate::forward::shutdown::Shutdown`] from `shutdown`, so stopping a listener never cuts
/// the connections it accepted (the gateway's shutdown reaches them through their own).
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    tracker: TaskTracker,
    shutdown: ShutdownSwitch,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // A socket whose own address cannot be read has already failed: drop it.
                if let Ok(local) = stream.local_addr() {
                    let conn_shutdown = shutdown.subscribe();
                    tracker.spawn(driver::handle(
                        stream,
                        peer,
                        local,
                        ctx.clone(),
                        conn_shutdown,
                    ));
                }
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning (nginx does the same).
                tracing::warn!(listener = ?local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that connects and says nothing is accepted at once, as at a fronted site
    /// without `TCP_DEFER_ACCEPT` (nginx's default): the hello timeout then runs from the
    /// handshake. With deferred accept the kernel would hold it back, resend its SYN-ACK
    /// after a second and only then hand it over, a difference a prober can time
    /// (BENCHMARKS.md, performance pass 4).
    #[tokio::test]
    async fn a_silent_client_is_accepted_at_once() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_millis(900), listener.accept()).await;
        assert!(
            matches!(accepted, Ok(Ok(_))),
            "a silent connection waited for data before it was accepted"
        );
    }
}
