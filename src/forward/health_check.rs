//! A pool's active health check: one task per server that, every `check.interval`, connects
//! within `check.timeout` (and with `check.tls`, completes a TLS handshake after the route's
//! PROXY header) and reports the result to the [`Pool`]. A task holds the pool weakly: when
//! no snapshot uses the pool any more, its checks stop at their next tick.
//!
//! The TLS check asks whether the backend completes a handshake, not who it is: any
//! certificate chain is accepted (the handshake signatures are still verified; see
//! [`super::any_chain`]).

use std::sync::{Arc, Weak};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;

use super::any_chain;
use super::pool::Pool;
use super::proxy_out;
use super::upstream::{connect_one, resolve};
use crate::config::pool::HealthCheck;
use crate::config::Upstream;

/// Starts the checks of `pool` when it has `check:` (on the current tokio runtime).
pub fn spawn(pool: &Arc<Pool>) {
    let Some(check) = pool.settings().check else {
        return;
    };
    let tls = match check.tls.then(tls_config).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the TLS health check; checks not started");
            return;
        }
    };
    for index in 0..pool.settings().servers.len() {
        let probe = Probe {
            upstream: pool.settings().servers[index].upstream.clone(),
            check,
            name: pool.settings().check_name.clone(),
            tls: tls.clone(),
        };
        tokio::spawn(run(Arc::downgrade(pool), index, probe));
    }
}

/// What one server's check does.
struct Probe {
    upstream: Upstream,
    check: HealthCheck,
    /// The TLS server name to send; the server's host when none.
    name: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

async fn run(pool: Weak<Pool>, index: usize, probe: Probe) {
    let mut ticks = tokio::time::interval(probe.check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if pool.strong_count() == 0 {
            return;
        }
        let outcome = tokio::time::timeout(probe.check.timeout, probe.once())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", probe.check.timeout)));
        let Some(pool) = pool.upgrade() else {
            return;
        };
        match outcome {
            Ok(()) => pool.check_passed(index),
            Err(why) => {
                tracing::debug!(server = %probe.upstream, error = %why, "health check failed");
                pool.failed(index, "health check");
            }
        }
    }
}

impl Probe {
    /// One check: a connect to any of the server's addresses, then the TLS handshake.
    async fn once(&self) -> Result<(), String> {
        let timeout = self.check.timeout;
        let mut last = String::from("no address");
        for addr in resolve(&self.upstream, timeout).await? {
            let mut stream = match connect_one(addr, timeout).await {
                Ok(stream) => stream,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            let Some(config) = &self.tls else {
                return Ok(());
            };
            let local = stream.local_addr().map_err(|e| e.to_string())?;
            let head = proxy_out::encode(self.check.proxy_protocol, local, addr);
            stream.write_all(&head).await.map_err(|e| e.to_string())?;
            let name = match &self.name {
                Some(name) => ServerName::try_from(name.clone()),
                None => {
                    ServerName::try_from(self.upstream.host().trim_matches(['[', ']']).to_string())
                }
            }
            .map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let mut tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("{addr}: TLS handshake: {e}"))?;
            // Polite close; the check passed whatever the server does next.
            let _ = tls.shutdown().await;
            return Ok(());
        }
        Err(last)
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    any_chain::client_config(&[]).map(Arc::new)
}
