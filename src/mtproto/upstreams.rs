//! Split mode: DC connections through the SOCKS5 upstreams of `mtproto.via`, tried in order,
//! with each upstream's health (CONFIG.md `mtproto.via`).
//!
//! An upstream that cannot be reached, refuses the credentials or does not finish the SOCKS
//! handshake in time is *down* for [`DOWN_FOR`]: later sessions skip it without a connect
//! attempt, so no session waits a connect timeout on a known-dead upstream; the first session
//! after that window tries it again (alone: the others keep skipping it while it does). An upstream that is reachable but answers that the DC is
//! not (a SOCKS reply error) stays up: that says nothing of the next DC. The DC address is sent
//! as an IP (a DC host name from `mtproto.datacenters` is resolved here), so no name goes
//! through the upstream's resolver.
//!
//! Health is kept per upstream (`host:port`) for the life of the process: it is a fact of the
//! SOCKS server, not of one configuration, so a reload neither forgets a dead upstream nor
//! resets its counters.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use crate::config::datacenters::DcAddr;
use crate::config::via::ViaUpstream;

/// How long an upstream that failed is skipped before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// One upstream's health and counters, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    /// DC connections opened through it.
    pub connections: AtomicU64,
    /// Failed attempts through it (the upstream's own failures and the DC's, per address).
    pub failures: AtomicU64,
    /// Sum of the time its successful connections took to open (microseconds).
    pub connect_micros: AtomicU64,
    /// Until when it is skipped, after a failure of its own.
    down_until: Mutex<Option<Instant>>,
}

impl UpstreamHealth {
    /// Whether sessions try it now (never failed, or its down window is over).
    pub fn is_up(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Whether this session may use it: yes when it is up; when its down window is over,
    /// yes for this one session only (the window is renewed meanwhile, so the others keep
    /// skipping it until the retry succeeds or fails).
    fn claim(&self) -> bool {
        let mut down_until = self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *down_until {
            None => true,
            Some(until) if Instant::now() >= until => {
                *down_until = Some(Instant::now() + DOWN_FOR);
                true
            }
            Some(_) => false,
        }
    }

    fn set_down(&self, down: bool) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = down.then(|| Instant::now() + DOWN_FOR);
    }
}

/// The health of `upstream` (one per `host:port` for the life of the process).
pub fn health(upstream: &ViaUpstream) -> Arc<UpstreamHealth> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<UpstreamHealth>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    all.entry(upstream.label()).or_default().clone()
}

/// Why one attempt through an upstream failed.
#[derive(Debug)]
enum Failure {
    /// The upstream itself: unreachable, refused the credentials, broke the protocol or was
    /// too slow. It goes down.
    Upstream(String),
    /// The upstream answered that it could not reach this DC address.
    Target(String),
}

/// Opens a TCP stream to one of `addresses` (in order) through the first upstream of `via`
/// that is up and reaches one, and says which address it reached; each attempt is bounded by
/// `timeout`. The error names every upstream and why it was not used (never a password).
pub async fn connect_via(
    via: &[ViaUpstream],
    addresses: &[DcAddr],
    timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, target, _) = connect_via_bound(via, addresses, timeout).await?;
    Ok((stream, target))
}

/// [`connect_via`], also returning the address the upstream says it connected from (its
/// SOCKS reply's BND.ADDR; `None` when it reports none): the middle proxies see that
/// address and port, and derive their keys from them.
pub async fn connect_via_bound(
    via: &[ViaUpstream],
    addresses: &[DcAddr],
    timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr, Option<SocketAddr>)> {
    let targets = resolve(addresses).await;
    let mut why = Vec::with_capacity(via.len());
    for upstream in via {
        let health = health(upstream);
        if !health.claim() {
            why.push(format!("{upstream}: skipped, down after a recent failure"));
            continue;
        }
        match connect_one(upstream, &health, &targets, timeout).await {
            Ok(dialled) => {
                health.set_down(false);
                return Ok(dialled);
            }
            Err(Failure::Upstream(e)) => {
                tracing::warn!(upstream = %upstream, error = %e, "SOCKS5 upstream failed; skipping it for {}s", DOWN_FOR.as_secs());
                health.set_down(true);
                why.push(format!("{upstream}: {e}"));
            }
            Err(Failure::Target(e)) => why.push(format!("{upstream}: {e}")),
        }
    }
    if targets.is_empty() {
        why.push("no DC address resolved".to_string());
    }
    Err(io::Error::new(
        io::ErrorKind::NotConnected,
        format!("no SOCKS5 upstream reached the DC ({})", why.join("; ")),
    ))
}

/// How long `upstream` takes to open a connection to one of `addresses` (in order), or why
/// it cannot (`frontgate check --probe`); each attempt is bounded by `timeout`, the
/// connection is closed at once. Counted like a session's attempt, health left as it was.
pub async fn probe(
    upstream: &ViaUpstream,
    addresses: &[DcAddr],
    timeout: Duration,
) -> Result<Duration, String> {
    let targets = resolve(addresses).await;
    let started = Instant::now();
    match connect_one(upstream, &health(upstream), &targets, timeout).await {
        Ok(_) => Ok(started.elapsed()),
        Err(Failure::Upstream(e) | Failure::Target(e)) => Err(e),
    }
}

/// Tries each target through `upstream`; stops at the first failure of the upstream itself.
async fn connect_one(
    upstream: &ViaUpstream,
    health: &UpstreamHealth,
    targets: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr, Option<SocketAddr>), Failure> {
    let mut last = Failure::Target("no DC address to ask for".to_string());
    for target in targets {
        let started = Instant::now();
        let attempt = tokio::time::timeout(timeout, handshake(upstream, *target)).await;
        let failure = match attempt {
            Ok(Ok((stream, bound))) => {
                stream.set_nodelay(true).ok();
                health.connections.fetch_add(1, Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                health.connect_micros.fetch_add(micros, Relaxed);
                return Ok((stream, *target, bound));
            }
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Upstream(format!(
                "no connection to {target} within {}ms",
                timeout.as_millis()
            )),
        };
        health.failures.fetch_add(1, Relaxed);
        tracing::debug!(upstream = %upstream, dc_addr = %target, failure = ?failure, "DC connect through SOCKS5 failed");
        if let Failure::Upstream(_) = failure {
            return Err(failure);
        }
        last = failure;
    }
    Err(last)
}

/// TCP to the upstream, then the SOCKS5 CONNECT (with RFC 1929 auth if configured).
async fn handshake(
    upstream: &ViaUpstream,
    target: SocketAddr,
) -> Result<(TcpStream, Option<SocketAddr>), Failure> {
    let socket = TcpStream::connect((upstream.host.as_str(), upstream.port))
        .await
        .map_err(|e| Failure::Upstream(format!("cannot connect to the upstream: {e}")))?;
    let stream = match &upstream.auth {
        Some(auth) => {
            Socks5Stream::connect_with_password_and_socket(
                socket,
                target,
                &auth.user,
                &auth.password,
            )
            .await
        }
        None => Socks5Stream::connect_with_socket(socket, target).await,
    };
    let stream = stream.map_err(classify)?;
    // tokio-socks keeps the reply's address as the stream's "target": the BND.ADDR.
    let bound = match stream.target_addr() {
        tokio_socks::TargetAddr::Ip(addr) if addr.port() != 0 => Some(addr),
        _ => None,
    };
    Ok((stream.into_inner(), bound))
}

/// Reply errors about the target keep the upstream up; everything else is the upstream's.
fn classify(error: tokio_socks::Error) -> Failure {
    use tokio_socks::Error as E;
    match error {
        E::GeneralSocksServerFailure
        | E::ConnectionNotAllowedByRuleset
        | E::NetworkUnreachable
        | E::HostUnreachable
        | E::ConnectionRefused
        | E::TtlExpired => Failure::Target(format!("the upstream could not reach the DC: {error}")),
        E::PasswordAuthFailure(_) | E::NoAcceptableAuthMethods | E::AuthorizationRequired => {
            Failure::Upstream(format!("the upstream refused the credentials: {error}"))
        }
        other => Failure::Upstream(format!("SOCKS5 handshake failed: {other}")),
    }
}

/// The DC addresses as IPs, in order: host names are resolved here, not by the upstream.
async fn resolve(addresses: &[DcAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(addresses.len());
    for addr in addresses {
        match addr {
            DcAddr::Ip(sa) => out.push(*sa),
            DcAddr::Host { host, port } => match tokio::net::lookup_host((host.as_str(), *port))
                .await
            {
                Ok(found) => out.extend(found),
                Err(e) => tracing::debug!(dc_addr = %addr, error = %e, "DC name did not resolve"),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_upstream_is_skipped_then_retried_by_one_session_at_a_time() {
        let health = UpstreamHealth::default();
        assert!(
            health.claim() && health.claim(),
            "an upstream never seen failing is used"
        );
        health.set_down(true);
        assert!(!health.is_up());
        assert!(!health.claim(), "skipped inside its down window");
        *health.down_until.lock().unwrap() = Some(Instant::now() - Duration::from_secs(1));
        assert!(health.is_up());
        assert!(health.claim(), "the window is over: one session retries it");
        assert!(
            !health.claim(),
            "the others keep skipping it during that retry"
        );
        health.set_down(false);
        assert!(
            health.claim() && health.is_up(),
            "the retry worked: used by all again"
        );
    }
}
