//! The users' quota counts shared by the fleet through Redis (`state.redis`). Each instance
//! counts its own bytes ([`UserCounters::period_bytes`]) and, every tick, adds what it
//! counted since its last push to the user's key for the period (`INCRBY`, so instances
//! never overwrite each other), reading back the fleet's total; the rest of the fleet's part
//! of it becomes [`UserCounters::fleet_period_bytes`], which the quota is held against too.
//!
//! A push that fails changes nothing here, so the next one after an outage carries every
//! byte counted during it, once. A new period or a `frontgate user reset` starts a new key.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::config::users::QuotaPeriod;
use crate::config::MtprotoSettings;
use crate::mtproto::shared_state::{Fallback, SharedState, KEY_PREFIX};
use crate::mtproto::state::{MtprotoState, UserCounters};
use crate::mtproto::users;

/// How long past its period a key stays in Redis (a day, for late instances and operators).
const KEY_MARGIN_SECS: u64 = 86_400;

/// What this instance has pushed so far: per user, the key and the own count pushed to it.
#[derive(Debug, Default)]
pub struct UsageSync {
    pushed: HashMap<String, (String, u64)>,
}

/// One user's push of a tick: their key and the own count the push brings it to.
struct Push<'a> {
    name: &'a str,
    counters: &'a UserCounters,
    key: String,
    own: u64,
}

impl UsageSync {
    /// A sync that counts what `state` holds now as pushed already: usage restored from
    /// `state.dir` at start was pushed by the run that counted it.
    pub fn seeded(settings: &MtprotoSettings, state: &MtprotoState) -> UsageSync {
        let mut sync = UsageSync::default();
        for (name, counters) in state.users(settings) {
            let own = counters.period_bytes.load(Ordering::Relaxed);
            sync.pushed
                .insert(name.to_string(), (key(name, counters), own));
        }
        sync
    }

    /// Pushes every user with a quota and reads back the fleet's counts; when Redis is down
    /// or fails, nothing changes (the deltas wait) and the skip is counted.
    pub async fn sync(
        &mut self,
        settings: &MtprotoSettings,
        state: &MtprotoState,
        shared: &SharedState,
    ) {
        let now = users::unix_now();
        let mut pushes = Vec::new();
        let mut pipe = redis::pipe();
        for (user, runtime) in settings.users.iter().zip(&state.users) {
            let Some(quota) = &user.policy.quota else {
                continue;
            };
            // Starts a new period's count when one began (the result is for admission).
            let _ = runtime.standing(&user.policy, now);
            let counters = &runtime.counters;
            let key = key(&user.name, counters);
            let own = counters.period_bytes.load(Ordering::Relaxed);
            let base = match self.pushed.get(&user.name) {
                Some((pushed_key, pushed)) if *pushed_key == key => *pushed,
                _ => 0,
            };
            pipe.cmd("INCRBY").arg(&key).arg(own.saturating_sub(base));
            match ttl(quota.period) {
                Some(secs) => pipe.cmd("EXPIRE").arg(&key).arg(secs).ignore(),
                None => &mut pipe,
            };
            pushes.push(Push {
                name: &user.name,
                counters,
                key,
                own,
            });
        }
        if pushes.is_empty() {
            return;
        }
        let Some(totals) = shared.run::<Vec<u64>>(&pipe).await else {
            shared.fell_back(Fallback::Usage);
            return;
        };
        for (push, total) in pushes.into_iter().zip(totals) {
            push.counters
                .fleet_period_bytes
                .store(total.saturating_sub(push.own), Ordering::Relaxed);
            self.pushed
                .insert(push.name.to_string(), (push.key, push.own));
        }
    }
}

/// The Redis key of a user's count in their current period, since their last reset.
fn key(name: &str, counters: &UserCounters) -> String {
    let period = counters.period_start.load(Ordering::Relaxed);
    let reset = counters.reset_applied.load(Ordering::Relaxed);
    format!("{KEY_PREFIX}usage:{name}:{period}:{reset}")
}

/// How long a period's key is kept: its longest period plus a margin; a `total` quota's key
/// stays.
fn ttl(period: QuotaPeriod) -> Option<u64> {
    let days = match period {
        QuotaPeriod::Day => 1,
        QuotaPeriod::Week => 7,
        QuotaPeriod::Month => 31,
        QuotaPeriod::Total => return None,
    };
    Some(days * 86_400 + KEY_MARGIN_SECS)
}
