//! One real HTTPS download from a route's backend, to learn the record sizes of its
//! downloads ([`crate::mtproto::record_sizing`]): frontgate connects as a browser would
//! (rustls, the route's name as SNI), asks for `/`, and notes the length of every TLS record
//! the site sends. Nothing is learned from the content.
//!
//! The site's records are told apart by when they arrive: the handshake's, then the session
//! tickets a TLS 1.3 server sends right after it (read during a short pause before the
//! request is written), then the response's. The response ends with the server's
//! close_notify (`Connection: close`), which is not a data record and is dropped.
//!
//! The certificate is not verified: the download only measures sizes, sends nothing secret,
//! and the backend's certificate may name a host this machine cannot check (a loopback
//! `to`). Its signatures are still checked, so the handshake is a real one
//! ([`crate::forward::any_chain`]).

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::admission::loop_guard::{Guarded, OutboundAddrs};
use crate::forward::any_chain;
use crate::forward::pool::Pool;
use crate::forward::upstream::ConnectError;

/// How long the sampler waits after the handshake for session tickets before it asks.
pub const TICKET_PAUSE: Duration = Duration::from_millis(100);

/// Most response bytes read: a megabyte holds 64 full records, plenty to see the sizing.
pub const MAX_SAMPLE_BYTES: usize = 1 << 20;

/// The length of a TLS 1.3 encrypted alert record (2 alert bytes, the inner content type,
/// a 16-byte AEAD tag): the close_notify that ends the response.
const TLS13_ALERT_RECORD_LEN: usize = 19;

/// TLS record type of application data (TLS 1.3 sends everything after the ServerHello so).
const APPLICATION_DATA: u8 = 0x17;

/// Why no sample was had.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// No backend of the route accepted the connection.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The TLS handshake or the download failed.
    #[error("the HTTPS download failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS client could not be set up.
    #[error("cannot set up the TLS client: {0}")]
    Tls(#[from] rustls::Error),
    /// The route's name is not a valid TLS server name.
    #[error("{0:?} is not a server name a TLS client can ask for")]
    BadName(String),
    /// The download did not end within the time allowed.
    #[error("the HTTPS download took longer than {0:?}")]
    Timeout(Duration),
}

/// Downloads `/` from the route's backend (the server its `pool` gives `client`) as
/// `server_name` (after `head`, the route's PROXY header, if any) within `budget`, and returns the lengths of the site's application-data
/// records of the response, in order.
pub async fn response_records(
    pool: &Arc<Pool>,
    client: IpAddr,
    head: &[u8],
    server_name: &str,
    budget: Duration,
    outbound: &Arc<OutboundAddrs>,
) -> Result<Vec<usize>, SampleError> {
    let deadline = Instant::now() + budget;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| SampleError::BadName(server_name.to_string()))?;
    let within = Within { deadline, budget };
    let Guarded {
        stream: mut backend,
        held: _held,
        ..
    } = outbound.connect(pool, client, budget).await?;
    within.run(backend.write_all(head)).await??;
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(any_chain::client_config(&[b"http/1.1"])?));
    let tapped = RecordTap::new(backend);
    let mut tls = within.run(connector.connect(name, tapped)).await??;
    // Session tickets come right after the handshake: read them (no plaintext comes yet).
    let mut scratch = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(TICKET_PAUSE, tls.read(&mut scratch)).await;
    let before_request = tls.get_ref().0.records.len();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {server_name}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    within.run(tls.write_all(request.as_bytes())).await??;
    let mut body = 0;
    while body < MAX_SAMPLE_BYTES {
        match within.run(tls.read(&mut scratch)).await? {
            Ok(0) => break,
            Ok(n) => body += n,
            // A server that closes without close_notify ends the sample as well.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
    }
    let records = &tls.get_ref().0.records;
    let mut lengths: Vec<usize> = records
        .get(before_request..)
        .unwrap_or_default()
        .iter()
        .filter(|(kind, _)| *kind == APPLICATION_DATA)
        .map(|&(_, len)| len)
        .collect();
    if body < MAX_SAMPLE_BYTES && lengths.last() == Some(&TLS13_ALERT_RECORD_LEN) {
        lengths.pop();
    }
    Ok(lengths)
}

/// The sample's deadline, for each step of it.
#[derive(Clone, Copy)]
struct Within {
    deadline: Instant,
    budget: Duration,
}

impl Within {
    async fn run<F: std::future::Future>(self, step: F) -> Result<F::Output, SampleError> {
        tokio::time::timeout_at(self.deadline, step)
            .await
            .map_err(|_| SampleError::Timeout(self.budget))
    }
}

/// Most records noted; past it the sample is long enough and further records are not kept.
const MAX_TAPPED_RECORDS: usize = 4096;

/// A stream that notes the type and length of each TLS record read through it, from the
/// record headers only.
struct RecordTap<S> {
    inner: S,
    /// `(type, length)` of each record whose header has been read.
    records: Vec<(u8, usize)>,
    header: [u8; 5],
    header_got: usize,
    /// Body bytes of the current record still to come.
    body_left: usize,
}

impl<S> RecordTap<S> {
    fn new(inner: S) -> RecordTap<S> {
        RecordTap {
            inner,
            records: Vec::new(),
            header: [0; 5],
            header_got: 0,
            body_left: 0,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_got).min(bytes.len());
            self.header[self.header_got..self.header_got + take].copy_from_slice(&bytes[..take]);
            self.header_got += take;
            bytes = &bytes[take..];
            if self.header_got == 5 {
                self.header_got = 0;
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.body_left = len;
                if self.records.len() < MAX_TAPPED_RECORDS {
                    self.records.push((self.header[0], len));
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_reads_record_headers_in_any_split() {
        let mut wire = Vec::new();
        for (kind, len) in [(0x16u8, 90usize), (0x14, 1), (0x17, 300), (0x17, 16401)] {
            wire.extend([kind, 3, 3]);
            wire.extend((len as u16).to_be_bytes());
            wire.extend(vec![0xaa; len]);
        }
        for chunk in [1, 2, 5, 7, 4096, wire.len()] {
            let mut tap = RecordTap::new(());
            for piece in wire.chunks(chunk) {
                tap.observe(piece);
            }
            assert_eq!(
                tap.records,
                vec![(0x16, 90), (0x14, 1), (0x17, 300), (0x17, 16401)],
                "chunk {chunk}"
            );
        }
    }
}
