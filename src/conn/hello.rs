//! Reading the TLS ClientHello without consuming it: every byte read is kept and later
//! replayed to whichever backend the connection is routed to.
//!
//! The hello may arrive in 1-byte TCP segments and span several TLS records (post-quantum key
//! shares push it past one segment, sometimes past one record); the records are reassembled,
//! bounded by [`MAX_HELLO_LEN`] for the handshake message and [`MAX_HELD_BYTES`] for the raw
//! bytes. Record framing and the hello itself are parsed by `tls-parser`. This module knows
//! nothing about routing; the caller bounds the whole read with `timeouts.client_hello`.

use std::io;

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_handshake_client_hello, parse_tls_record_header,
    SNIType, TlsExtension, TlsRecordType,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest ClientHello handshake message accepted (the TLS record limit, 2^14).
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// The most raw bytes held while waiting for the hello (room for record headers of a hello
/// split into many small records).
pub const MAX_HELD_BYTES: usize = 2 * MAX_HELLO_LEN;

/// TLS handshake type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;

/// What a parsed ClientHello said; the raw bytes stay in [`Peeked::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, as sent (case preserved).
    pub server_name: Option<String>,
    /// The 32-byte client random.
    pub random: [u8; 32],
    /// The legacy session id (fake-TLS clients echo-check it).
    pub session_id: Vec<u8>,
    /// Offered cipher suites, in order, GREASE included.
    pub cipher_suites: Vec<u16>,
    /// How many TLS records carried the hello.
    pub records: usize,
    /// How many raw bytes (record headers included) those records took: bytes past this in
    /// [`Peeked::bytes`] were sent after the hello.
    pub raw_len: usize,
    /// The hello as one TLS record: exactly as received when it came in one record, rebuilt as
    /// `16 03 01` + length + handshake message when it was split (what fake-TLS digests cover).
    pub single_record: Vec<u8>,
}

/// Why a connection that started like TLS could not be parsed as a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloDefect {
    /// The hello announced or needed more than the bounds allow.
    #[error("ClientHello larger than {MAX_HELLO_LEN} bytes")]
    TooLarge,
    /// The bytes break TLS framing or the ClientHello structure.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// What the first bytes of a connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFlight {
    /// A complete, parsed ClientHello (boxed: the flight is kept in the connection's state
    /// until the route is decided, and a plain relay's state should not carry its room).
    Tls(Box<ClientHello>),
    /// The first bytes are not a TLS handshake record.
    NotTls,
    /// It starts like TLS but is not a usable ClientHello; routed as a hello without SNI.
    Defective(HelloDefect),
}

/// The outcome of peeking: what was seen, and every byte read so far, to be replayed.
#[derive(Debug)]
pub struct Peeked {
    /// The classification of the first bytes.
    pub flight: FirstFlight,
    /// All bytes read from the client, in order (the hello and anything after it).
    pub bytes: Vec<u8>,
}

/// The client closed the connection before a decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// The socket failed.
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
    /// The client closed after this many bytes, before its first flight was complete.
    #[error("client closed after {0} bytes, before the ClientHello was complete")]
    Closed(usize),
}

/// Reads from `reader` until the first flight can be classified. `bytes` holds anything read
/// before (e.g. after an inbound PROXY header); the result's `bytes` extends it.
pub async fn peek<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut bytes: Vec<u8>,
) -> Result<Peeked, PeekError> {
    let mut assembler = Assembler::default();
    loop {
        if let Some(flight) = assembler.decide(&bytes) {
            return Ok(Peeked { flight, bytes });
        }
        // `decide` answers once MAX_HELD_BYTES are held, so `room` is never 0 here.
        let room = MAX_HELD_BYTES.saturating_sub(bytes.len());
        bytes.reserve(4096.min(room));
        // `read_buf` fills all spare capacity, which may exceed the reservation: bound the
        // read itself, or a hello completing past the limit would be accepted or refused
        // depending on the buffer's growth and the client's segmentation.
        if (&mut *reader)
            .take(room as u64)
            .read_buf(&mut bytes)
            .await?
            == 0
        {
            return Err(PeekError::Closed(bytes.len()));
        }
    }
}

/// The decision [`peek`] makes once it holds `raw` and the client sends nothing more: `None`
/// while more bytes are needed. Bytes past [`MAX_HELD_BYTES`] are not looked at, as `peek`
/// never reads them. A sync entry point for fuzzing and property tests.
pub fn classify(raw: &[u8]) -> Option<FirstFlight> {
    Assembler::default().decide(raw)
}

enum Progress {
    NeedMore,
    Done(FirstFlight),
}

/// Incremental record reassembly: each call looks only at bytes not yet consumed.
#[derive(Default)]
struct Assembler {
    /// Offset of the next unread record header in the raw bytes.
    next_record: usize,
    /// The handshake bytes gathered from the records so far.
    handshake: Vec<u8>,
    records: usize,
}

impl Assembler {
    /// `Some` once `raw` (everything held so far) classifies the first flight, counting a
    /// hello still incomplete at [`MAX_HELD_BYTES`] as too large.
    fn decide(&mut self, raw: &[u8]) -> Option<FirstFlight> {
        let raw = &raw[..raw.len().min(MAX_HELD_BYTES)];
        match self.advance(raw) {
            Progress::Done(flight) => Some(flight),
            Progress::NeedMore if raw.len() >= MAX_HELD_BYTES => {
                Some(FirstFlight::Defective(HelloDefect::TooLarge))
            }
            Progress::NeedMore => None,
        }
    }

    fn advance(&mut self, raw: &[u8]) -> Progress {
        if raw
            .first()
            .is_some_and(|&b| b != TlsRecordType::Handshake.0)
        {
            return Progress::Done(FirstFlight::NotTls);
        }
        loop {
            let Some(rest) = raw.get(self.next_record..) else {
                return Progress::NeedMore;
            };
            let header = match parse_tls_record_header(rest) {
                Ok((_, header)) => header,
                Err(tls_parser::nom::Err::Incomplete(_)) => return Progress::NeedMore,
                Err(_) => return self.defect("bad record header"),
            };
            let first = self.records == 0;
            if header.version.0 >> 8 != 3 {
                return if first {
                    Progress::Done(FirstFlight::NotTls)
                } else {
                    self.defect("bad record version")
                };
            }
            if header.record_type != TlsRecordType::Handshake {
                return if first {
                    Progress::Done(FirstFlight::NotTls)
                } else {
                    self.defect("record of another type inside the ClientHello")
                };
            }
            let len = usize::from(header.len);
            if len == 0 || len > MAX_HELLO_LEN {
                return self.defect("handshake record length out of range");
            }
            let body_start = self.next_record + 5;
            let Some(fragment) = raw.get(body_start..body_start + len) else {
                return Progress::NeedMore;
            };
            self.handshake.extend_from_slice(fragment);
            self.next_record = body_start + len;
            self.records += 1;
            if let Some(progress) = self.try_finish(raw) {
                return progress;
            }
        }
    }

    /// `Some` once the handshake message is complete or known to be unusable.
    fn try_finish(&self, raw: &[u8]) -> Option<Progress> {
        let [kind, a, b, c] = *self.handshake.get(..4)?.first_chunk::<4>()?;
        if kind != CLIENT_HELLO {
            return Some(self.defect("first handshake message is not a ClientHello"));
        }
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        if len > MAX_HELLO_LEN {
            return Some(Progress::Done(FirstFlight::Defective(
                HelloDefect::TooLarge,
            )));
        }
        let message = self.handshake.get(..4 + len)?;
        Some(match parse_message(message) {
            Ok(mut hello) => {
                hello.records = self.records;
                hello.raw_len = self.next_record;
                hello.single_record = if self.records == 1 {
                    raw[..self.next_record].to_vec()
                } else {
                    rebuild_record(message)
                };
                Progress::Done(FirstFlight::Tls(Box::new(hello)))
            }
            Err(why) => self.defect(why),
        })
    }

    fn defect(&self, why: &'static str) -> Progress {
        Progress::Done(FirstFlight::Defective(HelloDefect::Malformed(why)))
    }
}

/// `16 03 01` + u16 length + the handshake message, as mtg rebuilds split hellos.
fn rebuild_record(message: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(5 + message.len());
    record.extend_from_slice(&[0x16, 0x03, 0x01]);
    // message.len() <= 4 + MAX_HELLO_LEN < 65536.
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(message);
    record
}

fn parse_message(message: &[u8]) -> Result<ClientHello, &'static str> {
    let (_, contents) = parse_tls_handshake_client_hello(&message[4..])
        .map_err(|_| "ClientHello body does not parse")?;
    let random: [u8; 32] = contents
        .random
        .try_into()
        .map_err(|_| "random is not 32 bytes")?;
    let mut hello = ClientHello {
        server_name: None,
        random,
        session_id: contents.session_id.unwrap_or_default().to_vec(),
        cipher_suites: contents.ciphers.iter().map(|c| c.0).collect(),
        records: 0,
        raw_len: 0,
        single_record: Vec::new(),
    };
    let Some(ext) = contents.ext else {
        return Ok(hello);
    };
    let (_, extensions) =
        parse_tls_client_hello_extensions(ext).map_err(|_| "extensions do not parse")?;
    for extension in extensions {
        if let TlsExtension::SNI(names) = extension {
            hello.server_name = names
                .iter()
                .find(|(kind, _)| *kind == SNIType::HostName)
                .and_then(|(_, name)| std::str::from_utf8(name).ok())
                .map(str::to_owned);
        }
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// A real Telegram fake-TLS hello from the vendored vectors (one record, 517 bytes).
    fn telegram_hello() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mtg/faketls/client-hello-ok-19dfe38384b9884b.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("\"full\": \"").unwrap() + 9;
        let end = text[start..].find('"').unwrap() + start;
        base64::engine::general_purpose::STANDARD
            .decode(&text[start..end])
            .unwrap()
    }

    // The test kit's re-framing of a one-record hello into records of `size` bytes.
    use frontgate_testkit::hello::split_into_records as split_records;

    #[test]
    fn parses_sni_random_session_and_suites() {
        let raw = telegram_hello();
        let Some(FirstFlight::Tls(hello)) = classify(&raw) else {
            panic!("not parsed")
        };
        assert_eq!(hello.server_name.as_deref(), Some("storage.googleapis.com"));
        assert_eq!(hello.random[..4], raw[11..15]);
        assert_eq!(hello.session_id.len(), 32);
        assert_eq!(hello.cipher_suites[0], 0x1303);
        assert_eq!((hello.records, hello.raw_len), (1, raw.len()));
        assert_eq!(hello.single_record, raw);
    }

    #[test]
    fn every_prefix_needs_more_and_split_records_reassemble() {
        let raw = telegram_hello();
        for cut in 1..raw.len() {
            assert!(classify(&raw[..cut]).is_none(), "decided after {cut} bytes");
        }
        let split = split_records(&raw, 100);
        let Some(FirstFlight::Tls(hello)) = classify(&split) else {
            panic!("split not parsed")
        };
        assert_eq!(hello.records, raw[5..].len().div_ceil(100));
        assert_eq!(
            hello.single_record, raw,
            "rebuilt record must equal the one-record form"
        );
    }

    #[test]
    fn non_tls_is_decided_on_the_first_byte() {
        assert_eq!(classify(b"G"), Some(FirstFlight::NotTls));
        assert_eq!(classify(b"\x16\x01\x00\x00\x10"), Some(FirstFlight::NotTls));
        assert_eq!(classify(b"\x16"), None);
    }

    #[test]
    fn defects_have_defined_outcomes() {
        let too_big = [0x16, 0x03, 0x01, 0x40, 0x01];
        assert!(matches!(
            classify(&too_big),
            Some(FirstFlight::Defective(_))
        ));
        let declared_huge = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff];
        assert_eq!(
            classify(&declared_huge),
            Some(FirstFlight::Defective(HelloDefect::TooLarge))
        );
        let server_hello = [0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
        assert!(matches!(
            classify(&server_hello),
            Some(FirstFlight::Defective(HelloDefect::Malformed(_)))
        ));
        let mut raw = telegram_hello();
        raw[5 + 4 + 2 + 32] = 200; // session id length runs past the message
        assert!(matches!(classify(&raw), Some(FirstFlight::Defective(_))));
        let mut alert_inside = split_records(&telegram_hello(), 300);
        alert_inside[305] = 0x15;
        assert!(matches!(
            classify(&alert_inside),
            Some(FirstFlight::Defective(_))
        ));
    }

    #[tokio::test]
    async fn peek_keeps_every_byte_including_what_follows() {
        let mut wire = telegram_hello();
        wire.extend_from_slice(b"early data");
        let mut reader: &[u8] = &wire;
        let peeked = peek(&mut reader, Vec::new()).await.unwrap();
        assert!(matches!(peeked.flight, FirstFlight::Tls(_)));
        let mut all = peeked.bytes;
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, wire);
    }

    #[tokio::test]
    async fn endless_tiny_records_are_bounded() {
        // A hello announced at 16 KiB, fed as 1-byte records: 6 raw bytes per handshake byte.
        let mut wire = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x40, 0x00];
        for _ in 0..20_000 {
            wire.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xaa]);
        }
        let mut reader: &[u8] = &wire;
        let peeked = peek(&mut reader, Vec::new()).await.unwrap();
        assert_eq!(peeked.flight, FirstFlight::Defective(HelloDefect::TooLarge));
        assert!(peeked.bytes.len() <= MAX_HELD_BYTES + 4096);
    }

    #[tokio::test]
    async fn held_bytes_stay_bounded_whatever_the_buffer_capacity() {
        // A hello of 5500 bytes in one-byte records completes 33024 raw bytes in, past
        // MAX_HELD_BYTES: too large, however the bytes arrive. `read_buf` fills all spare
        // capacity, and a buffer that started at an odd size (the bytes after a PROXY header)
        // grows past MAX_HELD_BYTES; a large one stands for it here.
        let mut message = vec![CLIENT_HELLO, 0x00, 0x15, 0x7c];
        message.resize(4 + 5500, 0xaa);
        let wire: Vec<u8> = message
            .iter()
            .flat_map(|&b| [0x16, 0x03, 0x01, 0x00, 0x01, b])
            .collect();
        assert_eq!(wire.len(), 33024);
        let mut already_read = Vec::with_capacity(64 * 1024);
        already_read.extend_from_slice(&wire[..100]);
        let mut reader: &[u8] = &wire[100..];
        let peeked = peek(&mut reader, already_read).await.unwrap();
        assert_eq!(peeked.flight, FirstFlight::Defective(HelloDefect::TooLarge));
        assert!(peeked.bytes.len() <= MAX_HELD_BYTES);
        assert_eq!(classify(&wire), Some(peeked.flight));
    }

    #[tokio::test]
    async fn early_close_is_reported() {
        let mut reader: &[u8] = &telegram_hello()[..100];
        assert!(matches!(
            peek(&mut reader, Vec::new()).await,
            Err(PeekError::Closed(100))
        ));
    }
}
