//! SNI routing over real loopback sockets: every rule of the route table, hellos split every
//! possible way, PROXY protocol both directions, limits and timeouts.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Four backends and a gateway routing to them by name.
struct Setup {
    exact: Backend,
    wildcard: Backend,
    deep: Backend,
    fallback: Backend,
    plain: Backend,
    addr: std::net::SocketAddr,
    _gateway: frontgate::server::gateway::Gateway,
}

async fn setup() -> Setup {
    let exact = Backend::start("exact").await;
    let wildcard = Backend::start("wildcard").await;
    let deep = Backend::start("deep").await;
    let fallback = Backend::start("default").await;
    let plain = Backend::start("plain").await;
    let (gateway, addr) = gateway(&format!(
        "routes:\n  - sni: a.example.com\n    to: {}\n  - sni: ['*.example.com', example.com]\n    to: {}\n  - sni: '*.deep.example.com'\n    to: {}\ndefault: {{ to: {} }}\nnon_tls: {{ to: {} }}\n",
        exact.addr, wildcard.addr, deep.addr, fallback.addr, plain.addr
    ))
    .await;
    Setup {
        exact,
        wildcard,
        deep,
        fallback,
        plain,
        addr,
        _gateway: gateway,
    }
}

#[tokio::test]
async fn each_name_reaches_its_backend_with_the_hello_untouched() {
    let mut s = setup().await;
    let cases = [
        ("a.example.com", "exact"),
        ("A.EXAMPLE.com", "exact"),
        ("b.example.com", "wildcard"),
        ("example.com", "wildcard"),
        ("x.y.example.com", "wildcard"),
        ("x.deep.example.com", "deep"),
        ("other.org", "default"),
        ("127.0.0.1", "default"), // an IP: rustls sends no SNI
    ];
    for (sni, expected) in cases {
        let hello = client_hello(sni);
        let (name, mut stream) = send_and_identify(s.addr, &hello).await;
        assert_eq!(name, expected, "{sni}");
        assert_eq!(
            read_exact(&mut stream, hello.len()).await,
            hello,
            "{sni}: echoed unchanged"
        );
        stream.shutdown().await.unwrap();
        assert!(closed_within(&mut stream, SOON).await);
        let backend = match expected {
            "exact" => &mut s.exact,
            "wildcard" => &mut s.wildcard,
            "deep" => &mut s.deep,
            _ => &mut s.fallback,
        };
        assert_eq!(
            backend.next_seen().await.bytes,
            hello,
            "{sni}: backend got the client's bytes"
        );
    }
}

#[tokio::test]
async fn non_tls_bytes_go_to_non_tls() {
    let mut s = setup().await;
    let (name, mut stream) = send_and_identify(s.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(name, "plain");
    assert_eq!(read_exact(&mut stream, 18).await, b"GET / HTTP/1.1\r\n\r\n");
    stream.shutdown().await.unwrap();
    assert_eq!(s.plain.next_seen().await.bytes, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn without_default_unknown_names_are_closed() {
    let backend = Backend::start("only").await;
    let (_gw, addr) = gateway(&format!(
        "routes:\n  - sni: a.example.com\n    to: {}\n",
        backend.addr
    ))
    .await;
    let (name, _) = send_and_identify(addr, &client_hello("b.example.com")).await;
    assert_eq!(name, "", "closed without reaching any backend");
    let (name, _) = send_and_identify(addr, b"SSH-2.0-probe\r\n").await;
    assert_eq!(name, "", "non-TLS without non_tls route is closed");
}

#[tokio::test]
async fn hello_in_one_byte_writes_is_routed() {
    let s = setup().await;
    let hello = client_hello("a.example.com");
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in &hello {
        stream.write_all(&[*byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    assert_eq!(read_line(&mut stream).await, "exact");
    assert_eq!(read_exact(&mut stream, hello.len()).await, hello);
}

#[tokio::test]
async fn hello_split_over_two_records_is_routed() {
    let s = setup().await;
    let one = client_hello("x.deep.example.com");
    let split = split_into_records(&one, one.len() / 2);
    assert_eq!(split.len(), one.len() + 5, "two records");
    let (name, mut stream) = send_and_identify(s.addr, &split).await;
    assert_eq!(name, "deep");
    assert_eq!(
        read_exact(&mut stream, split.len()).await,
        split,
        "records replayed as sent"
    );
}

#[tokio::test]
async fn garbage_after_a_handshake_byte_takes_the_default_route() {
    let s = setup().await;
    let garbage = [0x16, 0x03, 0x01, 0x00, 0x05, 0x07, 0x00, 0x00, 0x01, 0xff];
    let (name, mut stream) = send_and_identify(s.addr, &garbage).await;
    assert_eq!(name, "default");
    assert_eq!(read_exact(&mut stream, garbage.len()).await, garbage);
}

#[tokio::test]
async fn outbound_proxy_headers_carry_the_client_address() {
    for version in ["v1", "v2"] {
        let mut backend = Backend::expecting_proxy_header(version).await;
        let (_gw, addr) = gateway(&format!(
            "default: {{ to: {}, proxy_protocol: {version} }}\n",
            backend.addr
        ))
        .await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let client = stream.local_addr().unwrap();
        let hello = client_hello("anything.test");
        stream.write_all(&hello).await.unwrap();
        assert_eq!(read_line(&mut stream).await, version);
        stream.shutdown().await.unwrap();
        assert!(closed_within(&mut stream, SOON).await);
        let seen = backend.next_seen().await;
        assert_eq!(seen.proxied_client, Some(client), "{version}");
        assert_eq!(seen.bytes, hello, "{version}: the hello follows the header");
    }
}

#[tokio::test]
async fn inbound_proxy_header_from_a_trusted_peer_sets_the_client() {
    let mut backend = Backend::expecting_proxy_header("b").await;
    let (_gw, addr) = gateway(&format!(
        "accept_proxy_protocol_from: [127.0.0.1/32]\ndefault: {{ to: {}, proxy_protocol: v2 }}\n",
        backend.addr
    ))
    .await;
    let mut first = b"PROXY TCP4 203.0.113.50 10.0.0.1 41000 443\r\n".to_vec();
    first.extend_from_slice(&client_hello("x.test"));
    let (name, mut stream) = send_and_identify(addr, &first).await;
    assert_eq!(name, "b");
    stream.shutdown().await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);
    let seen = backend.next_seen().await;
    assert_eq!(
        seen.proxied_client,
        Some("203.0.113.50:41000".parse().unwrap())
    );
    assert_eq!(
        seen.bytes,
        first[44..],
        "the inbound header is consumed, the hello forwarded"
    );

    // From the trusted peer the header is required.
    let (name, _) = send_and_identify(addr, &client_hello("x.test")).await;
    assert_eq!(name, "", "a trusted peer without a header is refused");
}

#[tokio::test]
async fn inbound_proxy_header_from_an_untrusted_peer_is_just_bytes() {
    let mut plain = Backend::start("plain").await;
    let (_gw, addr) = gateway(&format!(
        "accept_proxy_protocol_from: [127.0.0.2/32]\nnon_tls: {{ to: {} }}\n",
        plain.addr
    ))
    .await;
    let header = b"PROXY TCP4 203.0.113.50 10.0.0.1 41000 443\r\n";
    let (name, mut stream) = send_and_identify(addr, header).await;
    assert_eq!(
        name, "plain",
        "an untrusted header is not TLS: it goes to non_tls"
    );
    stream.shutdown().await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);
    assert_eq!(
        plain.next_seen().await.bytes,
        header,
        "forwarded verbatim, not interpreted"
    );
}

#[tokio::test]
async fn slow_hello_hits_the_client_hello_timeout() {
    let backend = Backend::start("b").await;
    let (_gw, addr) = gateway(&format!(
        "timeouts: {{ client_hello: 300ms }}\ndefault: {{ to: {} }}\n",
        backend.addr
    ))
    .await;
    let hello = client_hello("a.test");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello[..20]).await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut stream, SOON).await,
        "closed by the gateway"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn idle_relay_is_closed_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let backend = Backend::start("b").await;
    let (_gw, addr) = gateway(&format!(
        "timeouts: {{ idle: {}ms }}\ndefault: {{ to: {} }}\n",
        IDLE.as_millis(),
        backend.addr
    ))
    .await;
    let (name, mut stream) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!(name, "b");
    let hello_len = client_hello("a.test").len();
    read_exact(&mut stream, hello_len).await;
    // Traffic keeps it open for twice the timeout: a byte every tenth of it, so a loaded
    // box has to stall for the whole timeout before the relay may close.
    let open_since = std::time::Instant::now();
    while open_since.elapsed() < 2 * IDLE {
        tokio::time::sleep(IDLE / 10).await;
        stream.write_all(b"x").await.unwrap();
        assert_eq!(read_exact(&mut stream, 1).await, b"x");
    }
    // ...silence closes it, and not before the timeout.
    let silent_since = std::time::Instant::now();
    assert!(closed_within(&mut stream, SOON).await);
    let silent = silent_since.elapsed();
    assert!(
        silent >= IDLE * 9 / 10,
        "closed after {silent:?} of silence"
    );
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_once() {
    let backend = Backend::start("b").await;
    let (gw, addr) = gateway(&format!(
        "limits: {{ max_connections: 2 }}\ndefault: {{ to: {} }}\n",
        backend.addr
    ))
    .await;
    let (a, _s1) = send_and_identify(addr, &client_hello("a.test")).await;
    let (b, _s2) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!((a.as_str(), b.as_str()), ("b", "b"));
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut third, SOON).await,
        "third connection refused"
    );
    assert_eq!(gw.open_connections(), 2);
    drop(_s1);
    // The slot is freed once the first relay ends, and the next connection gets it.
    eventually("the first relay's slot is freed", || {
        gw.open_connections() < 2
    })
    .await;
    let (name, _s3) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!(name, "b", "a freed slot admits the next connection");
}

#[tokio::test]
async fn per_ip_limit_counts_one_address() {
    let backend = Backend::start("b").await;
    let (_gw, addr) = gateway(&format!(
        "limits: {{ max_connections_per_ip: 1 }}\ndefault: {{ to: {} }}\n",
        backend.addr
    ))
    .await;
    let (first, _keep) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!(first, "b");
    let (second, _) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!(second, "", "second connection from 127.0.0.1 refused");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(addr).await.unwrap();
    other.write_all(&client_hello("a.test")).await.unwrap();
    assert_eq!(
        read_line(&mut other).await,
        "b",
        "another address has its own budget"
    );
}

#[tokio::test]
async fn refused_backend_falls_through_to_the_next() {
    let live = Backend::start("second").await;
    let dead = RefusingPort::new();
    let (_gw, addr) = gateway(&format!(
        "default: {{ to: [{}, {}] }}\n",
        dead.addr(),
        live.addr
    ))
    .await;
    let (name, _) = send_and_identify(addr, &client_hello("a.test")).await;
    assert_eq!(name, "second");
}

#[tokio::test]
async fn all_backends_down_closes_the_client_cleanly() {
    let dead = RefusingPort::new();
    let (_gw, addr) = gateway(&format!("default: {{ to: {} }}\n", dead.addr())).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&client_hello("a.test")).await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);
}

#[tokio::test]
async fn half_close_reaches_the_backend_and_its_reply_still_arrives() {
    let mut backend = Backend::start("b").await;
    let (_gw, addr) = gateway(&format!("default: {{ to: {} }}\n", backend.addr)).await;
    let hello = client_hello("a.test");
    let (name, mut stream) = send_and_identify(addr, &hello).await;
    assert_eq!(name, "b");
    stream.write_all(b"last words").await.unwrap();
    stream.shutdown().await.unwrap();
    // The backend echoes after seeing our EOF and then closes: we get everything, then EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(SOON, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, [hello.as_slice(), b"last words"].concat());
    assert_eq!(
        backend.next_seen().await.bytes,
        [hello.as_slice(), b"last words"].concat()
    );
}

/// The events the gateway logs, as text.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Every event of this test binary from the first call on (the process-wide subscriber:
    /// a thread's own default misses events when other tests log on other threads).
    fn global() -> &'static CapturedLog {
        static LOG: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log = CapturedLog::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
            log
        })
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The route points at the gateway itself; the file's listen differs from the real one (as
/// with --listen), so `check` cannot see the loop.
///
/// The schedule is forced so the other end of our own backend connection is accepted, and
/// judged, before the connecting task runs again: this test runs on a current-thread runtime,
/// and while it holds the thread it hands the hello to the first connection and connects a
/// second client. Both wake in one tick, the first connection first: it connects to the
/// gateway (loopback completes the handshake inside `connect`) and waits to be told so; then
/// the accept loop takes the second client and our own connection together, and the latter is
/// checked before `connect` has returned to its task.
#[tokio::test]
async fn a_connection_back_from_our_own_backend_leg_is_refused() {
    let log = CapturedLog::global();
    let port = free_port();
    let text = format!("listen: 127.0.0.1:1\ndefault: {{ to: 127.0.0.1:{port} }}\n");
    let config = frontgate::config::parse(&text, "loop.yaml").unwrap();
    let listen = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let gw = frontgate::server::gateway::Gateway::start(config, Some(listen))
        .await
        .unwrap();
    let addr = gw.local_addrs().await[0];

    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let deadline = tokio::time::Instant::now() + SOON;
    // Admitted and so, on this thread, waiting for its hello.
    while gw.open_connections() < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // No await from here to the read below: the gateway runs only once both are done.
    std::io::Write::write_all(&mut client, &client_hello("a.test")).unwrap();
    let bystander = std::net::TcpStream::connect(addr).unwrap();
    client.set_nonblocking(true).unwrap();
    let mut client = TcpStream::from_std(client).unwrap();
    assert!(
        closed_within(&mut client, SOON).await,
        "the loop is cut, not amplified"
    );
    drop((client, bystander));
    while gw.open_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections left spinning"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client's connection is forwarded once, to the gateway itself, and that hop is
    // refused at once. A second forward would mean the loop went round again.
    let forwarded = log.lines_with(&format!("backend=127.0.0.1:{port}"));
    let refused = log.lines_with("fronting loop");
    let all = log.lines_with("connection closed").join("\n");
    assert_eq!(refused.len(), 1, "one refused hop:\n{all}");
    assert!(
        refused[0].contains("outcome=refused: connection from frontgate's own backend connection"),
        "{}",
        refused[0]
    );
    assert_eq!(forwarded.len(), 1, "no second hop:\n{all}");
}
