//! Fake backends: [`Backend`] names itself and echoes, reporting what it saw; [`raw_echo`]
//! echoes from the first byte and keeps nothing (a throughput run's backend).

use std::net::SocketAddr;
use std::sync::Arc;

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::SOON;

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
                tokio::spawn(serve(stream, name.clone(), proxy, tx.clone()));
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

async fn serve(
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
    echo_back(&mut stream, |read| bytes.extend_from_slice(read)).await;
    let _ = tx.send(Seen {
        proxied_client,
        bytes,
    });
}

/// Serves `listener` forever: every connection gets back every byte it sends, from the
/// first, and nothing is kept.
pub async fn raw_echo(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::spawn(async move { echo_back(&mut stream, |_| ()).await });
    }
}

/// Reads until EOF or an error, shows each read to `each` (which may change the bytes in
/// place) and writes it back; then closes the sending side.
///
/// Full duplex, like a real server: reading goes on while a write waits, the chunks not yet
/// written queued in between. A read-then-write loop deadlocks behind a peer that is itself
/// a one-direction-at-a-time copier (microsocks: one thread, blocking writes, and it serves
/// its client side first): both end up blocked writing to the other. The queue holds at
/// most what the peer sent and has not read back, which the tests bound.
pub async fn echo_back(stream: &mut TcpStream, mut each: impl FnMut(&mut [u8])) {
    let (mut reader, mut writer) = stream.split();
    let (queue, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
    let read_side = async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            each(&mut buf[..n]);
            if queue.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    };
    let write_side = async move {
        while let Some(chunk) = queued.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(read_side, write_side);
}
