//! The running gateway: the listeners, the hot-swappable configuration and the set of live
//! connections. A reload swaps the configuration pointer and adds or removes listeners; the
//! connections already running keep the snapshot they started with. A shutdown stops the
//! listeners and drains the connections ([`Gateway::shutdown`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::limits::ConnectionCounts;
use crate::admission::loop_guard::OutboundAddrs;
use crate::config::Config;
use crate::conn::context::{Context, Snapshot};
use crate::forward::shutdown::ShutdownSwitch;
use crate::mtproto::middle::MiddleProxy;
use crate::mtproto::upstreams;
use crate::mtproto::{probe, users};
use crate::ops::metrics::{self, LiveValues, Metrics, UpstreamView, UserView};
use crate::server::port_holder;
use crate::server::registry::{self, BuildError};
use crate::server::shutdown::ShutdownReport;
use crate::server::{listener, usage};

/// A listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{hint}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: io::Error,
    /// What to do about it, from what is known when the bind failed (who holds the port).
    pub hint: String,
}

impl BindError {
    fn new(addr: SocketAddr, source: io::Error) -> BindError {
        let hint = hint(addr, &source);
        BindError { addr, source, hint }
    }
}

/// Only what is known: the process holding the port when it can be found, else how to find it.
fn hint(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; try `--listen 127.0.0.1:8443`)"
                .to_string()
        }
        io::ErrorKind::AddrInUse => match port_holder::holder_of(addr) {
            Some(holder) if holder.pid == std::process::id() => {
                " (this frontgate process already listens there: the address is given twice)"
                    .to_string()
            }
            Some(holder) => format!(
                " ({} (pid {}) already listens there; stop it or choose another address)",
                holder.name, holder.pid
            ),
            None => format!(
                " (another process already listens there; `ss -ltnp 'sport = :{}'` shows which)",
                addr.port()
            ),
        },
        _ => String::new(),
    }
}

/// Asks each `mtproto: true` route's backend in the background whether fake flights can
/// mirror it, and logs the answer: a backend that cannot be matched (TLS 1.2 only, no TLS)
/// is a warning with the fix, so the operator hears of it before a client is fingerprinted.
///
/// Then it downloads `/` from each that can be mirrored to learn the record sizes of the site's answers
/// for the route's sessions ([`probe::learn_record_sizes`]).
fn report_backends(snapshot: Arc<Snapshot>) {
    tokio::spawn(async move {
        let config = &snapshot.config;
        let probed = probe::probe_routes(config, &snapshot.pools, config.timeouts.connect).await;
        for report in &probed {
            match report.answer {
                Ok(_) => tracing::info!(route = %report.route, "{}", report.describe()),
                Err(_) => tracing::warn!(route = %report.route, "{}", report.describe()),
            }
        }
        let Some(state) = &snapshot.mtproto else {
            return;
        };
        let learned = probe::learn_record_sizes(
            config,
            &snapshot.pools,
            &probed,
            &state.profiles,
            SITE_SAMPLE_BUDGET,
        )
        .await;
        for report in learned {
            tracing::info!(route = %report.route, "{}", report.describe());
        }
    });
}

/// The time one site download may take: connect, handshake, the ticket pause and up to a
/// megabyte of the site's answer.
const SITE_SAMPLE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks the live MTProto sessions against their users' policies every
/// [`users::ENFORCE_EVERY`] (a user who expires, crosses the quota, or is disabled or removed
/// by a reload is cut within it), until the gateway is gone.
async fn enforce_user_policies(ctx: std::sync::Weak<Context>) {
    let mut tick = tokio::time::interval(users::ENFORCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let snapshot = ctx.current.load();
        if let (Some(settings), Some(state)) = (&snapshot.config.mtproto, &snapshot.mtproto) {
            users::enforce(settings, &state.users, users::unix_now());
        }
    }
}

/// What the metrics endpoint shows of the running gateway now.
fn live_values(ctx: &Context, serving: &ArcSwapOption<Serving>) -> LiveValues {
    let snapshot = ctx.current.load();
    let now = users::unix_now();
    let users = match (&snapshot.config.mtproto, &snapshot.mtproto) {
        (Some(settings), Some(state)) => settings
            .users
            .iter()
            .zip(&state.users)
            .map(|(user, runtime)| UserView {
                name: user.name.clone(),
                counters: runtime.counters.clone(),
                quota: user.policy.quota.map(|q| q.bytes),
                state: match runtime.standing(&user.policy, now) {
                    Ok(()) => "active",
                    Err(refusal) => refusal.label(),
                },
            })
            .collect(),
        _ => Vec::new(),
    };
    let pools = registry::forwards(&snapshot.config)
        .filter_map(|(route, forward)| {
            let pool = snapshot.pools.get(&forward.pool)?;
            Some((route.to_string(), pool.clone()))
        })
        .collect();
    LiveValues {
        open: ctx.counts.open(),
        users,
        pools,
        // A gateway holds a loaded configuration from `start` on (a refused reload keeps the
        // old one), so what is left to ask is whether every listener runs.
        healthy: serving.load().as_ref().is_some_and(|s| s.all_running()),
        upstreams: snapshot
            .config
            .mtproto
            .iter()
            .flat_map(|settings| &settings.via)
            .map(|upstream| UpstreamView {
                label: upstream.label(),
                health: upstreams::health(upstream),
            })
            .collect(),
        shared: snapshot
            .mtproto
            .as_ref()
            .and_then(|state| state.shared().cloned()),
        middle: snapshot
            .config
            .mtproto
            .as_ref()
            .filter(|settings| MiddleProxy::wanted(settings))
            .and(snapshot.mtproto.as_ref())
            .map(|state| state.middle.clone()),
    }
}

/// The listen addresses the gateway should serve and the accept loops it runs, as `/healthz`
/// sees them; written whenever the listeners change.
#[derive(Debug)]
struct Serving {
    /// The addresses from the file or `--listen`.
    wanted: Vec<SocketAddr>,
    /// Each configured address with a listener, and the switch that stops its accept loop.
    running: Vec<(SocketAddr, CancellationToken)>,
}

impl Serving {
    /// Every wanted address has an accept loop that has not been stopped (shutdown stops them
    /// all).
    fn all_running(&self) -> bool {
        self.wanted.iter().all(|addr| {
            self.running
                .iter()
                .any(|(configured, stop)| configured == addr && !stop.is_cancelled())
        })
    }
}

/// Binds the `wanted` addresses that have no listener yet; all or nothing.
fn bind_missing(
    wanted: &[SocketAddr],
    listeners: &HashMap<SocketAddr, Listening>,
) -> Result<Vec<(SocketAddr, TcpListener)>, BindError> {
    wanted
        .iter()
        .filter(|addr| !listeners.contains_key(addr))
        .map(|&addr| {
            listener::bind(addr)
                .map(|l| (addr, l))
                .map_err(|source| BindError::new(addr, source))
        })
        .collect()
}

/// One bound listen address and the switch that stops its accept loop.
#[derive(Debug)]
struct Listening {
    configured: SocketAddr,
    local: SocketAddr,
    stop: CancellationToken,
}

/// The gateway process state.
#[derive(Debug)]
pub struct Gateway {
    /// Shared with every connection task.
    ctx: Arc<Context>,
    /// Configured address -> its listener; changed by reloads.
    listeners: Mutex<HashMap<SocketAddr, Listening>>,
    /// `--listen` from the command line: when set, it replaces the file's `listen` for good.
    listen_override: Option<Vec<SocketAddr>>,
    /// Every connection task, so shutdown can wait for them.
    connections: TaskTracker,
    /// Reaches every connection's own `Shutdown`: drains them, then cuts what is left.
    shutdown: ShutdownSwitch,
    /// The metrics endpoint, when `metrics.listen` is set: its address and stop switch.
    metrics_endpoint: std::sync::Mutex<Option<Listening>>,
    /// What `/healthz` reads of the listeners; `None` until the first ones are bound.
    serving: Arc<ArcSwapOption<Serving>>,
    /// Connections open when [`stop_now`](Self::stop_now) cut them, for the shutdown report
    /// (once cut, they may end before the report is made).
    open_at_cut: std::sync::atomic::AtomicUsize,
}

/// A reload or start that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A `tls:` route could not start, or the deny file could not be loaded.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The task building the runtime resources did not finish (it panicked, or the runtime is
    /// shutting down).
    #[error("building the configuration's runtime resources failed: {0}")]
    Interrupted(tokio::task::JoinError),
}

/// [`registry::build`] on the blocking pool: starting a `tls:` route reads its certificate
/// files or probes its ACME cache directory, and the deny file is read, none of which may
/// stall a runtime worker.
async fn build_snapshot(
    config: Config,
    running: Option<Arc<Snapshot>>,
) -> Result<Snapshot, ApplyError> {
    let built = tokio::task::spawn_blocking(move || registry::build(config, running.as_deref()));
    Ok(built.await.map_err(ApplyError::Interrupted)??)
}

impl Gateway {
    /// Binds every listen address and starts serving `config`.
    pub async fn start(
        config: Config,
        listen_override: Option<Vec<SocketAddr>>,
    ) -> Result<Self, ApplyError> {
        let wanted = listen_override
            .clone()
            .unwrap_or_else(|| config.listen.clone());
        let snapshot = build_snapshot(config, None).await?;
        usage::restore(&snapshot).await;
        let gateway = Gateway {
            ctx: Arc::new(Context {
                current: ArcSwap::from_pointee(snapshot),
                counts: Arc::new(ConnectionCounts::default()),
                outbound: Arc::new(OutboundAddrs::default()),
                metrics: Arc::new(Metrics::default()),
            }),
            listeners: Mutex::new(HashMap::new()),
            listen_override,
            connections: TaskTracker::new(),
            shutdown: ShutdownSwitch::new(),
            metrics_endpoint: std::sync::Mutex::new(None),
            serving: Arc::default(),
            open_at_cut: Default::default(),
        };
        let metrics_addr = gateway.ctx.current.load().config.metrics;
        gateway.sync_metrics_endpoint(metrics_addr)?;
        let mut listeners = gateway.listeners.lock().await;
        let bound = bind_missing(&wanted, &listeners)?;
        gateway.serve(bound, &wanted, &mut listeners);
        drop(listeners);
        report_backends(gateway.ctx.current.load_full());
        tokio::spawn(enforce_user_policies(Arc::downgrade(&gateway.ctx)));
        tokio::spawn(usage::keep_saving(Arc::downgrade(&gateway.ctx)));
        tokio::spawn(usage::keep_syncing(Arc::downgrade(&gateway.ctx)));
        Ok(gateway)
    }

    /// Makes `config` the one new connections use, binding new listen addresses first (a bind
    /// failure leaves everything as it was) and stopping the ones no longer configured.
    pub async fn apply(&self, config: Config) -> Result<(), ApplyError> {
        let wanted = self
            .listen_override
            .clone()
            .unwrap_or_else(|| config.listen.clone());
        let mut listeners = self.listeners.lock().await;
        let bound = bind_missing(&wanted, &listeners)?;
        let metrics = config.metrics;
        let snapshot = build_snapshot(config, Some(self.ctx.current.load_full())).await?;
        self.sync_metrics_endpoint(metrics)?;
        // The old snapshot's terminators stop when its last connection ends, unless the new
        // one reuses them.
        let snapshot = Arc::new(snapshot);
        self.ctx.current.store(snapshot.clone());
        self.serve(bound, &wanted, &mut listeners);
        report_backends(snapshot);
        Ok(())
    }

    /// Starts, moves or stops the metrics endpoint to match `wanted`.
    fn sync_metrics_endpoint(&self, wanted: Option<SocketAddr>) -> Result<(), BindError> {
        let mut endpoint = self
            .metrics_endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = endpoint.as_ref().map(|e| e.configured);
        if current == wanted {
            return Ok(());
        }
        let Some(addr) = wanted else {
            if let Some(old) = endpoint.take() {
                old.stop.cancel();
            }
            return Ok(());
        };
        let listener = listener::bind(addr).map_err(|source| BindError::new(addr, source))?;
        if let Some(old) = endpoint.take() {
            old.stop.cancel();
        }
        let local = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let (ctx, serving) = (self.ctx.clone(), self.serving.clone());
        let snapshot = move || live_values(&ctx, &serving);
        tokio::spawn(metrics::serve(
            listener,
            self.ctx.metrics.clone(),
            snapshot,
            stop.clone(),
        ));
        tracing::info!(%local, "metrics on http://{local}/metrics, /stats and /healthz");
        *endpoint = Some(Listening {
            configured: addr,
            local,
            stop,
        });
        Ok(())
    }

    /// The metrics endpoint's bound address, if it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let endpoint = self
            .metrics_endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        endpoint.as_ref().map(|e| e.local)
    }

    /// Starts accept loops for the newly bound listeners and stops those not `wanted`.
    fn serve(
        &self,
        bound: Vec<(SocketAddr, TcpListener)>,
        wanted: &[SocketAddr],
        listeners: &mut HashMap<SocketAddr, Listening>,
    ) {
        for (addr, listener) in bound {
            let local = listener.local_addr().unwrap_or(addr);
            let stop = CancellationToken::new();
            let accept = listener::accept_loop(
                listener,
                self.ctx.clone(),
                self.connections.clone(),
                self.shutdown.clone(),
                stop.clone(),
            );
            tokio::spawn(accept);
            tracing::info!(%local, "listening");
            listeners.insert(
                addr,
                Listening {
                    configured: addr,
                    local,
                    stop,
                },
            );
        }
        listeners.retain(|addr, listening| {
            let keep = wanted.contains(addr);
            if !keep {
                listening.stop.cancel();
                tracing::info!(local = %listening.local, "stopped listening");
            }
            keep
        });
        self.serving.store(Some(Arc::new(Serving {
            wanted: wanted.to_vec(),
            running: listeners
                .iter()
                .map(|(addr, listening)| (*addr, listening.stop.clone()))
                .collect(),
        })));
    }

    /// The addresses actually bound (with the real port where the file said `:0`).
    pub async fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .listeners
            .lock()
            .await
            .values()
            .map(|l| l.local)
            .collect();
        addrs.sort();
        addrs
    }

    /// The running `tls:` routes' terminators, for the file watcher.
    pub(crate) fn terminators(&self) -> Vec<Arc<crate::tls::TlsTerminator>> {
        self.ctx
            .current
            .load()
            .terminators
            .values()
            .cloned()
            .collect()
    }

    /// The files besides the route file the running configuration was read from, for the
    /// file watcher.
    pub(crate) fn input_files(&self) -> Vec<std::path::PathBuf> {
        self.ctx.current.load().config.input_files()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.ctx.counts.open()
    }

    /// Stops accepting and drains the live connections: those still before their relay
    /// (hello, handshake, backend connect) and quiet relays, MTProto sessions included, close
    /// at once; busy relays get up to `grace` to finish (or until [`stop_now`](Self::stop_now)),
    /// then whatever is left is cut. Returns once every connection has ended.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        for (_, listening) in self.listeners.lock().await.drain() {
            listening.stop.cancel();
        }
        self.connections.close();
        self.shutdown.drain();
        let left = tokio::select! {
            // A cut is reported as such even when its connections ended the moment after.
            biased;
            () = self.shutdown.all_cut() => self.open_at_cut.load(std::sync::atomic::Ordering::Relaxed),
            () = self.connections.wait() => 0,
            () = tokio::time::sleep(grace) => self.connections.len(),
        };
        self.shutdown.cut_all();
        // Cut connections end at their next poll; wait for them to log their last line.
        self.connections.wait().await;
        usage::save_now(&self.ctx.current.load_full()).await;
        let (cut, finished) = self.shutdown.counts();
        ShutdownReport {
            cut,
            finished,
            left,
        }
    }

    /// Cuts every connection now, ending a [`shutdown`](Self::shutdown) in progress without
    /// waiting for the rest of its grace period (a second stop signal).
    pub fn stop_now(&self) {
        self.open_at_cut
            .store(self.connections.len(), std::sync::atomic::Ordering::Relaxed);
        self.shutdown.cut_all();
    }
}
