//! The PROXY protocol (v1/v2, auto-detected) header a trusted L4 balancer puts in front of
//! the client's bytes, read through the `proxy-header` crate.

use std::io;
use std::net::SocketAddr;

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::forward::proxy_out::canonical;

/// Why an inbound header was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The peer closed or the socket failed before a whole header arrived.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a PROXY v1/v2 header.
    #[error("expected a PROXY protocol header from a trusted peer, got something else")]
    Invalid,
}

/// The largest header we wait for: v1 is at most 107 bytes; v2 carries TLVs, bounded here.
const MAX_INBOUND_HEADER: usize = 4096;

/// The longest v1 line, CRLF included (proxy-protocol.txt §2.1). `proxy-header` enforces it
/// only on a line still waiting for its CRLF, so a longer line that arrived whole would pass.
const MAX_V1_HEADER: usize = 107;

/// What an inbound header said, plus the bytes that followed it in the same reads.
#[derive(Debug)]
pub struct Inbound {
    /// The client's address, `None` for a LOCAL (health-check) header.
    pub client: Option<SocketAddr>,
    /// Bytes read past the header: the start of the client's own stream.
    pub rest: Vec<u8>,
}

/// Reads one v1 or v2 header (auto-detected) from a trusted peer.
pub async fn read_inbound<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Inbound, InboundError> {
    let mut buf = Vec::with_capacity(256);
    loop {
        match ProxyHeader::parse(&buf, ParseConfig::default()) {
            Ok((_, used)) if buf[0] == b'P' && used > MAX_V1_HEADER => {
                return Err(InboundError::Invalid)
            }
            Ok((header, used)) => {
                let client = header.proxied_address().map(|a| canonical(a.source));
                return Ok(Inbound {
                    client,
                    rest: buf[used..].to_vec(),
                });
            }
            Err(proxy_header::Error::BufferTooShort) if buf.len() < MAX_INBOUND_HEADER => {}
            Err(_) => return Err(InboundError::Invalid),
        }
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(InboundError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn inbound_header_split_in_bytes_keeps_the_rest() {
        let mut wire = b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 443\r\n".to_vec();
        wire.extend_from_slice(b"\x16\x03\x01hello");
        let (mut a, mut b) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in wire {
                a.write_all(&[byte]).await.unwrap();
            }
        });
        let got = read_inbound(&mut b).await.unwrap();
        assert_eq!(got.client, Some(addr("198.51.100.9:40000")));
        let mut rest = got.rest;
        b.read_to_end(&mut rest).await.unwrap();
        writer.await.unwrap();
        assert_eq!(rest, b"\x16\x03\x01hello");
    }

    #[tokio::test]
    async fn v1_lines_longer_than_107_bytes_are_refused_however_they_arrive() {
        // 108 bytes with the CRLF; proxy-header bounds only lines still waiting for theirs.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(106, b'x');
        line.extend_from_slice(b"\r\n");
        let padded_port = format!("PROXY TCP4 192.0.2.7 10.0.0.1 {:0>72} 443\r\n", 5000);
        assert_eq!(padded_port.len(), 108);
        for header in [line, padded_port.into_bytes()] {
            let mut whole: &[u8] = &header;
            assert!(matches!(
                read_inbound(&mut whole).await,
                Err(InboundError::Invalid)
            ));
            let (mut a, mut b) = tokio::io::duplex(1);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                a.write_all(&header).await
            });
            assert!(matches!(
                read_inbound(&mut b).await,
                Err(InboundError::Invalid)
            ));
            drop(b);
            let _ = writer.await;
        }
        let longest = format!("PROXY TCP4 192.0.2.7 10.0.0.1 {:0>71} 443\r\n", 5000);
        let mut whole: &[u8] = longest.as_bytes();
        let got = read_inbound(&mut whole).await.unwrap();
        assert_eq!(got.client, Some(addr("192.0.2.7:5000")));
    }

    #[tokio::test]
    async fn garbage_instead_of_a_header_is_refused() {
        let mut input: &[u8] = b"\x16\x03\x01\x02\x00 not a proxy header at all......";
        assert!(matches!(
            read_inbound(&mut input).await,
            Err(InboundError::Invalid)
        ));
    }
}
