//! A fake-TLS client session that tells a served hello from a fronted one, for the tests of
//! user policies and their persistence.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use frontgate_testkit::mtproto_client as client;
use frontgate_testkit::SOON;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A fake-TLS session for `secret` on `sni` from `source`, or `None` when the gateway
/// fronted the hello to the site (which answers `site\n`).
pub async fn session(
    gateway: SocketAddr,
    secret: &[u8; 16],
    sni: &str,
    source: IpAddr,
) -> Option<(client::Writer, client::Reader)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut sock = socket.connect(gateway).await.unwrap();
    sock.set_nodelay(true).unwrap();
    let hello = client::build_hello(secret, sni, &[0x1301], client::now_unix() as u32);
    sock.write_all(&hello.record).await.unwrap();
    let mut first = [0u8; 5];
    tokio::time::timeout(SOON, sock.read_exact(&mut first))
        .await
        .expect("an answer")
        .unwrap();
    if &first == b"site\n" {
        return None;
    }
    // The fake flight: the rest of its records, then the init as the kit's client sends it.
    let mut rest = vec![0u8; usize::from(u16::from_be_bytes([first[3], first[4]]))];
    sock.read_exact(&mut rest).await.unwrap();
    for _ in 0..2 {
        let mut head = [0u8; 5];
        sock.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
        sock.read_exact(&mut body).await.unwrap();
    }
    let obf = client::obfuscated2(secret, client::PADDED, 2);
    let mut init = vec![0x14, 3, 3, 0, 1, 1];
    init.extend(client::records(&obf.wire_init, 64));
    sock.write_all(&init).await.unwrap();
    let (r, w) = sock.into_split();
    let writer = client::ClientWriter {
        w,
        encrypt: obf.encrypt.clone(),
        tls: true,
    };
    Some((
        writer,
        client::ClientReader::new(r, obf.decrypt.clone(), true),
    ))
}

/// The loopback address sessions come from by default.
pub const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Echoes `chunk`-byte pieces until the session ends; returns the payload bytes moved both
/// ways and when the total first reached `mark` (if it did).
pub async fn echo_until_closed(
    session: (client::Writer, client::Reader),
    chunk: usize,
    mark: usize,
) -> (usize, Option<Instant>) {
    echo_paced_until_closed(session, chunk, mark, Duration::ZERO).await
}

/// [`echo_until_closed`] with `pause` after each round trip. The pace bounds what one
/// interval of the gateway's policy check (`ENFORCE_EVERY`) lets through, however fast the
/// relay is.
pub async fn echo_paced_until_closed(
    (mut w, mut r): (client::Writer, client::Reader),
    chunk: usize,
    mark: usize,
    pause: Duration,
) -> (usize, Option<Instant>) {
    let data = vec![0x5au8; chunk];
    let mut moved = 0;
    let mut reached = None;
    loop {
        if w.send(&data).await.is_err() {
            break;
        }
        match tokio::time::timeout(SOON, r.recv_exact(chunk)).await {
            Ok(Ok(_)) => moved += 2 * chunk,
            _ => break,
        }
        if moved >= mark && reached.is_none() {
            reached = Some(Instant::now());
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (moved, reached)
}
