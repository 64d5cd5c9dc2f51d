//! The idle clock shared by both directions of a relay (passthrough and MTProto alike):
//! every moved byte resets it, and [`IdleClock::deadline`] says when the relay is idle unless
//! something moves before (the relay's watch, `forward::shutdown::Shutdown::watch`, sleeps
//! until then and looks again). One atomic store per chunk, no timer reset per byte. Also home of
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

    /// When the relay is idle for `idle` unless something moves before: the last activity
    /// plus `idle`.
    pub fn deadline(&self, idle: Duration) -> Instant {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        later(later(self.started, last), idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_pushes_the_deadline_back() {
        let clock = IdleClock::default();
        let started = Instant::now();
        assert_eq!(
            clock.deadline(Duration::from_secs(10)),
            started + Duration::from_secs(10)
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
        clock.touch();
        assert_eq!(
            clock.deadline(Duration::from_secs(10)),
            started + Duration::from_secs(18)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_duration_is_far_away_instead_of_a_panic() {
        let clock = IdleClock::default();
        clock.touch();
        let now = Instant::now();
        assert!(clock.deadline(Duration::MAX) >= later(now, FAR_FUTURE));
        assert!(deadline_after(Duration::MAX) >= later(now, FAR_FUTURE));
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
