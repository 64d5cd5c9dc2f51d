//! The MTProto core over real sockets on 127.0.0.1: a test client, a minimal "router" that
//! does what the real one does before calling the session, and a fake DC.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes::cipher::StreamCipher;
use common::fake_dc;
use common::mtproto_client::{self as client, ClientReader, ClientWriter};
use frontgate::config::{DcTable, MtprotoSettings, Secret};
use frontgate::forward::shutdown::{Shutdown, ShutdownSwitch};
use frontgate::mtproto as mt;
use mt::faketls::verify_client_hello;
use mt::replay::ReplayCache;
use mt::session::{serve_faketls, serve_plain, EndReason, FallbackReason, SessionOutcome};
use mt::state::UserCounters;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const OTHER: [u8; 16] = [0x11; 16];
const BOB: [u8; 16] = [
    0x36, 0x7a, 0x18, 0x9a, 0xee, 0x18, 0xfa, 0x31, 0xc1, 0x90, 0x05, 0x4e, 0xfd, 0x4a, 0x8e, 0x95,
];
const BOB_INDEX: usize = 1;
const SNI: &str = "storage.googleapis.com";

fn settings(dc_addr: SocketAddr, fast_mode: bool) -> MtprotoSettings {
    MtprotoSettings {
        users: vec![
            ("alice".into(), Secret::from_bytes(OTHER)),
            ("bob".into(), Secret::from_bytes(BOB)),
        ],
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
    }
}

/// The ClientHello fields the real router gets from tls-parser.
fn parse_hello(record: &[u8]) -> (Vec<u8>, Vec<u16>) {
    let sid_len = usize::from(record[43]);
    let sid = record[44..44 + sid_len].to_vec();
    let at = 44 + sid_len;
    let len = usize::from(u16::from_be_bytes([record[at], record[at + 1]]));
    let suites = record[at + 2..at + 2 + len]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    (sid, suites)
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
    outcomes: mpsc::UnboundedReceiver<SessionOutcome>,
    counters: Arc<Vec<Arc<UserCounters>>>,
}

/// Accepts connections and does the router's part: read the hello record, verify it, check
/// the replay cache, then hand over to the session. Every outcome goes to the channel.
async fn start_proxy(settings: MtprotoSettings, mode: Mode) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let settings = Arc::new(settings);
    let counters: Arc<Vec<Arc<UserCounters>>> = Arc::new((0..2).map(|_| Arc::default()).collect());
    let replay = Arc::new(ReplayCache::new(settings.replay_cache));
    let task_counters = Arc::clone(&counters);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            sock.set_nodelay(true).unwrap();
            let (tx, settings, counters, replay) = (
                tx.clone(),
                Arc::clone(&settings),
                Arc::clone(&task_counters),
                Arc::clone(&replay),
            );
            // tokio::spawn also proves the session futures are Send.
            tokio::spawn(async move {
                let shutdown = no_shutdown();
                let outcome = match mode {
                    Mode::Plain => {
                        serve_plain(sock, Vec::new(), &settings, &counters, &replay, &shutdown)
                            .await
                    }
                    Mode::FakeTls => {
                        let mut hdr = [0u8; 5];
                        sock.read_exact(&mut hdr).await.unwrap();
                        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
                        let mut record = hdr.to_vec();
                        record.resize(5 + len, 0);
                        sock.read_exact(&mut record[5..]).await.unwrap();
                        let auth = verify_client_hello(
                            &record,
                            settings.secrets(),
                            client::now_unix(),
                            settings.max_clock_skew,
                        )
                        .expect("test client hello must verify");
                        assert!(replay.insert_if_new(&auth.random));
                        let (sid, suites) = parse_hello(&record);
                        serve_faketls(
                            sock,
                            Vec::new(),
                            &auth,
                            &sid,
                            &suites,
                            &settings,
                            &counters,
                            &shutdown,
                        )
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
        counters,
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
async fn past_the_flight(proxy: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(proxy).await.unwrap();
    let hello = client::build_hello(&BOB, SNI, &[0x1301], client::now_unix() as u32);
    sock.write_all(&hello.record).await.unwrap();
    client::read_flight(&mut sock, &BOB, &hello.random)
        .await
        .unwrap();
    sock
}

/// Fails the test instead of hanging when something never arrives.
async fn bounded(secs: u64, body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test did not finish in time");
}

/// Both ends of one loopback TCP connection: (the proxy's side, the test client's side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (server, client)
}

async fn next_outcome(proxy: &mut Proxy) -> SessionOutcome {
    tokio::time::timeout(Duration::from_secs(30), proxy.outcomes.recv())
        .await
        .expect("session outcome in time")
        .expect("proxy running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_tls_echo_every_tag_fast_and_slow() {
    bounded(60, async {
        const TOTAL: usize = 4 * 1024 * 1024;
        let mut dc = fake_dc::spawn(false).await;
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
                    SessionOutcome::Finished {
                        user,
                        dc,
                        dc_addr,
                        bytes_from_client,
                        bytes_to_client,
                        reason,
                    } => {
                        assert_eq!((user, dc, reason), (BOB_INDEX, dc_idx, EndReason::Closed));
                        assert_eq!(dc_addr, Some(fake_dc_addr), "the DC the session reached");
                        assert!(bytes_from_client >= (TOTAL + 64 + 6) as u64);
                        assert!(bytes_to_client >= (TOTAL + 127 + 6 + 5 + 1024) as u64);
                    }
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            let bob = &proxy.counters[BOB_INDEX];
            assert_eq!(bob.connections.load(Ordering::Relaxed), 3);
            assert_eq!(bob.active.load(Ordering::Relaxed), 0);
            assert!(bob.bytes_from_client.load(Ordering::Relaxed) >= 3 * TOTAL as u64);
            assert!(bob.bytes_to_client.load(Ordering::Relaxed) >= 3 * TOTAL as u64);
            assert_eq!(proxy.counters[0].connections.load(Ordering::Relaxed), 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_obfuscated2_echo_and_replay() {
    bounded(60, async {
        let mut dc = fake_dc::spawn(false).await;
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
        assert!(matches!(
            next_outcome(&mut proxy).await,
            SessionOutcome::Finished {
                user: BOB_INDEX,
                dc: 2,
                ..
            }
        ));

        // The same init again is a replay: handed back with the bytes read.
        let mut sock = TcpStream::connect(proxy.addr).await.unwrap();
        sock.write_all(&obf.wire_init).await.unwrap();
        match next_outcome(&mut proxy).await {
            SessionOutcome::Fallback {
                client_bytes,
                reason: FallbackReason::Replayed,
                ..
            } => assert_eq!(client_bytes, obf.wire_init),
            other => panic!("unexpected outcome {other:?}"),
        }

        // An HTTP request is handed back at once, without waiting for 64 bytes.
        let mut sock = TcpStream::connect(proxy.addr).await.unwrap();
        let started = Instant::now();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        match next_outcome(&mut proxy).await {
            SessionOutcome::Fallback {
                client_bytes,
                reason: FallbackReason::BadInit,
                ..
            } => assert_eq!(client_bytes, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            other => panic!("unexpected outcome {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_obfuscated2_tag_falls_back_with_exact_bytes() {
    bounded(60, async {
        let dc = fake_dc::spawn(false).await;
        let mut proxy = start_proxy(settings(dc.addr, false), Mode::FakeTls).await;
        let mut sock = past_the_flight(proxy.addr).await;

        // An init made with another secret: the tag decrypts to garbage under bob's key.
        let obf = client::obfuscated2(&[0x99; 16], client::PADDED, 2);
        let mut payload = obf.wire_init.to_vec();
        payload.extend_from_slice(b"0123456789");
        let mut sent = vec![0x14, 3, 3, 0, 1, 1];
        sent.extend(client::records(&payload, 40));
        sock.write_all(&sent).await.unwrap();

        match next_outcome(&mut proxy).await {
            SessionOutcome::Fallback {
                mut client,
                client_bytes,
                reason: FallbackReason::BadInit,
            } => {
                assert_eq!(client_bytes, sent, "every byte after the hello, in order");
                // The connection is intact: the "backend" can answer the client.
                client.write_all(b"fronted").await.unwrap();
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        let mut answer = [0u8; 7];
        sock.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"fronted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_record_after_flight_falls_back() {
    bounded(60, async {
        let dc = fake_dc::spawn(false).await;
        let mut proxy = start_proxy(settings(dc.addr, false), Mode::FakeTls).await;
        let mut sock = past_the_flight(proxy.addr).await;
        let sent = b"\x15\x03\x03\x00\x02\x02\x28".to_vec(); // an alert record
        sock.write_all(&sent).await.unwrap();
        match next_outcome(&mut proxy).await {
            SessionOutcome::Fallback {
                client_bytes,
                reason: FallbackReason::BadRecord(_),
                ..
            } => assert_eq!(client_bytes, sent),
            other => panic!("unexpected outcome {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_refused_is_a_clean_outcome() {
    bounded(60, async {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = closed.local_addr().unwrap();
        drop(closed);
        let mut proxy = start_proxy(settings(dead_addr, false), Mode::FakeTls).await;
        let (_writer, mut reader, _) = connect_faketls(proxy.addr, client::PADDED, -2).await;
        match next_outcome(&mut proxy).await {
            SessionOutcome::DcUnreachable { user, dc, error } => {
                assert_eq!((user, dc), (BOB_INDEX, -2));
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        // The client sees the connection close.
        let mut rest = Vec::new();
        let _ = reader.r.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        assert_eq!(
            proxy.counters[BOB_INDEX]
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
        let dc = fake_dc::spawn(false).await;
        let mut s = settings(dc.addr, false);
        s.idle_timeout = Duration::from_millis(300);
        let mut proxy = start_proxy(s, Mode::FakeTls).await;
        let (mut writer, mut reader, _) = connect_faketls(proxy.addr, client::ABRIDGED, 2).await;
        writer.send(b"ping").await.unwrap();
        assert_eq!(reader.recv_exact(4).await.unwrap(), b"ping");
        let started = Instant::now();
        match next_outcome(&mut proxy).await {
            SessionOutcome::Finished { reason, .. } => assert_eq!(reason, EndReason::IdleTimeout),
            other => panic!("unexpected outcome {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(proxy.counters[BOB_INDEX].active.load(Ordering::Relaxed), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_read_past_the_hello_are_used() {
    bounded(60, async {
        let dc = fake_dc::spawn(false).await;
        let settings = Arc::new(settings(dc.addr, false));
        let counters: Arc<Vec<Arc<UserCounters>>> = Arc::new(vec![Arc::default(), Arc::default()]);
        let hello = client::build_hello(&BOB, SNI, &[0x1303], client::now_unix() as u32);
        let auth = verify_client_hello(
            &hello.record,
            settings.secrets(),
            client::now_unix(),
            settings.max_clock_skew,
        )
        .unwrap();
        assert_eq!(auth.user, BOB_INDEX);

        for valid in [true, false] {
            let secret = if valid { BOB } else { OTHER };
            let mut obf = client::obfuscated2(&secret, client::PADDED, 2);
            let mut payload = obf.wire_init.to_vec();
            let mut greeting = b"hello through the router".to_vec();
            obf.encrypt.apply_keystream(&mut greeting);
            payload.extend_from_slice(&greeting);
            let mut stream = vec![0x14, 3, 3, 0, 1, 1];
            stream.extend(client::records(&payload, 50));
            // The router already holds the CCS and part of the first record.
            let (already, rest) = stream.split_at(20);

            let (proxy_side, mut test_side) = tcp_pair().await;
            let task = {
                let (settings, counters, auth) =
                    (Arc::clone(&settings), Arc::clone(&counters), auth.clone());
                let (already, sid, suites) = (
                    already.to_vec(),
                    hello.session_id.clone(),
                    hello.cipher_suites.clone(),
                );
                tokio::spawn(async move {
                    serve_faketls(
                        proxy_side,
                        already,
                        &auth,
                        &sid,
                        &suites,
                        &settings,
                        &counters,
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
                assert!(matches!(
                    task.await.unwrap(),
                    SessionOutcome::Finished {
                        user: BOB_INDEX,
                        dc: 2,
                        ..
                    }
                ));
            } else {
                match task.await.unwrap() {
                    SessionOutcome::Fallback {
                        client_bytes,
                        reason: FallbackReason::BadInit,
                        ..
                    } => assert_eq!(client_bytes, stream),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }
    })
    .await;
}
