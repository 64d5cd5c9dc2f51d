//! The replay check a hello goes through: this instance's [`ReplayCache`] first, then, with
//! `state.redis`, the fleet's ([`SharedState::claim`]). A key any instance admitted is a
//! replay on every instance for the fleet window; when Redis is down or slow the local cache
//! decides alone, and the key is pushed to Redis when it is back.

use std::sync::Arc;
use std::time::Duration;

use crate::mtproto::replay::{ReplayCache, KEY_LEN};
use crate::mtproto::shared_state::{Fallback, SharedState};

/// How long past the clock-skew window Redis remembers a key: covers the clock differences
/// between the fleet's hosts.
pub const WINDOW_MARGIN: Duration = Duration::from_secs(60);

/// The fleet window for `max_clock_skew`: a fake-TLS hello carries its time and is stale
/// once it is more than `max_clock_skew` off, so a replay can only be fresh within twice that
/// of the first use; after it, the timestamp check refuses the replay anyway.
pub fn fleet_window(max_clock_skew: Duration) -> Duration {
    max_clock_skew * 2 + WINDOW_MARGIN
}

/// The local cache and, in a fleet, the shared one.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    local: Arc<ReplayCache>,
    shared: Option<(Arc<SharedState>, Duration)>,
}

impl ReplayGuard {
    /// A guard of `local` alone.
    pub fn local(local: ReplayCache) -> ReplayGuard {
        ReplayGuard {
            local: Arc::new(local),
            shared: None,
        }
    }

    /// The same local cache, checked against `shared` for `window` too (or alone).
    pub fn sharing(&self, shared: Option<(Arc<SharedState>, Duration)>) -> ReplayGuard {
        ReplayGuard {
            local: self.local.clone(),
            shared,
        }
    }

    /// The local cache's capacity.
    pub fn capacity(&self) -> usize {
        self.local.capacity()
    }

    /// The fleet state this guard asks, if any.
    pub fn shared(&self) -> Option<&Arc<SharedState>> {
        self.shared.as_ref().map(|(shared, _)| shared)
    }

    /// Records `key`; `true` the first time this instance and (in a fleet) any instance saw
    /// it, `false` for a replay. Waits for Redis at most `state.redis_timeout`.
    pub async fn insert_if_new(&self, key: &[u8; KEY_LEN]) -> bool {
        if !self.local.insert_if_new(key) {
            return false;
        }
        let Some((shared, window)) = &self.shared else {
            return true;
        };
        match shared.claim(key, *window).await {
            Some(new) => new,
            None => {
                shared.fell_back(Fallback::Replay);
                shared.remember(key, *window);
                true
            }
        }
    }
}
