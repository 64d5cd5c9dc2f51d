//! Each user's running state and the enforcement of their policy
//! ([`crate::config::users::UserPolicy`]): who may start a session (enabled, not expired,
//! under quota, under their connection and address limits), the closing of live sessions
//! of a user who stops being allowed, and the shared rate limit of a user's sessions.
//!
//! A refused user is not told so: their hello goes to the route's site like any visitor's
//! (a prober must not learn that a secret exists), and the log says why in a line the
//! fail2ban filter does not match (it is no attack).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::users::UserPolicy;
use crate::config::MtprotoSettings;
use crate::mtproto::state::UserCounters;

/// Now, in Unix seconds: the clock user policies are read against.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How often live sessions are checked against their user's policy: a user who crosses the
/// quota, expires or is disabled is cut within this (well under a second).
pub const ENFORCE_EVERY: Duration = Duration::from_millis(250);

/// Why a user with a valid secret was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `enabled: false`.
    Disabled,
    /// Past `expires`.
    Expired,
    /// The period's quota is used up.
    OverQuota,
    /// `max_connections` sessions are live.
    Connections,
    /// `max_ips` other addresses have live sessions.
    Ips,
}

impl Refusal {
    /// Every reason, in the order of [`UserCounters::refusals`].
    pub const ALL: [Refusal; 5] = [
        Refusal::Disabled,
        Refusal::Expired,
        Refusal::OverQuota,
        Refusal::Connections,
        Refusal::Ips,
    ];

    /// The reason's slot in [`UserCounters::refusals`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason as a metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::Expired => "expired",
            Refusal::OverQuota => "over_quota",
            Refusal::Connections => "max_connections",
            Refusal::Ips => "max_ips",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The running state of one user, kept across reloads while the user stays.
#[derive(Debug)]
pub struct UserRuntime {
    /// Traffic and session counters (also what the metrics endpoint and the state file read).
    pub counters: Arc<UserCounters>,
    sessions: Mutex<Sessions>,
    /// Cancelled (and replaced) to close every live session of the user.
    cut: Mutex<CancellationToken>,
    rate: Mutex<Option<Arc<RateLimits>>>,
}

#[derive(Debug, Default)]
struct Sessions {
    count: usize,
    ips: HashMap<IpAddr, usize>,
}

impl UserRuntime {
    /// Fresh state for a user with `policy`.
    pub fn new(policy: &UserPolicy) -> UserRuntime {
        UserRuntime::with_counters(policy, Arc::default())
    }

    /// State for a user with `policy` that continues `counters`.
    pub fn with_counters(policy: &UserPolicy, counters: Arc<UserCounters>) -> UserRuntime {
        let runtime = UserRuntime {
            counters,
            sessions: Mutex::default(),
            cut: Mutex::default(),
            rate: Mutex::default(),
        };
        runtime.follow_policy(policy);
        runtime
    }

    /// The same user after a reload gave them `policy`: counters, live sessions and the
    /// rate limiter's state stay (a new rate gets a new limiter).
    pub fn follow_policy(&self, policy: &UserPolicy) {
        self.counters.apply_usage_reset(policy.usage_reset);
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let same = match (&*rate, policy.rate) {
            (Some(limits), Some(r)) => limits.up.rate == r,
            (None, None) => true,
            _ => false,
        };
        if !same {
            *rate = policy.rate.map(|r| Arc::new(RateLimits::new(r)));
        }
    }

    /// Whether the user may be served at all now (Unix seconds): enabled, not expired,
    /// under quota.
    pub fn standing(&self, policy: &UserPolicy, now: i64) -> Result<(), Refusal> {
        if !policy.enabled {
            return Err(Refusal::Disabled);
        }
        if policy.expires.is_some_and(|at| now >= at) {
            return Err(Refusal::Expired);
        }
        if let Some(quota) = &policy.quota {
            self.roll_period(quota.period_start(now));
            if self.counters.quota_bytes() >= quota.bytes {
                return Err(Refusal::OverQuota);
            }
        }
        Ok(())
    }

    /// Starts a new quota period at `start` if the current one began earlier.
    fn roll_period(&self, start: i64) {
        let counters = &self.counters;
        let current = counters.period_start.load(Ordering::Relaxed);
        if current != start
            && counters
                .period_start
                .compare_exchange(current, start, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            counters.period_bytes.store(0, Ordering::Relaxed);
            counters.fleet_period_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Admits a session from `ip` now (Unix seconds), or says why not (and counts it).
    pub fn admit(
        self: &Arc<Self>,
        policy: &UserPolicy,
        ip: IpAddr,
        now: i64,
    ) -> Result<Admission, Refusal> {
        let admitted = self
            .standing(policy, now)
            .and_then(|()| self.take_slot(policy, ip));
        if let Err(refusal) = admitted {
            self.counters.refusals[refusal.index()].fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        Ok(Admission {
            user: self.clone(),
            ip,
            cut: self
                .cut
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            rate: self
                .rate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        })
    }

    fn take_slot(&self, policy: &UserPolicy, ip: IpAddr) -> Result<(), Refusal> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if policy
            .max_connections
            .is_some_and(|max| sessions.count >= max)
        {
            return Err(Refusal::Connections);
        }
        let ip = ip.to_canonical();
        let new_ip = !sessions.ips.contains_key(&ip);
        if new_ip && policy.max_ips.is_some_and(|max| sessions.ips.len() >= max) {
            return Err(Refusal::Ips);
        }
        sessions.count += 1;
        *sessions.ips.entry(ip).or_default() += 1;
        self.counters
            .ips
            .store(sessions.ips.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.count = sessions.count.saturating_sub(1);
        let ip = ip.to_canonical();
        if let Some(n) = sessions.ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                sessions.ips.remove(&ip);
            }
        }
        self.counters
            .ips
            .store(sessions.ips.len() as u64, Ordering::Relaxed);
    }

    /// Closes every live session of the user (they end within a moment); sessions admitted
    /// later are not affected.
    pub fn cut_sessions(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::take(&mut *cut);
        old.cancel();
    }

    /// Live sessions now.
    pub fn sessions(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count
    }
}

/// One admitted session's hold on its user: a connection slot and an address, released when
/// the session ends, the signal that cuts it, and the user's shared rate limits.
#[derive(Debug)]
pub struct Admission {
    user: Arc<UserRuntime>,
    ip: IpAddr,
    /// Cancelled when the user must no longer be served.
    pub cut: CancellationToken,
    /// The user's rate limits, if any.
    pub rate: Option<Arc<RateLimits>>,
}

impl Admission {
    /// The client's address the session was admitted for.
    pub fn client_ip(&self) -> IpAddr {
        self.ip
    }

    /// The user's counters.
    pub fn counters(&self) -> &Arc<UserCounters> {
        &self.user.counters
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.user.release(self.ip);
    }
}

/// One pass of enforcement over every user: sessions of users who may no longer be served
/// are cut. The gateway runs it every [`ENFORCE_EVERY`].
pub fn enforce(settings: &MtprotoSettings, users: &[Arc<UserRuntime>], now: i64) {
    for (user, runtime) in settings.users.iter().zip(users) {
        if runtime.sessions() > 0 && runtime.standing(&user.policy, now).is_err() {
            runtime.cut_sessions();
        }
    }
}

/// The smallest burst of a [`TokenBucket`]: two 64 KiB reads and their record headers.
pub const MIN_BURST: usize = 2 * (64 * 1024 + 1024);

/// A user's rate limit, one bucket per direction.
#[derive(Debug)]
pub struct RateLimits {
    /// Client -> DC.
    pub up: TokenBucket,
    /// DC -> client.
    pub down: TokenBucket,
}

impl RateLimits {
    fn new(rate: u64) -> RateLimits {
        RateLimits {
            up: TokenBucket::new(rate),
            down: TokenBucket::new(rate),
        }
    }
}

/// A token bucket shared by a user's sessions: `rate` bytes per second. It starts empty (a
/// transfer's average is the rate from its first second), and saves at most a tenth of a
/// second of unused rate, and at least [`MIN_BURST`]: two of the relay's largest reads, so a
/// direction that waited for the other (an echo, a request and its answer) keeps the credit
/// of its wait; with less, a session ran at two thirds of its rate.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: f64,
    /// Tokens (negative: a debt the next sends wait out) as of an instant.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// An empty bucket for `rate` bytes per second.
    pub fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate,
            burst: (rate as f64 / 10.0).max(MIN_BURST as f64),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens and says how long the sender must wait before
    /// sending more (zero while the bucket holds tokens).
    pub fn take(&self, n: usize) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        let tokens = (state.0 + elapsed * self.rate as f64).min(self.burst) - n as f64;
        *state = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::users::{Quota, QuotaPeriod};
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn disabled_expired_and_over_quota_users_are_refused() {
        let runtime = Arc::new(UserRuntime::new(&UserPolicy::default()));
        let off = UserPolicy {
            enabled: false,
            ..UserPolicy::default()
        };
        assert_eq!(runtime.admit(&off, ip(1), 0).err(), Some(Refusal::Disabled));
        let expiring = UserPolicy {
            expires: Some(1000),
            ..UserPolicy::default()
        };
        assert!(runtime.admit(&expiring, ip(1), 999).is_ok());
        assert_eq!(
            runtime.admit(&expiring, ip(1), 1000).err(),
            Some(Refusal::Expired)
        );
        let quota = UserPolicy {
            quota: Some(Quota {
                bytes: 100,
                period: QuotaPeriod::Day,
                resets_on: 1,
            }),
            ..UserPolicy::default()
        };
        let day = 86_400;
        assert!(runtime.admit(&quota, ip(1), day).is_ok());
        runtime.counters.period_bytes.store(100, Ordering::Relaxed);
        assert_eq!(
            runtime.admit(&quota, ip(1), day + 5).err(),
            Some(Refusal::OverQuota)
        );
        // The next day starts a new period.
        assert!(runtime.admit(&quota, ip(1), 2 * day).is_ok());
        assert_eq!(runtime.counters.period_bytes.load(Ordering::Relaxed), 0);
        let refused = |r: Refusal| runtime.counters.refusals[r.index()].load(Ordering::Relaxed);
        assert_eq!(
            (
                refused(Refusal::Disabled),
                refused(Refusal::Expired),
                refused(Refusal::OverQuota)
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn connection_and_address_limits_count_live_sessions() {
        let policy = UserPolicy {
            max_connections: Some(3),
            max_ips: Some(2),
            ..UserPolicy::default()
        };
        let runtime = Arc::new(UserRuntime::new(&policy));
        let a1 = runtime.admit(&policy, ip(1), 0).unwrap();
        let _b = runtime.admit(&policy, ip(2), 0).unwrap();
        assert_eq!(
            runtime.admit(&policy, ip(3), 0).err(),
            Some(Refusal::Ips),
            "a third address"
        );
        let _a2 = runtime.admit(&policy, ip(1), 0).unwrap();
        assert_eq!(
            runtime.admit(&policy, ip(1), 0).err(),
            Some(Refusal::Connections)
        );
        assert_eq!(runtime.counters.ips.load(Ordering::Relaxed), 2);
        drop(a1);
        assert_eq!(runtime.sessions(), 2);
        assert_eq!(
            runtime.admit(&policy, ip(3), 0).err(),
            Some(Refusal::Ips),
            "127.0.0.1 still has a session"
        );
    }

    #[test]
    fn cutting_ends_the_live_sessions_only() {
        let policy = UserPolicy::default();
        let runtime = Arc::new(UserRuntime::new(&policy));
        let live = runtime.admit(&policy, ip(1), 0).unwrap();
        runtime.cut_sessions();
        assert!(live.cut.is_cancelled());
        let later = runtime.admit(&policy, ip(1), 0).unwrap();
        assert!(!later.cut.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate() {
        let bucket = TokenBucket::new(1_000_000);
        let mut sent = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let wait = bucket.take(16 * 1024);
            sent += 16 * 1024;
            tokio::time::sleep(wait).await;
        }
        let rate = sent as f64 / started.elapsed().as_secs_f64();
        assert!((rate - 1e6).abs() < 0.02e6, "{rate}");
    }
}
