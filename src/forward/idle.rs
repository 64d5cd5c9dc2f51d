//! The idle clock shared by both directions of a relay (passthrough and MTProto alike):
//! every moved byte resets it, and [`IdleClock::expired`] resolves once nothing moved for the
//! configured time. One atomic store per chunk, no timer reset per byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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
            let deadline = self.started + last + idle;
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
}
