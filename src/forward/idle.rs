//! The idle clock shared by both directions of a relay (passthrough and MTProto alike):
//! every moved byte resets it, and [`IdleClock::expired`] resolves once nothing moved for the
//! configured time. One atomic store per chunk, no timer reset per byte. Also home of
//! [`later`] and [`deadline_after`], the one place a configured duration is added to an
//! instant, so no configured value can make that addition panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Stands in for an instant too far ahead to represent: about a hundred years, which no
/// connection lives to see.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `base + by`, or about a hundred years after `base` when that sum cannot be represented:
/// a duration too long to represent waits for good instead of panicking.
pub fn later(base: Instant, by: Duration) -> Instant {
    base.checked_add(by).unwrap_or_else(|| base + FAR_FUTURE)
}

/// `timeout` from now (see [`later`]).
pub fn deadline_after(timeout: Duration) -> Instant {
    later(Instant::now(), timeout)
}

/// When the last byte moved, in either direction.
#[derive(Debug)]
pub struct IdleClock {
    started: Instant,
    last_activity_ms: AtomicU64,
}

impl Default for IdleClock {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }
    }
}

impl IdleClock {
    /// Records activity now.
    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    pub async fn expired(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let deadline = later(later(self.started, last), idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_pushes_the_deadline_back() {
        let clock = IdleClock::default();
        tokio::time::sleep(Duration::from_secs(8)).await;
        clock.touch();
        let started = Instant::now();
        clock.expired(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed().as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_duration_waits_instead_of_panicking() {
        let clock = IdleClock::default();
        clock.touch();
        let waited = tokio::time::timeout(Duration::from_secs(3600), clock.expired(Duration::MAX));
        assert!(
            waited.await.is_err(),
            "an idle limit of Duration::MAX expired"
        );
        let now = Instant::now();
        assert!(deadline_after(Duration::MAX) >= later(now, FAR_FUTURE));
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
