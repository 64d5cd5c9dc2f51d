//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, one function per target, shared
//! with `tests/fuzz_regressions.rs` so that every kept input is replayed through exactly what
//! the fuzzer ran. Each function takes the fuzzer's raw bytes, feeds them to one parser of the
//! crate and panics only when the parser panics or an invariant below breaks.
//!
//! Targets that read from a stream take their TCP segmentation from the input too (see
//! [`split_input`]) and check that the outcome does not depend on it.
#![allow(dead_code)] // each fuzz target uses one function

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use frontgate::admission::proxy_in::{self, InboundError};
use frontgate::config::Secret;
use frontgate::conn::hello::{self, FirstFlight, PeekError};
use frontgate::mtproto::faketls;
use frontgate::mtproto::obfuscated2;
use frontgate::mtproto::records::{RecordDecoder, RecordError};
use tokio::io::{AsyncRead, ReadBuf};

/// Most segment sizes an input can name.
const MAX_SIZES: usize = 7;

/// Splits fuzz input into segment sizes and payload. The first byte's low three bits say how
/// many of the following bytes are segment sizes (each byte `b` means `b + 1` bytes); the
/// sizes repeat over the payload. No sizes means the payload arrives in one piece. The
/// first byte's other bits are flags of the target.
pub fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (vec![usize::MAX], data);
    };
    let count = usize::from(first) & MAX_SIZES;
    let count = count.min(rest.len());
    let (sizes, payload) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    if sizes.is_empty() {
        (vec![usize::MAX], payload)
    } else {
        (sizes, payload)
    }
}

/// An in-memory reader that returns at most one segment per read, as a TCP socket may.
pub struct Segments<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl<'a> Segments<'a> {
    /// Reads `data` in segments of `sizes` (repeated; an empty list means one segment).
    pub fn new(data: &'a [u8], sizes: &'a [usize]) -> Self {
        Segments {
            data,
            sizes,
            next: 0,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.data
    }
}

impl AsyncRead for Segments<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = match self.sizes {
            [] => usize::MAX,
            sizes => sizes[self.next % sizes.len()],
        };
        self.next = self.next.wrapping_add(1);
        let n = size.min(self.data.len()).min(buf.remaining());
        let (segment, rest) = self.data.split_at(n);
        buf.put_slice(segment);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (its reader is in memory) to completion.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a future over an in-memory reader returned Pending"),
    }
}

/// Target `hello`: the sync decision over the whole input equals what `peek` decides when the
/// same bytes arrive in the input's segments; a parsed hello is consistent with its bytes.
/// With bit 3 of the first byte set, the first segment is handed to `peek` as already read,
/// as the bytes after an inbound PROXY header are.
pub fn hello(data: &[u8]) {
    let (sizes, wire) = split_input(data);
    let decided = hello::classify(wire);
    let already_read = match data.first() {
        Some(flags) if flags & 0x08 != 0 => sizes[0].min(wire.len()),
        _ => 0,
    };
    let mut reader = Segments::new(&wire[already_read..], &sizes);
    let peeked = ready(hello::peek(&mut reader, wire[..already_read].to_vec()));
    match (&decided, peeked) {
        (Some(flight), Ok(peeked)) => {
            assert_eq!(&peeked.flight, flight, "segments {sizes:?}");
            assert!(wire.starts_with(&peeked.bytes));
            assert!(peeked.bytes.len() <= hello::MAX_HELD_BYTES);
        }
        (None, Err(PeekError::Closed(n))) => assert_eq!(n, wire.len()),
        (decided, peeked) => panic!("classify gave {decided:?}, peek gave {peeked:?}"),
    }
    if let Some(FirstFlight::Tls(parsed)) = decided {
        assert!(parsed.raw_len <= wire.len());
        if parsed.records == 1 {
            assert_eq!(parsed.single_record, wire[..parsed.raw_len]);
        }
        // The one-record form parses to the same hello (unless the rebuilt record is longer
        // than a TLS record may be: then only its digest is ever checked, not its framing).
        if parsed.single_record.len() - 5 <= hello::MAX_HELLO_LEN {
            let Some(FirstFlight::Tls(again)) = hello::classify(&parsed.single_record) else {
                panic!("the one-record form of a parsed hello does not parse");
            };
            assert_eq!(again.server_name, parsed.server_name);
            assert_eq!(again.random, parsed.random);
            assert_eq!(again.single_record, parsed.single_record);
        }
    }
}

/// Feeds `wire` to a fresh decoder in pieces of `sizes` (repeated), concatenating the payload.
pub fn decode_records(wire: &[u8], sizes: &[usize]) -> Result<Vec<u8>, RecordError> {
    let mut decoder = RecordDecoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at == wire.len() {
            break;
        }
        let end = at + size.min(wire.len() - at);
        let mut buf = wire[at..end].to_vec();
        let n = decoder.decode_in_place(&mut buf)?;
        assert!(n <= buf.len(), "decoded more bytes than it was given");
        out.extend_from_slice(&buf[..n]);
        at = end;
    }
    Ok(out)
}

/// Target `records`: the record decoder gives the same payload, or the same error, whether
/// the stream comes in one piece or in the input's chunks.
pub fn records(data: &[u8]) {
    let (sizes, wire) = split_input(data);
    let whole = decode_records(wire, &[usize::MAX]);
    let chunked = decode_records(wire, &sizes);
    assert_eq!(whole, chunked, "chunks {sizes:?}");
}

/// Target `obfuscated2`: input is a 16-byte secret, then the 64-byte init. The one-secret
/// parse and the every-user search agree.
pub fn obfuscated2(data: &[u8]) {
    let _ = obfuscated2::is_forbidden_init_prefix(data);
    let Some((secret, rest)) = data.split_first_chunk::<16>() else {
        return;
    };
    let Some((init, _)) = rest.split_first_chunk::<{ obfuscated2::INIT_LEN }>() else {
        return;
    };
    let secret = Secret::from_bytes(*secret);
    let decoy = Secret::from_bytes(secret.as_bytes().map(|b| !b));
    let direct = obfuscated2::parse_client_init(init, &secret);
    let found = obfuscated2::try_users(init, [&decoy, &secret]);
    match (&direct, &found) {
        (Some(_), None) => panic!("try_users missed the secret parse_client_init accepted"),
        (None, Some((1, _))) => panic!("try_users accepted what parse_client_init refused"),
        _ => {}
    }
    if let Some(client) = direct {
        assert!(obfuscated2::ProtocolTag::from_bytes(&client.tag.to_bytes()) == Some(client.tag));
    }
}

/// Target `secret`: every spelling parses without panicking, `FromStr` agrees with
/// `parse_with_domain`, and an accepted secret survives formatting as `ee` hex and parsing.
pub fn secret(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = Secret::parse_with_domain(&text);
    let plain = text.parse::<Secret>();
    assert_eq!(plain, parsed.clone().map(|(secret, _)| secret));
    match parsed {
        Ok((secret, domain)) => {
            let formatted = secret.ee_hex(domain.as_deref().unwrap_or(""));
            assert_eq!(
                Secret::parse_with_domain(&formatted),
                Ok((secret, domain)),
                "{formatted}"
            );
        }
        Err(error) => drop(error.to_string()),
    }
}

/// The outcome of one inbound read, comparable across segmentations: the client address and
/// how many bytes the header took.
type InboundOutcome = Result<(Option<std::net::SocketAddr>, usize), String>;

/// Reads an inbound PROXY header from `wire` arriving in `sizes` segments.
pub fn read_proxy_header(wire: &[u8], sizes: &[usize]) -> InboundOutcome {
    let mut reader = Segments::new(wire, sizes);
    match ready(proxy_in::read_inbound(&mut reader)) {
        Ok(inbound) => {
            let unread = reader.remaining().len();
            let header_len = wire.len() - unread - inbound.rest.len();
            assert_eq!(inbound.rest, wire[header_len..wire.len() - unread]);
            Ok((inbound.client, header_len))
        }
        Err(InboundError::Invalid) => Err("invalid".into()),
        Err(InboundError::Io(error)) => Err(format!("io: {:?}", error.kind())),
    }
}

/// Target `proxy_in`: the inbound PROXY header reader accepts or refuses the same header with
/// the same address and length, however it is segmented.
pub fn proxy_in(data: &[u8]) {
    let (sizes, wire) = split_input(data);
    let whole = read_proxy_header(wire, &[usize::MAX]);
    let split = read_proxy_header(wire, &sizes);
    assert_eq!(whole, split, "segments {sizes:?}");
}

/// Target `config`: route-file text is accepted or refused with a message, never a panic.
///
/// A valid `tls.acme` section makes validation create its cache directory: the fuzzer runs
/// this target as an unprivileged user, and no kept input contains such a section.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = frontgate::config::parse(&text, "fuzz.yaml") {
        drop(error.to_string());
    }
}

/// The user secret of the mtg fake-TLS vectors (`367a189a...`).
pub const MTG_SECRET: [u8; 16] = [
    0x36, 0x7a, 0x18, 0x9a, 0xee, 0x18, 0xfa, 0x31, 0xc1, 0x90, 0x05, 0x4e, 0xfd, 0x4a, 0x8e, 0x95,
];

/// The user secret of the TDLib vector (`0123456789abcdef` twice).
pub const TDLIB_SECRET: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];

/// Target `faketls`: input is the unix time "now" (u64 LE), the allowed skew in seconds
/// (u64 LE), then a ClientHello record, checked against the vectors' two secrets.
pub fn faketls(data: &[u8]) {
    let Some((now, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some((skew, record)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let users = [
        Secret::from_bytes(MTG_SECRET),
        Secret::from_bytes(TDLIB_SECRET),
    ];
    let now = u64::from_le_bytes(*now);
    let skew = Duration::from_secs(u64::from_le_bytes(*skew));
    if let Ok(client) = faketls::verify_client_hello(record, &users, now, skew) {
        assert!(client.user < users.len());
        assert_eq!(client.random, record[faketls::DIGEST_OFFSET..][..32]);
        assert!(now.abs_diff(u64::from(client.timestamp)) <= skew.as_secs());
    }
}
