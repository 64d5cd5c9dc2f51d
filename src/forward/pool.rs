//! A route's backends at run time: which server a connection tries first (`balance`), the
//! health of each server (marked down after `fall` consecutive failures, of connects or of
//! active checks; up again after `rise` good checks, or, without `check:`, tried again after
//! [`PASSIVE_RETRY`]), live connection counts and connect latency. One [`Pool`] per distinct
//! pool setting; the gateway keeps it across reloads while the setting stays the same.
//!
//! A server marked down is not tried while another one is usable. When every server is down
//! (backups included), each connection tries them all in the order written, so a recovering
//! backend is found without waiting for the checks; the pool logs that once per outage.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::upstream::{connect_one, resolve, ConnectError};
use crate::config::pool::{Balance, PoolServer, PoolSettings, PASSIVE_RETRY};

/// Upper bounds (seconds) of the connect latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The running pools of a snapshot, by their settings (routes with equal pools share one).
pub type Pools = HashMap<PoolSettings, Arc<Pool>>;

/// The running pool of `settings` in `pools`; a fresh one (every server up, no memory) when
/// there is none, the safe answer for a caller with no running gateway (`check --probe`).
pub fn running_or_fresh(pools: &Pools, settings: &PoolSettings) -> Arc<Pool> {
    match pools.get(settings) {
        Some(pool) => pool.clone(),
        None => Pool::new(settings.clone()),
    }
}

/// The runtime state of one pool.
#[derive(Debug)]
pub struct Pool {
    settings: PoolSettings,
    servers: Vec<ServerHealth>,
    /// Smooth weighted round robin's current weights, one per server.
    round_robin: Mutex<Vec<i64>>,
    /// Rotates the tie-break start of `least_conn`.
    ticks: AtomicUsize,
    /// Whether the all-down state has been logged (reset once a server is usable again).
    all_down_logged: AtomicBool,
}

/// Up or down, and the streak that decides when that changes.
#[derive(Debug)]
struct Streak {
    up: bool,
    /// Consecutive failures (connects or checks).
    failures: u32,
    /// Consecutive successful checks.
    successes: u32,
    /// When the server was last marked down or failed while down.
    down_since: Option<Instant>,
}

/// One server's health and counters.
#[derive(Debug)]
pub struct ServerHealth {
    streak: Mutex<Streak>,
    active: AtomicU64,
    failures: AtomicU64,
    /// Connect latency: count per bucket of [`LATENCY_BUCKETS`] plus one for larger values.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

/// A server's connect latency as the metrics endpoint shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Successful connects measured.
    pub count: u64,
    /// Their total duration, seconds.
    pub sum_seconds: f64,
    /// `(upper bound, connects in this bucket only)`, the last bound infinite.
    pub buckets: Vec<(f64, u64)>,
}

impl ServerHealth {
    fn new() -> ServerHealth {
        ServerHealth {
            streak: Mutex::new(Streak {
                up: true,
                failures: 0,
                successes: 0,
                down_since: None,
            }),
            active: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_micros: AtomicU64::new(0),
        }
    }

    fn streak(&self) -> std::sync::MutexGuard<'_, Streak> {
        self.streak.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the server is marked up.
    pub fn is_up(&self) -> bool {
        self.streak().up
    }

    /// Connections to it now (connecting or relaying).
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Failed connects and failed checks, since the pool started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// The connect latency histogram.
    pub fn latency(&self) -> Latency {
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        Latency {
            count: counts.iter().sum(),
            sum_seconds: self.latency_micros.load(Relaxed) as f64 / 1e6,
            buckets: bounds.zip(counts).collect(),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let at = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[at].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.fetch_add(micros, Relaxed);
    }
}

/// A connection counted against a server until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.servers[self.index].active.fetch_sub(1, Relaxed);
    }
}

/// A backend connection made through a pool.
#[derive(Debug)]
pub struct Connected<A> {
    /// The stream, Nagle off.
    pub stream: TcpStream,
    /// The address it reached.
    pub addr: SocketAddr,
    /// Its own (local) address.
    pub local: SocketAddr,
    /// What `announce` returned for that address.
    pub announced: A,
    /// Counts the connection in its server's `active` until dropped.
    pub lease: Lease,
}

impl Pool {
    /// A pool with every server up and no counts.
    pub fn new(settings: PoolSettings) -> Arc<Pool> {
        let servers = settings
            .servers
            .iter()
            .map(|_| ServerHealth::new())
            .collect();
        Arc::new(Pool {
            round_robin: Mutex::new(vec![0; settings.servers.len()]),
            settings,
            servers,
            ticks: AtomicUsize::new(0),
            all_down_logged: AtomicBool::new(false),
        })
    }

    /// What the route file says about the pool.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Every server with its health, in the order written.
    pub fn servers(&self) -> impl Iterator<Item = (&PoolServer, &ServerHealth)> {
        self.settings.servers.iter().zip(&self.servers)
    }

    /// Whether a connection may try server `index` now: it is up, or it has no active check
    /// and has been down for [`PASSIVE_RETRY`]: then this connection claims the retry (the
    /// clock restarts, so the connections beside it do not wait on the same server).
    fn usable(&self, index: usize, now: Instant) -> bool {
        let mut streak = self.servers[index].streak();
        if streak.up {
            return true;
        }
        let due = self.settings.check.is_none()
            && streak
                .down_since
                .is_none_or(|since| now.duration_since(since) >= PASSIVE_RETRY);
        if due {
            streak.down_since = Some(now);
        }
        due
    }

    /// The servers a connection from `client` tries, in order: the balanced pick among the
    /// usable primaries, then the other usable primaries as written; the usable backups only
    /// when no primary is usable; every server as written when none is usable at all.
    pub fn order(&self, client: IpAddr) -> Vec<usize> {
        let now = Instant::now();
        let all = 0..self.servers.len();
        let usable = |backup: bool| -> Vec<usize> {
            all.clone()
                .filter(|&i| self.settings.servers[i].backup == backup && self.usable(i, now))
                .collect()
        };
        let mut candidates = usable(false);
        if candidates.is_empty() {
            candidates = usable(true);
        }
        if candidates.is_empty() {
            if !self.all_down_logged.swap(true, Relaxed) {
                let names: Vec<String> = self.servers_written();
                tracing::warn!(
                    servers = %names.join(", "),
                    "every server of the pool is down: trying them all in order"
                );
            }
            let (primaries, backups): (Vec<usize>, Vec<usize>) =
                all.partition(|&i| !self.settings.servers[i].backup);
            return primaries.into_iter().chain(backups).collect();
        }
        self.all_down_logged.store(false, Relaxed);
        let first = self.pick(&candidates, client);
        let mut order = vec![candidates[first]];
        order.extend(
            candidates
                .iter()
                .enumerate()
                .filter(|(at, _)| *at != first)
                .map(|(_, i)| *i),
        );
        order
    }

    fn servers_written(&self) -> Vec<String> {
        self.settings
            .servers
            .iter()
            .map(|s| s.upstream.to_string())
            .collect()
    }

    /// The position in `candidates` (server indices, never empty) of the balanced pick.
    fn pick(&self, candidates: &[usize], client: IpAddr) -> usize {
        let weight = |i: usize| i64::from(self.settings.servers[i].weight);
        match self.settings.balance {
            Balance::First => 0,
            Balance::RoundRobin => {
                let mut current = self
                    .round_robin
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let total: i64 = candidates.iter().map(|&i| weight(i)).sum();
                let mut best = 0;
                for (at, &i) in candidates.iter().enumerate() {
                    current[i] += weight(i);
                    if current[i] > current[candidates[best]] {
                        best = at;
                    }
                }
                current[candidates[best]] -= total;
                best
            }
            Balance::LeastConn => {
                let start = self.ticks.fetch_add(1, Relaxed) % candidates.len();
                let load = |i: usize| {
                    (
                        i64::try_from(self.servers[i].active()).unwrap_or(i64::MAX),
                        weight(i),
                    )
                };
                let mut best = start;
                for step in 1..candidates.len() {
                    let at = (start + step) % candidates.len();
                    let (a, wa) = load(candidates[at]);
                    let (b, wb) = load(candidates[best]);
                    // a / wa < b / wb without division.
                    if i128::from(a) * i128::from(wb) < i128::from(b) * i128::from(wa) {
                        best = at;
                    }
                }
                best
            }
            Balance::ClientHash => {
                // Weighted rendezvous hashing: the highest `weight / -ln(u)` wins, u uniform
                // in (0, 1] from the hash of the client address and the server.
                let score = |i: usize| {
                    let mut hasher = DefaultHasher::new();
                    client.to_canonical().hash(&mut hasher);
                    self.settings.servers[i].upstream.hash(&mut hasher);
                    let u = (hasher.finish() as f64 + 1.0) / (u64::MAX as f64 + 2.0);
                    weight(i) as f64 / -u.ln()
                };
                let mut best = 0;
                for at in 1..candidates.len() {
                    if score(candidates[at]) > score(candidates[best]) {
                        best = at;
                    }
                }
                best
            }
        }
    }

    /// Counts a connection to server `index` from now until the lease is dropped.
    fn lease(self: &Arc<Self>, index: usize) -> Lease {
        self.servers[index].active.fetch_add(1, Relaxed);
        Lease {
            pool: self.clone(),
            index,
        }
    }

    /// Connects a client from `client` to the pool's servers in [`Pool::order`], each
    /// address bounded by `timeout`; `announce` is called with each address before
    /// connecting to it (the fronting-loop guard must know where we connect before the other
    /// end can be accepted). Every failed server counts toward
    /// its `fall`; a successful connect resets its failure streak.
    pub async fn connect<A>(
        self: &Arc<Self>,
        client: IpAddr,
        timeout: Duration,
        mut announce: impl FnMut(SocketAddr) -> A,
    ) -> Result<Connected<A>, ConnectError> {
        let mut attempts = Vec::new();
        for index in self.order(client) {
            let lease = self.lease(index);
            let upstream = &self.settings.servers[index].upstream;
            let addrs = match resolve(upstream, timeout).await {
                Ok(addrs) => addrs,
                Err(why) => {
                    attempts.push(why);
                    self.failed(index, "connect");
                    continue;
                }
            };
            for addr in addrs {
                let announced = announce(addr);
                let started = Instant::now();
                // A socket whose own address cannot be read has already failed.
                let connected = match connect_one(addr, timeout).await {
                    Ok(stream) => stream.local_addr().map(|local| (stream, local)),
                    Err(e) => Err(e),
                };
                match connected {
                    Ok((stream, local)) => {
                        self.servers[index].observe(started.elapsed());
                        self.connected(index);
                        return Ok(Connected {
                            stream,
                            addr,
                            local,
                            announced,
                            lease,
                        });
                    }
                    Err(e) => attempts.push(format!("{addr}: {e}")),
                }
            }
            self.failed(index, "connect");
        }
        if attempts.is_empty() {
            attempts.push("the route has no backend".to_string());
        }
        Err(ConnectError { attempts })
    }

    /// A connection to server `index` succeeded: its failure streak ends; without an active
    /// check this also brings a server marked down back up.
    fn connected(&self, index: usize) {
        let mut streak = self.servers[index].streak();
        streak.failures = 0;
        if !streak.up && self.settings.check.is_none() {
            streak.up = true;
            streak.down_since = None;
            tracing::info!(server = %self.settings.servers[index].upstream, "pool server is up again: a connection reached it");
        }
    }

    /// A connect or a check of server `index` failed (`what` says which, for the log).
    pub(crate) fn failed(&self, index: usize, what: &str) {
        self.servers[index].failures.fetch_add(1, Relaxed);
        let mut streak = self.servers[index].streak();
        streak.successes = 0;
        streak.failures = streak.failures.saturating_add(1);
        if !streak.up {
            // A passive retry that failed waits another PASSIVE_RETRY.
            streak.down_since = Some(Instant::now());
        } else if streak.failures >= self.settings.fall() {
            streak.up = false;
            streak.down_since = Some(Instant::now());
            tracing::warn!(
                server = %self.settings.servers[index].upstream,
                failures = streak.failures,
                "pool server marked down after a failed {what}"
            );
        }
    }

    /// An active check of server `index` succeeded: after `rise` in a row it is up again.
    pub(crate) fn check_passed(&self, index: usize) {
        let rise = self.settings.check.map_or(1, |c| c.rise);
        let mut streak = self.servers[index].streak();
        streak.failures = 0;
        streak.successes = streak.successes.saturating_add(1);
        if !streak.up && streak.successes >= rise {
            streak.up = true;
            streak.down_since = None;
            tracing::info!(
                server = %self.settings.servers[index].upstream,
                checks = streak.successes,
                "pool server is up again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pool::HealthCheck;
    use crate::config::Upstream;

    fn pool(balance: Balance, servers: &[(&str, u32, bool)]) -> Arc<Pool> {
        Pool::new(PoolSettings {
            balance,
            servers: servers
                .iter()
                .map(|(addr, weight, backup)| PoolServer {
                    upstream: Upstream::parse(addr).unwrap(),
                    weight: *weight,
                    backup: *backup,
                })
                .collect(),
            check: Some(HealthCheck {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                fall: 2,
                rise: 2,
                tls: false,
                proxy_protocol: crate::config::ProxyProtocol::None,
            }),
            check_name: None,
        })
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn connect_falls_through_to_the_next_server_announcing_each_attempt() {
        let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = refused.local_addr().unwrap();
        drop(refused);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let both = pool(
            Balance::First,
            &[
                (&dead.to_string(), 1, false),
                (&live_addr.to_string(), 1, false),
            ],
        );
        let mut announced = Vec::new();
        let connected = both
            .connect(CLIENT, Duration::from_secs(2), |addr| {
                announced.push(addr);
                addr
            })
            .await
            .unwrap();
        assert_eq!(connected.addr, live_addr);
        assert_eq!(
            connected.announced, live_addr,
            "the successful attempt's announcement comes back"
        );
        assert_eq!(
            announced,
            [dead, live_addr],
            "every attempt is announced first"
        );
        assert_eq!(
            both.servers[1].active.load(Relaxed),
            1,
            "the lease counts it"
        );
        drop(connected);
        assert_eq!(both.servers[1].active.load(Relaxed), 0);
        let only_dead = pool(Balance::First, &[(&dead.to_string(), 1, false)]);
        let err = only_dead
            .connect(CLIENT, Duration::from_secs(2), drop)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("no backend reachable: {dead}: ")),
            "{err}"
        );
    }

    #[test]
    fn smooth_round_robin_follows_the_weights() {
        let pool = pool(
            Balance::RoundRobin,
            &[("127.0.0.1:1", 1, false), ("127.0.0.1:2", 3, false)],
        );
        let firsts: Vec<usize> = (0..8).map(|_| pool.order(CLIENT)[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(
            firsts[..4].iter().filter(|&&i| i == 0).count(),
            1,
            "{firsts:?}"
        );
    }

    #[test]
    fn fall_and_rise_flip_a_server_and_backups_wait_for_every_primary() {
        let pool = pool(
            Balance::First,
            &[
                ("127.0.0.1:1", 1, false),
                ("127.0.0.1:2", 1, false),
                ("127.0.0.1:3", 1, true),
            ],
        );
        assert_eq!(pool.order(CLIENT), [0, 1]);
        pool.failed(0, "check");
        assert_eq!(
            pool.order(CLIENT),
            [0, 1],
            "one failure of fall: 2 keeps it up"
        );
        pool.failed(0, "check");
        assert_eq!(pool.order(CLIENT), [1]);
        pool.failed(1, "check");
        pool.failed(1, "check");
        assert_eq!(pool.order(CLIENT), [2], "the backup only now");
        pool.failed(2, "check");
        pool.failed(2, "check");
        assert_eq!(
            pool.order(CLIENT),
            [0, 1, 2],
            "all down: everything, as written"
        );
        pool.check_passed(1);
        assert_eq!(
            pool.order(CLIENT),
            [0, 1, 2],
            "one success of rise: 2 is not enough"
        );
        pool.check_passed(1);
        assert_eq!(pool.order(CLIENT), [1]);
        assert_eq!(pool.servers[0].failures(), 2);
    }

    #[test]
    fn client_hash_is_stable_and_moves_only_the_clients_of_a_down_server() {
        let pool = pool(
            Balance::ClientHash,
            &[
                ("127.0.0.1:1", 1, false),
                ("127.0.0.1:2", 1, false),
                ("127.0.0.1:3", 1, false),
            ],
        );
        let clients: Vec<IpAddr> = (1..=60).map(|n| IpAddr::from([10, 0, 0, n])).collect();
        let before: Vec<usize> = clients.iter().map(|c| pool.order(*c)[0]).collect();
        let again: Vec<usize> = clients.iter().map(|c| pool.order(*c)[0]).collect();
        assert_eq!(before, again);
        for server in 0..3 {
            assert!(
                before.contains(&server),
                "server {server} gets no client: {before:?}"
            );
        }
        pool.failed(2, "check");
        pool.failed(2, "check");
        for (client, was) in clients.iter().zip(&before) {
            let now = pool.order(*client)[0];
            if *was != 2 {
                assert_eq!(now, *was, "{client} moved though its server is up");
            } else {
                assert_ne!(now, 2);
            }
        }
    }
}
