//! Graceful shutdown of an in-process gateway over loopback: `Gateway::shutdown` cuts what is
//! idle (a quiet passthrough relay, a quiet MTProto session, a connection still in its hello)
//! at once, lets a busy transfer finish within the grace period, and cuts what is still busy
//! when the grace period runs out. The binary's signals are tested in tests/reload.rs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_dc;
use common::mtproto_client as client;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The grace period the tests pass: far longer than anything here may take.
const GRACE: Duration = Duration::from_secs(30);
/// "At once": well under `GRACE`, with room for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A gateway relaying everything to an echo backend.
async fn relay_gateway() -> (frontgate::server::gateway::Gateway, std::net::SocketAddr) {
    let backend = Backend::start("b").await;
    // The backend's tasks keep running when its handle is dropped.
    gateway(&format!("default: {{ to: {} }}\n", backend.addr)).await
}

/// A relayed connection that has moved its first bytes and is now quiet.
async fn quiet_relay(addr: std::net::SocketAddr) -> TcpStream {
    let hello = client_hello("a.test");
    let (name, mut stream) = send_and_identify(addr, &hello).await;
    assert_eq!(name, "b");
    read_exact(&mut stream, hello.len()).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_is_cut_at_once() {
    let (gateway, addr) = relay_gateway().await;
    let mut idle = quiet_relay(addr).await;
    let started = Instant::now();
    let report = tokio::time::timeout(PROMPTLY, gateway.shutdown(GRACE))
        .await
        .expect("shutdown did not wait for the idle relay");
    assert!(
        closed_within(&mut idle, PROMPTLY).await,
        "the client sees the relay end"
    );
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!((report.cut, report.finished, report.left), (1, 0, 0));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_in_its_hello_is_closed_at_once() {
    let (gateway, addr) = relay_gateway().await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    // Half a ClientHello: the gateway is waiting for the rest (timeouts.client_hello, 10 s).
    let hello = client_hello("a.test");
    waiting.write_all(&hello[..hello.len() / 2]).await.unwrap();
    // The gateway has accepted it once it counts it as open.
    tokio::time::timeout(SOON, async {
        while gateway.open_connections() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("accepted");
    let report = tokio::time::timeout(PROMPTLY, gateway.shutdown(GRACE))
        .await
        .expect("shutdown did not wait for the hello");
    assert!(closed_within(&mut waiting, PROMPTLY).await);
    assert_eq!((report.cut, report.finished, report.left), (1, 0, 0));
}

const ALICE: [u8; 16] = [0xa1; 16];
const SNI: &str = "proxy.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_mtproto_session_is_cut_at_once() {
    let dc = fake_dc::spawn().await;
    let site = Backend::start("site").await;
    let (gateway, addr) = gateway(&format!(
        "mtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: [{}] }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    to: {}\n",
        hex::encode(ALICE),
        dc.addr,
        site.addr
    ))
    .await;
    let (mut w, mut r, _) =
        client::connect_faketls(addr, &ALICE, SNI, client::INTERMEDIATE, 2, false).await;
    client::echo(&mut w, &mut r, 64 * 1024).await;
    let report = tokio::time::timeout(PROMPTLY, gateway.shutdown(GRACE))
        .await
        .expect("shutdown did not wait for the idle session");
    let end = tokio::time::timeout(PROMPTLY, r.recv_exact(1))
        .await
        .expect("the client sees the session end");
    assert!(end.is_err(), "EOF, not data");
    assert_eq!((report.cut, report.finished, report.left), (1, 0, 0));
}

/// What [`stream_through`] writes at each offset of a chunk of [`CHUNK`] bytes.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// The size of each write of [`stream_through`].
const CHUNK: usize = 64 * 1024;

/// Streams `total` bytes (all of them when `total` is `None`: until the connection ends)
/// through the echo relay and reads them back; `progress` counts the bytes back, and
/// `started` is notified once the first MiB is back. Returns what came back after the
/// backend's name line and the echoed hello.
async fn stream_through(
    addr: std::net::SocketAddr,
    total: Option<usize>,
    progress: Arc<AtomicU64>,
    started: Arc<Notify>,
) -> Vec<u8> {
    let stream = quiet_relay(addr).await;
    let (mut rd, mut wr) = stream.into_split();
    let send = async move {
        let chunk: Vec<u8> = (0..CHUNK).map(pattern).collect();
        let mut sent = 0;
        while total.is_none_or(|t| sent < t) {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = wr.shutdown().await;
    };
    let recv = async move {
        let mut back = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return back,
                Ok(n) => n,
            };
            if total.is_some() {
                back.extend_from_slice(&buf[..n]);
            }
            let before = progress.fetch_add(n as u64, Ordering::Relaxed);
            if before < 1 << 20 && before + n as u64 >= 1 << 20 {
                started.notify_one();
            }
        }
    };
    let ((), back) = tokio::join!(send, recv);
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_transfer_finishes_intact_within_the_grace() {
    const TOTAL: usize = 32 * 1024 * 1024;
    let (gateway, addr) = relay_gateway().await;
    let progress = Arc::new(AtomicU64::new(0));
    let started = Arc::new(Notify::new());
    let transfer = tokio::spawn(stream_through(
        addr,
        Some(TOTAL),
        progress.clone(),
        started.clone(),
    ));
    started.notified().await;
    let report = tokio::time::timeout(GRACE, gateway.shutdown(GRACE))
        .await
        .expect("shutdown ends once the transfer is done");
    let back = transfer.await.unwrap();
    assert_eq!(back.len(), TOTAL, "every byte came back");
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(i % CHUNK)),
        "in order, unchanged"
    );
    assert_eq!((report.cut, report.finished, report.left), (0, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_still_busy_when_the_grace_runs_out_is_cut() {
    let (gateway, addr) = relay_gateway().await;
    let progress = Arc::new(AtomicU64::new(0));
    let started = Arc::new(Notify::new());
    let endless = tokio::spawn(stream_through(
        addr,
        None,
        progress.clone(),
        started.clone(),
    ));
    started.notified().await;
    let grace = Duration::from_millis(500);
    let begun = Instant::now();
    let report = tokio::time::timeout(PROMPTLY + grace, gateway.shutdown(grace))
        .await
        .expect("shutdown stops at the end of the grace period");
    assert!(begun.elapsed() >= grace, "the busy relay got its grace");
    tokio::time::timeout(PROMPTLY, endless)
        .await
        .expect("the busy relay was cut at the deadline")
        .unwrap();
    assert_eq!((report.cut, report.finished, report.left), (0, 0, 1));
}
