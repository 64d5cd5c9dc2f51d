//! Backend pools over real loopback sockets: a blackholed server is skipped without waiting
//! once a failed connect (passive) or the active check has marked it down; it comes back after
//! `rise` good checks; round robin follows the weights; least_conn spreads long connections;
//! client_hash keeps a client address on one server; backups serve only while every primary
//! is down; the metrics say which server is up. And DC health: a dead DC address is skipped
//! after its first failure.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::fake_dc;
use common::mtproto_client as client;
use common::test_ca::TestCa;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The connect timeout of the gateways here: a connection that waited on a blackholed server
/// takes at least this long.
const CONNECT: Duration = Duration::from_secs(3);

/// A loopback address where a connect hangs: a listener that never accepts, with its accept
/// queue filled, so the kernel drops further SYNs (as a firewall that drops would).
struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    async fn new() -> Blackhole {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("the blackhole refused: {e}"),
                Err(_) => break,
            }
            assert!(queued.len() < 16, "the accept queue never filled");
        }
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A backend that answers each connection with `name\n` and holds it until the client
/// closes; stopping it closes its listener (the port then refuses), open connections stay.
struct Named {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Named {
    async fn start(name: &str) -> Named {
        Self::on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn on(name: &str, addr: SocketAddr) -> Named {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let line = format!("{name}\n");
        let accept = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let line = line.clone();
                tokio::spawn(async move {
                    if stream.write_all(line.as_bytes()).await.is_ok() {
                        let mut sink = [0u8; 64];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                });
            }
        });
        Named { addr, accept }
    }

    /// Closes the listener (once this returns, the port refuses) and gives its address.
    async fn stop(self) -> SocketAddr {
        self.accept.abort();
        // The aborted task is dropped, and its listener with it, before this resolves.
        let _ = self.accept.await;
        self.addr
    }
}

/// A gateway whose `non_tls:` route goes to `to` (YAML flow text), with metrics.
async fn gateway_to(to: &str) -> (frontgate::server::gateway::Gateway, SocketAddr, SocketAddr) {
    let (gateway, addr) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\ntimeouts: {{ connect: {}s }}\nnon_tls: {{ to: {to} }}\n",
        CONNECT.as_secs()
    ))
    .await;
    let metrics = gateway.metrics_addr().expect("metrics endpoint");
    (gateway, addr, metrics)
}

/// Connects from `source` (any loopback address), sends a line and returns the backend's
/// name, the stream (open) and how long it took.
async fn visit_from(gateway: SocketAddr, source: IpAddr) -> (String, TcpStream, Duration) {
    let started = Instant::now();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(gateway).await.unwrap();
    stream.write_all(b"hello\n").await.unwrap();
    let name = tokio::time::timeout(CONNECT * 4, read_line(&mut stream))
        .await
        .expect("a backend answered");
    (name, stream, started.elapsed())
}

async fn visit(gateway: SocketAddr) -> (String, TcpStream, Duration) {
    visit_from(gateway, IpAddr::from([127, 0, 0, 1])).await
}

/// `/stats`' view of one pool server of the `non_tls` route.
async fn server_stats(metrics: SocketAddr, server: SocketAddr) -> serde_json::Value {
    stats_json(metrics).await["backends"]["non_tls"]["servers"][server.to_string()].clone()
}

async fn is_up(metrics: SocketAddr, server: SocketAddr) -> bool {
    server_stats(metrics, server).await["up"]
        .as_bool()
        .expect("the server is in /stats")
}

/// Waits (bounded by [`SOON`]) until `server` is marked `up`.
async fn until_up_is(metrics: SocketAddr, server: SocketAddr, up: bool) {
    let deadline = Instant::now() + SOON;
    while is_up(metrics, server).await != up {
        assert!(Instant::now() < deadline, "{server} never became up={up}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_marks_a_server_down_and_later_connections_skip_it() {
    let hole = Blackhole::new().await;
    let b = Named::start("b").await;
    let (_gateway, addr, metrics) = gateway_to(&format!("[{}, {}]", hole.addr, b.addr)).await;
    let (name, _first, took) = visit(addr).await;
    assert_eq!(name, "b");
    assert!(
        took >= CONNECT,
        "the first connection waited on the blackhole: {took:?}"
    );
    assert!(!is_up(metrics, hole.addr).await);
    for _ in 0..5 {
        let (name, _stream, took) = visit(addr).await;
        assert_eq!(name, "b");
        assert!(took < CONNECT, "a later connection waited {took:?}");
    }
    let hole_stats = server_stats(metrics, hole.addr).await;
    assert_eq!(hole_stats["failures"], 1, "never tried again: {hole_stats}");
    assert_eq!(server_stats(metrics, b.addr).await["connects"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_check_marks_a_blackhole_down_before_any_client_waits_and_sees_recovery() {
    let hole = Blackhole::new().await;
    let b = Named::start("b").await;
    // `a` refuses at first, then starts listening: `rise` checks bring it back.
    let a_addr = Named::start("a").await.stop().await;
    let to = format!(
        "{{ servers: [{{addr: {a_addr}}}, {{addr: '{}'}}, {{addr: '{}'}}], \
         check: {{interval: 200ms, timeout: 300ms, fall: 2, rise: 3}} }}",
        hole.addr, b.addr
    );
    let started = Instant::now();
    let (_gateway, addr, metrics) = gateway_to(&to).await;
    until_up_is(metrics, hole.addr, false).await;
    // `interval × fall` plus the second check's own timeout, with room for a loaded machine.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "marked down only after {took:?}"
    );
    until_up_is(metrics, a_addr, false).await;
    let hole_failures = server_stats(metrics, hole.addr).await["failures"]
        .as_u64()
        .unwrap();
    assert!(hole_failures >= 2, "fall: 2 took {hole_failures} failures");
    for _ in 0..5 {
        let (name, _stream, took) = visit(addr).await;
        assert_eq!(name, "b", "balance: first skips the two down servers");
        assert!(took < CONNECT, "a connection waited {took:?}");
    }
    let _a = Named::on("a", a_addr).await;
    let since = Instant::now();
    until_up_is(metrics, a_addr, true).await;
    // Three passes 200ms apart span 400ms; the first may have run just before `since`.
    assert!(
        since.elapsed() >= Duration::from_millis(350),
        "rise: 3 at 200ms intervals needs three checks"
    );
    let (name, _stream, _) = visit(addr).await;
    assert_eq!(name, "a", "the first server takes traffic again");
    let hole_failures_now = server_stats(metrics, hole.addr).await["failures"]
        .as_u64()
        .unwrap();
    let exposition = http_get(metrics, "/metrics").await;
    for (server, up) in [(a_addr, 1), (hole.addr, 0), (b.addr, 1)] {
        let line = format!("frontgate_backend_up{{route=\"non_tls\",backend=\"{server}\"}} {up}");
        assert!(
            exposition.contains(&line),
            "{line} missing in\n{exposition}"
        );
    }
    assert!(exposition.contains(&format!(
        "frontgate_backend_connect_seconds_count{{route=\"non_tls\",backend=\"{a_addr}\"}} 1"
    )));
    // The checks keep failing: at least as many failures as /stats showed just before.
    let prefix = format!(
        "frontgate_backend_failures_total{{route=\"non_tls\",backend=\"{}\"}} ",
        hole.addr
    );
    let failures: u64 = exposition
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} missing in\n{exposition}"))
        .parse()
        .unwrap();
    assert!(
        failures >= hole_failures_now,
        "{failures} < {hole_failures_now}"
    );
    // The backend families parse as OpenMetrics (on their own: the parser refuses the empty
    // per-user families a gateway without users writes).
    let body: String = exposition
        .lines()
        .filter(|line| line.contains("frontgate_backend_") || *line == "# EOF")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(body.contains("# TYPE frontgate_backend_connect_seconds histogram"));
    if let Err(e) = openmetrics_parser::openmetrics::parse_openmetrics(&body) {
        panic!("not OpenMetrics text: {e:?}\n{body}");
    }
}

/// How many of `names` are each name.
fn tally(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn within(count: usize, expected: usize, tolerance: f64) -> bool {
    (count as f64 - expected as f64).abs() <= expected as f64 * tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_connections_by_weight() {
    let servers = [
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    ];
    let to = format!(
        "{{ balance: round_robin, servers: [{{addr: '{}'}}, {{addr: '{}', weight: 2}}, \
         {{addr: '{}', weight: 3}}] }}",
        servers[0].addr, servers[1].addr, servers[2].addr
    );
    let (_gateway, addr, _) = gateway_to(&to).await;
    let mut names = Vec::new();
    for _ in 0..300 {
        names.push(visit(addr).await.0);
    }
    let counts = tally(names);
    for (name, expected) in [("a", 50), ("b", 100), ("c", 150)] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            within(got, expected, 0.15),
            "{name}: {got} of 300, {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_long_connections_and_fills_the_idle_server() {
    let servers = [
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    ];
    let to = format!(
        "{{ balance: least_conn, servers: [{{addr: '{}'}}, {{addr: '{}'}}, {{addr: '{}'}}] }}",
        servers[0].addr, servers[1].addr, servers[2].addr
    );
    let (_gateway, addr, metrics) = gateway_to(&to).await;
    let mut open: Vec<(String, TcpStream)> = Vec::new();
    for _ in 0..100 {
        let (name, stream, _) = visit(addr).await;
        open.push((name, stream));
    }
    let counts = tally(open.iter().map(|(n, _)| n.clone()));
    for name in ["a", "b", "c"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            within(got, 33, 0.10),
            "{name}: {got} of 99 long connections, {counts:?}"
        );
    }
    // Close b's connections: b is idle, so the next ones all go to it.
    open.retain(|(name, _)| name != "b");
    let deadline = Instant::now() + SOON;
    while server_stats(metrics, servers[1].addr).await["active"] != 0 {
        assert!(Instant::now() < deadline, "b's connections never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let (name, stream, _) = visit(addr).await;
        assert_eq!(name, "b", "least_conn picks the idle server");
        open.push((name, stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hash_keeps_each_client_address_on_one_server() {
    let servers = [
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    ];
    let to = format!(
        "{{ balance: client_hash, servers: [{{addr: '{}'}}, {{addr: '{}'}}, {{addr: '{}'}}] }}",
        servers[0].addr, servers[1].addr, servers[2].addr
    );
    let (_gateway, addr, _) = gateway_to(&to).await;
    let mut chosen = HashMap::new();
    for last in 2..=9u8 {
        let source = IpAddr::from([127, 0, 0, last]);
        let names: Vec<String> = {
            let mut names = Vec::new();
            for _ in 0..10 {
                names.push(visit_from(addr, source).await.0);
            }
            names
        };
        assert!(names.iter().all(|n| *n == names[0]), "{source}: {names:?}");
        chosen.insert(source, names[0].clone());
    }
    let distinct: std::collections::HashSet<&String> = chosen.values().collect();
    assert!(
        distinct.len() >= 2,
        "every client on one server: {chosen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_serve_only_while_every_primary_is_down() {
    let first = Named::start("first").await;
    let second = Named::start("second").await;
    let backup = Named::start("backup").await;
    let to = format!(
        "{{ servers: [{{addr: '{}'}}, {{addr: '{}'}}, {{addr: '{}', backup: true}}], \
         check: {{interval: 200ms, timeout: 300ms, fall: 1, rise: 1}} }}",
        first.addr, second.addr, backup.addr
    );
    let (_gateway, addr, metrics) = gateway_to(&to).await;
    assert_eq!(visit(addr).await.0, "first");
    let first_addr = first.stop().await;
    until_up_is(metrics, first_addr, false).await;
    for _ in 0..5 {
        assert_eq!(visit(addr).await.0, "second", "a primary is up: no backup");
    }
    let second_addr = second.stop().await;
    until_up_is(metrics, second_addr, false).await;
    for _ in 0..5 {
        assert_eq!(visit(addr).await.0, "backup");
    }
    let _second = Named::on("second", second_addr).await;
    until_up_is(metrics, second_addr, true).await;
    assert_eq!(visit(addr).await.0, "second", "back to the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_down_still_tries_them_all_in_order() {
    let first = Named::start("first").await;
    let second = Named::start("second").await;
    let to = format!(
        "{{ servers: [{{addr: '{}'}}, {{addr: '{}'}}], \
         check: {{interval: 10s, timeout: 300ms, fall: 1, rise: 1}} }}",
        first.addr, second.addr
    );
    let (_gateway, addr, metrics) = gateway_to(&to).await;
    let (first_addr, second_addr) = (first.stop().await, second.stop().await);
    // The next check is 10 s away: the failed connects mark both down.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    refused.write_all(b"hello\n").await.unwrap();
    assert!(closed_within(&mut refused, SOON).await);
    assert!(!is_up(metrics, first_addr).await && !is_up(metrics, second_addr).await);
    let _second = Named::on("second", second_addr).await;
    assert_eq!(
        visit(addr).await.0,
        "second",
        "with every server down, each is tried, so a recovered one is found before the check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dc_address_is_skipped_after_its_first_failure() {
    const SECRET: [u8; 16] = [0xa1; 16];
    const SNI: &str = "proxy.example.com";
    let hole = Blackhole::new().await;
    let mut dc = fake_dc::spawn().await;
    let site = Backend::start("site").await;
    let (_gateway, addr) = gateway(&format!(
        "timeouts: {{ connect: {}s }}\nmtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: ['{}', '{}'] }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
        CONNECT.as_secs(),
        hex::encode(SECRET),
        hole.addr,
        dc.addr,
        site.addr
    ))
    .await;
    let first = dc_session(addr, &SECRET, SNI, &mut dc).await;
    assert!(
        first >= CONNECT,
        "the first session waited on the dead address: {first:?}"
    );
    for _ in 0..3 {
        let took = dc_session(addr, &SECRET, SNI, &mut dc).await;
        assert!(took < CONNECT, "a later session waited {took:?}");
    }
}

/// One fake-TLS session that echoes through the DC; how long it took.
async fn dc_session(
    addr: SocketAddr,
    secret: &[u8; 16],
    sni: &str,
    dc: &mut fake_dc::FakeDc,
) -> Duration {
    let started = Instant::now();
    let (mut w, mut r, _) =
        client::connect_faketls(addr, secret, sni, client::PADDED, 2, false).await;
    client::echo(&mut w, &mut r, 1024).await;
    dc.seen.recv().await.expect("the fake DC saw the session");
    started.elapsed()
}

/// A TLS site (TLS 1.3, as a mirrored site is) that completes handshakes and reports the
/// server name each one asked for.
async fn tls_site(name: &str) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (addr, asked, _) = counted_tls_site(name).await;
    (addr, asked)
}

/// [`tls_site`], also counting the TCP connections it accepted (complete handshakes or not:
/// a mirror reads the first flight and leaves).
async fn counted_tls_site(
    name: &str,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    std::sync::Arc<AtomicUsize>,
) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = TestCa::new().leaf(name);
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Relaxed);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let asked = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    let _ = tx.send(asked);
                }
            });
        }
    });
    (addr, rx, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_flight_mirrors_the_server_the_pool_gives_not_the_first_written() {
    const SECRET: [u8; 16] = [0xa1; 16];
    const SNI: &str = "proxy.example.com";
    // The backup is written first: a mirror dialling `to` in the order written would ask it.
    let (backup, _, backup_accepted) = counted_tls_site(SNI).await;
    let (primary, _, primary_accepted) = counted_tls_site(SNI).await;
    let mut dc = fake_dc::spawn().await;
    let (_gateway, addr) = gateway(&format!(
        "mtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: ['{}'] }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: live\n    to: {{ servers: [{{addr: '{backup}', backup: true}}, {{addr: '{primary}'}}] }}\n",
        hex::encode(SECRET),
        dc.addr,
    ))
    .await;
    // The start-up probe and site download have asked the primary.
    eventually("the start-up probe", || primary_accepted.load(Relaxed) >= 2).await;
    let before = primary_accepted.load(Relaxed);
    // The session's hello is mirrored (live). The kit's hello gets an alert from this
    // rustls site, which the route then remembers as not mirrorable: one mirror is all a
    // session here causes.
    dc_session(addr, &SECRET, SNI, &mut dc).await;
    assert_eq!(
        primary_accepted.load(Relaxed),
        before + 1,
        "the session's flight was mirrored from the primary"
    );
    assert_eq!(
        backup_accepted.load(Relaxed),
        0,
        "the backup server was never asked while the primary is up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtproto_routes_site_is_checked_with_a_tls_handshake() {
    const SNI: &str = "proxy.example.com";
    let (site, mut handshakes) = tls_site(SNI).await;
    // Accepts TCP, but speaks no TLS: a TCP connect check would call it up.
    let plain = Named::start("plain").await;
    let pool = format!(
        "{{ servers: [{{addr: '{}'}}, {{addr: '{site}'}}], check: {{interval: 200ms, timeout: 500ms, fall: 1, rise: 1}} }}",
        plain.addr
    );
    let (gateway, _) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nmtproto:\n  users: {{ alice: {} }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {pool}\nnon_tls: {{ to: {pool} }}\n",
        hex::encode([0xa1u8; 16]),
    ))
    .await;
    let metrics = gateway.metrics_addr().unwrap();
    let asked = tokio::time::timeout(SOON, handshakes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asked, SNI, "the check sends the route's name");
    let route_server = |stats: &serde_json::Value, route: &str, server: SocketAddr| {
        stats["backends"][route]["servers"][server.to_string()]["up"].clone()
    };
    let deadline = Instant::now() + SOON;
    loop {
        let stats = stats_json(metrics).await;
        let plain_up = route_server(&stats, SNI, plain.addr);
        if plain_up == false {
            assert_eq!(route_server(&stats, SNI, site), true, "{stats}");
            // The passthrough route checks the same servers by TCP connect: both up.
            assert_eq!(route_server(&stats, "non_tls", plain.addr), true, "{stats}");
            assert_eq!(route_server(&stats, "non_tls", site), true, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the non-TLS server stayed up: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stats_json(metrics: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(metrics, "/stats").await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_pools_health_and_resets_a_changed_one() {
    let hole = Blackhole::new().await;
    let b = Named::start("b").await;
    let to = format!("[{}, {}]", hole.addr, b.addr);
    let (gateway, addr, metrics) = gateway_to(&to).await;
    let (_, _first, took) = visit(addr).await;
    assert!(
        took >= CONNECT,
        "the first connection waited on the blackhole"
    );
    let reload = |to: &str, extra: &str| {
        let text = format!(
            "listen: 127.0.0.1:0\nmetrics: {{ listen: 127.0.0.1:0 }}\ntimeouts: {{ connect: {}s }}\n{extra}non_tls: {{ to: {to} }}\n",
            CONNECT.as_secs()
        );
        frontgate::config::parse(&text, "test.yaml").unwrap()
    };
    let other = "default: { to: 127.0.0.1:9 }\n";
    gateway.apply(reload(&to, other)).await.unwrap();
    assert!(
        !is_up(metrics, hole.addr).await,
        "the same pool: still down"
    );
    let (name, _stream, took) = visit(addr).await;
    assert_eq!(name, "b");
    assert!(
        took < CONNECT,
        "after the reload a connection waited {took:?}"
    );
    assert_eq!(server_stats(metrics, hole.addr).await["failures"], 1);
    let changed = format!(
        "{{ balance: round_robin, servers: [{{addr: '{}'}}, {{addr: '{}'}}] }}",
        hole.addr, b.addr
    );
    gateway.apply(reload(&changed, other)).await.unwrap();
    let fresh = server_stats(metrics, hole.addr).await;
    assert_eq!(
        (fresh["up"].clone(), fresh["failures"].clone()),
        (true.into(), 0.into()),
        "{fresh}"
    );
}
