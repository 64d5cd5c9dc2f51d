//! Counters and the HTTP endpoint of `metrics.listen`: `GET /metrics` (Prometheus text),
//! `GET /stats` (JSON) and `GET /healthz` (200 or 503). Connection counts by route and
//! outcome, bytes by route and direction, network-policy refusals by rule and scope, open
//! connections, per-user MTProto counters, and per-backend pool health (up, live
//! connections, failures, connect latency).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::forward::pool::Pool;
use crate::mtproto::middle::MiddleProxy;
use crate::mtproto::shared_state::{Fallback, SharedState};
use crate::mtproto::state::UserCounters;
use crate::mtproto::upstreams::UpstreamHealth;
use crate::mtproto::users::Refusal;

/// What the endpoint reads from the running gateway at each request.
#[derive(Debug, Clone, Default)]
pub struct LiveValues {
    /// Connections open now.
    pub open: usize,
    /// Each configured MTProto user.
    pub users: Vec<UserView>,
    /// Each route's backend pool, by route label.
    pub pools: Vec<(String, Arc<Pool>)>,
    /// Whether the gateway serves now: its configuration is loaded and every listen address it
    /// should serve has a running listener. `/healthz` answers 200 only when true.
    pub healthy: bool,
    /// Each `mtproto.via` SOCKS5 upstream, in order.
    pub upstreams: Vec<UpstreamView>,
    /// The fleet-wide state in Redis, with `state.redis`.
    pub shared: Option<Arc<SharedState>>,
    /// The middle-proxy client, when some user has an ad_tag.
    pub middle: Option<Arc<MiddleProxy>>,
}

/// One `mtproto.via` upstream as the metrics endpoint shows it.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    /// `host:port`.
    pub label: String,
    /// Its health and counters.
    pub health: Arc<UpstreamHealth>,
}

/// One MTProto user as the metrics endpoint shows them.
#[derive(Debug, Clone)]
pub struct UserView {
    /// The user's name.
    pub name: String,
    /// Their counters.
    pub counters: Arc<UserCounters>,
    /// Their quota per period, bytes, if they have one.
    pub quota: Option<u64>,
    /// `active`, `disabled`, `expired` or `over_quota`.
    pub state: &'static str,
}

impl UserView {
    /// A user with no quota, served now (tests, and users of the short form).
    pub fn active(name: &str, counters: Arc<UserCounters>) -> UserView {
        UserView {
            name: name.to_string(),
            counters,
            quota: None,
            state: "active",
        }
    }

    /// Bytes left of the quota this period.
    fn quota_left(&self) -> Option<u64> {
        let used = self.counters.quota_bytes();
        self.quota.map(|q| q.saturating_sub(used))
    }
}

/// Every state a user can be in, for `frontgate_mtproto_user_state`.
pub const USER_STATES: [&str; 4] = ["active", "disabled", "expired", "over_quota"];

/// Labels of `frontgate_connections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    route: String,
    outcome: String,
}

/// Labels of `frontgate_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: String,
    direction: String,
}

/// Labels of `frontgate_refused_connections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    rule: String,
    scope: String,
}

/// Process-wide counters; live values (open connections, MTProto users) are read at scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<ConnectionLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    /// The same counts for `/stats`: route -> outcome -> connections.
    by_route: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Network-policy refusals for `/stats`: scope -> rule -> connections.
    refused_by_scope: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connections = Family::<ConnectionLabels, Counter>::default();
        let bytes = Family::<BytesLabels, Counter>::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "frontgate_connections",
            "Finished connections by route and outcome",
            connections.clone(),
        );
        registry.register(
            "frontgate_bytes",
            "Bytes relayed by route and direction (up = from clients)",
            bytes.clone(),
        );
        registry.register(
            "frontgate_refused_connections",
            "Connections refused by a network policy, by rule (deny, deny_file, not_allowed) \
             and scope (global or the route)",
            refused.clone(),
        );
        Self {
            registry,
            connections,
            bytes,
            refused,
            by_route: Mutex::default(),
            refused_by_scope: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one finished connection.
    pub fn connection_closed(&self, route: &str, outcome: &str, up: u64, down: u64) {
        let labels = ConnectionLabels {
            route: route.to_string(),
            outcome: outcome.to_string(),
        };
        self.connections.get_or_create(&labels).inc();
        for (direction, n) in [("up", up), ("down", down)] {
            let labels = BytesLabels {
                route: route.to_string(),
                direction: direction.to_string(),
            };
            self.bytes.get_or_create(&labels).inc_by(n);
        }
        let mut by_route = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        *by_route
            .entry(route.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    /// Counts one connection refused by the network policy `rule` of `scope` (`global` or a
    /// route's label: both come from the route file, so the label set stays bounded).
    pub fn refused(&self, rule: &str, scope: &str) {
        let labels = RefusalLabels {
            rule: rule.to_string(),
            scope: scope.to_string(),
        };
        self.refused.get_or_create(&labels).inc();
        let mut by_scope = self
            .refused_by_scope
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *by_scope
            .entry(scope.to_string())
            .or_default()
            .entry(rule.to_string())
            .or_default() += 1;
    }

    /// The Prometheus text exposition, live values included.
    pub fn prometheus(&self, values: &LiveValues) -> String {
        let mut live = Registry::default();
        live.register_collector(Box::new(Live(values.clone())));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &live);
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }

    /// The `/stats` JSON document.
    pub fn stats(&self, values: &LiveValues) -> serde_json::Value {
        let by_route = self
            .by_route
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let refused = self
            .refused_by_scope
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let users: BTreeMap<&str, serde_json::Value> = values
            .users
            .iter()
            .map(|user| {
                let c = &user.counters;
                let refusals: BTreeMap<&str, u64> = Refusal::ALL
                    .iter()
                    .map(|r| (r.label(), c.refusals[r.index()].load(Relaxed)))
                    .collect();
                let value = serde_json::json!({
                    "state": user.state,
                    "connections": c.connections.load(Relaxed),
                    "active": c.active.load(Relaxed),
                    "ips": c.ips.load(Relaxed),
                    "bytes_from_client": c.bytes_from_client.load(Relaxed),
                    "bytes_to_client": c.bytes_to_client.load(Relaxed),
                    "period_bytes": c.period_bytes.load(Relaxed),
                    "quota_bytes": user.quota,
                    "quota_left": user.quota_left(),
                    "refusals": refusals,
                });
                (user.name.as_str(), value)
            })
            .collect();
        serde_json::json!({
            "connections_open": values.open,
            "connections": by_route,
            "refused": refused,
            "mtproto_users": users,
            "backends": backends_json(&values.pools),
            "state_redis": values.shared.as_deref().map(shared_state_json),
        })
    }
}

/// `/stats`' `state_redis`: whether Redis answers, the fallbacks by kind, the resyncs.
fn shared_state_json(shared: &SharedState) -> serde_json::Value {
    let fallbacks: BTreeMap<&str, u64> = Fallback::ALL
        .iter()
        .map(|kind| (kind.label(), shared.fallbacks[*kind as usize].load(Relaxed)))
        .collect();
    serde_json::json!({
        "up": shared.is_up(),
        "fallbacks": fallbacks,
        "resyncs": shared.resyncs.load(Relaxed),
    })
}

/// `/stats`' `backends`: route -> server -> its health and counters.
fn backends_json(pools: &[(String, Arc<Pool>)]) -> BTreeMap<&str, serde_json::Value> {
    pools
        .iter()
        .map(|(route, pool)| {
            let servers: serde_json::Map<String, serde_json::Value> = pool
                .servers()
                .map(|(server, health)| {
                    let latency = health.latency();
                    let value = serde_json::json!({
                        "up": health.is_up(),
                        "backup": server.backup,
                        "weight": server.weight,
                        "active": health.active(),
                        "failures": health.failures(),
                        "connects": latency.count,
                        "connect_seconds_sum": latency.sum_seconds,
                    });
                    (server.upstream.to_string(), value)
                })
                .collect();
            let value = serde_json::json!({
                "balance": pool.settings().balance.to_string(),
                "servers": servers,
            });
            (route.as_str(), value)
        })
        .collect()
}

/// Values read from the running gateway at scrape time.
#[derive(Debug)]
struct Live(LiveValues);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserStateLabels {
    user: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DcLabels {
    dc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserRefusalLabels {
    user: String,
    reason: String,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = ConstGauge::new(i64::try_from(self.0.open).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "frontgate_connections_open",
            "Connections open now",
            None,
            open.metric_type(),
        )?)?;
        if !self.0.users.is_empty() {
            self.encode_users(&mut encoder)?;
        }
        self.encode_shared_state(&mut encoder)?;
        self.encode_backends(&mut encoder)
    }
}

impl Live {
    /// Every per-user family; only called with users (a family without samples is not
    /// valid OpenMetrics).
    fn encode_users(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&UserCounters) -> u64;
        let series: [(&str, &str, Read); 3] = [
            (
                "frontgate_mtproto_user_connections",
                "MTProto sessions per user",
                |c| c.connections.load(Relaxed),
            ),
            (
                "frontgate_mtproto_user_bytes_from_client",
                "MTProto bytes received from each user",
                |c| c.bytes_from_client.load(Relaxed),
            ),
            (
                "frontgate_mtproto_user_bytes_to_client",
                "MTProto bytes sent to each user",
                |c| c.bytes_to_client.load(Relaxed),
            ),
        ];
        for (name, help, read) in series {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for user in &self.0.users {
                let labels = UserLabels {
                    user: user.name.clone(),
                };
                ConstCounter::new(read(&user.counters)).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_user_gauges(encoder)?;
        self.encode_user_refusals(encoder)?;
        self.encode_upstreams(encoder)?;
        self.encode_middle(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    route: String,
    backend: String,
}

fn gauge(n: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Live {
    /// Per-user values that go up and down: live sessions, addresses, the period's bytes,
    /// quota left, and the user's state (1 for the state they are in).
    fn encode_user_gauges(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&UserView) -> Option<u64>;
        let series: [(&str, &str, Read); 4] = [
            (
                "frontgate_mtproto_user_active",
                "MTProto sessions of each user now",
                |u| Some(u.counters.active.load(Relaxed)),
            ),
            (
                "frontgate_mtproto_user_ips",
                "Distinct client addresses with a session of each user now",
                |u| Some(u.counters.ips.load(Relaxed)),
            ),
            (
                "frontgate_mtproto_user_period_bytes",
                "Bytes both ways of each user in the current quota period",
                |u| Some(u.counters.period_bytes.load(Relaxed)),
            ),
            (
                "frontgate_mtproto_user_quota_left_bytes",
                "Bytes left of each user's quota this period (users with a quota)",
                UserView::quota_left,
            ),
        ];
        for (name, help, read) in series {
            // A family without samples is left out (no user has a quota, say).
            if self.0.users.iter().all(|u| read(u).is_none()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for user in &self.0.users {
                if let Some(n) = read(user) {
                    let labels = UserLabels {
                        user: user.name.clone(),
                    };
                    gauge(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "frontgate_mtproto_user_state",
            "Each user's state: 1 for the one they are in",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for user in &self.0.users {
            for state in USER_STATES {
                let labels = UserStateLabels {
                    user: user.name.clone(),
                    state: state.to_string(),
                };
                gauge(u64::from(user.state == state)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// The Redis of `state.redis`: whether it answers, the decisions made without it (by
    /// kind), and its returns (each pushed what was seen without it). Left out without it.
    fn encode_shared_state(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let Some(shared) = &self.0.shared else {
            return Ok(());
        };
        gauge(u64::from(shared.is_up())).encode(encoder.encode_descriptor(
            "frontgate_state_redis_up",
            "1 while the fleet's Redis answers, 0 while replay checks and usage stay local",
            None,
            MetricType::Gauge,
        )?)?;
        let mut family = encoder.encode_descriptor(
            "frontgate_state_redis_fallbacks",
            "Replay checks decided and usage syncs skipped without Redis, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in Fallback::ALL {
            let labels = FallbackLabels {
                kind: kind.label().to_string(),
            };
            ConstCounter::new(shared.fallbacks[kind as usize].load(Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        ConstCounter::new(shared.resyncs.load(Relaxed)).encode(encoder.encode_descriptor(
            "frontgate_state_redis_resyncs",
            "Times Redis answered again and this instance pushed what it saw without it",
            None,
            MetricType::Counter,
        )?)
    }

    /// Every pool server, by route and address: up (1) or down (0), connections now, failures
    /// (connects and checks), and the connect latency histogram.
    fn encode_backends(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        if self.0.pools.is_empty() {
            return Ok(());
        }
        let each = |f: &mut dyn FnMut(
            BackendLabels,
            &crate::forward::pool::ServerHealth,
        ) -> Result<(), std::fmt::Error>| {
            for (route, pool) in &self.0.pools {
                for (server, health) in pool.servers() {
                    let labels = BackendLabels {
                        route: route.clone(),
                        backend: server.upstream.to_string(),
                    };
                    f(labels, health)?;
                }
            }
            Ok(())
        };
        type Read = fn(&crate::forward::pool::ServerHealth) -> u64;
        let gauges: [(&str, &str, Read); 2] = [
            (
                "frontgate_backend_up",
                "Whether each pool server is marked up (1) or down (0)",
                |h| u64::from(h.is_up()),
            ),
            (
                "frontgate_backend_active",
                "Connections to each pool server now (connecting or relaying)",
                |h| h.active(),
            ),
        ];
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            each(&mut |labels, health| gauge(read(health)).encode(family.encode_family(&labels)?))?;
        }
        let mut family = encoder.encode_descriptor(
            "frontgate_backend_failures",
            "Failed connects and failed health checks of each pool server",
            None,
            MetricType::Counter,
        )?;
        each(&mut |labels, health| {
            ConstCounter::new(health.failures()).encode(family.encode_family(&labels)?)
        })?;
        let mut family = encoder.encode_descriptor(
            "frontgate_backend_connect_seconds",
            "Time to connect to each pool server (successful connects)",
            None,
            MetricType::Histogram,
        )?;
        each(&mut |labels, health| {
            let latency = health.latency();
            family
                .encode_family(&labels)?
                .encode_histogram::<BackendLabels>(
                    latency.sum_seconds,
                    latency.count,
                    &latency.buckets,
                    None,
                )
        })
    }

    /// Each `mtproto.via` upstream: whether sessions use it now, DC connections opened and
    /// failed through it, and the seconds its connections took to open (divide by the
    /// connections for the mean). Left out without upstreams.
    fn encode_upstreams(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        if self.0.upstreams.is_empty() {
            return Ok(());
        }
        let labels = |view: &UpstreamView| UpstreamLabels {
            upstream: view.label.clone(),
        };
        let mut up = encoder.encode_descriptor(
            "frontgate_mtproto_upstream_up",
            "1 if sessions use the SOCKS5 upstream now, 0 while it is skipped after a failure",
            None,
            MetricType::Gauge,
        )?;
        for view in &self.0.upstreams {
            gauge(u64::from(view.health.is_up())).encode(up.encode_family(&labels(view))?)?;
        }
        type Read = fn(&UpstreamHealth) -> u64;
        let series: [(&str, &str, Read); 2] = [
            (
                "frontgate_mtproto_upstream_connections",
                "DC connections opened through each SOCKS5 upstream",
                |h| h.connections.load(Relaxed),
            ),
            (
                "frontgate_mtproto_upstream_failures",
                "Failed DC connection attempts through each SOCKS5 upstream",
                |h| h.failures.load(Relaxed),
            ),
        ];
        for (name, help, read) in series {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for view in &self.0.upstreams {
                ConstCounter::new(read(&view.health))
                    .encode(family.encode_family(&labels(view))?)?;
            }
        }
        let mut seconds = encoder.encode_descriptor(
            "frontgate_mtproto_upstream_connect_seconds",
            "Seconds the DC connections through each SOCKS5 upstream took to open, summed",
            None,
            MetricType::Counter,
        )?;
        for view in &self.0.upstreams {
            let micros = view.health.connect_micros.load(Relaxed);
            ConstCounter::new(micros as f64 / 1e6).encode(seconds.encode_family(&labels(view))?)?;
        }
        Ok(())
    }

    /// Middle-proxy mode: ME connections and their keepalive round trip per DC, sessions in
    /// ME mode, fallbacks to direct and errors. Left out when no user has an ad_tag.
    fn encode_middle(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let Some(middle) = &self.0.middle else {
            return Ok(());
        };
        let dcs = middle.dcs();
        let mut conns = encoder.encode_descriptor(
            "frontgate_mtproto_middle_connections",
            "Live middle-proxy connections per DC",
            None,
            MetricType::Gauge,
        )?;
        for view in &dcs {
            let labels = DcLabels {
                dc: view.dc.to_string(),
            };
            gauge(view.connections as u64).encode(conns.encode_family(&labels)?)?;
        }
        let mut rtt = encoder.encode_descriptor(
            "frontgate_mtproto_middle_rtt_seconds",
            "Last keepalive round trip of the fastest middle-proxy connection per DC (0: none yet)",
            None,
            MetricType::Gauge,
        )?;
        for view in &dcs {
            let labels = DcLabels {
                dc: view.dc.to_string(),
            };
            ConstGauge::new(view.rtt_micros as f64 / 1e6).encode(rtt.encode_family(&labels)?)?;
        }
        let stats = &middle.stats;
        gauge(stats.sessions.load(Relaxed)).encode(encoder.encode_descriptor(
            "frontgate_mtproto_middle_sessions",
            "Sessions relayed through the middle proxies now",
            None,
            MetricType::Gauge,
        )?)?;
        let counters: [(&str, &str, &AtomicU64); 3] = [
            (
                "frontgate_mtproto_middle_fallbacks",
                "ad_tag sessions served direct because no middle proxy could be reached",
                &stats.fallbacks,
            ),
            (
                "frontgate_mtproto_middle_errors",
                "Failed middle-proxy connects and handshakes",
                &stats.errors,
            ),
            (
                "frontgate_mtproto_middle_config_fetch_errors",
                "Middle-proxy configuration fetches that failed or were refused",
                &stats.fetch_errors,
            ),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value.load(Relaxed)).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }

    /// Valid secrets refused by user policy, per user and reason.
    fn encode_user_refusals(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "frontgate_mtproto_user_refusals",
            "Hellos with a user's valid secret fronted to the site because of the user's policy",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for user in &self.0.users {
            for refusal in Refusal::ALL {
                let labels = UserRefusalLabels {
                    user: user.name.clone(),
                    reason: refusal.label().to_string(),
                };
                let n = user.counters.refusals[refusal.index()].load(Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// How long one request may take, from accept to the last byte of the answer; a scraper that
/// stalls or trickles just loses its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of `/metrics`: prometheus-client writes OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every request handler reads: the counters and the gateway's live values.
#[derive(Clone)]
struct Endpoint {
    metrics: Arc<Metrics>,
    snapshot: Arc<dyn Fn() -> LiveValues + Send + Sync>,
}

/// Serves `GET /metrics`, `/stats` and `/healthz` on `listener` until `stop`, then lets the
/// requests in flight finish; `snapshot` gives the current values at each request.
///
/// One request per connection (as `Connection: close`), each bounded as a whole by
/// `REQUEST_TIMEOUT` (10 s). hyper serves the connections rather than `axum::serve`, which
/// sets no timer and so no limit on how long a client may take to send its request.
pub async fn serve<F>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    snapshot: F,
    stop: CancellationToken,
) where
    F: Fn() -> LiveValues + Send + Sync + 'static,
{
    let router = router(Endpoint {
        metrics,
        snapshot: Arc::new(snapshot),
    });
    let in_flight = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and friends: back off instead of spinning, as the listeners do.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let connection = http1::Builder::new().keep_alive(false).serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = in_flight.watch(connection);
        tokio::spawn(async move {
            // A failed or timed-out request only costs its own connection.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
    drop(listener);
    in_flight.shutdown().await;
}

/// The endpoint's routes; any other path is 404 (405 for a method other than GET).
fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/metrics", get(prometheus_text))
        .route("/stats", get(stats_json))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(endpoint)
}

async fn prometheus_text(State(endpoint): State<Endpoint>) -> Response {
    let text = endpoint.metrics.prometheus(&(endpoint.snapshot)());
    ([(CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

async fn stats_json(State(endpoint): State<Endpoint>) -> Response {
    let json = endpoint.metrics.stats(&(endpoint.snapshot)()).to_string();
    ([(CONTENT_TYPE, "application/json")], json).into_response()
}

/// 200 while the gateway serves every listener it should, 503 otherwise (starting, stopping),
/// so a balancer or orchestrator sends traffic only where it will be accepted.
async fn healthz(State(endpoint): State<Endpoint>) -> Response {
    if (endpoint.snapshot)().healthy {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let reason = "unavailable: not every listen address is being served\n";
        (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
    }
}

async fn not_found(method: Method) -> Response {
    if method == Method::GET {
        (StatusCode::NOT_FOUND, "try /metrics, /stats or /healthz\n").into_response()
    } else {
        (StatusCode::METHOD_NOT_ALLOWED, "GET only\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use openmetrics_parser::openmetrics::parse_openmetrics;
    use openmetrics_parser::OpenMetricsValue;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::*;

    /// A client that never finishes its request loses the connection after
    /// [`REQUEST_TIMEOUT`], and is no obstacle to the others meanwhile; a stop then ends
    /// `serve`. (Paused clock: the timeout passes without waiting for it.)
    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_is_cut_and_others_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let snapshot = LiveValues::default;
        let server = tokio::spawn(serve(listener, Arc::default(), snapshot, stop.clone()));
        let started = Instant::now();
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();

        let mut other = TcpStream::connect(addr).await.unwrap();
        other
            .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(started.elapsed() < REQUEST_TIMEOUT);

        let mut rest = Vec::new();
        let read = tokio::time::timeout(2 * REQUEST_TIMEOUT, stalled.read_to_end(&mut rest))
            .await
            .expect("the endpoint closes a stalled connection");
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?} {rest:?}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT);

        stop.cancel();
        server.await.unwrap();
    }

    /// Without MTProto users (no `mtproto:`), no empty user family makes the exposition
    /// invalid.
    #[test]
    fn the_exposition_without_users_is_valid_openmetrics() {
        let values = LiveValues {
            open: 0,
            users: Vec::new(),
            healthy: true,
            ..LiveValues::default()
        };
        let text = Metrics::default().prometheus(&values);
        parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert!(!text.contains("frontgate_mtproto_user"), "{text}");
    }

    /// Whatever a user is called, the exposition stays well-formed: label values are escaped,
    /// so a name cannot close its label early, add a line, or forge another sample.
    #[test]
    fn user_names_cannot_break_the_exposition() {
        let hostile = "eve\"} 1\nfrontgate_connections_open 999\n# EOF\n\\";
        let counters = Arc::new(UserCounters::default());
        counters.connections.store(7, Relaxed);
        let values = LiveValues {
            open: 3,
            users: vec![
                UserView::active(hostile, counters),
                UserView::active("bob", Arc::default()),
            ],
            pools: Vec::new(),
            healthy: true,
            upstreams: Vec::new(),
            shared: None,
            middle: None,
        };
        let metrics = Metrics::default();
        metrics.connection_closed("a\"b\\c", "closed", 1, 2);
        let text = metrics.prometheus(&values);

        let parsed = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let users = &parsed.families["frontgate_mtproto_user_connections"];
        let by_user: Vec<(String, f64)> = users
            .iter_samples()
            .map(|sample| {
                let labels = sample.get_labelset().expect("one value per label");
                let user = labels.get_label_value("user").expect("a user label");
                let OpenMetricsValue::Counter(counter) = &sample.value else {
                    panic!("{:?} is not a counter", sample.value);
                };
                (user.to_string(), counter.value.as_f64())
            })
            .collect();
        assert_eq!(
            by_user,
            [(hostile.to_string(), 7.0), ("bob".to_string(), 0.0)]
        );
        let open: Vec<_> = parsed.families["frontgate_connections_open"]
            .iter_samples()
            .map(|sample| match &sample.value {
                OpenMetricsValue::Gauge(n) => n.as_f64(),
                other => panic!("{other:?} is not a gauge"),
            })
            .collect();
        assert_eq!(open, [3.0], "the forged sample is not read as one");
        let routes = &parsed.families["frontgate_connections"];
        let sample = routes.iter_samples().next().expect("one sample");
        let labels = sample.get_labelset().expect("one value per label");
        assert_eq!(labels.get_label_value("route"), Some("a\"b\\c"));
    }
}
