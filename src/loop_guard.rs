//! Fronting-loop protection at run time: the local addresses of frontgate's own backend
//! connections. A connection accepted from one of them is frontgate talking to itself (a `to`
//! that resolves back to a listener, mtg #490) and is closed instead of forwarded again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The set of local addresses of live outbound connections.
#[derive(Debug, Default)]
pub struct OutboundAddrs(Mutex<HashSet<SocketAddr>>);

/// Keeps one address registered while its backend connection lives.
#[derive(Debug)]
pub struct Registration(Arc<OutboundAddrs>, SocketAddr);

impl OutboundAddrs {
    /// Records `local` (the source address of a backend connection) until the guard drops.
    pub fn register(self: &Arc<Self>, local: SocketAddr) -> Registration {
        let local = crate::proxy_protocol::canonical(local);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(local);
        Registration(self.clone(), local)
    }

    /// Whether a connection from `peer` is one of our own backend connections.
    pub fn is_ours(&self, peer: SocketAddr) -> bool {
        let peer = crate::proxy_protocol::canonical(peer);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}
