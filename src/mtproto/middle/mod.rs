//! Middle-proxy mode (issue #13): sessions of users with an ad_tag go through Telegram's
//! middle proxies (ME) with Telegram's RPC protocol, so the proxy's promoted channel shows.
//!
//! - [`directory`]: the proxy secret and the per-DC ME lists; [`fetch`] gets them over
//!   HTTP(S), [`cache`] keeps the last good copy in the state directory.
//! - [`crypto`], [`framing`], [`handshake`], [`rpc`]: the protocol, bottom up.
//! - [`mux`]: a few ME connections per DC carrying many sessions; [`net`]: their dial.
//! - [`client_frames`]: the client's transport, which ME mode must parse and write;
//!   [`relay`]: one session between its client and its ME connection.
//!
//! [`MiddleProxy`] ties them together for one gateway: it follows reloads, fetches the
//! configuration at start and every `refresh`, and counts what the metrics show.

pub mod cache;
pub mod client_frames;
pub mod crypto;
pub mod directory;
pub mod fetch;
pub mod framing;
pub mod handshake;
pub mod mux;
pub mod net;
pub mod relay;
pub mod rpc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use crate::config::middle::AdTag;
use crate::config::MtprotoSettings;
use directory::{Directory, ProxyList, ProxySecret};
use mux::{DcPool, MeSession};
use net::{DialError, MeNet};

/// Counters of middle-proxy mode, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct MiddleStats {
    /// Sessions relayed through an ME now.
    pub sessions: AtomicU64,
    /// Sessions served in direct mode because no ME could be reached.
    pub fallbacks: AtomicU64,
    /// Failed ME dials and handshakes.
    pub errors: AtomicU64,
    /// Configuration fetches that failed or were refused.
    pub fetch_errors: AtomicU64,
}

/// One DC's ME connections as the metrics show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcView {
    /// The DC index.
    pub dc: i16,
    /// Live ME connections.
    pub connections: usize,
    /// Smallest last keepalive round trip among them (microseconds; 0 before any pong).
    pub rtt_micros: u64,
}

/// The middle-proxy client of one gateway (kept across reloads).
pub struct MiddleProxy {
    net: ArcSwap<MeNet>,
    directory: ArcSwapOption<Directory>,
    pools: Mutex<HashMap<i16, Arc<DcPool>>>,
    started: AtomicBool,
    /// Set once the first fetch after start finished (well or not).
    first_fetch_done: AtomicBool,
    fetched: Notify,
    /// Set while the middle proxies are unreachable (one log line per outage).
    outage: AtomicBool,
    /// Counters.
    pub stats: MiddleStats,
}

impl std::fmt::Debug for MiddleProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiddleProxy")
            .field("has_config", &self.directory.load().is_some())
            .finish_non_exhaustive()
    }
}

impl MiddleProxy {
    /// A client for `settings`; nothing runs until a session needs it (or
    /// [`start`](Self::start)).
    pub fn new(settings: &MtprotoSettings) -> Arc<MiddleProxy> {
        Arc::new(MiddleProxy {
            net: ArcSwap::from_pointee(MeNet::of(settings)),
            directory: ArcSwapOption::empty(),
            pools: Mutex::default(),
            started: AtomicBool::new(false),
            first_fetch_done: AtomicBool::new(false),
            fetched: Notify::new(),
            outage: AtomicBool::new(false),
            stats: MiddleStats::default(),
        })
    }

    /// Follows a reload: new sessions use the new settings (URLs, public_ip, via); live
    /// sessions keep their ME connection.
    pub fn follow(&self, settings: &MtprotoSettings) {
        let next = MeNet::of(settings);
        if **self.net.load() != next {
            self.net.store(Arc::new(next));
        }
    }

    /// Whether any user of `settings` has a tag (then the configuration is fetched at
    /// start rather than at the first session).
    pub fn wanted(settings: &MtprotoSettings) -> bool {
        settings.middle.ad_tag.is_some() || settings.users.iter().any(|u| u.policy.ad_tag.is_some())
    }

    /// Starts the configuration refresh (once): the cached copy first, then a fetch now and
    /// every `refresh`.
    pub fn start(self: &Arc<Self>) {
        // Outside a runtime (`frontgate check`) nothing starts; the first session will.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Relaxed) {
            return;
        }
        let net = self.net.load_full();
        if let Some(dir) = &net.middle.cache_dir {
            if let Some(cached) = cache::load(dir) {
                tracing::info!(cache = %dir.display(), "middle-proxy configuration loaded from the state directory");
                self.directory.store(Some(Arc::new(cached)));
            }
        }
        let me = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(this) = me.upgrade() else { return };
                this.refresh().await;
                let wait = this.net.load().middle.refresh;
                drop(this);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Fetches the secret and both lists once; a complete, valid set replaces the one in use
    /// and the cache, anything else keeps them.
    async fn refresh(&self) {
        let net = self.net.load_full();
        let urls = &net.middle;
        let (secret, v4, v6) = tokio::join!(
            fetch::get(&urls.secret_url, &net),
            fetch::get(&urls.config_url, &net),
            fetch::get(&urls.config_v6_url, &net)
        );
        let parsed = (|| {
            let secret_raw = secret.map_err(|e| format!("{}: {e}", urls.secret_url.0))?;
            let v4_raw = v4.map_err(|e| format!("{}: {e}", urls.config_url.0))?;
            let secret = ProxySecret::parse(&secret_raw)
                .map_err(|e| format!("{}: {e}", urls.secret_url.0))?;
            let v4 =
                ProxyList::parse(&v4_raw).map_err(|e| format!("{}: {e}", urls.config_url.0))?;
            let v6_raw = v6.ok().filter(|raw| ProxyList::parse(raw).is_ok());
            let v6 = v6_raw
                .as_deref()
                .and_then(|raw| ProxyList::parse(raw).ok())
                .unwrap_or_default();
            Ok::<_, String>((Directory { secret, v4, v6 }, secret_raw, v4_raw, v6_raw))
        })();
        match parsed {
            Ok((dir, secret_raw, v4_raw, v6_raw)) => {
                if let Some(state) = &net.middle.cache_dir {
                    if let Err(e) = cache::store(state, &secret_raw, &v4_raw, v6_raw.as_deref()) {
                        tracing::warn!(error = %e, "cannot cache the middle-proxy configuration");
                    }
                }
                let changed = self.directory.load().as_deref() != Some(&dir);
                if changed {
                    tracing::info!(
                        dcs = dir.v4.by_dc.len(),
                        "middle-proxy configuration updated"
                    );
                }
                self.directory.store(Some(Arc::new(dir)));
            }
            Err(why) => {
                self.stats.fetch_errors.fetch_add(1, Relaxed);
                let keeping = if self.directory.load().is_some() {
                    "keeping the previous one"
                } else {
                    "none yet"
                };
                tracing::warn!(error = %why, "middle-proxy configuration fetch failed; {keeping}");
            }
        }
        self.first_fetch_done.store(true, Relaxed);
        self.fetched.notify_waiters();
    }

    /// An ME session for a client of DC `dc`: on the least loaded ME connection of the DC,
    /// dialling one if needed. Without a configuration, waits for the first fetch after
    /// start (at most twice the connect timeout); once that failed, answers at once.
    pub async fn session(self: &Arc<Self>, dc: i16) -> Result<MeSession, DialError> {
        self.start();
        let net = self.net.load_full();
        let directory = match self.directory.load_full() {
            Some(dir) => dir,
            None => {
                let wait = self.fetched.notified();
                if !self.first_fetch_done.load(Relaxed) {
                    let _ = tokio::time::timeout(net.connect_timeout * 2, wait).await;
                }
                match self.directory.load_full() {
                    Some(dir) => dir,
                    None => {
                        self.stats.errors.fetch_add(1, Relaxed);
                        return Err(DialError::NoConfig);
                    }
                }
            }
        };
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dc)
            .or_default()
            .clone();
        let addresses = directory.addresses(dc, net.prefer_ipv6);
        let picked = pool
            .pick(
                || net::dial(dc, &addresses, &directory.secret.0, &net),
                DialError::Recently,
            )
            .await;
        match picked {
            Ok(conn) => {
                if self.outage.swap(false, Relaxed) {
                    tracing::info!(dc, "middle proxies reachable again");
                }
                Ok(conn.open())
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Records that a session went direct because of `error`; logs once per outage.
    pub fn fell_back(&self, dc: i16, error: &DialError) {
        self.stats.fallbacks.fetch_add(1, Relaxed);
        if !self.outage.swap(true, Relaxed) {
            tracing::warn!(dc, error = %error, "middle proxies unreachable: sessions go direct (without the ad_tag) until they are back (mtproto.middle_proxy.fallback_direct)");
        }
    }

    /// Records that a session could not be served at all because of `error`.
    pub fn failed(&self, dc: i16, error: &DialError) {
        if !self.outage.swap(true, Relaxed) {
            tracing::warn!(dc, error = %error, "middle proxies unreachable and fallback_direct is off: ad_tag sessions are closed until they are back");
        }
    }

    /// Each DC's live ME connections, for the metrics.
    pub fn dcs(&self) -> Vec<DcView> {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<DcView> = pools
            .iter()
            .map(|(&dc, pool)| {
                let live = pool.live();
                let rtt_micros = live
                    .iter()
                    .map(|c| c.rtt_micros.load(Relaxed))
                    .filter(|&r| r > 0)
                    .min()
                    .unwrap_or(0);
                DcView {
                    dc,
                    connections: live.len(),
                    rtt_micros,
                }
            })
            .collect();
        out.sort_by_key(|v| v.dc);
        out
    }
}

/// The tag a session of `user` carries: the user's own, else the global one; `None`: direct.
pub fn tag_for(settings: &MtprotoSettings, user: usize) -> Option<AdTag> {
    let own = settings.users.get(user).and_then(|u| u.policy.ad_tag);
    own.or(settings.middle.ad_tag)
}
