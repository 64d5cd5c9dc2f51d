//! The MTProto core's running state: the replay cache, each user's traffic counters and what
//! was learned of each route's backend. The gateway keeps one [`MtprotoState`] across reloads
//! ([`MtprotoState::follow`]), so a reload neither resets statistics nor reopens a replay
//! window nor forgets a learned profile; the route file's values stay in
//! [`crate::config::MtprotoSettings`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::config::MtprotoSettings;
use crate::mtproto::mimic::FlightProfile;
use crate::mtproto::replay::ReplayCache;

/// Live traffic counters of one user, read by the metrics endpoint. Byte counts are the
/// client socket's bytes after the ClientHello (TLS framing included).
#[derive(Debug, Default)]
pub struct UserCounters {
    /// Sessions that reached their DC.
    pub connections: AtomicU64,
    /// Sessions relaying now.
    pub active: AtomicU64,
    /// Bytes read from clients.
    pub bytes_from_client: AtomicU64,
    /// Bytes written to clients.
    pub bytes_to_client: AtomicU64,
}

/// The state of the MTProto core for one configuration: counters in the order of the
/// settings' users, and the replay cache shared by every `mtproto: true` route.
#[derive(Debug)]
pub struct MtprotoState {
    /// One counter set per user, in `MtprotoSettings::users` order.
    pub counters: Vec<Arc<UserCounters>>,
    /// Digests of accepted hellos (and plain inits).
    pub replay: Arc<ReplayCache>,
    /// What each `mtproto: true` route's backend answered last, for `mimic: learned` and
    /// for live mirrors that fail.
    pub profiles: Arc<ProfileStore>,
}

/// Which shape a route's fake flights have, for the log line that says so once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingMode {
    /// Mirrored live from the backend's answer to each client's hello.
    Live,
    /// The profile learned from the backend's last answer.
    Learned,
    /// The fixed shape (a known fingerprint).
    Fixed,
}

impl fmt::Display for ServingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServingMode::Live => "live",
            ServingMode::Learned => "learned",
            ServingMode::Fixed => "fixed",
        })
    }
}

/// A profile and when it was learned.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The backend's flight shape.
    pub profile: FlightProfile,
    /// When its answer arrived.
    pub at: Instant,
}

/// The learned backend profiles and the serving mode last logged, by route label. Bounded by
/// the number of routes in the configuration.
#[derive(Debug, Default)]
pub struct ProfileStore {
    learned: Mutex<HashMap<String, Learned>>,
    logged: Mutex<HashMap<String, ServingMode>>,
}

impl ProfileStore {
    /// The profile last learned for `route`.
    pub fn get(&self, route: &str) -> Option<Learned> {
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        learned.get(route).cloned()
    }

    /// Remembers `profile` as `route`'s backend shape.
    pub fn learn(&self, route: &str, profile: FlightProfile) {
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let at = Instant::now();
        learned.insert(route.to_string(), Learned { profile, at });
    }

    /// Records that `route` now serves in `mode`; true when that is a change (log it).
    pub fn serving(&self, route: &str, mode: ServingMode) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        logged.insert(route.to_string(), mode) != Some(mode)
    }
}

impl MtprotoState {
    /// Fresh state for `settings`: zero counters, an empty replay cache.
    pub fn new(settings: &MtprotoSettings) -> MtprotoState {
        MtprotoState {
            counters: settings
                .users
                .iter()
                .map(|_| Arc::new(UserCounters::default()))
                .collect(),
            replay: Arc::new(ReplayCache::new(settings.replay_cache)),
            profiles: Arc::default(),
        }
    }

    /// The state for `settings` after a reload from `running` (which served
    /// `running_settings`): users that stay keep their counters, and the replay cache is kept
    /// when its size is unchanged.
    pub fn follow(
        settings: &MtprotoSettings,
        running_settings: &MtprotoSettings,
        running: &MtprotoState,
    ) -> MtprotoState {
        let mut next = MtprotoState::new(settings);
        for (index, (name, _)) in settings.users.iter().enumerate() {
            let old = running_settings.users.iter().position(|(n, _)| n == name);
            if let Some(old) = old.and_then(|i| running.counters.get(i)) {
                next.counters[index] = old.clone();
            }
        }
        if running.replay.capacity() == next.replay.capacity() {
            next.replay = running.replay.clone();
        }
        next.profiles = running.profiles.clone();
        next
    }

    /// Each user's name with their counters, for the metrics endpoint.
    pub fn users<'a>(
        &'a self,
        settings: &'a MtprotoSettings,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<UserCounters>)> {
        settings
            .users
            .iter()
            .map(|(name, _)| name.as_str())
            .zip(&self.counters)
    }
}
