//! Network policies over real sockets: clients connect from other loopback addresses
//! (127.0.0.2, 127.0.0.3, bound before connect) so the gateway sees distinct sources. A
//! denied address is closed at accept with no byte sent and never reaches the backend; an
//! allowed one is routed; a route's own lists apply once it is chosen; a balancer's client
//! is judged by its PROXY header; a change of the deny file applies live without dropping a
//! live connection, and a bad line is refused at file:line while the old list serves on.
//! Refusals are counted per rule and scope in `/metrics` and `/stats`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use common::*;
use frontgate::config;
use frontgate::server::gateway::Gateway;
use frontgate::server::reload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from `127.0.0.<last>`.
async fn connect_from(last: u8, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    socket.bind(source).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Connects from `127.0.0.<last>`, sends a hello for `sni` and returns the backend's name.
async fn identify_from(last: u8, addr: SocketAddr, sni: &str) -> (String, TcpStream) {
    let mut stream = connect_from(last, addr).await;
    stream.write_all(&client_hello(sni)).await.unwrap();
    let name = read_line(&mut stream).await;
    (name, stream)
}

/// Whether the gateway closes `stream` without sending it a single byte, within [`SOON`]
/// (an end of stream or a reset both count as closed).
async fn closed_without_a_byte(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(SOON, stream.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(n)) => n == 0,
        Ok(Err(_)) => true,
    }
}

/// Whether a client at `127.0.0.<last>` that sends a hello for `sni` is closed without a byte.
async fn refused_after_hello(last: u8, addr: SocketAddr, sni: &str) -> bool {
    let mut stream = connect_from(last, addr).await;
    // The gateway may already have closed (a global refusal does not wait for the hello).
    let _ = stream.write_all(&client_hello(sni)).await;
    closed_without_a_byte(&mut stream).await
}

/// The body of `GET path` on the metrics endpoint.
async fn get(metrics: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(metrics).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: m\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut answer))
        .await
        .expect("the endpoint answers")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_string()
}

/// `/stats`'s refusal counts: scope -> rule -> connections.
async fn refused(metrics: SocketAddr) -> serde_json::Value {
    let stats: serde_json::Value = serde_json::from_str(&get(metrics, "/stats").await).unwrap();
    stats["refused"].clone()
}

/// A timeout far longer than any wait here: a close seen within [`SOON`] is the policy's
/// doing, not a ClientHello timeout.
const PATIENT: &str = "timeouts: { client_hello: 60s }\n";

#[tokio::test]
async fn a_denied_address_is_closed_at_accept_and_others_are_routed() {
    let mut backend = Backend::start("b").await;
    let (gw, addr) = gateway(&format!(
        "{PATIENT}metrics: {{ listen: 127.0.0.1:0 }}\n\
         allow: [127.0.0.0/30]\ndeny: [127.0.0.2]\ndefault: {{ to: {} }}\n",
        backend.addr
    ))
    .await;
    let metrics = gw.metrics_addr().unwrap();

    // Denied: closed before the client sends anything (nothing was waited for or read).
    let mut denied = connect_from(2, addr).await;
    assert!(
        closed_without_a_byte(&mut denied).await,
        "127.0.0.2 is denied"
    );
    // Outside the allow list (127.0.0.0 to 127.0.0.3): refused as not allowed.
    let mut outside = connect_from(5, addr).await;
    assert!(
        closed_without_a_byte(&mut outside).await,
        "127.0.0.5 is not allowed"
    );
    // A denied client that does send its hello gets no byte back either.
    assert!(refused_after_hello(2, addr, "denied.test").await);

    // Allowed: routed as usual; the first connection the backend saw is this one.
    let (name, mut allowed) = identify_from(3, addr, "allowed.test").await;
    assert_eq!(name, "b");
    allowed.shutdown().await.unwrap();
    let seen = backend.next_seen().await;
    assert!(
        seen.bytes.windows(12).any(|w| w == b"allowed.test"),
        "no denied connection reached the backend"
    );

    assert_eq!(
        refused(metrics).await,
        serde_json::json!({"global": {"deny": 2, "not_allowed": 1}})
    );
    let text = get(metrics, "/metrics").await;
    assert!(
        text.contains("frontgate_refused_connections_total{rule=\"deny\",scope=\"global\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "frontgate_refused_connections_total{rule=\"not_allowed\",scope=\"global\"} 1\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_denies_once_it_is_chosen() {
    let backend = Backend::start("b").await;
    let (gw, addr) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nroutes:\n\
         \x20 - sni: a.test\n    to: {0}\n    deny: [127.0.0.3]\n\
         \x20 - sni: b.test\n    to: {0}\n\
         default: {{ to: {0}, allow: [127.0.0.3] }}\n",
        backend.addr
    ))
    .await;
    let metrics = gw.metrics_addr().unwrap();

    assert!(refused_after_hello(3, addr, "a.test").await);
    assert_eq!(
        identify_from(3, addr, "b.test").await.0,
        "b",
        "other routes serve it"
    );
    assert_eq!(
        identify_from(2, addr, "a.test").await.0,
        "b",
        "others may use a.test"
    );
    // `default:` allows 127.0.0.3 only.
    assert_eq!(identify_from(3, addr, "other.test").await.0, "b");
    assert!(refused_after_hello(2, addr, "other.test").await);

    assert_eq!(
        refused(metrics).await,
        serde_json::json!({"a.test": {"deny": 1}, "default": {"not_allowed": 1}})
    );
}

#[tokio::test]
async fn a_balancers_client_is_judged_by_its_proxy_header() {
    let backend = Backend::start("b").await;
    let (_gw, addr) = gateway(&format!(
        "accept_proxy_protocol_from: [127.0.0.1]\ndeny: [198.51.100.7]\ndefault: {{ to: {} }}\n",
        backend.addr
    ))
    .await;
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n");

    let mut denied = TcpStream::connect(addr).await.unwrap();
    let mut wire = header("198.51.100.7").into_bytes();
    wire.extend_from_slice(&client_hello("a.test"));
    denied.write_all(&wire).await.unwrap();
    assert!(closed_without_a_byte(&mut denied).await);

    let mut wire = header("198.51.100.8").into_bytes();
    wire.extend_from_slice(&client_hello("a.test"));
    let (name, _stream) = send_and_identify(addr, &wire).await;
    assert_eq!(name, "b", "the balancer itself is not judged by the list");
}

/// Writes the file as editors and `update-ipsets` do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn the_deny_file_applies_live_and_a_bad_one_is_refused() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let deny = dir.path().join("deny.netset");
    std::fs::write(&deny, "# FireHOL-style list\n127.0.0.2\n\n10.0.0.0/8\n").unwrap();
    std::fs::write(
        &routes,
        format!(
            "listen: 127.0.0.1:0\n{PATIENT}metrics: {{ listen: 127.0.0.1:0 }}\n\
             deny_file: {}\ndefault: {{ to: {} }}\n",
            deny.display(),
            backend.addr
        ),
    )
    .unwrap();
    let gw = Arc::new(
        Gateway::start(config::load(&routes).unwrap(), None)
            .await
            .unwrap(),
    );
    let addr = gw.local_addrs().await[0];
    let metrics = gw.metrics_addr().unwrap();
    let watcher = tokio::spawn(reload::watch(routes.clone(), gw.clone()));

    let mut denied = connect_from(2, addr).await;
    assert!(closed_without_a_byte(&mut denied).await);
    let (name, mut live) = identify_from(3, addr, "a.test").await;
    assert_eq!(name, "b");

    // The list now names 127.0.0.3 instead: the next connection from it is refused. (Each
    // try writes a new revision: the watcher may not be watching yet when the first lands.)
    let deadline = tokio::time::Instant::now() + SOON;
    for revision in 0.. {
        replace(&deny, &format!("# revision {revision}\n127.0.0.3/32\n"));
        tokio::time::sleep(reload::SETTLE * 2).await;
        if refused_after_hello(3, addr, "a.test").await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new deny file never applied"
        );
    }
    // 127.0.0.2 is no longer listed; the live connection of 127.0.0.3 was not dropped.
    assert_eq!(identify_from(2, addr, "a.test").await.0, "b");
    live.write_all(b"still here").await.unwrap();
    let hello_len = client_hello("a.test").len();
    assert_eq!(
        read_exact(&mut live, hello_len + 10).await[hello_len..],
        *b"still here"
    );
    live.shutdown().await.unwrap();
    drop(live);

    // A bad line: refused at file:line, and the running list keeps serving.
    replace(&deny, "127.0.0.3\n# a comment\n127.0.0.2/33\n");
    let err = reload::reload(&routes, &gw, "test").await.unwrap_err();
    let at = format!("{}:3: `127.0.0.2/33` is not a network", deny.display());
    assert!(err.to_string().contains(&at), "{err}");
    tokio::time::sleep(reload::SETTLE_AT_MOST).await;
    assert_eq!(identify_from(2, addr, "a.test").await.0, "b");
    let mut still_denied = connect_from(3, addr).await;
    assert!(closed_without_a_byte(&mut still_denied).await);

    // The three refusals: the first denied client, the probe that saw the change, the last.
    assert_eq!(
        refused(metrics).await,
        serde_json::json!({"global": {"deny_file": 3}})
    );
    watcher.abort();
}

/// `frontgate check` names a bad deny-file line at file:line and a bad network in the route
/// file at line:column, and fails.
#[test]
fn check_reports_bad_networks_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let deny = dir.path().join("deny.netset");
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_frontgate"))
            .args(["check", "--config"])
            .arg(&routes)
            .output()
            .unwrap()
    };
    std::fs::write(&deny, "192.0.2.0/24\n\n2001:db8::/129\n").unwrap();
    std::fs::write(
        &routes,
        format!(
            "listen: 127.0.0.1:8443\ndeny_file: {}\ndefault: {{ to: 127.0.0.1:9 }}\n",
            deny.display()
        ),
    )
    .unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:3: `2001:db8::/129`", deny.display())),
        "{stderr}"
    );

    std::fs::write(&deny, "192.0.2.0/24\n").unwrap();
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("network policy: deny_file"), "{stdout}");

    std::fs::write(
        &routes,
        "listen: 127.0.0.1:8443\ndefault:\n  to: 127.0.0.1:9\n  allow: [127.0.0.1, 300.0.0.0/8]\n",
    )
    .unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:4:22: ", routes.display())),
        "{stderr}"
    );
    assert!(stderr.contains("invalid network `300.0.0.0/8`"), "{stderr}");
}
