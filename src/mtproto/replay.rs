//! A bounded memory of handshakes already accepted, so a captured handshake replayed by a
//! prober is not treated as MTProto (PROTOCOL.md §2 step 4).
//!
//! The bound is an entry count, not a time window: memory stays flat however long the
//! process runs (telemt #503/#598 grew to 1 GB). The oldest entry is forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Key length: the 32-byte ClientHello `random` (or 32 bytes of an obfuscated2 init).
pub const KEY_LEN: usize = 32;

/// Thread-safe, entry-bounded set of recently accepted handshake keys.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<[u8; KEY_LEN]>,
    order: VecDeque<[u8; KEY_LEN]>,
}

impl ReplayCache {
    /// A cache remembering the last `capacity` keys. A capacity of 0 is treated as 1: replay
    /// protection cannot be switched off by a config slip, and one entry still stops the
    /// common immediate replay. Memory grows with use, up to about 64 bytes per entry plus
    /// hash-table overhead.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The effective capacity (at least 1).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of keys remembered now.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether nothing is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `key`; returns `true` the first time it is seen (the handshake may proceed) and
    /// `false` for a replay. Evicts the oldest key when full.
    pub fn insert_if_new(&self, key: &[u8; KEY_LEN]) -> bool {
        let mut inner = self.lock();
        if inner.seen.contains(key) {
            return false;
        }
        while inner.order.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.seen.remove(&old);
                }
                None => break,
            }
        }
        inner.seen.insert(*key);
        inner.order.push_back(*key);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the set and the queue disagreeing in a
        // way that matters (worst case one key is forgotten early), so keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(i: u32) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn remembers_and_evicts_oldest_first() {
        let cache = ReplayCache::new(3);
        assert!(cache.is_empty());
        for i in 0..3 {
            assert!(cache.insert_if_new(&key(i)));
        }
        for i in 0..3 {
            assert!(!cache.insert_if_new(&key(i)), "replay of {i}");
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.insert_if_new(&key(3))); // evicts 0
        assert_eq!(cache.len(), 3);
        assert!(!cache.insert_if_new(&key(1)));
        assert!(!cache.insert_if_new(&key(3)));
        assert!(cache.insert_if_new(&key(0)), "0 was evicted first"); // evicts 1
        assert!(cache.insert_if_new(&key(1)), "then 1"); // evicts 2
        assert!(!cache.insert_if_new(&key(3)));
        assert!(!cache.insert_if_new(&key(0)));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn stays_bounded() {
        let cache = ReplayCache::new(100);
        for i in 0..10_000 {
            assert!(cache.insert_if_new(&key(i)));
        }
        assert_eq!(cache.len(), 100);
        assert!(!cache.insert_if_new(&key(9_999)));
        assert!(cache.insert_if_new(&key(9_899)), "older than the last 100");
    }

    #[test]
    fn capacity_zero_means_one() {
        let cache = ReplayCache::new(0);
        assert_eq!(cache.capacity(), 1);
        assert!(cache.insert_if_new(&key(1)));
        assert!(!cache.insert_if_new(&key(1)));
        assert!(cache.insert_if_new(&key(2)));
        assert!(cache.insert_if_new(&key(1)));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn concurrent_inserts_admit_each_key_once() {
        let cache = Arc::new(ReplayCache::new(10_000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    (0..1000).filter(|&i| cache.insert_if_new(&key(i))).count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 1000);
    }
}
