//! Shared helpers for the loopback tests: one fake backend, one test client, and a gateway
//! started in-process from route-file text.
#![allow(dead_code)] // each test binary uses a different subset

pub mod fake_dc;
pub mod mtproto_client;
pub mod test_ca;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use frontgate::config;
use frontgate::server::gateway::Gateway;
use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Generous bound for anything that should happen "soon" on loopback.
pub const SOON: Duration = Duration::from_secs(10);

/// Starts a gateway from route-file text whose `listen` is replaced by 127.0.0.1:0.
pub async fn gateway(yaml: &str) -> (Gateway, SocketAddr) {
    let text = format!("listen: 127.0.0.1:0\n{yaml}");
    let config = config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::start(config, None).await.expect("gateway starts");
    let addr = gateway.local_addrs().await[0];
    (gateway, addr)
}

/// What a fake backend saw on one connection.
#[derive(Debug)]
pub struct Seen {
    /// The client address from a PROXY header, when the backend expects one.
    pub proxied_client: Option<SocketAddr>,
    /// Every byte received after the header.
    pub bytes: Vec<u8>,
}

/// A backend that answers each connection with `name\n` and then echoes every byte back,
/// closing its side after the client's EOF.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Backend {
    /// A backend without PROXY protocol.
    pub async fn start(name: &str) -> Backend {
        Self::spawn(name, false).await
    }

    /// A backend that requires a PROXY header (v1 or v2) first.
    pub async fn expecting_proxy_header(name: &str) -> Backend {
        Self::spawn(name, true).await
    }

    async fn spawn(name: &str, proxy: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let name = Arc::new(format!("{name}\n"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream, name.clone(), proxy, tx.clone()));
            }
        });
        Backend { addr, seen }
    }

    /// What the next finished connection saw.
    pub async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(SOON, self.seen.recv())
            .await
            .expect("backend saw a connection")
            .unwrap()
    }
}

async fn echo(
    mut stream: TcpStream,
    name: Arc<String>,
    proxy: bool,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let mut bytes = Vec::new();
    let mut proxied_client = None;
    if proxy {
        loop {
            if stream.read_buf(&mut bytes).await.unwrap_or(0) == 0 {
                return;
            }
            match ProxyHeader::parse(&bytes, ParseConfig::default()) {
                Ok((header, used)) => {
                    proxied_client = header.proxied_address().map(|a| a.source);
                    bytes.drain(..used);
                    break;
                }
                Err(proxy_header::Error::BufferTooShort) => continue,
                Err(e) => panic!("backend expected a PROXY header: {e}"),
            }
        }
    }
    if stream.write_all(name.as_bytes()).await.is_err() {
        return;
    }
    if !bytes.is_empty() && stream.write_all(&bytes).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
    let _ = tx.send(Seen {
        proxied_client,
        bytes,
    });
}

/// A real ClientHello from rustls for `sni` (no SNI extension when `sni` is an IP address).
pub fn client_hello(sni: &str) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Re-frames a one-record hello as several records of at most `size` handshake bytes.
pub fn split_into_records(record: &[u8], size: usize) -> Vec<u8> {
    record[5..]
        .chunks(size)
        .flat_map(|chunk| {
            let mut r = vec![0x16, 0x03, 0x01];
            r.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            r.extend_from_slice(chunk);
            r
        })
        .collect()
}

/// Connects, sends `first`, and returns the backend's name line and the stream.
pub async fn send_and_identify(addr: SocketAddr, first: &[u8]) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let name = read_line(&mut stream).await;
    (name, stream)
}

/// Reads one `\n`-terminated line ("" on EOF before any byte).
pub async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(SOON, stream.read(&mut byte))
            .await
            .expect("line in time")
        {
            Ok(0) | Err(_) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
        }
    }
    String::from_utf8(line).unwrap()
}

/// Reads exactly `n` bytes.
pub async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(SOON, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .unwrap();
    buf
}

/// Waits for the peer to close: true if EOF (or reset) arrives within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Both ends of one loopback TCP connection: (the connecting side, the accepted side).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
