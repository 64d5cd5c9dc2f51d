//! Fronting-loop protection at run time: the address pairs of frontgate's own backend
//! connections. A connection accepted from the local end of one of them, on the address that
//! connection went to, is frontgate talking to itself (a `to` that resolves back to a
//! listener, mtg #490) and is closed instead of forwarded again.
//!
//! Both ends are compared: Linux reuses an ephemeral source port for different destinations,
//! so a real client may share `ip:port` with one of our backend connections to elsewhere.
//!
//! On loopback the kernel completes our connect, and queues its other end on our listener,
//! before the connecting task learns its local address; the listener may accept and check it
//! first. So every attempt is announced by its destination before `connect` starts
//! ([`OutboundAddrs::connecting`]), and a connection accepted on an address that an attempt is
//! still connecting to waits for that attempt to end before it is judged: only then is the
//! pair known. The kernel keeps choosing the source port at connect (binding one earlier
//! would share the ephemeral range across all destinations). Only a loop ever connects to
//! one of our own listen addresses, so nothing else ever waits.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::forward::pool::{Lease, Pool};
use crate::forward::proxy_out::canonical;
use crate::forward::upstream::ConnectError;

/// `(local, remote)` of every live outbound connection, and the destinations of the
/// attempts still connecting.
#[derive(Debug, Default)]
pub struct OutboundAddrs {
    addrs: Mutex<Addrs>,
    /// Woken whenever an attempt ends, connected or not.
    settled: Notify,
}

#[derive(Debug, Default)]
struct Addrs {
    live: HashSet<(SocketAddr, SocketAddr)>,
    /// Destination -> attempts connecting to it now.
    connecting: HashMap<SocketAddr, usize>,
}

/// One connect attempt in progress; dropping it (the attempt failed) forgets it.
#[derive(Debug)]
pub struct Connecting {
    guard: Arc<OutboundAddrs>,
    remote: SocketAddr,
}

/// Keeps one connection registered while it lives.
#[derive(Debug)]
pub struct Registration(Arc<OutboundAddrs>, (SocketAddr, SocketAddr));

impl OutboundAddrs {
    /// Announces an attempt to connect to `remote`; call before `connect` starts, and turn
    /// the result into a [`Registration`] with [`Connecting::connected`] once it succeeds.
    pub fn connecting(self: &Arc<Self>, remote: SocketAddr) -> Connecting {
        let remote = canonical(remote);
        *self.lock().connecting.entry(remote).or_insert(0) += 1;
        Connecting {
            guard: self.clone(),
            remote,
        }
    }

    /// Whether a connection from `peer`, accepted on `listener`, is one of our own backend
    /// connections coming back. Waits while one of our attempts is still connecting to
    /// `listener` (each attempt is bounded by `timeouts.connect`).
    pub async fn is_ours(&self, peer: SocketAddr, listener: SocketAddr) -> bool {
        let pair = (canonical(peer), canonical(listener));
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Listen before looking, so an attempt ending in between still wakes us.
            settled.as_mut().enable();
            {
                let addrs = self.lock();
                if addrs.live.contains(&pair) {
                    return true;
                }
                if !addrs.connecting.contains_key(&pair.1) {
                    return false;
                }
            }
            settled.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Addrs> {
        self.addrs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A backend connection made through a route's pool and registered with the guard.
#[derive(Debug)]
pub struct Guarded {
    /// The stream, Nagle off.
    pub stream: TcpStream,
    /// The address it reached.
    pub addr: SocketAddr,
    /// What keeps it counted until it ends.
    pub held: Held,
}

/// What a backend connection holds until it ends: its loop-guard registration and its
/// place in the pool server's live count.
#[derive(Debug)]
pub struct Held {
    _registration: Registration,
    _lease: Lease,
}

impl OutboundAddrs {
    /// Connects `client`'s connection to one of `pool`'s servers (balance and health as the
    /// pool orders them, each address bounded by `timeout`), announcing every attempt before
    /// it starts and registering the connection that succeeds while it lives: the one way a
    /// backend connection is opened.
    pub async fn connect(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        client: std::net::IpAddr,
        timeout: std::time::Duration,
    ) -> Result<Guarded, ConnectError> {
        let connected = pool
            .connect(client, timeout, |addr| self.connecting(addr))
            .await?;
        Ok(Guarded {
            stream: connected.stream,
            addr: connected.addr,
            held: Held {
                _registration: connected.announced.connected(connected.local),
                _lease: connected.lease,
            },
        })
    }
}

impl Connecting {
    /// The attempt connected from `local`: registers the pair until the guard drops.
    pub fn connected(self, local: SocketAddr) -> Registration {
        let pair = (canonical(local), self.remote);
        // Registered before the attempt is forgotten (on drop, just after): a waiting
        // `is_ours` never sees neither.
        self.guard.lock().live.insert(pair);
        Registration(self.guard.clone(), pair)
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        {
            let mut addrs = self.guard.lock();
            if let Some(count) = addrs.connecting.get_mut(&self.remote) {
                *count -= 1;
                if *count == 0 {
                    addrs.connecting.remove(&self.remote);
                }
            }
        }
        self.guard.settled.notify_waiters();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.lock().live.remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn only_the_same_pair_is_a_loop() {
        let outbound = Arc::new(OutboundAddrs::default());
        let registration = outbound
            .connecting(addr("127.0.0.1:29443"))
            .connected(addr("127.0.0.1:54008"));
        // Our connection to 127.0.0.1:29443 arriving back on a listener there: a loop.
        assert!(
            outbound
                .is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:29443"))
                .await
        );
        assert!(
            outbound
                .is_ours(
                    addr("[::ffff:127.0.0.1]:54008"),
                    addr("[::ffff:127.0.0.1]:29443")
                )
                .await
        );
        // A client that got the same ephemeral port towards our listener: not a loop.
        assert!(
            !outbound
                .is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:28443"))
                .await
        );
        drop(registration);
        assert!(
            !outbound
                .is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:29443"))
                .await
        );
    }

    #[tokio::test]
    async fn a_connection_arriving_while_we_connect_waits_for_the_verdict() {
        let outbound = Arc::new(OutboundAddrs::default());
        let listener = addr("127.0.0.1:29443");
        let attempt = outbound.connecting(listener);
        let judged = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.is_ours(addr("127.0.0.1:54008"), listener).await }
        });
        tokio::task::yield_now().await;
        assert!(!judged.is_finished(), "judged before the attempt ended");
        let _registration = attempt.connected(addr("127.0.0.1:54008"));
        let verdict = tokio::time::timeout(Duration::from_secs(10), judged).await;
        assert!(verdict.unwrap().unwrap(), "our own connection, once known");

        // A failed attempt releases the waiter with "not ours".
        let attempt = outbound.connecting(listener);
        let judged = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.is_ours(addr("127.0.0.1:54009"), listener).await }
        });
        tokio::task::yield_now().await;
        drop(attempt);
        let verdict = tokio::time::timeout(Duration::from_secs(10), judged).await;
        assert!(!verdict.unwrap().unwrap());
    }
}
