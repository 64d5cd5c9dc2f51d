//! The client side of a test: connect and identify the backend, reads and waits that fail
//! after [`SOON`] instead of hanging, and a port that refuses connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::SOON;

/// Connects, sends `first`, and returns the backend's name line and the stream.
pub async fn send_and_identify(addr: SocketAddr, first: &[u8]) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let name = read_line(&mut stream).await;
    (name, stream)
}

/// Both ends of one loopback TCP connection: (the accepted side, the connecting side).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (server, client)
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
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Waits until `condition` holds, looking every 10 ms; panics naming `what` if it still
/// does not after [`SOON`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address that refuses connections for as long as this value lives: the port
/// is bound, so nothing else can take it, but never listened on, so a connect is reset at
/// once. (A port found free and let go can be taken by anyone before it is used.)
pub struct RefusingPort {
    /// Held, never listened on.
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds a fresh port on 127.0.0.1 (without `SO_REUSEADDR`, so no one binds it too).
    pub fn new() -> RefusingPort {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(false).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = socket.local_addr().unwrap();
        RefusingPort {
            _socket: socket,
            addr,
        }
    }

    /// The address that refuses.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A `read` for a vectored reader (frontgate's `RecordEncoder::fill_vectored`) that copies up
/// to `limit` bytes of `data[*fed..]` across the slices, as `readv` would.
pub fn readv_from<'a>(
    data: &'a [u8],
    fed: &'a mut usize,
    limit: usize,
) -> impl FnOnce(&mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> + 'a {
    move |slices| {
        let start = *fed;
        for slice in slices.iter_mut() {
            let n = slice
                .len()
                .min(data.len() - *fed)
                .min(start.saturating_add(limit) - *fed);
            slice[..n].copy_from_slice(&data[*fed..*fed + n]);
            *fed += n;
        }
        Ok(*fed - start)
    }
}

/// `GET path` on an HTTP endpoint (the metrics listener) with `Connection: close`; the
/// answer's body. Panics if no complete answer arrives within [`SOON`].
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut answer))
        .await
        .expect("the endpoint answers and closes")
        .unwrap();
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("no complete HTTP answer: {answer:?}"),
    }
}
