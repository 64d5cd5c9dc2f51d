//! The MTProto core's running state: the replay cache and each user's traffic counters. The
//! gateway keeps one [`MtprotoState`] across reloads ([`MtprotoState::follow`]), so a reload
//! neither resets statistics nor reopens a replay window; the route file's values stay in
//! [`crate::config::MtprotoSettings`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::config::MtprotoSettings;
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
