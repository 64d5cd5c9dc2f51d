//! The built-in MTProto proxy through the whole gateway on loopback: fake-TLS users on an
//! `mtproto: true` route, a fake DC, and the route's real backend for everything that is not
//! a valid, fresh, never-seen handshake (domain fronting).

mod common;

use std::time::Duration;

use common::fake_dc;
use common::mtproto_client as client;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: [u8; 16] = [0xa1; 16];
const BOB: [u8; 16] = [0xb0; 16];
const SNI: &str = "proxy.example.com";

/// A gateway with two users, DC 2 pointed at a fake DC, and the route's site backend.
struct Setup {
    addr: std::net::SocketAddr,
    dc: fake_dc::FakeDc,
    site: Backend,
    gateway: frontgate::server::gateway::Gateway,
}

/// `mtproto_extra` continues the `mtproto:` block, `top_extra` adds top-level keys. The site
/// here is no TLS server, so the route has `mimic: off` (tests/mimic.rs covers the mirror).
async fn setup(
    mtproto_extra: &str,
    top_extra: &str,
    dc_addr: Option<std::net::SocketAddr>,
) -> Setup {
    let dc = fake_dc::spawn().await;
    let site = Backend::start("site").await;
    let (gateway, addr) = gateway(&format!(
        "mtproto:\n  users: {{ alice: {}, bob: ee{}{} }}\n  datacenters: {{ 2: [{}] }}\n{mtproto_extra}{top_extra}routes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
        hex::encode(ALICE),
        hex::encode(BOB),
        hex::encode(SNI),
        dc_addr.unwrap_or(dc.addr),
        site.addr
    ))
    .await;
    Setup {
        addr,
        dc,
        site,
        gateway,
    }
}

async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_tag_echoes_4_mib_through_the_gateway() {
    bounded(async {
        let mut s = setup("", "", None).await;
        for (tag, dc) in [
            (client::ABRIDGED, 2),
            (client::INTERMEDIATE, -2),
            (client::PADDED, 10002),
        ] {
            let (mut w, mut r, _) =
                client::connect_faketls(s.addr, &ALICE, SNI, tag, dc, false).await;
            client::echo(&mut w, &mut r, 4 * 1024 * 1024).await;
            let seen = s.dc.seen.recv().await.unwrap();
            assert_eq!(
                (seen.tag, seen.dc),
                (tag, dc),
                "the DC got the client's tag and index"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_at_once_and_a_hello_in_one_byte_writes() {
    bounded(async {
        let s = setup("", "", None).await;
        let (mut wa, mut ra, _) =
            client::connect_faketls(s.addr, &ALICE, SNI, client::PADDED, 2, false).await;
        let (mut wb, mut rb, _) =
            client::connect_faketls(s.addr, &BOB, SNI, client::ABRIDGED, 2, true).await;
        tokio::join!(
            client::echo(&mut wa, &mut ra, 1024 * 1024),
            client::echo(&mut wb, &mut rb, 1024 * 1024)
        );
        let _ = &s.gateway;
    })
    .await;
}

/// Sends `first`, half-closes, and returns everything that comes back.
async fn exchange(addr: std::net::SocketAddr, first: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(SOON, stream.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    reply
}

#[tokio::test]
async fn probes_see_exactly_what_the_site_backend_answers() {
    let mut s = setup("", "", None).await;
    let now = client::now_unix() as u32;
    let wrong_secret = client::build_hello(&[0x42; 16], SNI, &[0x1301], now).record;
    let stale = client::build_hello(&ALICE, SNI, &[0x1301], now - 3600).record;
    let browser = client_hello(SNI);
    // A hello for the route's name whose random (where the digest lives) is random bytes.
    let mut random_digest = client::build_hello(&ALICE, SNI, &[0x1301], now).record;
    random_digest[11..43].copy_from_slice(&[0x5a; 32]);
    let fresh = client::build_hello(&ALICE, SNI, &[0x1301], now).record;
    // The first use of `fresh` is served as MTProto (nothing in return before the init)...
    let mut first_use = TcpStream::connect(s.addr).await.unwrap();
    first_use.write_all(&fresh).await.unwrap();
    let mut head = [0u8; 5];
    first_use.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..3], &[0x16, 0x03, 0x03], "the fake ServerHello");
    // Breaking off after our flight is a rejection, never fronted to the site (the client
    // would see the site's ServerHello after ours): the gateway closes the connection.
    first_use.shutdown().await.unwrap();
    assert!(closed_within(&mut first_use, SOON).await);
    // ...and its replay is a probe like the others.
    for (what, probe) in [
        ("wrong secret", wrong_secret),
        ("stale timestamp", stale),
        ("replayed hello", fresh.clone()),
        ("browser", browser),
        ("random digest", random_digest),
    ] {
        let through_gateway = exchange(s.addr, &probe).await;
        let direct = exchange(s.site.addr, &probe).await;
        assert_eq!(
            through_gateway, direct,
            "{what}: the prober must see the site's own answer"
        );
        assert_eq!(through_gateway[..5], *b"site\n", "{what}");
        // Both connections reached the site with the probe bytes unchanged.
        assert_eq!(s.site.next_seen().await.bytes, probe, "{what} via gateway");
        assert_eq!(s.site.next_seen().await.bytes, probe, "{what} direct");
    }
    assert!(s.dc.seen.try_recv().is_err(), "no probe reached the DC");
}

#[tokio::test]
async fn unreachable_dc_closes_the_client_cleanly() {
    let dead = RefusingPort::new();
    let s = setup("", "", Some(dead.addr())).await;
    let (_w, mut r, _) =
        client::connect_faketls(s.addr, &ALICE, SNI, client::PADDED, 2, false).await;
    let got = tokio::time::timeout(SOON, r.recv_exact(1))
        .await
        .expect("closed in time");
    assert!(got.is_err(), "the client sees EOF, not a hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_obfuscated2_clients_when_allowed_and_other_bytes_to_non_tls() {
    let mut plain_site = Backend::start("plain-site").await;
    let non_tls = format!("non_tls: {{ to: {} }}\n", plain_site.addr);
    let mut s = setup("  allow_plain: true\n", &non_tls, None).await;
    // A dd client (no TLS wrapper) reaches the DC.
    let obf = client::obfuscated2(&BOB, client::PADDED, 2);
    let sock = TcpStream::connect(s.addr).await.unwrap();
    let (r, mut w) = sock.into_split();
    w.write_all(&obf.wire_init).await.unwrap();
    let mut writer = client::ClientWriter {
        w,
        encrypt: obf.encrypt.clone(),
        tls: false,
    };
    let mut reader = client::ClientReader::new(r, obf.decrypt.clone(), false);
    client::echo(&mut writer, &mut reader, 256 * 1024).await;
    assert_eq!(s.dc.seen.recv().await.unwrap().tag, client::PADDED);
    // Any other non-TLS bytes still reach non_tls unchanged.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = exchange(s.addr, request).await;
    assert_eq!(reply, [b"plain-site\n".as_slice(), request].concat());
    assert_eq!(plain_site.next_seen().await.bytes, request);
}

#[tokio::test]
async fn without_allow_plain_an_obfuscated2_init_is_just_non_tls_bytes() {
    let mut plain_site = Backend::start("plain-site").await;
    let non_tls = format!("non_tls: {{ to: {} }}\n", plain_site.addr);
    let mut s = setup("", &non_tls, None).await;
    let obf = client::obfuscated2(&BOB, client::PADDED, 2);
    let reply = exchange(s.addr, &obf.wire_init).await;
    assert_eq!(reply[..11], *b"plain-site\n");
    assert_eq!(plain_site.next_seen().await.bytes, obf.wire_init);
    assert!(s.dc.seen.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_quiet_spell_burst_delivers_every_byte_once() {
    bounded(async {
        let s = setup("", "", None).await;
        let (mut w, mut r, _) =
            client::connect_faketls(s.addr, &ALICE, SNI, client::PADDED, 2, false).await;
        // Whatever the session does with its buffers between bursts (grow for a burst, give
        // them back after a quiet spell: frontgate::forward::buffer::QUIET), the client sees
        // every byte once, in order, and nothing at all while nothing is sent.
        client::echo(&mut w, &mut r, 2 * 1024 * 1024).await;
        let quiet = tokio::time::timeout(Duration::from_millis(1500), r.recv_exact(1)).await;
        assert!(
            quiet.is_err(),
            "nothing arrives in the quiet spell: {quiet:?}"
        );
        assert_eq!(
            s.gateway.open_connections(),
            1,
            "the quiet session stays open"
        );
        client::echo(&mut w, &mut r, 2 * 1024 * 1024).await;
        client::echo(&mut w, &mut r, 1000).await;
    })
    .await;
}
