//! Connection admission: the global and per-client-address caps of `limits:`. A connection
//! holds its admission for its whole life; dropping it frees the slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Live connection counts, shared by every listener across reloads (the limits themselves
/// come from the current config).
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A slot in the global count; released on drop.
#[derive(Debug)]
pub struct TotalSlot(Arc<ConnectionCounts>);

/// A slot in one address's count; released on drop (the entry goes when it reaches zero, so
/// the map never outgrows the live connections).
#[derive(Debug)]
pub struct IpSlot(Arc<ConnectionCounts>, IpAddr);

impl ConnectionCounts {
    /// Takes a global slot unless `max` connections are already open.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<TotalSlot> {
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .is_ok();
        admitted.then(|| TotalSlot(self.clone()))
    }

    /// Takes a slot for `ip` unless it already has `max` connections open.
    pub fn admit_ip(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut map = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let open = map.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(IpSlot(self.clone(), ip))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for TotalSlot {
    fn drop(&mut self) {
        self.0.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.0.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = map.get_mut(&self.1) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released() {
        let counts = Arc::new(ConnectionCounts::default());
        let a = counts.admit(2).unwrap();
        let _b = counts.admit(2).unwrap();
        assert!(counts.admit(2).is_none());
        drop(a);
        assert!(counts.admit(2).is_some());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = counts.admit_ip(ip, 1).unwrap();
        assert!(
            counts.admit_ip(mapped, 1).is_none(),
            "mapped form is the same client"
        );
        drop(first);
        assert!(counts.per_ip.lock().unwrap().is_empty());
        assert!(counts.admit_ip(mapped, 1).is_some());
    }
}
