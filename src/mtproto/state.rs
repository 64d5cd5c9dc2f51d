//! The MTProto core's running state: the replay cache, each user's traffic counters and what
//! was learned of each route's backend. The gateway keeps one [`MtprotoState`] across reloads
//! ([`MtprotoState::follow`]), so a reload neither resets statistics nor reopens a replay
//! window nor forgets a learned profile; the route file's values stay in
//! [`crate::config::MtprotoSettings`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::config::MtprotoSettings;
use crate::mtproto::middle::MiddleProxy;
use crate::mtproto::mimic::{FlightProfile, HelloShape};
use crate::mtproto::record_sizing::RecordSizing;
use crate::mtproto::replay::ReplayCache;
use crate::mtproto::replay_guard::{self, ReplayGuard};
use crate::mtproto::shared_state::SharedState;
use crate::mtproto::users::UserRuntime;

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
    /// Bytes both ways in the current quota period, on this instance.
    pub period_bytes: AtomicU64,
    /// Bytes the rest of the fleet counted in the current quota period, as Redis said last
    /// (`state.redis`; 0 without it). The quota is held against both together.
    pub fleet_period_bytes: AtomicU64,
    /// When the current quota period began (Unix seconds; 0 for a `total` quota).
    pub period_start: AtomicI64,
    /// Distinct client addresses with a live session.
    pub ips: AtomicU64,
    /// Refused sessions, by [`crate::mtproto::users::Refusal::index`].
    pub refusals: [AtomicU64; 5],
    /// The user's `usage_reset` last acted on (Unix seconds), so a reset is done once.
    pub reset_applied: AtomicI64,
}

impl UserCounters {
    /// Acts on the user's `usage_reset` (`frontgate user reset`): a reset newer than the last
    /// one acted on starts the quota period's count from zero; lifetime totals stay.
    pub fn apply_usage_reset(&self, usage_reset: Option<i64>) {
        let Some(at) = usage_reset else {
            return;
        };
        if self.reset_applied.fetch_max(at, Ordering::Relaxed) < at {
            self.period_bytes.store(0, Ordering::Relaxed);
            self.fleet_period_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Bytes both ways in the current quota period, the whole fleet's.
    pub fn quota_bytes(&self) -> u64 {
        let own = self.period_bytes.load(Ordering::Relaxed);
        own.saturating_add(self.fleet_period_bytes.load(Ordering::Relaxed))
    }

    /// Counts `n` bytes read from a client (and against the quota period).
    pub fn add_from_client(&self, n: u64) {
        self.bytes_from_client.fetch_add(n, Ordering::Relaxed);
        self.period_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes written to a client (and against the quota period).
    pub fn add_to_client(&self, n: u64) {
        self.bytes_to_client.fetch_add(n, Ordering::Relaxed);
        self.period_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// The state of the MTProto core for one configuration: each user's running state in the
/// order of the settings' users, and the replay cache shared by every `mtproto: true` route.
#[derive(Debug)]
pub struct MtprotoState {
    /// One per user, in `MtprotoSettings::users` order.
    pub users: Vec<Arc<UserRuntime>>,
    /// Digests of accepted hellos (and plain inits), here and, with `state.redis`, fleet-wide.
    pub replay: ReplayGuard,
    /// What each `mtproto: true` route's backend answered last, for `mimic: learned` and
    /// for live mirrors that fail.
    pub profiles: Arc<ProfileStore>,
    /// The middle-proxy client (kept across reloads: its ME connections serve on).
    pub middle: Arc<MiddleProxy>,
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

/// What a route's backend answered a hello of one shape, and when.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The backend's flight shape, or why its answer cannot be mirrored (a TLS 1.2 or
    /// non-TLS backend: asking it again for every hello would only add latency).
    pub answer: Result<FlightProfile, String>,
    /// When its answer arrived.
    pub at: Instant,
}

/// Most (route, hello shape) answers kept; the oldest goes first. Valid Telegram hellos come
/// in a handful of shapes per client version, so this is far above what a route needs.
pub const MAX_LEARNED: usize = 256;

/// The learned backend answers, by route label and client hello shape (a backend answers
/// a hello offering X25519MLKEM768 differently from one offering x25519 only), and the
/// serving mode last logged per route.
#[derive(Debug, Default)]
pub struct ProfileStore {
    learned: Mutex<HashMap<(String, HelloShape), Learned>>,
    logged: Mutex<HashMap<String, ServingMode>>,
    /// The record sizes of each route's site downloads, by route label.
    sizing: Mutex<HashMap<String, RecordSizing>>,
}

impl ProfileStore {
    /// What `route`'s backend last answered a hello of `shape`.
    pub fn get(&self, route: &str, shape: &HelloShape) -> Option<Learned> {
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        learned.get(&(route.to_string(), shape.clone())).cloned()
    }

    /// Remembers `answer` as `route`'s backend answer to hellos of `shape`.
    pub fn learn(&self, route: &str, shape: &HelloShape, answer: Result<FlightProfile, String>) {
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (route.to_string(), shape.clone());
        if learned.len() >= MAX_LEARNED && !learned.contains_key(&key) {
            let oldest = learned
                .iter()
                .min_by_key(|(_, l)| l.at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                learned.remove(&oldest);
            }
        }
        let at = Instant::now();
        learned.insert(key, Learned { answer, at });
    }

    /// Remembers the record sizes of `route`'s site downloads.
    pub fn learn_sizing(&self, route: &str, sizing: RecordSizing) {
        let mut all = self.sizing.lock().unwrap_or_else(PoisonError::into_inner);
        all.insert(route.to_string(), sizing);
    }

    /// The record sizes to give `route`'s sessions: the site's, once learned.
    pub fn sizing(&self, route: &str) -> RecordSizing {
        let all = self.sizing.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(route).cloned().unwrap_or_default()
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
            users: settings
                .users
                .iter()
                .map(|user| Arc::new(UserRuntime::new(&user.policy)))
                .collect(),
            replay: ReplayGuard::local(ReplayCache::new(settings.replay_cache)),
            profiles: Arc::default(),
            middle: MiddleProxy::new(settings),
        }
    }

    /// The state for `settings` after a reload from `running` (which served
    /// `running_settings`): users that stay keep their state (counters, live sessions) under
    /// their new policy, removed users' sessions are cut, and the replay cache is kept when
    /// its size is unchanged.
    pub fn follow(
        settings: &MtprotoSettings,
        running_settings: &MtprotoSettings,
        running: &MtprotoState,
    ) -> MtprotoState {
        let mut next = MtprotoState::new(settings);
        for (index, user) in settings.users.iter().enumerate() {
            let old = running_settings
                .users
                .iter()
                .position(|u| u.name == user.name);
            if let Some(old) = old.and_then(|i| running.users.get(i)) {
                old.follow_policy(&user.policy);
                next.users[index] = old.clone();
            }
        }
        for (user, runtime) in running_settings.users.iter().zip(&running.users) {
            if !settings.users.iter().any(|u| u.name == user.name) {
                runtime.cut_sessions();
            }
        }
        if running.replay.capacity() == next.replay.capacity() {
            next.replay = running.replay.clone();
        }
        next.profiles = running.profiles.clone();
        running.middle.follow(settings);
        next.middle = running.middle.clone();
        next
    }

    /// The same state checking replays against `shared` too (`state.redis`), or locally only.
    pub fn sharing(mut self, settings: &MtprotoSettings, shared: Option<Arc<SharedState>>) -> Self {
        let window = replay_guard::fleet_window(settings.max_clock_skew);
        self.replay = self.replay.sharing(shared.map(|shared| (shared, window)));
        self
    }

    /// The fleet-wide state, with `state.redis`.
    pub fn shared(&self) -> Option<&Arc<SharedState>> {
        self.replay.shared()
    }

    /// Each user's name with their counters, for the metrics endpoint.
    pub fn users<'a>(
        &'a self,
        settings: &'a MtprotoSettings,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<UserCounters>)> {
        settings
            .users
            .iter()
            .map(|user| user.name.as_str())
            .zip(self.users.iter().map(|runtime| &runtime.counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(group: u16) -> HelloShape {
        HelloShape {
            suites: vec![0x1301],
            key_share_groups: vec![group],
        }
    }

    #[test]
    fn answers_are_kept_per_route_and_hello_shape() {
        let store = ProfileStore::default();
        let profile = FlightProfile::fixed(&[0x1301], 2000);
        store.learn("a.example.com", &shape(0x11ec), Ok(profile.clone()));
        assert_eq!(
            store
                .get("a.example.com", &shape(0x11ec))
                .and_then(|l| l.answer.ok()),
            Some(profile)
        );
        assert!(
            store.get("a.example.com", &shape(0x001d)).is_none(),
            "other shape"
        );
        assert!(
            store.get("b.example.com", &shape(0x11ec)).is_none(),
            "other route"
        );
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest() {
        let store = ProfileStore::default();
        for group in 0..=MAX_LEARNED as u16 {
            store.learn("r", &shape(group), Err("tls 1.2".into()));
        }
        assert_eq!(store.learned.lock().unwrap().len(), MAX_LEARNED);
        assert!(store.get("r", &shape(0)).is_none(), "the oldest went first");
        assert!(store.get("r", &shape(MAX_LEARNED as u16)).is_some());
    }
}
