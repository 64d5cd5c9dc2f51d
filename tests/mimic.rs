//! The fake server flight takes the shape of the route's real backend (`mimic:`), through the
//! whole gateway on loopback. The backend is a real TLS stack: a second gateway terminating
//! TLS with rustls for the route's name. A prober replaying a client's hello gets the
//! backend's own answer; the client got ours: their ServerHello shapes (JA3S, key share) and
//! their flight sizes on the wire must be equal.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_dc;
use common::mtproto_client as client;
use common::test_ca::{write_leaf, TestCa};
use common::*;
use tls_parser::{
    parse_tls_extension_unknown, parse_tls_plaintext, parse_tls_raw_record, TlsExtension,
    TlsMessage, TlsMessageHandshake,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: [u8; 16] = [0xa1; 16];
/// The name in TDLib's recorded hello.
const SNI: &str = "proxy.test";

/// TDLib 1.8.66's recorded ClientHello (tests/data/tdlib), re-signed for ALICE now: its random
/// becomes a valid fake-TLS digest (PROTOCOL.md §2), every other byte stays as TDLib sent it.
/// A fresh session id each time keeps the replay cache from fronting a second use.
fn tdlib_hello() -> Vec<u8> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tdlib/client-hello-tdlib-1.8.66.json"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let text = json["full"].as_str().unwrap().trim_end_matches('=');
    let mut record = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .unwrap();
    let sid_len = usize::from(record[43]);
    let fresh: [u8; 32] = rand::random();
    record[44..44 + sid_len].copy_from_slice(&fresh[..sid_len]);
    record[11..43].fill(0);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&ALICE).unwrap();
    mac.update(&record);
    let mut digest: [u8; 32] = mac.finalize().into_bytes().into();
    let now = (client::now_unix() as u32).to_le_bytes();
    for (d, t) in digest[28..].iter_mut().zip(now) {
        *d ^= t;
    }
    record[11..43].copy_from_slice(&digest);
    record
}

/// A rustls TLS server for SNI (a gateway with a `tls:` route) and its address.
struct TlsSite {
    _gateway: frontgate::server::gateway::Gateway,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _plain: Backend,
}

async fn tls_site() -> TlsSite {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_leaf(dir.path(), &TestCa::new().leaf(SNI));
    let plain = Backend::start("site").await;
    let (gateway, addr) = gateway(&format!(
        "routes:\n  - sni: {SNI}\n    tls: {{ cert: {}, key: {} }}\n    to: {}\n",
        cert.display(),
        key.display(),
        plain.addr
    ))
    .await;
    TlsSite {
        _gateway: gateway,
        addr,
        _dir: dir,
        _plain: plain,
    }
}

/// A TCP relay in front of the site that records what the site sent on each connection (an
/// ECDSA signature's DER length varies by a byte or two from one handshake to the next, so
/// the mirror's own answer is the exact reference).
struct Recorder {
    addr: SocketAddr,
    /// (what the client sent first, what the site answered), per connection.
    answers: tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, Vec<u8>)>,
}

async fn recorder(site: SocketAddr) -> Recorder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let upstream = TcpStream::connect(site).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let (request_tx, request_rx) = tokio::sync::oneshot::channel();
                let up = tokio::spawn(async move {
                    let mut first = vec![0u8; 65536];
                    let n = cr.read(&mut first).await.unwrap_or(0);
                    first.truncate(n);
                    let _ = uw.write_all(&first).await;
                    let _ = request_tx.send(first);
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                    let _ = uw.shutdown().await;
                });
                let mut answer = Vec::new();
                let mut buf = [0u8; 16384];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
                let request = request_rx.await.unwrap_or_default();
                let _ = tx.send((request, answer));
                up.abort();
            });
        }
    });
    Recorder { addr, answers }
}

/// An MTProto gateway whose route fronts `site` with `mimic`.
async fn mtproto_gateway(
    site: SocketAddr,
    dc: SocketAddr,
    mimic: &str,
) -> (frontgate::server::gateway::Gateway, SocketAddr) {
    gateway(&format!(
        "mtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: [{dc}] }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: {mimic}\n    to: {site}\n",
        hex::encode(ALICE)
    ))
    .await
}

/// Every byte a server sends in answer to `hello`, until it has been quiet for 300 ms.
async fn server_flight(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(hello).await.unwrap();
    let mut flight = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        flight.extend_from_slice(&buf[..n]);
    }
    flight
}

/// The first three records a fake-TLS client reads: ServerHello, CCS, the data record.
async fn fake_flight(stream: &mut TcpStream) -> Vec<u8> {
    let mut flight = Vec::new();
    for _ in 0..3 {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
        stream.read_exact(&mut body).await.unwrap();
        flight.extend_from_slice(&head);
        flight.extend_from_slice(&body);
    }
    flight
}

/// The JA3S (version, cipher, extension types in order) and the key share (group, length)
/// of a flight's ServerHello, read with tls-parser.
fn shape(flight: &[u8]) -> (String, (u16, usize)) {
    let (_, plain) = parse_tls_plaintext(flight).expect("a ServerHello record");
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello))) = plain.msg.first()
    else {
        panic!("no ServerHello");
    };
    let (mut types, mut key_share) = (Vec::new(), (0, 0));
    let mut ext = hello.ext.unwrap_or_default();
    while !ext.is_empty() {
        let (next, TlsExtension::Unknown(kind, data)) = parse_tls_extension_unknown(ext).unwrap()
        else {
            unreachable!("parse_tls_extension_unknown gives Unknown")
        };
        if kind.0 == 0x0033 {
            key_share = (u16::from_be_bytes([data[0], data[1]]), data.len() - 4);
        }
        types.push(kind.0.to_string());
        ext = next;
    }
    let ja3s = format!("{},{},{}", hello.version.0, hello.cipher.0, types.join("-"));
    (ja3s, key_share)
}

/// Record types and lengths.
fn records(flight: &[u8]) -> Vec<(u8, usize)> {
    let mut rest = flight;
    let mut out = Vec::new();
    while let Ok((next, record)) = parse_tls_raw_record(rest) {
        out.push((record.hdr.record_type.0, record.data.len()));
        rest = next;
    }
    out
}

/// A fake-TLS session through `gateway` that echoes a few bytes through the DC: the client
/// checked the flight's digest (a Telegram client would accept it).
async fn session_works(gateway: SocketAddr) {
    let (_, mut w, mut r, _) =
        client::connect(gateway, &ALICE, SNI, client::PADDED, 2, false).await;
    client::echo(&mut w, &mut r, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mirror_gives_the_client_the_backends_shape_and_size() {
    let site = tls_site().await;
    let mut recorded = recorder(site.addr).await;
    let dc = fake_dc::spawn().await;
    let (_gw, addr) = mtproto_gateway(recorded.addr, dc.addr, "live").await;
    // What a prober replaying a client's hello sees: the site's own answer.
    let direct = server_flight(site.addr, &tdlib_hello()).await;
    // What a Telegram client gets through the gateway...
    let hello = tdlib_hello();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    let fake = fake_flight(&mut stream).await;
    // ...and what the site answered the mirror, which sent it the client's own hello (the
    // gateway's start-up probe asks the site too, with a hello of its own).
    let mirrored = loop {
        let (request, answer) = tokio::time::timeout(SOON, recorded.answers.recv())
            .await
            .expect("the mirror asked the site")
            .unwrap();
        if request == hello {
            break answer;
        }
    };

    assert_eq!(shape(&fake), shape(&direct), "JA3S and key share");
    assert_eq!(shape(&fake), shape(&mirrored));
    assert_eq!(fake.len(), mirrored.len(), "flight bytes on the wire");
    assert!(
        fake.len().abs_diff(direct.len()) <= 2,
        "{} vs {}",
        fake.len(),
        direct.len()
    );
    let (ours, theirs) = (records(&fake), records(&direct));
    assert_eq!(ours[0], theirs[0], "ServerHello record");
    assert_eq!(ours.len(), 3, "ServerHello, CCS, ONE data record: {ours:?}");
    drop(stream);
    session_works(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_profile_serves_when_the_backend_is_gone() {
    let site = tls_site().await;
    let dc = fake_dc::spawn().await;
    let (_gw, addr) = mtproto_gateway(site.addr, dc.addr, "learned").await;
    let direct = server_flight(site.addr, &tdlib_hello()).await;

    // The first hello teaches the gateway the backend's profile...
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(&tdlib_hello()).await.unwrap();
    let learned = fake_flight(&mut first).await;
    assert_eq!(shape(&learned), shape(&direct));
    drop(first);
    // ...which then goes away: the learned profile keeps serving its shape.
    let site_addr = site.addr;
    site._gateway.shutdown(Duration::from_secs(1)).await;
    drop(site);
    assert!(
        TcpStream::connect(site_addr).await.is_err(),
        "the site is down"
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&tdlib_hello()).await.unwrap();
    let fake = fake_flight(&mut stream).await;
    assert_eq!(shape(&fake), shape(&direct));
    assert_eq!(fake.len(), learned.len(), "the learned size");
    assert!(
        fake.len().abs_diff(direct.len()) <= 2,
        "{} vs {}",
        fake.len(),
        direct.len()
    );
    drop(stream);
    session_works(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_falls_back_to_the_fixed_shape_and_still_serves() {
    let dead = RefusingPort::new();
    let dc = fake_dc::spawn().await;
    let (_gw, addr) = mtproto_gateway(dead.addr(), dc.addr, "live").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&tdlib_hello()).await.unwrap();
    let fake = fake_flight(&mut stream).await;
    let layout = records(&fake);
    assert_eq!(
        (layout[0], layout[1].0, layout[2].0),
        ((0x16, 122), 0x14, 0x17)
    );
    assert!((1024..4096).contains(&layout[2].1), "{layout:?}");
    // TDLib offers 13 01 first: the fixed shape echoes it, key_share before supported_versions.
    assert_eq!(shape(&fake), ("771,4865,51-43".to_string(), (0x001d, 32)));
    drop(stream);
    session_works(addr).await;
}

/// `frontgate check --probe` (the real binary) on a route file whose MTProto route fronts `to`.
async fn check_probe(to: SocketAddr) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:1\nmtproto: {{ users: {{ alice: {} }} }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    to: {to}\n",
            hex::encode(ALICE)
        ),
    )
    .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["check", "--probe", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_says_whether_the_backend_can_be_mirrored() {
    let site = tls_site().await;
    let out = check_probe(site.addr).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("route {SNI}: the backend answers TLS 1.3")),
        "{stdout}"
    );

    let plain = Backend::start("not tls").await;
    let out = check_probe(plain.addr).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "route {SNI}: fake flights cannot mirror the backend: the backend did not answer with TLS"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_be_mirrored_is_not_asked_again_for_every_hello() {
    let mut plain = Backend::start("not tls").await;
    let dc = fake_dc::spawn().await;
    let (_gw, addr) = mtproto_gateway(plain.addr, dc.addr, "live").await;
    // The start-up probe asks once, with rustls's own hello.
    let probe = tokio::time::timeout(SOON, plain.next_seen()).await.unwrap();
    assert_ne!(probe.bytes, tdlib_hello());
    for round in 0..3 {
        let hello = tdlib_hello();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&hello).await.unwrap();
        let fake = fake_flight(&mut stream).await;
        assert_eq!(
            shape(&fake).0,
            "771,4865,51-43",
            "round {round}: the fixed shape"
        );
        drop(stream);
        let asked = tokio::time::timeout(Duration::from_millis(500), plain.next_seen()).await;
        if round == 0 {
            // The first hello asks the backend (the client's own hello, nothing after it)...
            let seen = asked.expect("the mirror asked the backend");
            assert_eq!(seen.bytes, hello);
        } else {
            // ...which is then known not to speak TLS 1.3: the next hellos do not wait for it.
            assert!(asked.is_err(), "round {round}: the backend was asked again");
        }
    }
}

/// A TLS 1.3 site (rustls, no gateway) that answers any request with `body` bytes written
/// `chunk` bytes at a time, as nginx with `ssl_buffer_size` does: a record of the header,
/// then one record of `chunk` + 17 bytes on the wire per write.
async fn chunked_site(chunk: usize, body: usize) -> SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = TestCa::new().leaf(SNI);
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return; // a mirror or a prober: it gave up after the flight
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n");
                let _ = tls.write_all(head.as_bytes()).await;
                let data = vec![b'x'; chunk];
                for _ in 0..body / chunk {
                    if tls.write_all(&data).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Payload lengths of the records the gateway sent in one 256 KiB echo session.
async fn download_records(gateway: SocketAddr) -> Vec<usize> {
    let (_, mut w, mut r, _) =
        client::connect(gateway, &ALICE, SNI, client::PADDED, 2, false).await;
    client::echo(&mut w, &mut r, 256 * 1024).await;
    r.record_lengths
}

/// The record lengths a fake-TLS client reads back after echoing four 64 KiB messages
/// (intermediate transport) through a gateway in middle-proxy mode.
async fn middle_download_records(gateway: SocketAddr) -> Vec<usize> {
    let (_, mut w, mut r, _) =
        client::connect(gateway, &ALICE, SNI, client::INTERMEDIATE, 2, false).await;
    let mut message = vec![0x5a; 64 * 1024];
    message[0] |= 1; // an encrypted message (its auth key id is not 0)
    for _ in 0..4 {
        let mut wire = (message.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&message);
        w.send(&wire).await.unwrap();
    }
    for _ in 0..4 {
        let echoed = r.recv_exact(4 + message.len()).await.unwrap();
        assert_eq!(echoed[4..], message[..], "the ME's echo came back whole");
    }
    r.record_lengths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middle_proxy_sessions_take_the_sites_record_sizes_too() {
    use common::fake_middle::{self, ConfigServer, MiddleOptions};
    const SITE_RECORD: usize = 4096 + 17;
    let site = chunked_site(4096, 1 << 20).await;
    let dc = fake_dc::spawn().await;
    let secret = vec![0x77; 128];
    let options = MiddleOptions {
        secret: secret.clone(),
        proxy_ip: None,
        forward: None,
    };
    let me = fake_middle::spawn(std::net::Ipv4Addr::LOCALHOST.into(), options).await;
    let config = ConfigServer::start(&secret, me.addr).await;
    let (_gw, addr) = gateway(&format!(
        "mtproto:\n  users: {{ alice: {} }}\n  ad_tag: {}\n  middle_proxy:\n    secret_url: {}\n    config_url: {}\n    config_v6_url: {}\n  datacenters: {{ 2: [{}] }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: live\n    to: {site}\n",
        hex::encode(ALICE),
        hex::encode([0x1a; 16]),
        config.url("/getProxySecret"),
        config.url("/getProxyConfig"),
        config.url("/getProxyConfigV6"),
        dc.addr,
    ))
    .await;
    // The gateway downloads from the site in the background at start.
    let deadline = tokio::time::Instant::now() + SOON;
    let lengths = loop {
        let lengths = middle_download_records(addr).await;
        if lengths.iter().max() == Some(&SITE_RECORD) || tokio::time::Instant::now() > deadline {
            break lengths;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lengths.iter().max(), Some(&SITE_RECORD), "{lengths:?}");
    let full = lengths.iter().filter(|&&len| len == SITE_RECORD).count();
    assert!(
        full * SITE_RECORD * 10 >= 4 * 64 * 1024 * 8,
        "most bytes go in the site's full records, not cut at each batch's end: {lengths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_records_take_the_sites_record_sizes() {
    // 4096 + 17: what a TLS 1.3 site with `ssl_buffer_size 4k` sends, within what clients
    // take, so it can be matched exactly.
    const SITE_RECORD: usize = 4096 + 17;
    let site = chunked_site(4096, 1 << 20).await;
    let dc = fake_dc::spawn().await;
    let (_gw, addr) = mtproto_gateway(site, dc.addr, "live").await;
    // The gateway downloads from the site in the background at start.
    let deadline = tokio::time::Instant::now() + SOON;
    let lengths = loop {
        let lengths = download_records(addr).await;
        if lengths.iter().max() == Some(&SITE_RECORD) || tokio::time::Instant::now() > deadline {
            break lengths;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lengths.iter().max(), Some(&SITE_RECORD), "{lengths:?}");
    // The site's first record is its response header: the session's first is no larger.
    let header = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".len() + 17;
    assert!(lengths[0] <= header, "{} > {header}", lengths[0]);
    let full = lengths.iter().filter(|&&len| len == SITE_RECORD).count();
    assert!(
        full * SITE_RECORD * 10 >= 256 * 1024 * 8,
        "most bytes go in the site's full records: {lengths:?}"
    );

    // With `mimic: off` the same download goes in the largest records clients take.
    let (_gw_off, off) = mtproto_gateway(site, dc.addr, "off").await;
    let lengths = download_records(off).await;
    assert_eq!(lengths.iter().max(), Some(&16384), "{lengths:?}");
}
