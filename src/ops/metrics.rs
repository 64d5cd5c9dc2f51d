//! Counters and the HTTP endpoint of `metrics.listen`: `GET /metrics` (Prometheus text) and
//! `GET /stats` (JSON). Connection counts by route and outcome, bytes by route and
//! direction, open connections, and per-user MTProto counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::mtproto::state::UserCounters;

/// What the endpoint reads from the running gateway at each request.
#[derive(Debug, Clone, Default)]
pub struct LiveValues {
    /// Connections open now.
    pub open: usize,
    /// Each configured MTProto user with their counters.
    pub users: Vec<(String, Arc<UserCounters>)>,
}

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

/// Process-wide counters; live values (open connections, MTProto users) are read at scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<ConnectionLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    /// The same counts for `/stats`: route -> outcome -> connections.
    by_route: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connections = Family::<ConnectionLabels, Counter>::default();
        let bytes = Family::<BytesLabels, Counter>::default();
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
        Self {
            registry,
            connections,
            bytes,
            by_route: Mutex::default(),
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
        let users: BTreeMap<&str, serde_json::Value> = values
            .users
            .iter()
            .map(|(name, c)| {
                use std::sync::atomic::Ordering::Relaxed;
                let value = serde_json::json!({
                    "connections": c.connections.load(Relaxed),
                    "active": c.active.load(Relaxed),
                    "bytes_from_client": c.bytes_from_client.load(Relaxed),
                    "bytes_to_client": c.bytes_to_client.load(Relaxed),
                });
                (name.as_str(), value)
            })
            .collect();
        serde_json::json!({
            "connections_open": values.open,
            "connections": by_route,
            "mtproto_users": users,
        })
    }
}

/// Values read from the running gateway at scrape time.
#[derive(Debug)]
struct Live(LiveValues);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
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
        use std::sync::atomic::Ordering::Relaxed;
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
            for (user, counters) in &self.0.users {
                let labels = UserLabels { user: user.clone() };
                ConstCounter::new(read(counters)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The largest request accepted by the metrics endpoint.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `/metrics` and `/stats` on `listener` until `stop`; `snapshot` gives the current
/// values at each request.
pub async fn serve<F>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    snapshot: F,
    stop: CancellationToken,
) where
    F: Fn() -> LiveValues + Send + Sync + 'static,
{
    let snapshot = Arc::new(snapshot);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, snapshot) = (metrics.clone(), snapshot.clone());
        tokio::spawn(async move {
            let answer = async { respond(stream, &metrics, &snapshot()).await };
            // A scraper that stalls or sends garbage just loses its connection.
            let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    metrics: &Metrics,
    values: &LiveValues,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        if stream.read_buf(&mut request).await? == 0 {
            break;
        }
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, kind, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.prometheus(values),
        ),
        (b"GET", b"/stats") => (
            "200 OK",
            "application/json",
            metrics.stats(values).to_string(),
        ),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /stats\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let mut response = String::with_capacity(body.len() + 128);
    let _ = write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
