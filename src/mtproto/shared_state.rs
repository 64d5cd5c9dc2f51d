//! The fleet-wide state in Redis (`state.redis`): one connection manager per configured
//! server (the crate's multiplexed, self-reconnecting connection: every task shares it, so it
//! is the pool), whether Redis answers now, and what was decided without it.
//!
//! Nothing waits on Redis for long: a hello's replay check gives up after
//! `state.redis_timeout` and the local cache decides. The first failure marks Redis down
//! (one warning per outage, the URL's password hidden); while it is down nothing asks it, and
//! a watcher pings it every [`PROBE_EVERY`]. When it answers again, the replay keys admitted
//! locally during the outage are pushed, and it is marked up (the usage sync pushes its
//! deltas on its next tick).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::config::redis::RedisSettings;
use crate::mtproto::replay::KEY_LEN;

/// How often the watcher asks Redis whether it answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a ping, a resync or a usage sync may take (none of them holds up a client).
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// Most replay keys remembered for the push after an outage (the oldest go first); at 32
/// bytes and an instant each, a few megabytes.
pub const MAX_PENDING: usize = 100_000;

/// Redis has not answered a ping yet.
const UNKNOWN: u8 = 0;
/// Redis answered last time.
const UP: u8 = 1;
/// Redis failed last time.
const DOWN: u8 = 2;

/// The prefix of every key frontgate writes.
pub const KEY_PREFIX: &str = "frontgate:";

/// What fell back to local state because Redis did not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A hello's replay check was decided by the local cache alone.
    Replay,
    /// A usage sync was skipped; its deltas wait for the next one.
    Usage,
}

impl Fallback {
    /// Every kind, in the order of [`SharedState::fallbacks`].
    pub const ALL: [Fallback; 2] = [Fallback::Replay, Fallback::Usage];

    /// The kind as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Fallback::Replay => "replay",
            Fallback::Usage => "usage",
        }
    }
}

/// The shared Redis state of one `state.redis` setting.
pub struct SharedState {
    settings: RedisSettings,
    connection: ConnectionManager,
    /// [`UNKNOWN`], [`UP`] or [`DOWN`].
    health: AtomicU8,
    /// Decisions made without Redis, by [`Fallback`] in [`Fallback::ALL`] order.
    pub fallbacks: [AtomicU64; 2],
    /// Times Redis came back and the outage's replay keys were pushed.
    pub resyncs: AtomicU64,
    /// Replay keys admitted locally while Redis was down, with when their memory ends.
    pending: Mutex<VecDeque<([u8; KEY_LEN], Instant)>>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("redis", &self.settings.shown())
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// Starts using `settings`' Redis: the connection opens in the background, and the
    /// watcher runs while the returned state lives. Needs a tokio runtime.
    pub fn start(settings: &RedisSettings) -> Result<Arc<SharedState>, redis::RedisError> {
        let client = redis::Client::open(settings.url())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(BACKGROUND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let state = Arc::new(SharedState {
            settings: settings.clone(),
            connection,
            // Not asked until the first ping answers: nothing waits on a Redis that never was.
            health: AtomicU8::new(UNKNOWN),
            fallbacks: Default::default(),
            resyncs: AtomicU64::new(0),
            pending: Mutex::default(),
        });
        tokio::spawn(watch(Arc::downgrade(&state)));
        Ok(state)
    }

    /// The settings this state uses.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether Redis answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.health.load(Ordering::Relaxed) == UP
    }

    /// Counts a decision made without Redis.
    pub fn fell_back(&self, kind: Fallback) {
        self.fallbacks[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records `key` as seen fleet-wide for `window` unless some instance did already:
    /// `Some(true)` for a new key, `Some(false)` for a replay, `None` when Redis is down or
    /// does not answer within `state.redis_timeout` (then it is marked down).
    pub async fn claim(&self, key: &[u8; KEY_LEN], window: Duration) -> Option<bool> {
        if !self.is_up() {
            return None;
        }
        let mut connection = self.connection.clone();
        let command = claim_command(key, window);
        let answer =
            tokio::time::timeout(self.settings.timeout, command.query_async(&mut connection)).await;
        match answer {
            // `OK` when this call wrote the key, nil when it existed.
            Ok(Ok(reply)) => Some(matches!(reply, redis::Value::Okay)),
            Ok(Err(error)) => {
                self.mark_down(&error.to_string());
                None
            }
            Err(_) => {
                let waited = self.settings.timeout;
                self.mark_down(&format!("no answer within {waited:?}"));
                None
            }
        }
    }

    /// Remembers a key admitted without Redis, to push when Redis is back.
    pub fn remember(&self, key: &[u8; KEY_LEN], window: Duration) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        pending.push_back((*key, Instant::now() + window));
    }

    /// Runs `pipe` (a usage sync) with the background timeout; `None` (and Redis marked
    /// down) when it fails.
    pub async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        if !self.is_up() {
            return None;
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(BACKGROUND_TIMEOUT, pipe.query_async(&mut connection)).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(error)) => {
                self.mark_down(&error.to_string());
                None
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {BACKGROUND_TIMEOUT:?}"));
                None
            }
        }
    }

    /// Marks Redis down, with one warning per outage (and one when it never answered).
    fn mark_down(&self, why: &str) {
        if self.health.swap(DOWN, Ordering::Relaxed) != DOWN {
            tracing::warn!(
                redis = %self.settings.shown(),
                error = %why,
                "Redis does not answer: replay checks and usage stay on this instance until it does"
            );
        }
    }

    /// One ping; when Redis answers after being down, pushes the outage's replay keys first
    /// and then marks it up.
    async fn probe(&self) {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let answered = tokio::time::timeout(
            BACKGROUND_TIMEOUT,
            ping.query_async::<String>(&mut connection),
        )
        .await;
        let error = match answered {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {BACKGROUND_TIMEOUT:?}")),
        };
        if let Some(error) = error {
            self.mark_down(&error);
            return;
        }
        if self.is_up() {
            return;
        }
        match self.push_pending().await {
            Ok(pushed) => {
                self.health.store(UP, Ordering::Relaxed);
                self.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    redis = %self.settings.shown(),
                    replay_keys_pushed = pushed,
                    "Redis answers: replay checks and usage are fleet-wide"
                );
            }
            Err(error) => tracing::debug!(%error, "pushing the replay keys failed; retrying"),
        }
    }

    /// Writes every still-live pending key to Redis (a key another instance wrote stays as
    /// it is); the keys stay pending if Redis fails midway.
    async fn push_pending(&self) -> Result<usize, String> {
        let now = Instant::now();
        let (taken, keys): (usize, Vec<([u8; KEY_LEN], Instant)>) = {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let live = pending.iter().filter(|(_, end)| *end > now).copied();
            (pending.len(), live.collect())
        };
        let mut connection = self.connection.clone();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for (key, end) in chunk {
                pipe.add_command(claim_command(key, *end - now)).ignore();
            }
            match tokio::time::timeout(BACKGROUND_TIMEOUT, pipe.query_async::<()>(&mut connection))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("no answer within {BACKGROUND_TIMEOUT:?}")),
            }
        }
        // The keys taken were pushed or had expired; those remembered while the push ran
        // (behind them) are pushed next time.
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let done = taken.min(pending.len());
        pending.drain(..done);
        Ok(keys.len())
    }
}

/// `SET frontgate:replay:<hex> 1 NX PX <window>`: answers `OK` only to the first instance.
fn claim_command(key: &[u8; KEY_LEN], window: Duration) -> redis::Cmd {
    let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut command = redis::cmd("SET");
    command
        .arg(format!("{KEY_PREFIX}replay:{}", hex::encode(key)))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(millis);
    command
}

/// Pings Redis every [`PROBE_EVERY`] while `state` lives.
async fn watch(state: Weak<SharedState>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.probe().await;
    }
}
