//! Middle-proxy mode over real sockets: the gateway fetches the proxy secret and the ME list
//! from the kit's [`ConfigServer`] (plain HTTP on loopback), opens ME connections to the kit's
//! fake middle proxy, and relays the test client's transport messages as `RPC_PROXY_REQ`s. The
//! fake ME checks every request's flags, both addresses and the ad_tag, and echoes.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_dc::{self, FakeDc};
use common::fake_middle::{
    self, ConfigServer, FakeMiddle, MiddleOptions, ReqSeen, FLAG_ABRIDGED, FLAG_INTERMEDIATE,
    FLAG_PAD,
};
use common::mtproto_client as client;
use common::*;
use rand::RngCore;

const ALICE: [u8; 16] = [0xa1; 16];
const BOB: [u8; 16] = [0xb0; 16];
const TAG_GLOBAL: [u8; 16] = [0x1a; 16];
const TAG_BOB: [u8; 16] = [0x2b; 16];
const TAG_BOB_NEW: [u8; 16] = [0x3c; 16];
const SNI: &str = "proxy.example.com";

async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test finished in time");
}

/// A fake ME with a fresh random secret, and the config server announcing it.
async fn middle(proxy_ip: Option<IpAddr>) -> (FakeMiddle, ConfigServer) {
    let mut secret = vec![0u8; 128];
    rand::thread_rng().fill_bytes(&mut secret);
    let options = MiddleOptions {
        secret: secret.clone(),
        proxy_ip,
        forward: None,
    };
    let me = fake_middle::spawn(IpAddr::V4(Ipv4Addr::LOCALHOST), options).await;
    let config = ConfigServer::start(&secret, me.addr).await;
    (me, config)
}

/// The `mtproto:` lines pointing the middle-proxy client at `config`.
fn middle_proxy_block(config: &ConfigServer, extra: &str) -> String {
    format!(
        "  middle_proxy:\n    secret_url: {}\n    config_url: {}\n    config_v6_url: {}\n{extra}",
        config.url("/getProxySecret"),
        config.url("/getProxyConfig"),
        config.url("/getProxyConfigV6"),
    )
}

/// The route file: alice (short form) and bob (with `bob_tag`), DC 2 at `dc`, then
/// `mtproto_lines` inside `mtproto:` and `top` before it.
fn route_file(
    dc: &FakeDc,
    site: &Backend,
    top: &str,
    bob_tag: Option<[u8; 16]>,
    mtproto_lines: &str,
) -> String {
    let bob_tag = bob_tag.map_or(String::new(), |t| format!(", ad_tag: {}", hex::encode(t)));
    format!(
        "{top}timeouts: {{ connect: 2s }}\nmtproto:\n  users:\n    alice: {}\n    bob: {{ secret: {}{bob_tag} }}\n  datacenters: {{ 2: [{}] }}\n{mtproto_lines}routes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
        hex::encode(ALICE),
        hex::encode(BOB),
        dc.addr,
        site.addr
    )
}

/// Sends `messages` in the client's transport and checks each comes back whole, in order;
/// `quick_ack` asks for an ack of the first one (intermediate transports only). Returns the
/// client's local address.
async fn message_echo(
    addr: SocketAddr,
    secret: &[u8; 16],
    tag: [u8; 4],
    messages: &[Vec<u8>],
    quick_ack: bool,
) -> SocketAddr {
    let (mut w, mut r, _) = client::connect_faketls(addr, secret, SNI, tag, 2, false).await;
    let local = w.w.local_addr().unwrap();
    for (i, message) in messages.iter().enumerate() {
        let mut wire = Vec::new();
        if tag == client::ABRIDGED {
            let words = message.len() / 4;
            if words < 0x7f {
                wire.push(words as u8);
            } else {
                wire.push(0x7f);
                wire.extend_from_slice(&(words as u32).to_le_bytes()[..3]);
            }
        } else {
            let flag = if quick_ack && i == 0 { 0x8000_0000 } else { 0 };
            wire.extend_from_slice(&(message.len() as u32 | flag).to_le_bytes());
        }
        wire.extend_from_slice(message);
        w.send(&wire).await.unwrap();
    }
    for (i, message) in messages.iter().enumerate() {
        if quick_ack && i == 0 {
            let ack = r.recv_exact(4).await.unwrap();
            assert_eq!(
                ack,
                [0xac, 0x4b, 0x00, 0x80],
                "the ME's quick ack reached the client"
            );
        }
        let len = if tag == client::ABRIDGED {
            let first = r.recv_exact(1).await.unwrap()[0];
            let words = if first == 0x7f {
                let b = r.recv_exact(3).await.unwrap();
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize
            } else {
                usize::from(first)
            };
            words * 4
        } else {
            let b = r.recv_exact(4).await.unwrap();
            u32::from_le_bytes(b.try_into().unwrap()) as usize
        };
        let got = r.recv_exact(len).await.unwrap();
        if tag == client::PADDED {
            assert!(len - message.len() < 4, "padding of at most 3 bytes");
        } else {
            assert_eq!(len, message.len());
        }
        assert!(
            got[..message.len()] == message[..],
            "message {i} came back changed"
        );
    }
    local
}

fn random_messages(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .map(|&n| {
            let mut m = vec![0u8; n];
            rand::thread_rng().fill_bytes(&mut m);
            m[0] |= 1; // not an unencrypted message unless a test wants one
            m
        })
        .collect()
}

async fn next_request(me: &mut FakeMiddle) -> ReqSeen {
    tokio::time::timeout(SOON, me.requests.recv())
        .await
        .expect("the ME saw a request in time")
        .expect("the ME runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_the_global_tag_echo_through_the_middle_proxy_and_every_request_checks_out() {
    bounded(async {
        let (mut me, config) = middle(None).await;
        let mut dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let lines = format!(
            "  ad_tag: {}\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "")
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, "", None, &lines)).await;
        let cases = [
            (client::PADDED, FLAG_INTERMEDIATE | FLAG_PAD, true),
            (client::INTERMEDIATE, FLAG_INTERMEDIATE, false),
            (client::ABRIDGED, FLAG_ABRIDGED, false),
        ];
        for (tag, transport, quick_ack) in cases {
            let mut messages = random_messages(&[8, 64, 4 * 0x7f, 70_000, 1 << 20]);
            messages[0] = vec![0; 8];
            let local = message_echo(addr, &ALICE, tag, &messages, quick_ack).await;
            let seen = next_request(&mut me).await;
            assert!(
                seen.problems.is_empty(),
                "the ME found: {:?}",
                seen.problems
            );
            assert_eq!(seen.ad_tag, Some(TAG_GLOBAL));
            assert_eq!(seen.client, local, "the client's own address");
            assert_eq!(
                seen.flags & (FLAG_ABRIDGED | FLAG_INTERMEDIATE | FLAG_PAD),
                transport
            );
            assert_ne!(
                seen.flags & 0x2,
                0,
                "an auth-key-0 message is flagged unencrypted"
            );
            if quick_ack {
                assert_ne!(seen.flags & fake_middle::FLAG_QUICKACK, 0);
            }
        }
        assert!(me.requests.try_recv().is_err(), "no request failed a check");
        assert!(
            dc.seen.try_recv().is_err(),
            "nothing went to the DC directly"
        );
        assert_eq!(
            me.handshakes.load(Ordering::Relaxed),
            2,
            "one pool of two ME connections"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_user_tag_reaches_the_middle_proxy_for_that_user_only_and_a_reload_changes_it() {
    bounded(async {
        let (mut me, config) = middle(None).await;
        let mut dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let lines = middle_proxy_block(&config, "");
        let (gw, addr) = gateway(&route_file(&dc, &site, "", Some(TAG_BOB), &lines)).await;
        let messages = random_messages(&[400]);
        message_echo(addr, &BOB, client::PADDED, &messages, false).await;
        let seen = next_request(&mut me).await;
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.ad_tag, Some(TAG_BOB));

        // Alice has no tag and there is no global one: direct, the ME sees nothing.
        let (mut w, mut r, _) =
            client::connect_faketls(addr, &ALICE, SNI, client::PADDED, 2, false).await;
        client::echo(&mut w, &mut r, 10_000).await;
        let direct = tokio::time::timeout(SOON, dc.seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(direct.dc, 2);
        assert!(
            me.requests.try_recv().is_err(),
            "alice never reached the ME"
        );

        // A session that is live across the reload keeps relaying, with its tag.
        let (mut lw, mut lr, _) =
            client::connect_faketls(addr, &BOB, SNI, client::INTERMEDIATE, 2, false).await;
        let live_msg = random_messages(&[64]).remove(0);
        let mut framed = (live_msg.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&live_msg);
        lw.send(&framed).await.unwrap();
        assert_eq!(lr.recv_exact(4 + live_msg.len()).await.unwrap(), framed);
        assert_eq!(next_request(&mut me).await.ad_tag, Some(TAG_BOB));

        let text = format!(
            "listen: 127.0.0.1:0\n{}",
            route_file(&dc, &site, "", Some(TAG_BOB_NEW), &lines)
        );
        gw.apply(frontgate::config::parse(&text, "test.yaml").unwrap())
            .await
            .unwrap();
        message_echo(addr, &BOB, client::PADDED, &messages, false).await;
        assert_eq!(
            next_request(&mut me).await.ad_tag,
            Some(TAG_BOB_NEW),
            "new sessions carry the new tag"
        );
        lw.send(&framed).await.unwrap();
        assert_eq!(
            lr.recv_exact(4 + live_msg.len()).await.unwrap(),
            framed,
            "the live session survived the reload"
        );
        assert!(
            me.requests.try_recv().is_err(),
            "the live session's conn id was seen before"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_middle_proxies_fall_back_to_direct_with_one_line_or_close_when_told() {
    bounded(async {
        common::log_capture::start();
        let mut secret = vec![7u8; 128];
        secret[0] = 1;
        let nothing = RefusingPort::new();
        let config = ConfigServer::start(&secret, nothing.addr()).await;
        let mut dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let top = format!("metrics: {{ listen: {metrics} }}\n");
        let lines = format!(
            "  ad_tag: {}\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "")
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, &top, None, &lines)).await;
        for _ in 0..2 {
            let (mut w, mut r, _) =
                client::connect_faketls(addr, &ALICE, SNI, client::PADDED, 2, false).await;
            client::echo(&mut w, &mut r, 20_000).await;
            tokio::time::timeout(SOON, dc.seen.recv())
                .await
                .unwrap()
                .unwrap();
        }
        let lines_logged = common::log_capture::text()
            .lines()
            .filter(|l| l.contains("middle proxies unreachable: sessions go direct"))
            .count();
        assert_eq!(lines_logged, 1, "one line per outage");
        let text = http_get(metrics, "/metrics").await;
        assert!(
            text.contains("frontgate_mtproto_middle_fallbacks_total 2"),
            "{text}"
        );
        assert!(
            text.contains("frontgate_mtproto_middle_errors_total 2"),
            "{text}"
        );

        let strict = format!(
            "  ad_tag: {}\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "    fallback_direct: false\n")
        );
        let (_gw2, addr2) = gateway(&route_file(&dc, &site, "", None, &strict)).await;
        let (mut w, mut r, _) =
            client::connect_faketls(addr2, &ALICE, SNI, client::PADDED, 2, false).await;
        let _ = w.send(&[4, 0, 0, 0, 1, 2, 3, 4]).await;
        assert!(r.recv_exact(1).await.is_err(), "the session is closed");
        assert!(dc.seen.try_recv().is_err(), "nothing was dialled directly");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_the_config_server_uses_the_cached_copy() {
    bounded(async {
        let (mut me, config) = middle(None).await;
        let dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let state = tempfile::tempdir().unwrap();
        let top = format!("state: {{ dir: {} }}\n", state.path().display());
        let tag = format!("  ad_tag: {}\n", hex::encode(TAG_GLOBAL));
        let lines = format!("{tag}{}", middle_proxy_block(&config, ""));
        let (gw, addr) = gateway(&route_file(&dc, &site, &top, None, &lines)).await;
        message_echo(addr, &ALICE, client::PADDED, &random_messages(&[64]), false).await;
        assert!(next_request(&mut me).await.problems.is_empty());
        gw.stop_now();
        drop(gw);
        let cached = state.path().join("middle-proxy");
        assert!(cached.join("proxy-secret").is_file() && cached.join("proxy-config").is_file());

        // The config URLs now refuse; the cache still names the ME and has the secret.
        let nothing = RefusingPort::new();
        let dead = format!(
            "{tag}  middle_proxy:\n    secret_url: http://{0}/s\n    config_url: http://{0}/c\n    config_v6_url: http://{0}/6\n",
            nothing.addr()
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, &top, None, &dead)).await;
        message_echo(addr, &ALICE, client::PADDED, &random_messages(&[64]), false).await;
        assert!(next_request(&mut me).await.problems.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_ip_the_middle_proxy_does_not_see_is_diagnosed_in_the_log() {
    bounded(async {
        common::log_capture::start();
        // The ME "sees" the proxy at 198.51.100.9 (a NAT); the gateway is told another address.
        let (me, config) = middle(Some("198.51.100.9".parse().unwrap())).await;
        let dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let lines = format!(
            "  ad_tag: {}\n  public_ip: 203.0.113.7\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "    fallback_direct: false\n")
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, "", None, &lines)).await;
        let (mut w, mut r, _) =
            client::connect_faketls(addr, &ALICE, SNI, client::PADDED, 2, false).await;
        let _ = w.send(&[4, 0, 0, 0, 1, 2, 3, 4]).await;
        assert!(
            r.recv_exact(1).await.is_err(),
            "the session is closed, not left hanging"
        );
        assert!(
            me.bad_keys.load(Ordering::Relaxed) >= 1,
            "the ME could not decrypt the handshake"
        );
        eventually("the diagnosis", || {
            common::log_capture::text().contains("the address it sees is not 203.0.113.7")
        })
        .await;

        // Told the address the ME sees, the same setup works.
        let (mut me, config) = middle(Some("198.51.100.9".parse().unwrap())).await;
        let lines = format!(
            "  ad_tag: {}\n  public_ip: 198.51.100.9\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "")
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, "", None, &lines)).await;
        message_echo(addr, &ALICE, client::PADDED, &random_messages(&[64]), false).await;
        let seen = next_request(&mut me).await;
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.proxy.ip(), "198.51.100.9".parse::<IpAddr>().unwrap());
    })
    .await;
}

/// One intermediate-transport message `message` written to the session.
async fn send_message(w: &mut client::Writer, message: &[u8]) {
    let mut wire = (message.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(message);
    w.send(&wire).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_and_does_not_stall_the_other_sessions() {
    bounded(async {
        common::log_capture::start();
        let (_me, config) = middle(None).await;
        let dc = fake_dc::spawn().await;
        let site = Backend::start("site").await;
        let lines = format!(
            "  ad_tag: {}\n{}",
            hex::encode(TAG_GLOBAL),
            middle_proxy_block(&config, "")
        );
        let (_gw, addr) = gateway(&route_file(&dc, &site, "", None, &lines)).await;
        let open = || client::connect_faketls(addr, &ALICE, SNI, client::INTERMEDIATE, 2, false);
        // The stalled session dials the first ME connection; a held one, once it has echoed,
        // the second. Every later session then shares the first (the least loaded, first in
        // order) with the stalled one.
        let (mut stalled_w, _stalled_r, _) = open().await;
        let ping = random_messages(&[64]).remove(0);
        send_message(&mut stalled_w, &ping).await;
        let (mut held_w, mut held_r, _) = open().await;
        send_message(&mut held_w, &ping).await;
        assert_eq!(
            held_r.recv_exact(4 + ping.len()).await.unwrap()[4..],
            ping[..]
        );
        // The stalled client asks for 16 MiB of echo in 1 KiB messages and reads none of it:
        // its socket fills, then its queue at the ME connection.
        let flood = tokio::spawn(async move {
            let message = random_messages(&[1024]).remove(0);
            for _ in 0..16 * 1024 {
                let mut wire = Vec::new();
                for _ in 0..64 {
                    wire.extend_from_slice(&(message.len() as u32).to_le_bytes());
                    wire.extend_from_slice(&message);
                }
                if stalled_w.send(&wire).await.is_err() {
                    break;
                }
            }
            stalled_w
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !common::log_capture::text().contains("client reads too slowly") {
            assert!(
                std::time::Instant::now() < deadline,
                "the stalled session was never cut"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A session on the same ME connection still gets its answers.
        let messages = random_messages(&[100, 70_000]);
        tokio::time::timeout(
            Duration::from_secs(30),
            message_echo(addr, &ALICE, client::INTERMEDIATE, &messages, false),
        )
        .await
        .expect("the other sessions are not held up by the stalled one");
        flood.abort();
    })
    .await;
}
