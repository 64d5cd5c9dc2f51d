//! The metrics endpoint over real sockets: `/metrics` parses as OpenMetrics text and its
//! samples reflect real connections, `/stats` agrees, `/healthz` follows the listeners, and
//! the endpoint answers only what it serves.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use frontgate::config;
use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP answer, read until the server closed the connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The status line and headers, as sent.
    head: String,
    body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if sent.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut response))
        .await
        .expect("the endpoint answers and closes")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// `GET /metrics`, parsed; panics if it is not valid OpenMetrics text.
async fn scrape(addr: SocketAddr) -> Exposition {
    let answer = request(addr, "GET", "/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    parse_openmetrics(&answer.body).unwrap_or_else(|e| panic!("{e:?} in\n{}", answer.body))
}

/// The value of the sample of `family` whose labels are exactly `labels`; the family must
/// have type `kind`.
fn sample(
    exposition: &Exposition,
    family: &str,
    kind: OpenMetricsType,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let family = exposition.families.get(family)?;
    assert_eq!(family.family_type, kind, "type of {}", family.family_name);
    family.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        let exact = set.iter().count() == labels.len()
            && labels
                .iter()
                .all(|(name, value)| set.get_label_value(name) == Some(value));
        exact.then(|| match &sample.value {
            OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
            OpenMetricsValue::Gauge(n) => n.as_f64(),
            other => panic!("unexpected sample {other:?}"),
        })
    })
}

const COUNTER: OpenMetricsType = OpenMetricsType::Counter;

#[tokio::test]
async fn counts_connections_bytes_and_users() {
    let backend = Backend::start("b").await;
    let (gw, addr) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nmtproto: {{ users: {{ alice: {} }}, allow_plain: true }}\nroutes:\n  - sni: a.example.com\n    to: {}\n",
        "ab".repeat(16),
        backend.addr
    ))
    .await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    let hello = client_hello("a.example.com");
    let (name, mut stream) = send_and_identify(addr, &hello).await;
    assert_eq!(name, "b");
    read_exact(&mut stream, hello.len()).await;
    let (_, _open) = send_and_identify(addr, &client_hello("unknown.example.com")).await;
    stream.shutdown().await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);

    // The connection is counted once its task ends, a moment after the client saw the close.
    let closed = [("route", "a.example.com"), ("outcome", "closed")];
    let deadline = tokio::time::Instant::now() + SOON;
    let text = loop {
        let text = scrape(metrics).await;
        if sample(&text, "frontgate_connections", COUNTER, &closed) == Some(1.0) {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let no_route = [("route", "-"), ("outcome", "no_route")];
    assert_eq!(
        sample(&text, "frontgate_connections", COUNTER, &no_route),
        Some(1.0)
    );
    let up = [("route", "a.example.com"), ("direction", "up")];
    assert_eq!(
        sample(&text, "frontgate_bytes", COUNTER, &up),
        Some(hello.len() as f64)
    );
    let open = sample(
        &text,
        "frontgate_connections_open",
        OpenMetricsType::Gauge,
        &[],
    );
    assert_eq!(open, Some(0.0));
    let alice = [("user", "alice")];
    assert_eq!(
        sample(&text, "frontgate_mtproto_user_connections", COUNTER, &alice),
        Some(0.0)
    );

    let stats = request(metrics, "GET", "/stats").await;
    assert_eq!(stats.status, 200, "{stats:?}");
    assert_eq!(stats.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(json["connections"]["a.example.com"]["closed"], 1);
    assert_eq!(json["mtproto_users"]["alice"]["connections"], 0);
}

#[tokio::test]
async fn answers_only_get_on_its_paths() {
    let (gw, _) = gateway("metrics: { listen: 127.0.0.1:0 }\nroutes: []\n").await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    let answer = request(metrics, "GET", "/metrics").await;
    assert_eq!(
        answer.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(answer.body.ends_with("# EOF\n"), "{answer:?}");
    assert_eq!(request(metrics, "GET", "/nope").await.status, 404);
    for path in ["/metrics", "/stats", "/healthz", "/nope"] {
        let answer = request(metrics, "POST", path).await;
        assert_eq!(answer.status, 405, "POST {path}: {answer:?}");
    }
}

#[tokio::test]
async fn healthz_is_ok_while_every_listener_runs() {
    let (gw, _) = gateway("metrics: { listen: 127.0.0.1:0 }\nroutes: []\n").await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    let answer = request(metrics, "GET", "/healthz").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));

    // Shutdown stops the listeners first; a balancer asking now must stop sending traffic.
    assert_eq!(gw.shutdown(Duration::ZERO).await.left, 0);
    let answer = request(metrics, "GET", "/healthz").await;
    assert_eq!(answer.status, 503, "{answer:?}");
}

#[tokio::test]
async fn a_reload_without_metrics_listen_closes_the_endpoint() {
    let (gw, _) = gateway("metrics: { listen: 127.0.0.1:0 }\nroutes: []\n").await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    // The same `listen` as `gateway` gives, so the listener stays as it is.
    let text = "listen: 127.0.0.1:0\nroutes: []\n";
    gw.apply(config::parse(text, "test.yaml").unwrap())
        .await
        .unwrap();
    assert_eq!(gw.metrics_addr(), None);
    // The endpoint's task drops its listener once it sees the stop; then connecting fails.
    let deadline = tokio::time::Instant::now() + SOON;
    while TcpStream::connect(metrics).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
