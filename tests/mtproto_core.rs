//! The MTProto core over real sockets on 127.0.0.1: a test client, a fake DC, and an accept
//! loop that hands each connection to the real gate (`mtproto::gate`) after the real
//! ClientHello peek, as the connection driver does, reporting what the gate did.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes::cipher::StreamCipher;
use common::fake_dc;
use common::mtproto_client::{self as client, ClientReader, ClientWriter};
use common::{tcp_pair, RefusingPort};
use frontgate::config::users::MtprotoUser;
use frontgate::config::{DcTable, MtprotoSettings, Secret};
use frontgate::config::{Forward, MimicMode, MtprotoRoute, ProxyProtocol};
use frontgate::conn::hello::{peek, FirstFlight};
use frontgate::forward::shutdown::{Shutdown, ShutdownSwitch};
use frontgate::mtproto::gate::{self, Core, Gate, HelloView, Mirror};
use frontgate::mtproto::session::RejectReason;
use frontgate::mtproto::state::MtprotoState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const OTHER: [u8; 16] = [0x11; 16];
const BOB: [u8; 16] = [
    0x36, 0x7a, 0x18, 0x9a, 0xee, 0x18, 0xfa, 0x31, 0xc1, 0x90, 0x05, 0x4e, 0xfd, 0x4a, 0x8e, 0x95,
];
const BOB_INDEX: usize = 1;
const SNI: &str = "storage.googleapis.com";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn settings(dc_addr: SocketAddr, fast_mode: bool) -> MtprotoSettings {
    MtprotoSettings {
        users: vec![
            MtprotoUser::unlimited("alice", Secret::from_bytes(OTHER)),
            MtprotoUser::unlimited("bob", Secret::from_bytes(BOB)),
        ],
        users_file: None,
        max_clock_skew: Duration::from_secs(600),
        replay_cache: 1000,
        allow_plain: true,
        datacenters: DcTable::with_overrides(HashMap::from([(2, vec![dc_addr.to_string()])]))
            .unwrap(),
        fast_mode,
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(20),
        handshake_timeout: Duration::from_secs(5),
        prefer_ipv6: false,
        via: Vec::new(),
        via_fallback_direct: false,
        middle: Default::default(),
    }
}

/// What the gate needs of a hello the test client built.
/// These tests drive the gate without a backend: the fixed flight shape (`mimic: off`).
fn no_mirror(route: &MtprotoRoute) -> Mirror<'_> {
    Mirror {
        route: "test",
        target: route,
        head: Vec::new(),
        budget: Duration::from_secs(1),
        outbound: Arc::default(),
        pool: frontgate::forward::pool::Pool::new(route.forward.pool.clone()),
        client: std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

/// An `mtproto: true` route with no backend and `mimic: off`.
fn offline_route() -> MtprotoRoute {
    MtprotoRoute {
        forward: Forward::in_order(Vec::new(), ProxyProtocol::None),
        mimic: MimicMode::Off,
    }
}

fn view(hello: &client::Hello) -> HelloView<'_> {
    HelloView {
        single_record: &hello.record,
        raw_len: hello.record.len(),
        session_id: &hello.session_id,
        cipher_suites: &hello.cipher_suites,
        server_name: Some(SNI),
    }
}

/// A session's shutdown handle from a switch nobody throws.
fn no_shutdown() -> Shutdown {
    ShutdownSwitch::new().subscribe()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    FakeTls,
    Plain,
}

struct Proxy {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Gate>,
    state: Arc<MtprotoState>,
}

/// Accepts connections and gives each to the gate: `gate::plain` with nothing read yet, or
/// the ClientHello peek and then `gate::fake_tls`. Every answer goes to the channel.
async fn start_proxy(settings: MtprotoSettings, mode: Mode) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let settings = Arc::new(settings);
    let state = Arc::new(MtprotoState::new(&settings));
    let task_state = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            sock.set_nodelay(true).unwrap();
            let (tx, settings, state) =
                (tx.clone(), Arc::clone(&settings), Arc::clone(&task_state));
            // tokio::spawn also proves the gate's futures are Send.
            tokio::spawn(async move {
                let route = offline_route();
                let shutdown = no_shutdown();
                let core = Core {
                    settings: &settings,
                    state: &state,
                };
                let outcome = match mode {
                    Mode::Plain => gate::plain(sock, LOOPBACK, Vec::new(), core, &shutdown).await,
                    Mode::FakeTls => {
                        let peeked = peek(&mut sock, Vec::new()).await.unwrap();
                        let FirstFlight::Tls(hello) = peeked.flight else {
                            panic!("the test client sends a ClientHello");
                        };
                        let view = HelloView {
                            single_record: &hello.single_record,
                            raw_len: hello.raw_len,
                            session_id: &hello.session_id,
                            cipher_suites: &hello.cipher_suites,
                            server_name: hello.server_name.as_deref(),
                        };
                        let mirror = no_mirror(&route);
                        gate::fake_tls(sock, LOOPBACK, view, peeked.bytes, mirror, core, &shutdown)
                            .await
                    }
                };
                let _ = tx.send(outcome);
            });
        }
    });
    Proxy {
        addr,
        outcomes,
        state,
    }
}

async fn connect_faketls(
    proxy: SocketAddr,
    tag: [u8; 4],
    dc: i16,
) -> (client::Writer, client::Reader, client::Obfuscated2) {
    client::connect_faketls(proxy, &BOB, SNI, tag, dc, false).await
}

/// A connection whose valid hello got the server flight: the next bytes are the session's.
/// Also returns the hello, which a fallback replays first.
async fn past_the_flight(proxy: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut sock = TcpStream::connect(proxy).await.unwrap();
    let hello = client::build_hello(&BOB, SNI, &[0x1301], client::now_unix() as u32);
    sock.write_all(&hello.record).await.unwrap();
    client::read_flight(&mut sock, &BOB, &hello.random)
        .await
        .unwrap();
    (sock, hello.record)
}

/// Fails the test instead of hanging when something never arrives.
async fn bounded(secs: u64, body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test did not finish in time");
}

async fn next_outcome(proxy: &mut Proxy) -> Gate {
    tokio::time::timeout(Duration::from_secs(30), proxy.outcomes.recv())
        .await
        .expect("gate outcome in time")
        .expect("proxy running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_tls_echo_every_tag_fast_and_slow() {
    // 24 MiB through unoptimised proxy AES on a shared box: a bound against hangs only.
    bounded(180, async {
        const TOTAL: usize = 4 * 1024 * 1024;
        let mut dc = fake_dc::spawn().await;
        for fast in [false, true] {
            let mut proxy = start_proxy(settings(dc.addr, fast), Mode::FakeTls).await;
            for (tag, dc_idx) in [
                (client::ABRIDGED, 2),
                (client::INTERMEDIATE, -2),
                (client::PADDED, 10002),
            ] {
                let (mut writer, mut reader, obf) = connect_faketls(proxy.addr, tag, dc_idx).await;
                client::echo(&mut writer, &mut reader, TOTAL).await;
                assert!(reader.max_record <= 16384);

                let seen = dc.seen.recv().await.unwrap();
                assert_eq!(seen.tag, tag);
                assert_eq!(seen.dc, dc_idx, "DC index copied into the DC init");
                let mut carried = seen.wire_init[8..56].to_vec();
                carried.reverse();
                assert_eq!(
                    carried == obf.decrypt_key_iv,
                    fast,
                    "fast mode sends the client's download key to the DC, slow mode does not"
                );

                // Half-close from the client: the proxy closes the DC, the DC closes, we see EOF.
                writer.w.shutdown().await.unwrap();
                let mut rest = Vec::new();
                reader.r.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
                let fake_dc_addr = dc.addr;
                match next_outcome(&mut proxy).await {
                    Gate::Served {
                        user,
                        dc,
                        dc_addr,
                        from_client,
                        to_client,
                        end,
                    } => {
                        assert_eq!((user.as_str(), dc, end.as_str()), ("bob", dc_idx, "closed"));
                        assert_eq!(dc_addr, Some(fake_dc_addr), "the DC the session reached");
                        assert!(from_client >= (TOTAL + 64 + 6) as u64);
                        assert!(to_client >= (TOTAL + 127 + 6 + 5 + 1024) as u64);
                    }
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            let bob = &proxy.state.users[BOB_INDEX].counters;
            assert_eq!(bob.connections.load(Ordering::Relaxed), 3);
            assert_eq!(bob.active.load(Ordering::Relaxed), 0);
            assert!(bob.bytes_from_client.load(Ordering::Relaxed) >= 3 * TOTAL as u64);
            assert!(bob.bytes_to_client.load(Ordering::Relaxed) >= 3 * TOTAL as u64);
            assert_eq!(
                proxy.state.users[0]
                    .counters
                    .connections
                    .load(Ordering::Relaxed),
                0
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_obfuscated2_echo_and_replay() {
    bounded(60, async {
        let mut dc = fake_dc::spawn().await;
        let mut proxy = start_proxy(settings(dc.addr, false), Mode::Plain).await;
        let obf = client::obfuscated2(&BOB, client::INTERMEDIATE, 2);
        let mut sock = TcpStream::connect(proxy.addr).await.unwrap();
        sock.write_all(&obf.wire_init).await.unwrap();
        let (r, w) = sock.into_split();
        let mut writer = ClientWriter {
            w,
            encrypt: obf.encrypt.clone(),
            tls: false,
        };
        let mut reader = ClientReader::new(r, obf.decrypt.clone(), false);
        client::echo(&mut writer, &mut reader, 1024 * 1024).await;
        assert_eq!(dc.seen.recv().await.unwrap().tag, client::INTERMEDIATE);
        drop(writer);
        drop(reader);
        match next_outcome(&mut proxy).await {
            Gate::Served { user, dc: 2, .. } => assert_eq!(user, "bob"),
            other => panic!("unexpected outcome {other:?}"),
        }

        // The same init again is a replay: handed back with the bytes read.
        let mut sock = TcpStream::connect(proxy.addr).await.unwrap();
        sock.write_all(&obf.wire_init).await.unwrap();
        match next_outcome(&mut proxy).await {
            Gate::Fallback { bytes, .. } => assert_eq!(bytes, obf.wire_init),
            other => panic!("unexpected outcome {other:?}"),
        }

        // An HTTP request is handed back at once, without waiting for 64 bytes.
        let mut sock = TcpStream::connect(proxy.addr).await.unwrap();
        let started = Instant::now();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        match next_outcome(&mut proxy).await {
            Gate::Fallback { bytes, .. } => assert_eq!(bytes, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            other => panic!("unexpected outcome {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_obfuscated2_tag_after_flight_is_rejected_and_closed() {
    bounded(60, async {
        let dc = fake_dc::spawn().await;
        let mut proxy = start_proxy(settings(dc.addr, false), Mode::FakeTls).await;
        let (mut sock, hello) = past_the_flight(proxy.addr).await;

        // An init made with another secret: the tag decrypts to garbage under bob's key.
        let obf = client::obfuscated2(&[0x99; 16], client::PADDED, 2);
        let mut payload = obf.wire_init.to_vec();
        payload.extend_from_slice(b"0123456789");
        let mut sent = vec![0x14, 3, 3, 0, 1, 1];
        sent.extend(client::records(&payload, 40));
        sock.write_all(&sent).await.unwrap();

        match next_outcome(&mut proxy).await {
            Gate::Rejected {
                user,
                reason: RejectReason::BadInit,
                from_client,
                ..
            } => {
                assert_eq!(user, "bob");
                assert_eq!(from_client, sent.len() as u64, "every byte after the hello");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        drop(hello);
        // The client got our flight, so it must not be fronted: it sees the close.
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "nothing after our flight");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_record_after_flight_is_rejected() {
    bounded(60, async {
        let dc = fake_dc::spawn().await;
        let mut proxy = start_proxy(settings(dc.addr, false), Mode::FakeTls).await;
        let (mut sock, hello) = past_the_flight(proxy.addr).await;
        let sent = b"\x15\x03\x03\x00\x02\x02\x28".to_vec(); // an alert record
        sock.write_all(&sent).await.unwrap();
        drop(hello);
        match next_outcome(&mut proxy).await {
            Gate::Rejected {
                reason: RejectReason::BadRecord(_),
                from_client,
                ..
            } => assert_eq!(from_client, sent.len() as u64),
            other => panic!("unexpected outcome {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_refused_is_a_clean_outcome() {
    bounded(60, async {
        let dead = RefusingPort::new();
        let mut proxy = start_proxy(settings(dead.addr(), false), Mode::FakeTls).await;
        let (_writer, mut reader, _) = connect_faketls(proxy.addr, client::PADDED, -2).await;
        match next_outcome(&mut proxy).await {
            Gate::DcUnreachable { user, dc, error } => {
                assert_eq!((user.as_str(), dc), ("bob", -2));
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        // The client sees the connection close.
        let mut rest = Vec::new();
        let _ = reader.r.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        assert_eq!(
            proxy.state.users[BOB_INDEX]
                .counters
                .connections
                .load(Ordering::Relaxed),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relay_is_closed() {
    bounded(60, async {
        let dc = fake_dc::spawn().await;
        let mut s = settings(dc.addr, false);
        s.idle_timeout = Duration::from_millis(300);
        let mut proxy = start_proxy(s, Mode::FakeTls).await;
        let (mut writer, mut reader, _) = connect_faketls(proxy.addr, client::ABRIDGED, 2).await;
        writer.send(b"ping").await.unwrap();
        assert_eq!(reader.recv_exact(4).await.unwrap(), b"ping");
        let started = Instant::now();
        match next_outcome(&mut proxy).await {
            Gate::Served { end, .. } => assert_eq!(end, "idle timeout"),
            other => panic!("unexpected outcome {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(
            proxy.state.users[BOB_INDEX]
                .counters
                .active
                .load(Ordering::Relaxed),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_read_past_the_hello_are_used() {
    bounded(60, async {
        let dc = fake_dc::spawn().await;
        let settings = Arc::new(settings(dc.addr, false));
        let state = Arc::new(MtprotoState::new(&settings));
        for valid in [true, false] {
            let hello = client::build_hello(&BOB, SNI, &[0x1303], client::now_unix() as u32);
            let secret = if valid { BOB } else { OTHER };
            let mut obf = client::obfuscated2(&secret, client::PADDED, 2);
            let mut payload = obf.wire_init.to_vec();
            let mut greeting = b"hello through the router".to_vec();
            obf.encrypt.apply_keystream(&mut greeting);
            payload.extend_from_slice(&greeting);
            let mut stream = vec![0x14, 3, 3, 0, 1, 1];
            stream.extend(client::records(&payload, 50));
            // The peek already holds the hello, the CCS and part of the first record.
            let (already, rest) = stream.split_at(20);

            let (proxy_side, mut test_side) = tcp_pair().await;
            let task = {
                let (settings, state, hello) =
                    (Arc::clone(&settings), Arc::clone(&state), hello.clone());
                let peeked = [&hello.record[..], already].concat();
                tokio::spawn(async move {
                    let route = offline_route();
                    gate::fake_tls(
                        proxy_side,
                        LOOPBACK,
                        view(&hello),
                        peeked,
                        no_mirror(&route),
                        Core {
                            settings: &settings,
                            state: &state,
                        },
                        &no_shutdown(),
                    )
                    .await
                })
            };
            let flight = client::read_flight(&mut test_side, &BOB, &hello.random)
                .await
                .unwrap();
            assert_eq!(flight.cipher_suite, 0x1303);
            test_side.write_all(rest).await.unwrap();
            if valid {
                let mut reader = ClientReader::new(&mut test_side, obf.decrypt.clone(), true);
                assert_eq!(
                    reader.recv_exact(24).await.unwrap(),
                    b"hello through the router"
                );
                drop(reader);
                drop(test_side);
                match task.await.unwrap() {
                    Gate::Served { user, dc: 2, .. } => assert_eq!(user, "bob"),
                    other => panic!("unexpected outcome {other:?}"),
                }
            } else {
                // Past the fake flight: rejected, never handed back for fronting.
                match task.await.unwrap() {
                    Gate::Rejected {
                        user,
                        reason: RejectReason::BadInit,
                        ..
                    } => assert_eq!(user, "bob"),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }
    })
    .await;
}
