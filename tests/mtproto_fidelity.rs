//! What an active prober could compare, through the whole gateway on loopback.
//!
//! - Committed means committed: a client whose hello carried a valid digest got our fake
//!   server flight; whatever it does next, it must never be fronted to the site (it would see
//!   a second ServerHello, the site's, after ours). It is closed, and the connection's log
//!   line and metrics say why.
//! - No-SNI hellos (some iOS Telegram clients send them): `default: { mtproto: true }` checks
//!   them against the users and fronts everything else to default's backend.

mod common;

use std::net::SocketAddr;

use common::fake_dc;
use common::mtproto_client as client;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: [u8; 16] = [0xa1; 16];
const SNI: &str = "proxy.example.com";

/// The log lines that mention `client` (an `ip:port`).
fn log_lines_of(client: SocketAddr) -> Vec<String> {
    let text = common::log_capture::text();
    let needle = format!("client={client} ");
    text.lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// What a client with a valid digest sends after the fake flight, and the reason it is
/// closed for.
fn after_the_flight() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    // An init keyed with another secret: its tag decrypts to garbage under alice's key.
    let foreign = client::obfuscated2(&[0x99; 16], client::PADDED, 2);
    let mut bad_init = vec![0x14, 3, 3, 0, 1, 1];
    bad_init.extend(client::records(&foreign.wire_init, 64));
    vec![
        ("bad init", bad_init, "no valid obfuscated2 init"),
        ("garbage", vec![0x42; 100], "bad TLS record"),
        (
            "nothing",
            Vec::new(),
            "client closed before the obfuscated2 init",
        ),
    ]
}

#[tokio::test]
async fn a_client_that_got_the_fake_flight_is_closed_never_fronted() {
    common::log_capture::start();
    for (what, next, reason) in after_the_flight() {
        // The route's backend: a listener nobody accepts on, so any connection stays queued.
        let site = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        site.set_nonblocking(true).unwrap();
        let (gw, addr) = gateway(&format!(
            "mtproto: {{ users: {{ alice: {} }} }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
            hex::encode(ALICE),
            site.local_addr().unwrap()
        ))
        .await;

        let mut sock = TcpStream::connect(addr).await.unwrap();
        let me = sock.local_addr().unwrap();
        let hello = client::build_hello(&ALICE, SNI, &[0x1301], client::now_unix() as u32);
        sock.write_all(&hello.record).await.unwrap();
        client::read_flight(&mut sock, &ALICE, &hello.random)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if next.is_empty() {
            sock.shutdown().await.unwrap();
        } else {
            sock.write_all(&next).await.unwrap();
        }
        let mut rest = Vec::new();
        tokio::time::timeout(SOON, sock.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{what}: the gateway must close the connection"))
            .ok();
        assert!(
            rest.is_empty(),
            "{what}: nothing after our flight, got {:?}",
            &rest[..rest.len().min(16)]
        );

        // Every connection task has ended (and logged) once shutdown returns.
        assert_eq!(gw.shutdown(SOON).await.left, 0, "{what}");
        let err = site
            .accept()
            .expect_err("the site backend must never be dialled");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{what}");
        let lines = log_lines_of(me);
        assert_eq!(lines.len(), 1, "{what}: one line per connection: {lines:?}");
        assert!(
            lines[0].contains(&format!("outcome=mtproto_rejected ({reason}")),
            "{what}: {}",
            lines[0]
        );
        assert!(lines[0].contains("user=\"alice\""), "{what}: {}", lines[0]);
    }
}

/// A gateway whose only MTProto entry is `default:` (no routes for its name).
async fn no_sni_setup() -> (
    frontgate::server::gateway::Gateway,
    SocketAddr,
    fake_dc::FakeDc,
    Backend,
) {
    let dc = fake_dc::spawn().await;
    let site = Backend::start("site").await;
    let (gw, addr) = gateway(&format!(
        "mtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: [{}] }}\ndefault:\n  mtproto: true\n  mimic: off\n  to: {}\n",
        hex::encode(ALICE),
        dc.addr,
        site.addr
    ))
    .await;
    (gw, addr, dc, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_tls_hello_without_sni_reaches_the_dc_via_default() {
    let (_gw, addr, mut dc, _site) = no_sni_setup().await;
    // No SNI at all, then a name no route matches: both take `default`.
    for sni in ["", "unmatched.example.org"] {
        let (mut w, mut r, _) =
            client::connect_faketls(addr, &ALICE, sni, client::INTERMEDIATE, 2, false).await;
        client::echo(&mut w, &mut r, 64 * 1024).await;
        let seen = tokio::time::timeout(SOON, dc.seen.recv())
            .await
            .expect("DC reached in time")
            .unwrap();
        assert_eq!(
            (seen.tag, seen.dc),
            (client::INTERMEDIATE, 2),
            "sni {sni:?}"
        );
    }
}

#[tokio::test]
async fn a_browser_hello_without_sni_is_fronted_to_default_byte_for_byte() {
    let (_gw, addr, mut dc, mut site) = no_sni_setup().await;
    // rustls leaves SNI out for an IP address.
    let hello = client_hello("127.0.0.1");
    let (name, mut stream) = send_and_identify(addr, &hello).await;
    assert_eq!(name, "site", "default's backend answers");
    assert_eq!(
        read_exact(&mut stream, hello.len()).await,
        hello,
        "echoed unchanged"
    );
    stream.shutdown().await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);
    assert_eq!(
        site.next_seen().await.bytes,
        hello,
        "the site got the hello unchanged"
    );
    assert!(dc.seen.try_recv().is_err(), "nothing reached the DC");
}
