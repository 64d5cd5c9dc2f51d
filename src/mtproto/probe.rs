//! Asking an `mtproto: true` route's backend, before any client does, whether its answer to a
//! modern ClientHello can be mirrored (`frontgate check --probe` and the start-up log): a
//! backend that answers TLS 1.2, or no TLS at all, can never look like a Telegram client's
//! TLS 1.3 flight, and the operator must hear so with the fix.
//!
//! The probe hello is rustls's own ClientHello for the route's name (TLS 1.3 and 1.2, x25519
//! first). Its answer is only reported, never learned: a Telegram client's hello (which may
//! offer post-quantum key shares) can get a different answer, and learned profiles come
//! from those.
//!
//! The probe also downloads `/` from each such backend ([`site_sample`]) and keeps the
//! record sizes of the site's answer ([`RecordSizing`]) for the route's sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::admission::loop_guard::OutboundAddrs;
use crate::config::{Action, Config, MimicMode, MtprotoRoute, NamePattern};
use crate::forward::pool::{self, Pool, Pools};
use crate::forward::proxy_out;
use crate::mtproto::mimic::FlightProfile;
use crate::mtproto::mirror;
use crate::mtproto::record_sizing::RecordSizing;
use crate::mtproto::site_sample;
use crate::mtproto::state::ProfileStore;
use crate::mtproto::upstreams;

/// What one route's backend answered the probe.
#[derive(Debug)]
pub struct ProbeReport {
    /// The route's label.
    pub route: String,
    /// The route's mimic mode.
    pub mimic: MimicMode,
    /// The backend's profile, or why its answer cannot be mirrored.
    pub answer: Result<FlightProfile, String>,
}

impl ProbeReport {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        match &self.answer {
            Ok(profile) => {
                let (group, key_len) = profile.key_share().unwrap_or((0, 0));
                format!(
                    "route {}: the backend answers TLS 1.3 (cipher 0x{:04x}, key share 0x{group:04x}/{key_len} bytes, \
                     {} encrypted record(s) of {} bytes): fake flights can mirror it (mimic: {})",
                    self.route,
                    profile.cipher_suite,
                    profile.encrypted_records,
                    profile.encrypted_len,
                    self.mimic
                )
            }
            Err(why) => format!(
                "route {}: fake flights cannot mirror the backend: {why}",
                self.route
            ),
        }
    }
}

/// A ClientHello that rustls sends for `server_name` (a valid DNS name), as raw bytes.
pub fn probe_hello(server_name: &str) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// Probes the backend of every `mtproto: true` route of `config` whose mimic mode is not
/// `off` (and `default:` with `mtproto: true`), each within `budget`, through the route's
/// running pool in `pools` (a fresh one without a running gateway).
pub async fn probe_routes(config: &Config, pools: &Pools, budget: Duration) -> Vec<ProbeReport> {
    let outbound = Arc::new(OutboundAddrs::default());
    let mut reports = Vec::new();
    for (label, target) in mirrored_routes(config) {
        let pool = pool::running_or_fresh(pools, &target.forward.pool);
        let answer = probe_one(label, target, &pool, budget, &outbound).await;
        reports.push(ProbeReport {
            route: label.to_string(),
            mimic: target.mimic,
            answer,
        });
    }
    reports
}

/// The DC `check --probe` asks each `mtproto.via` upstream to reach.
pub const PROBE_DC: i16 = 2;

/// Whether one `mtproto.via` upstream reaches [`PROBE_DC`].
#[derive(Debug)]
pub struct UpstreamReport {
    /// The upstream (`socks5://[user@]host:port`, never the password).
    pub upstream: String,
    /// How long the connection took to open, or why there was none.
    pub reached: Result<Duration, String>,
}

impl UpstreamReport {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        match &self.reached {
            Ok(took) => format!(
                "upstream {}: reaches DC {PROBE_DC} (connected in {} ms)",
                self.upstream,
                took.as_millis()
            ),
            Err(why) => format!(
                "upstream {}: cannot reach DC {PROBE_DC}: {why}",
                self.upstream
            ),
        }
    }
}

/// Connects through each `mtproto.via` upstream to DC 2's addresses (from the DC table, so
/// an override is what the upstream is asked for), each attempt within `budget`.
pub async fn probe_upstreams(config: &Config, budget: Duration) -> Vec<UpstreamReport> {
    let Some(settings) = &config.mtproto else {
        return Vec::new();
    };
    let addresses = settings
        .datacenters
        .addresses(PROBE_DC, settings.prefer_ipv6);
    let mut reports = Vec::with_capacity(settings.via.len());
    for upstream in &settings.via {
        reports.push(UpstreamReport {
            upstream: upstream.to_string(),
            reached: upstreams::probe(upstream, &addresses, budget).await,
        });
    }
    reports
}

/// What one route's site download taught of its record sizes.
#[derive(Debug)]
pub struct SizingReport {
    /// The route's label.
    pub route: String,
    /// The learned sizes, or why none were learned (the sessions then use the default).
    pub sizing: Result<RecordSizing, String>,
}

impl SizingReport {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        match &self.sizing {
            Ok(sizing) if sizing.site_full() == sizing.steady() => format!(
                "route {}: the site's downloads come in records of {} bytes after {} \
                 smaller one(s); MTProto sessions send the same",
                self.route,
                sizing.steady(),
                sizing.ramp().len()
            ),
            Ok(sizing) => format!(
                "route {}: the site's downloads come in records of {} bytes after {} \
                 smaller one(s); MTProto sessions send {}-byte ones, the largest Telegram \
                 clients take",
                self.route,
                sizing.site_full(),
                sizing.ramp().len(),
                sizing.steady()
            ),
            Err(why) => format!(
                "route {}: the site's record sizes are unknown ({why}); MTProto sessions \
                 send records of up to 16384 bytes",
                self.route
            ),
        }
    }
}

/// Downloads `/` from the backend of every route whose probe found a TLS 1.3 site
/// (`probed`; a backend that cannot be mirrored has no records worth learning), each within
/// `budget` through the route's running pool in `pools`, and keeps the record sizes of each
/// site's answer in `store`.
pub async fn learn_record_sizes(
    config: &Config,
    pools: &Pools,
    probed: &[ProbeReport],
    store: &ProfileStore,
    budget: Duration,
) -> Vec<SizingReport> {
    let outbound = Arc::new(OutboundAddrs::default());
    let mut reports = Vec::new();
    let tls13 = |label: &str| {
        probed
            .iter()
            .any(|report| report.route == label && report.answer.is_ok())
    };
    for (label, target) in mirrored_routes(config).filter(|(label, _)| tls13(label)) {
        let forward = &target.forward;
        let head = proxy_out::encode(forward.proxy_protocol, LOOPBACK, LOOPBACK);
        let name = probe_name(label);
        let pool = pool::running_or_fresh(pools, &forward.pool);
        let sizing =
            site_sample::response_records(&pool, LOOPBACK.ip(), &head, &name, budget, &outbound)
                .await
                .map_err(|e| e.to_string())
                .and_then(|records| {
                    RecordSizing::from_site_records(&records).ok_or_else(|| {
                        format!("its answer to `GET /` had {} record(s)", records.len())
                    })
                });
        if let Ok(sizing) = &sizing {
            store.learn_sizing(label, sizing.clone());
        }
        reports.push(SizingReport {
            route: label.to_string(),
            sizing,
        });
    }
    reports
}

/// The `mtproto: true` routes (and `default:`) whose fake flights mirror the backend.
fn mirrored_routes(config: &Config) -> impl Iterator<Item = (&str, &MtprotoRoute)> {
    config
        .routes
        .routes()
        .iter()
        .chain(config.routes.default_route())
        .filter_map(|route| match &route.action {
            Action::Mtproto(target) if target.mimic != MimicMode::Off => {
                Some((route.label.as_str(), target))
            }
            _ => None,
        })
}

/// The client address a probe's PROXY header names, on both ends: the probe is frontgate's
/// own, from loopback.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 443);

/// The server name a probe asks for: the route's label is its first server name; `default`
/// has none and probes as `localhost`.
fn probe_name(label: &str) -> String {
    match NamePattern::parse(label) {
        Ok(NamePattern::Exact(name)) => name,
        _ => "localhost".to_string(),
    }
}

async fn probe_one(
    label: &str,
    target: &MtprotoRoute,
    pool: &Arc<Pool>,
    budget: Duration,
    outbound: &Arc<OutboundAddrs>,
) -> Result<FlightProfile, String> {
    let name = probe_name(label);
    let hello = probe_hello(&name).ok_or("cannot build a probe hello for the route's name")?;
    let sid_len = usize::from(hello.get(43).copied().unwrap_or(0));
    let session_id = hello.get(44..44 + sid_len).unwrap_or_default().to_vec();
    let forward = &target.forward;
    // A backend that expects a PROXY header gets one.
    let head = proxy_out::encode(forward.proxy_protocol, LOOPBACK, LOOPBACK);
    let answer = mirror::backend_flight(pool, LOOPBACK.ip(), &head, &hello, budget, outbound)
        .await
        .map_err(|e| e.to_string())?;
    FlightProfile::from_backend(&answer, &session_id).map_err(|e| e.to_string())
}
