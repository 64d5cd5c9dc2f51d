//! The route file as serde sees it: one struct per YAML mapping, unknown keys refused, values
//! validated by the types in [`super::values`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::middle::{AdTag, MiddleProxySection};
use super::users::UserValue;
use super::values::{
    BalanceValue, DurationValue, ListenAddr, MimicValue, NameValue, Network, OneOrMany,
    ProxyProtocolValue, ToValue, UpstreamValue,
};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub listen: OneOrMany<ListenAddr>,
    #[serde(default)]
    pub accept_proxy_protocol_from: Vec<Network>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    pub metrics: Option<MetricsSection>,
    pub mtproto: Option<MtprotoSection>,
    /// `routes:` with no entries may be left empty.
    pub routes: Option<Vec<RouteSection>>,
    pub default: Option<TargetSection>,
    pub non_tls: Option<TargetSection>,
    /// Network policy of the whole gateway (`config::netpolicy`).
    pub allow: Option<OneOrMany<Network>>,
    pub deny: Option<OneOrMany<Network>>,
    pub deny_file: Option<PathBuf>,
    pub state: Option<StateSection>,
}

/// `state:`: where frontgate keeps what must survive a restart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The state directory (usage counters).
    pub dir: Option<PathBuf>,
    /// The fleet-wide store (`config::redis`).
    pub redis: Option<String>,
    /// The longest a hello's decision waits for Redis.
    pub redis_timeout: Option<DurationValue>,
}

/// `timeouts:`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub client_hello: Option<DurationValue>,
    pub connect: Option<DurationValue>,
    pub idle: Option<DurationValue>,
    pub shutdown_grace: Option<DurationValue>,
}

/// `limits:`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

/// `metrics:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: ListenAddr,
}

/// `mtproto:`: the built-in MTProto proxy's users and behaviour.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtprotoSection {
    #[serde(default)]
    pub users: BTreeMap<String, UserValue>,
    /// More users, in their own file (managed by `frontgate user`).
    pub users_file: Option<PathBuf>,
    pub max_clock_skew: Option<DurationValue>,
    pub replay_cache: Option<usize>,
    #[serde(default)]
    pub allow_plain: bool,
    #[serde(default)]
    pub datacenters: HashMap<i16, OneOrMany<String>>,
    #[serde(default)]
    pub fast_mode: bool,
    #[serde(default)]
    pub prefer_ipv6: bool,
    /// The global promoted channel (middle-proxy mode).
    pub ad_tag: Option<AdTag>,
    /// This host's address as the middle proxies see it.
    pub public_ip: Option<std::net::IpAddr>,
    /// Where the middle proxies' configuration comes from.
    pub middle_proxy: Option<MiddleProxySection>,
    /// SOCKS5 upstreams for DC connections (split mode).
    #[serde(default)]
    pub via: Vec<String>,
    #[serde(default)]
    pub via_fallback_direct: bool,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: a mapping with `sni:` and `to:`"
)]
pub struct RouteSection {
    pub sni: OneOrMany<NameValue>,
    #[serde(default)]
    pub mtproto: bool,
    /// `mtproto: true` routes only: how the fake server flight is shaped.
    pub mimic: Option<MimicValue>,
    pub to: ToValue,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolValue,
    pub tls: Option<TlsSection>,
    /// The route's own network policy.
    pub allow: Option<OneOrMany<Network>>,
    pub deny: Option<OneOrMany<Network>>,
}

/// `tls:` of a route: terminate TLS here with an ACME or a file certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub acme: Option<AcmeSection>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub alpn: Option<Vec<String>>,
    pub handshake_timeout: Option<DurationValue>,
}

/// `tls.acme:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    pub contact: OneOrMany<String>,
    pub directory: Option<String>,
    pub cache: Option<PathBuf>,
    pub ca_roots: Option<PathBuf>,
}

/// `default:` and `non_tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `to:`")]
pub struct TargetSection {
    pub to: ToValue,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolValue,
    /// `default:` only (refused on `non_tls:`, which has no ClientHello to check).
    #[serde(default)]
    pub mtproto: bool,
    /// With `mtproto: true`: how the fake server flight is shaped.
    pub mimic: Option<MimicValue>,
    /// `default:` only: the route's own network policy.
    pub allow: Option<OneOrMany<Network>>,
    pub deny: Option<OneOrMany<Network>>,
}

/// `to:` written as a pool.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a pool: a mapping with `servers:` (and optional `balance:`, `check:`)"
)]
pub struct PoolSection {
    pub balance: Option<BalanceValue>,
    pub servers: Vec<ServerSection>,
    pub check: Option<CheckSection>,
}

/// One entry of a pool's `servers:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a server: a mapping with `addr:` (and optional `weight:`, `backup:`)"
)]
pub struct ServerSection {
    pub addr: UpstreamValue,
    pub weight: Option<usize>,
    #[serde(default)]
    pub backup: bool,
}

/// A pool's `check:`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    pub interval: Option<DurationValue>,
    pub timeout: Option<DurationValue>,
    pub fall: Option<usize>,
    pub rise: Option<usize>,
    pub tls: Option<bool>,
}
