//! The running gateway: the listeners, the hot-swappable configuration and the set of live
//! connections. A reload swaps the configuration pointer and adds or removes listeners; the
//! connections already running keep the snapshot they started with.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::Context;
use crate::limits::ConnectionCounts;
use crate::listener;
use crate::loop_guard::OutboundAddrs;
use crate::metrics::{self, Metrics};
use crate::router::Action;
use crate::tls::{TlsError, TlsSettings, TlsTerminator};

/// A listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", hint(.source))]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: io::Error,
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; try `--listen 127.0.0.1:8443`)"
        }
        io::ErrorKind::AddrInUse => " (another process, maybe nginx, already listens there)",
        _ => "",
    }
}

/// Gives every `tls:` route of `config` its terminator: the running one when `running` has
/// one with the same settings, a new one otherwise.
fn start_terminators(
    config: &Config,
    running: &HashMap<TlsSettings, Arc<TlsTerminator>>,
) -> Result<HashMap<TlsSettings, Arc<TlsTerminator>>, ApplyError> {
    let mut kept = HashMap::new();
    for route in config.routes.routes() {
        let Action::Terminate(terminate) = &route.action else {
            continue;
        };
        let terminator = match running.get(&terminate.settings) {
            Some(existing) => existing.clone(),
            None => {
                let started =
                    TlsTerminator::start(terminate.settings.clone()).map_err(|source| {
                        ApplyError::Tls {
                            route: route.label.clone(),
                            source: Box::new(source),
                        }
                    })?;
                Arc::new(started)
            }
        };
        // A fresh table: nothing else has set it.
        let _ = terminate.terminator.set(terminator.clone());
        kept.insert(terminate.settings.clone(), terminator);
    }
    Ok(kept)
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
                .map_err(|source| BindError { addr, source })
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
    /// The running TLS terminators by settings: a reload reuses a route's terminator (and its
    /// ACME state) when its settings did not change; dropped ones stop their background task.
    terminators: std::sync::Mutex<HashMap<TlsSettings, Arc<TlsTerminator>>>,
    /// The metrics endpoint, when `metrics.listen` is set: its address and stop switch.
    metrics_endpoint: std::sync::Mutex<Option<Listening>>,
}

/// A reload or start that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A `tls:` route could not start.
    #[error("route {route}: {source}")]
    Tls {
        /// The route's label.
        route: String,
        /// Why (boxed: TLS errors are large and this one is rare).
        source: Box<TlsError>,
    },
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
        let terminators = start_terminators(&config, &HashMap::new())?;
        let gateway = Gateway {
            ctx: Arc::new(Context {
                config: ArcSwap::from_pointee(config),
                counts: Arc::new(ConnectionCounts::default()),
                outbound: Arc::new(OutboundAddrs::default()),
                metrics: Arc::new(Metrics::default()),
            }),
            listeners: Mutex::new(HashMap::new()),
            listen_override,
            connections: TaskTracker::new(),
            terminators: std::sync::Mutex::new(terminators),
            metrics_endpoint: std::sync::Mutex::new(None),
        };
        let metrics_addr = gateway.ctx.config.load().metrics;
        gateway.sync_metrics_endpoint(metrics_addr)?;
        let mut listeners = gateway.listeners.lock().await;
        let bound = bind_missing(&wanted, &listeners)?;
        gateway.serve(bound, &wanted, &mut listeners);
        drop(listeners);
        Ok(gateway)
    }

    /// Makes `config` the one new connections use, binding new listen addresses first (a bind
    /// failure leaves everything as it was) and stopping the ones no longer configured.
    pub async fn apply(&self, mut config: Config) -> Result<(), ApplyError> {
        let wanted = self
            .listen_override
            .clone()
            .unwrap_or_else(|| config.listen.clone());
        let mut listeners = self.listeners.lock().await;
        let bound = bind_missing(&wanted, &listeners)?;
        let terminators = start_terminators(&config, &self.lock_terminators())?;
        self.sync_metrics_endpoint(config.metrics)?;
        if let (Some(new), Some(running)) = (&mut config.mtproto, &self.ctx.config.load().mtproto) {
            new.carry_over(running);
        }
        self.ctx.config.store(Arc::new(config));
        // The old table's terminators stop here unless the new table reuses them.
        *self.lock_terminators() = terminators;
        self.serve(bound, &wanted, &mut listeners);
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
        let listener = listener::bind(addr).map_err(|source| BindError { addr, source })?;
        if let Some(old) = endpoint.take() {
            old.stop.cancel();
        }
        let local = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let ctx = self.ctx.clone();
        let snapshot = move || (ctx.config.load_full(), ctx.counts.open());
        tokio::spawn(metrics::serve(
            listener,
            self.ctx.metrics.clone(),
            snapshot,
            stop.clone(),
        ));
        tracing::info!(%local, "metrics on http://{local}/metrics and /stats");
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

    fn lock_terminators(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TlsSettings, Arc<TlsTerminator>>> {
        self.terminators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// The configuration new connections get now.
    pub fn config(&self) -> Arc<Config> {
        self.ctx.config.load_full()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.ctx.counts.open()
    }

    /// Stops accepting, then waits up to `grace` for live connections to finish; returns how
    /// many were still open when the grace period ran out.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        for (_, listening) in self.listeners.lock().await.drain() {
            listening.stop.cancel();
        }
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            return self.connections.len();
        }
        0
    }
}
