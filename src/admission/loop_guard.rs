//! Fronting-loop protection at run time: the address pairs of frontgate's own backend
//! connections. A connection accepted from the local end of one of them, on the address that
//! connection went to, is frontgate talking to itself (a `to` that resolves back to a
//! listener, mtg #490) and is closed instead of forwarded again.
//!
//! Both ends are compared: Linux reuses an ephemeral source port for different destinations,
//! so a real client may share `ip:port` with one of our backend connections to elsewhere.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::forward::proxy_out::canonical;

/// `(local, remote)` of every live outbound connection.
#[derive(Debug, Default)]
pub struct OutboundAddrs(Mutex<HashSet<(SocketAddr, SocketAddr)>>);

/// Keeps one connection registered while it lives.
#[derive(Debug)]
pub struct Registration(Arc<OutboundAddrs>, (SocketAddr, SocketAddr));

impl OutboundAddrs {
    /// Records a backend connection from `local` to `remote` until the guard drops.
    pub fn register(self: &Arc<Self>, local: SocketAddr, remote: SocketAddr) -> Registration {
        let pair = (canonical(local), canonical(remote));
        self.lock().insert(pair);
        Registration(self.clone(), pair)
    }

    /// Whether a connection from `peer`, accepted on `listener`, is one of our own backend
    /// connections coming back.
    pub fn is_ours(&self, peer: SocketAddr, listener: SocketAddr) -> bool {
        self.lock()
            .contains(&(canonical(peer), canonical(listener)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(SocketAddr, SocketAddr)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_same_pair_is_a_loop() {
        let outbound = Arc::new(OutboundAddrs::default());
        let registration = outbound.register(addr("127.0.0.1:54008"), addr("127.0.0.1:29443"));
        // Our connection to 127.0.0.1:29443 arriving back on a listener there: a loop.
        assert!(outbound.is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:29443")));
        assert!(outbound.is_ours(
            addr("[::ffff:127.0.0.1]:54008"),
            addr("[::ffff:127.0.0.1]:29443")
        ));
        // A client that got the same ephemeral port towards our listener: not a loop.
        assert!(!outbound.is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:28443")));
        drop(registration);
        assert!(!outbound.is_ours(addr("127.0.0.1:54008"), addr("127.0.0.1:29443")));
    }
}
