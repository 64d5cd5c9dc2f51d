//! A route's `to` as a pool: its servers (weights, backups), how a connection picks one
//! (`balance`) and the active health check (`check`). The short forms `to: addr` and
//! `to: [a, b]` are a pool too: `balance: first` over the list, no active check. The health
//! state itself is runtime state of the forward stage (`forward::pool`).

use std::fmt;
use std::time::Duration;

use super::model::{CheckSection, PoolSection};
use super::{bounds, count, duration, Fault, Problem, ProxyProtocol, Upstream};

/// How a connection picks its server among the healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// The first healthy server in the order written (the short forms' meaning).
    #[default]
    First,
    /// Each server in turn, in proportion to its weight (smooth weighted round robin).
    RoundRobin,
    /// The server with the fewest live connections relative to its weight.
    LeastConn,
    /// The same client address goes to the same server while that server is healthy
    /// (weighted rendezvous hashing: other clients do not move when a server goes down).
    ClientHash,
}

impl Balance {
    /// Parses the key's value.
    pub fn parse(text: &str) -> Option<Balance> {
        match text.to_ascii_lowercase().as_str() {
            "first" => Some(Balance::First),
            "round_robin" => Some(Balance::RoundRobin),
            "least_conn" => Some(Balance::LeastConn),
            "client_hash" => Some(Balance::ClientHash),
            _ => None,
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::First => "first",
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::ClientHash => "client_hash",
        })
    }
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolServer {
    /// Where it is.
    pub upstream: Upstream,
    /// Its share of the connections relative to the others (1 by default).
    pub weight: u32,
    /// Used only while every non-backup server is down.
    pub backup: bool,
}

/// The active health check of a pool (`check:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Time between two checks of a server.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive failures (checks or connections) that mark a server down.
    pub fall: u32,
    /// Consecutive successful checks that mark a down server up again.
    pub rise: u32,
    /// Check with a TLS handshake rather than a TCP connect.
    pub tls: bool,
    /// The header a TLS check writes first (the route's `proxy_protocol`: a backend that
    /// expects one refuses a hello without it).
    pub proxy_protocol: ProxyProtocol,
}

/// `check:` defaults, HAProxy's: every 2 s, 3 failures down, 2 successes up.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A check's default timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `fall`.
pub const DEFAULT_FALL: u32 = 3;
/// Default `rise`.
pub const DEFAULT_RISE: u32 = 2;

/// A pool without `check:` marks a server down after this many consecutive failed connects
/// (one: a connect timeout is expensive enough to avoid repeating).
pub const PASSIVE_FALL: u32 = 1;
/// A pool without `check:` tries a server marked down again after this long.
pub const PASSIVE_RETRY: Duration = Duration::from_secs(10);

/// A route's backends and how they are chosen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolSettings {
    /// How a server is picked.
    pub balance: Balance,
    /// The servers in the order written; at least one is not a backup.
    pub servers: Vec<PoolServer>,
    /// The active health check, when configured.
    pub check: Option<HealthCheck>,
    /// The TLS server name checks send (the route's first exact name), for `check.tls`.
    pub check_name: Option<String>,
}

impl PoolSettings {
    /// The short forms: every server in order, weight 1, `balance: first`, no active check.
    pub fn in_order(upstreams: &[Upstream]) -> PoolSettings {
        PoolSettings {
            balance: Balance::First,
            servers: upstreams
                .iter()
                .map(|upstream| PoolServer {
                    upstream: upstream.clone(),
                    weight: 1,
                    backup: false,
                })
                .collect(),
            check: None,
            check_name: None,
        }
    }

    /// Consecutive failures that mark a server down.
    pub fn fall(&self) -> u32 {
        self.check.map_or(PASSIVE_FALL, |c| c.fall)
    }
}

/// What the route says about its backend, for the check's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend<'a> {
    /// Plain passthrough: a TCP connect check unless `check.tls: true`.
    Passthrough,
    /// An `mtproto: true` route's site, a TLS server: a TLS handshake check by default,
    /// sending this server name (none for `default:`).
    TlsSite(Option<&'a str>),
    /// A `tls:` route's backend gets plaintext: `check.tls` is refused.
    Plaintext,
}

/// Compiles a `to:` written as a pool mapping at `key` (`routes[0].to`).
pub(super) fn compile(
    key: &str,
    section: &PoolSection,
    backend: Backend<'_>,
    proxy_protocol: ProxyProtocol,
) -> Result<PoolSettings, Fault> {
    let servers_key = format!("{key}.servers");
    bounds::POOL_SERVERS
        .check(section.servers.len())
        .map_err(|p| Fault::value(&servers_key, p))?;
    let mut servers: Vec<PoolServer> = Vec::with_capacity(section.servers.len());
    for (at, server) in section.servers.iter().enumerate() {
        let upstream = server.addr.0.clone();
        if let Some(first) = servers.iter().position(|s| s.upstream == upstream) {
            let problem = Problem::DuplicateServer {
                addr: upstream.to_string(),
                other: format!("{servers_key}[{first}]"),
            };
            return Err(Fault::value(format!("{servers_key}[{at}].addr"), problem));
        }
        let weight = count(
            server.weight,
            &format!("{servers_key}[{at}].weight"),
            bounds::WEIGHT,
            1,
        )?;
        servers.push(PoolServer {
            upstream,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            backup: server.backup,
        });
    }
    if servers.iter().all(|s| s.backup) {
        return Err(Fault::value(servers_key, Problem::OnlyBackups));
    }
    let check = section
        .check
        .as_ref()
        .map(|c| health_check(&format!("{key}.check"), c, backend, proxy_protocol))
        .transpose()?;
    Ok(PoolSettings {
        balance: section.balance.map_or(Balance::First, |b| b.0),
        servers,
        check,
        check_name: match backend {
            Backend::TlsSite(name) => name.map(str::to_string),
            Backend::Passthrough | Backend::Plaintext => None,
        },
    })
}

fn health_check(
    key: &str,
    section: &CheckSection,
    backend: Backend<'_>,
    proxy_protocol: ProxyProtocol,
) -> Result<HealthCheck, Fault> {
    let streak = |value: Option<usize>, name: &str, default: u32| {
        count(
            value,
            &format!("{key}.{name}"),
            bounds::CHECK_STREAK,
            default as usize,
        )
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let tls = match (section.tls, backend) {
        (Some(true), Backend::Plaintext) => {
            return Err(Fault::value(
                format!("{key}.tls"),
                Problem::TlsCheckOnTerminate,
            ))
        }
        (Some(tls), _) => tls,
        (None, Backend::TlsSite(_)) => true,
        (None, _) => false,
    };
    Ok(HealthCheck {
        interval: duration(
            &section.interval,
            &format!("{key}.interval"),
            bounds::CHECK_INTERVAL,
            DEFAULT_CHECK_INTERVAL,
        )?,
        timeout: duration(
            &section.timeout,
            &format!("{key}.timeout"),
            bounds::CHECK_TIMEOUT,
            DEFAULT_CHECK_TIMEOUT,
        )?,
        fall: streak(section.fall, "fall", DEFAULT_FALL)?,
        rise: streak(section.rise, "rise", DEFAULT_RISE)?,
        tls,
        proxy_protocol,
    })
}
