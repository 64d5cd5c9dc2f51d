//! Health of the Telegram DC addresses a session dials in direct mode: each address's last
//! connect result and its connect time (a moving average). [`order`] puts the addresses of
//! a DC in the order to dial them: the healthy ones by connect time (fastest first; those
//! never measured after them, as written), then the ones whose last connect failed less than
//! [`DEAD_RETRY`] ago, so a session skips a dead address without waiting on it while
//! another one works, and still reaches it when nothing else does.
//!
//! Process-wide (DC addresses are the same whatever the configuration), bounded by
//! [`MAX_TRACKED`] addresses.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::datacenters::DcAddr;

/// How long an address whose connect failed stays at the back of the order.
pub const DEAD_RETRY: Duration = Duration::from_secs(30);

/// Addresses tracked at most (the DC table has a few dozen; overrides add a few more).
pub const MAX_TRACKED: usize = 1024;

/// Weight of a new connect time in the moving average.
const NEW_SAMPLE: f64 = 0.3;

/// What is known of one address.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// Moving average of successful connect times.
    connect_time: Option<Duration>,
    /// When its last connect failed, if the last one failed.
    failed_at: Option<Instant>,
}

/// The health of every DC address dialled so far.
#[derive(Debug, Default)]
pub struct DcHealth {
    known: Mutex<HashMap<String, Known>>,
}

static HEALTH: LazyLock<DcHealth> = LazyLock::new(DcHealth::default);

/// The process's DC health.
pub fn global() -> &'static DcHealth {
    &HEALTH
}

/// `addresses` in the order to dial them, by the process's DC health.
pub fn order(addresses: &[DcAddr]) -> Vec<DcAddr> {
    global().order(addresses, Instant::now())
}

impl DcHealth {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `addresses` in the order to dial them at `now` (see the module doc).
    pub fn order(&self, addresses: &[DcAddr], now: Instant) -> Vec<DcAddr> {
        let known = self.known();
        let rank = |addr: &DcAddr| {
            let k = known.get(&addr.to_string()).copied().unwrap_or_default();
            let dead = k
                .failed_at
                .is_some_and(|at| now.duration_since(at) < DEAD_RETRY);
            (dead, k.connect_time.unwrap_or(Duration::MAX))
        };
        let mut ordered: Vec<(bool, Duration, DcAddr)> = addresses
            .iter()
            .map(|addr| {
                let (dead, time) = rank(addr);
                (dead, time, addr.clone())
            })
            .collect();
        // Stable: equal ranks keep the order written.
        ordered.sort_by_key(|(dead, time, _)| (*dead, if *dead { Duration::MAX } else { *time }));
        ordered.into_iter().map(|(_, _, addr)| addr).collect()
    }

    /// A connect to `addr` succeeded after `took`.
    pub fn connected(&self, addr: &DcAddr, took: Duration) {
        let mut known = self.known();
        let Some(entry) = entry(&mut known, addr) else {
            return;
        };
        if entry.failed_at.take().is_some() {
            tracing::info!(dc_addr = %addr, "DC address reachable again");
        }
        entry.connect_time = Some(match entry.connect_time {
            Some(old) => old.mul_f64(1.0 - NEW_SAMPLE) + took.mul_f64(NEW_SAMPLE),
            None => took,
        });
    }

    /// A connect to `addr` failed (refused, timed out, unresolvable).
    pub fn failed(&self, addr: &DcAddr) {
        let mut known = self.known();
        let Some(entry) = entry(&mut known, addr) else {
            return;
        };
        if entry.failed_at.is_none() {
            tracing::warn!(dc_addr = %addr, retry_after = ?DEAD_RETRY, "DC address marked dead: sessions dial the others first");
        }
        entry.failed_at = Some(Instant::now());
    }
}

/// The entry of `addr`, made if there is room.
fn entry<'a>(known: &'a mut HashMap<String, Known>, addr: &DcAddr) -> Option<&'a mut Known> {
    let key = addr.to_string();
    if !known.contains_key(&key) && known.len() >= MAX_TRACKED {
        return None;
    }
    Some(known.entry(key).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> DcAddr {
        DcAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn healthy_fastest_first_dead_last_and_dead_expires() {
        let health = DcHealth::default();
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let now = Instant::now();
        let all = [a.clone(), b.clone(), c.clone()];
        assert_eq!(health.order(&all, now), all, "nothing known: as written");
        health.failed(&a);
        health.connected(&c, Duration::from_millis(5));
        health.connected(&b, Duration::from_millis(50));
        assert_eq!(
            health.order(&all, Instant::now()),
            [c.clone(), b.clone(), a.clone()]
        );
        let later = Instant::now() + DEAD_RETRY;
        assert_eq!(
            health.order(&all, later),
            [c.clone(), b.clone(), a.clone()],
            "back in the running, but after the measured ones"
        );
        health.connected(&a, Duration::from_millis(1));
        assert_eq!(health.order(&all, Instant::now()), [a, c, b]);
    }

    #[test]
    fn the_table_is_bounded() {
        let health = DcHealth::default();
        for port in 1..=u16::try_from(MAX_TRACKED + 10).unwrap() {
            health.failed(&addr(port));
        }
        assert_eq!(health.known().len(), MAX_TRACKED);
    }
}
