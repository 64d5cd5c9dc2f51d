//! The TLS record layer after the fake handshake (PROTOCOL.md §4).
//!
//! Client -> proxy: an optional single ChangeCipherSpec, then `17 03 03` application-data
//! records whose payloads, concatenated, are the obfuscated2 stream. Proxy -> client: the
//! stream cut into `17 03 03` records of at most 16 KiB, sized like the route's site
//! ([`crate::mtproto::record_sizing`]). Both directions work in place on
//! buffers the session reuses, so relaying allocates nothing per chunk.

use std::io::{self, IoSliceMut};
use std::sync::Arc;

use crate::mtproto::record_sizing::SizingCursor;

/// Bytes of a TLS record header (`type`, `version`, u16 length).
pub const RECORD_HEADER_LEN: usize = 5;
/// Largest payload the proxy puts into one record.
pub const MAX_OUTGOING_PAYLOAD: usize = 16384;
/// A full outgoing record: header plus [`MAX_OUTGOING_PAYLOAD`].
pub const FULL_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_OUTGOING_PAYLOAD;
/// Largest payload accepted from a client (iOS clients send up to 16408 bytes).
pub const MAX_INCOMING_PAYLOAD: usize = 16384 + 256;

const TYPE_CHANGE_CIPHER_SPEC: u8 = 0x14;
const TYPE_APPLICATION_DATA: u8 = 0x17;
const VERSION_TLS12: [u8; 2] = [0x03, 0x03];

/// A record-layer violation by the client; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record type other than application data (or one early ChangeCipherSpec).
    #[error("unexpected TLS record type {0:#04x} after the fake handshake")]
    UnexpectedType(u8),
    /// A record version other than `03 03`.
    #[error("unexpected TLS record version {0:#06x}")]
    BadVersion(u16),
    /// A record longer than [`MAX_INCOMING_PAYLOAD`].
    #[error("TLS record payload of {0} bytes exceeds the limit of 16640")]
    Oversized(usize),
    /// A second ChangeCipherSpec, one after application data, or one that is not `01`.
    #[error("ChangeCipherSpec out of place or malformed")]
    BadChangeCipherSpec,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    /// Collecting a header; `got` bytes of it are in `hdr`.
    Header {
        got: usize,
        hdr: [u8; RECORD_HEADER_LEN],
    },
    /// Inside an application-data payload with `left` bytes to go.
    Payload { left: usize },
    /// The one-byte body of a ChangeCipherSpec is next.
    ChangeCipherSpecBody,
}

/// The header of an application-data record of `len` payload bytes (at most
/// [`MAX_OUTGOING_PAYLOAD`]).
pub fn record_header_for(len: usize) -> [u8; RECORD_HEADER_LEN] {
    let [hi, lo] = (len as u16).to_be_bytes();
    [TYPE_APPLICATION_DATA, 3, 3, hi, lo]
}

/// Strips record headers from the client's byte stream, in place, keeping only the
/// application-data payloads. Feed it whatever each read returned, in any split.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    state: DecodeState,
    /// A ChangeCipherSpec or a data record was seen, so no ChangeCipherSpec may follow.
    ccs_closed: bool,
}

impl Default for RecordDecoder {
    fn default() -> Self {
        RecordDecoder::new()
    }
}

impl RecordDecoder {
    /// A decoder at the start of the post-handshake stream.
    pub fn new() -> RecordDecoder {
        RecordDecoder {
            state: DecodeState::Header {
                got: 0,
                hdr: [0; RECORD_HEADER_LEN],
            },
            ccs_closed: false,
        }
    }

    /// Decodes `buf` (raw bytes from the client, continuing where the last call stopped) in
    /// place: the payload bytes it contains are moved to the front and their count returned.
    /// After an error the decoder must not be used again.
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> Result<usize, RecordError> {
        let mut read = 0;
        let mut written = 0;
        while read < buf.len() {
            match &mut self.state {
                DecodeState::Header { got, hdr } => {
                    let take = (RECORD_HEADER_LEN - *got).min(buf.len() - read);
                    hdr[*got..*got + take].copy_from_slice(&buf[read..read + take]);
                    *got += take;
                    read += take;
                    if *got == RECORD_HEADER_LEN {
                        let hdr = *hdr;
                        self.state = self.on_header(&hdr)?;
                    }
                }
                DecodeState::Payload { left } => {
                    let take = (*left).min(buf.len() - read);
                    if read != written {
                        buf.copy_within(read..read + take, written);
                    }
                    read += take;
                    written += take;
                    *left -= take;
                    if *left == 0 {
                        self.state = fresh_header();
                    }
                }
                DecodeState::ChangeCipherSpecBody => {
                    if buf[read] != 0x01 {
                        return Err(RecordError::BadChangeCipherSpec);
                    }
                    read += 1;
                    self.state = fresh_header();
                }
            }
        }
        Ok(written)
    }

    fn on_header(&mut self, hdr: &[u8; RECORD_HEADER_LEN]) -> Result<DecodeState, RecordError> {
        if hdr[1..3] != VERSION_TLS12 {
            return Err(RecordError::BadVersion(u16::from_be_bytes([
                hdr[1], hdr[2],
            ])));
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        match hdr[0] {
            TYPE_APPLICATION_DATA => {
                if len > MAX_INCOMING_PAYLOAD {
                    return Err(RecordError::Oversized(len));
                }
                self.ccs_closed = true;
                Ok(if len == 0 {
                    fresh_header()
                } else {
                    DecodeState::Payload { left: len }
                })
            }
            TYPE_CHANGE_CIPHER_SPEC => {
                if self.ccs_closed || len != 1 {
                    return Err(RecordError::BadChangeCipherSpec);
                }
                self.ccs_closed = true;
                Ok(DecodeState::ChangeCipherSpecBody)
            }
            other => Err(RecordError::UnexpectedType(other)),
        }
    }
}

fn fresh_header() -> DecodeState {
    DecodeState::Header {
        got: 0,
        hdr: [0; RECORD_HEADER_LEN],
    }
}

/// Most records [`RecordEncoder::fill_vectored`] fills with one read (64 KiB of payload).
pub const MAX_RECORDS_PER_FILL: usize = 4;

/// A reusable output buffer that builds `17 03 03` records around payload read straight into
/// it: [`fill_vectored`](Self::fill_vectored) reads into the bodies behind reserved headers,
/// the payload is en/decrypted in place and the headers are written around it.
/// [`as_bytes`](Self::as_bytes) is then ready for one write.
#[derive(Debug)]
pub struct RecordEncoder {
    buf: Box<[u8]>,
    /// End of the complete output (headers and committed payload).
    len: usize,
    /// Header offset and payload ceiling of the record still accepting payload.
    open: Option<(usize, usize)>,
    /// The session's record sizes and how many records it has started.
    sizing: Arc<SizingCursor>,
}

impl RecordEncoder {
    /// An encoder with a buffer of `bytes` (at least one header and one payload byte);
    /// `n * FULL_RECORD_LEN` holds `n` full records.
    pub fn with_capacity(bytes: usize) -> RecordEncoder {
        RecordEncoder::with_sizing(bytes, Arc::default())
    }

    /// An encoder of `bytes` whose records follow `sizing` (shared with the session's
    /// earlier and later buffers) instead of all being full.
    pub fn with_sizing(bytes: usize, sizing: Arc<SizingCursor>) -> RecordEncoder {
        let size = bytes.max(RECORD_HEADER_LEN + 1);
        RecordEncoder {
            buf: vec![0u8; size].into_boxed_slice(),
            len: 0,
            open: None,
            sizing,
        }
    }

    /// Where the next payload goes: `(header offset, payload start, payload end)`, or `None`
    /// when the buffer is full.
    fn next_region(&self) -> Option<(usize, usize, usize)> {
        if let Some((start, ceiling)) = self.open {
            let end = (start + RECORD_HEADER_LEN + ceiling).min(self.buf.len());
            if self.len < end {
                return Some((start, self.len, end));
            }
        }
        self.new_record_region(self.len, 0)
    }

    /// The region of a new record whose header goes at `start`, `ahead` records after the
    /// next one to start. A record that would not fit whole only starts in an empty buffer
    /// (one smaller than a record); otherwise the buffer is full: a record cut short by the
    /// buffer's end would show in the record sizes, which a site's do not have.
    fn new_record_region(&self, start: usize, ahead: usize) -> Option<(usize, usize, usize)> {
        let payload = start + RECORD_HEADER_LEN;
        let whole = payload + self.sizing.ceiling_ahead(ahead);
        if whole > self.buf.len() && start > 0 {
            return None;
        }
        let end = whole.min(self.buf.len());
        (payload < end).then_some((start, payload, end))
    }

    /// Marks the next `n` bytes of payload room (the rest of the open record, or a new
    /// record's body) as payload and writes the record header around them. `n` is clamped
    /// to that room.
    fn commit(&mut self, n: usize) {
        let Some((start, from, to)) = self.next_region() else {
            return;
        };
        let n = n.min(to - from);
        if n == 0 {
            return;
        }
        if self.open.map(|(open, _)| open) != Some(start) {
            self.open = Some((start, self.sizing.ceiling_ahead(0)));
            self.sizing.start_record();
        }
        self.len = from + n;
        let payload_len = self.len - start - RECORD_HEADER_LEN;
        self.buf[start] = TYPE_APPLICATION_DATA;
        self.buf[start + 1..start + 3].copy_from_slice(&VERSION_TLS12);
        // payload_len <= a ceiling <= MAX_OUTGOING_PAYLOAD, so it fits a u16.
        self.buf[start + 3..start + 5].copy_from_slice(&(payload_len as u16).to_be_bytes());
    }

    /// Fills the payload room of up to [`MAX_RECORDS_PER_FILL`] records with one vectored
    /// `read` (a `readv` straight into the record bodies, skipping their headers), runs
    /// `transform` over each filled piece in stream order and commits them. Returns what
    /// `read` returned: `Ok(0)` is end of stream, or a full buffer (check
    /// [`is_full`](Self::is_full) first).
    pub fn fill_vectored<R, T>(&mut self, read: R, mut transform: T) -> io::Result<usize>
    where
        R: FnOnce(&mut [IoSliceMut<'_>]) -> io::Result<usize>,
        T: FnMut(&mut [u8]),
    {
        let Some((start, mut from, mut to)) = self.next_region() else {
            return Ok(0);
        };
        // The records after the first region are new ones; the first region is a new record
        // too unless it continues the open one.
        let continues_open = self.open.map(|(open, _)| open) == Some(start);
        let mut ahead = usize::from(!continues_open);
        let mut regions = [(0, 0); MAX_RECORDS_PER_FILL];
        let mut count = 0;
        loop {
            regions[count] = (from, to);
            count += 1;
            if count == MAX_RECORDS_PER_FILL {
                break;
            }
            let Some((_, next_from, next_to)) = self.new_record_region(to, ahead) else {
                break;
            };
            (from, to) = (next_from, next_to);
            ahead += 1;
        }
        let n = {
            let mut slices: [IoSliceMut<'_>; MAX_RECORDS_PER_FILL] =
                [(); MAX_RECORDS_PER_FILL].map(|()| IoSliceMut::new(&mut []));
            let mut rest = &mut self.buf[..];
            let mut consumed = 0;
            for (slice, &(from, to)) in slices.iter_mut().zip(&regions[..count]) {
                let (_, tail) = rest.split_at_mut(from - consumed);
                let (body, tail) = tail.split_at_mut(to - from);
                *slice = IoSliceMut::new(body);
                rest = tail;
                consumed = to;
            }
            read(&mut slices[..count])?
        };
        let mut left = n;
        for &(from, to) in &regions[..count] {
            if left == 0 {
                break;
            }
            let take = left.min(to - from);
            transform(&mut self.buf[from..from + take]);
            self.commit(take);
            left -= take;
        }
        Ok(n)
    }

    /// The complete records built so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Whether no payload is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no more payload fits.
    pub fn is_full(&self) -> bool {
        self.next_region().is_none()
    }

    /// Size of the buffer in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the records after they were written.
    pub fn clear(&mut self) {
        self.len = 0;
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 3, 3];
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn decode_all(
        dec: &mut RecordDecoder,
        input: &[u8],
        step: usize,
    ) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            let mut buf = chunk.to_vec();
            let n = dec.decode_in_place(&mut buf)?;
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    fn sample_stream() -> (Vec<u8>, Vec<u8>) {
        let payload: Vec<u8> = (0..30_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut wire = vec![0x14, 3, 3, 0, 1, 1];
        wire.extend(record(0x17, &payload[..100]));
        wire.extend(record(0x17, &[]));
        wire.extend(record(0x17, &payload[100..100 + MAX_INCOMING_PAYLOAD]));
        wire.extend(record(0x17, &payload[100 + MAX_INCOMING_PAYLOAD..]));
        (wire, payload)
    }

    #[test]
    fn decodes_in_any_split_including_one_byte_feeding() {
        let (wire, payload) = sample_stream();
        for step in [1, 2, 5, 6, 7, 1000, 16389, wire.len()] {
            let mut dec = RecordDecoder::new();
            assert_eq!(
                decode_all(&mut dec, &wire, step).unwrap(),
                payload,
                "step {step}"
            );
        }
    }

    #[test]
    fn change_cipher_spec_is_optional_and_tolerated_once() {
        let mut dec = RecordDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &record(0x17, b"abc"), 1).unwrap(),
            b"abc"
        );

        let mut twice = vec![0x14, 3, 3, 0, 1, 1, 0x14, 3, 3, 0, 1, 1];
        twice.extend(record(0x17, b"x"));
        let mut dec = RecordDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &twice, 3),
            Err(RecordError::BadChangeCipherSpec)
        );

        let mut late = record(0x17, b"x");
        late.extend([0x14, 3, 3, 0, 1, 1]);
        let mut dec = RecordDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &late, 1),
            Err(RecordError::BadChangeCipherSpec)
        );

        for bad in [[0x14, 3, 3, 0, 1, 2].as_slice(), &[0x14, 3, 3, 0, 2, 1, 1]] {
            let mut dec = RecordDecoder::new();
            assert_eq!(
                decode_all(&mut dec, bad, 1),
                Err(RecordError::BadChangeCipherSpec)
            );
        }
    }

    #[test]
    fn oversize_wrong_type_and_version_are_rejected() {
        let mut dec = RecordDecoder::new();
        let too_big = [0x17, 3, 3, 0x41, 0x01]; // 16641
        assert_eq!(
            decode_all(&mut dec, &too_big, 1),
            Err(RecordError::Oversized(16641))
        );
        let mut dec = RecordDecoder::new();
        let limit = [0x17, 3, 3, 0x41, 0x00]; // 16640 is fine
        assert_eq!(decode_all(&mut dec, &limit, 1), Ok(vec![]));

        for kind in [0x15, 0x16, 0x18, 0x00] {
            let mut dec = RecordDecoder::new();
            assert_eq!(
                decode_all(&mut dec, &record(kind, b"zz"), 2),
                Err(RecordError::UnexpectedType(kind))
            );
        }
        let mut dec = RecordDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &[0x17, 3, 1, 0, 1, 0], 6),
            Err(RecordError::BadVersion(0x0301))
        );
        // The type error comes after valid data too.
        let mut wire = record(0x17, b"ok");
        wire.extend(record(0x15, b"\x02\x28"));
        let mut dec = RecordDecoder::new();
        assert_eq!(
            decode_all(&mut dec, &wire, 4),
            Err(RecordError::UnexpectedType(0x15))
        );
    }

    /// Splits the encoder output back into records and checks their shape.
    fn parse_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert_eq!(&bytes[at..at + 3], &[0x17, 3, 3]);
            let len = usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
            assert!((1..=MAX_OUTGOING_PAYLOAD).contains(&len), "len {len}");
            out.push(bytes[at + 5..at + 5 + len].to_vec());
            at += 5 + len;
        }
        assert_eq!(at, bytes.len());
        out
    }

    /// Feeds `data` to `enc` in reads of at most `size` bytes until it is used up or `enc`
    /// is full; returns the bytes taken.
    fn feed(enc: &mut RecordEncoder, data: &[u8], sizes: &[usize]) -> usize {
        let mut fed = 0;
        for size in sizes.iter().cycle() {
            if enc.is_full() || fed == data.len() {
                break;
            }
            enc.fill_vectored(readv_from(data, &mut fed, *size), |_| {})
                .unwrap();
        }
        fed
    }

    #[test]
    fn encoder_frames_in_place_and_fills_records() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = RecordEncoder::with_capacity(2 * FULL_RECORD_LEN);
        // Uneven reads until the buffer is full.
        let fed = feed(&mut enc, &data, &[1, 1000, 20_000, 5, 50_000]);
        assert_eq!(fed, 2 * MAX_OUTGOING_PAYLOAD);
        assert!(enc.is_full());
        let records = parse_records(enc.as_bytes());
        assert_eq!(records.len(), 2, "reads merge into full records");
        assert_eq!(records.concat(), data[..fed]);

        enc.clear();
        assert!(enc.is_empty() && !enc.is_full());
        let mut none = 0;
        enc.fill_vectored(readv_from(b"abc", &mut none, 0), |_| {})
            .unwrap();
        assert!(enc.is_empty(), "an empty read opens no record");
        assert_eq!(feed(&mut enc, b"abc", &[3]), 3);
        assert_eq!(enc.as_bytes(), &[0x17, 3, 3, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn small_encoder_fills_to_its_end() {
        let mut enc = RecordEncoder::with_capacity(100);
        assert_eq!(enc.capacity(), 100);
        let data = [7u8; 200];
        assert_eq!(feed(&mut enc, &data[..90], &[1000]), 90);
        assert!(!enc.is_full(), "the open record continues");
        assert_eq!(feed(&mut enc, &data, &[1000]), 5);
        assert!(enc.is_full());
        assert_eq!(parse_records(enc.as_bytes()), vec![vec![7u8; 95]]);
        assert_eq!(RecordEncoder::with_capacity(0).capacity(), 6);
    }

    #[test]
    fn encoder_output_decodes_back() {
        let mut enc = RecordEncoder::with_capacity(3 * FULL_RECORD_LEN);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 13) as u8).collect();
        assert_eq!(feed(&mut enc, &data, &[7_000]), data.len());
        let mut dec = RecordDecoder::new();
        assert_eq!(decode_all(&mut dec, enc.as_bytes(), 999).unwrap(), data);
    }

    // The test kit's stand-in for `readv` over a byte slice.
    use frontgate_testkit::net::readv_from;

    #[test]
    fn vectored_fill_reads_into_several_record_bodies_at_once() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut enc = RecordEncoder::with_capacity(5 * FULL_RECORD_LEN);
        let mut fed = 0;
        // One read fills the first four records whole (64 KiB in one call).
        let mut pieces = Vec::new();
        let n = enc
            .fill_vectored(readv_from(&data, &mut fed, usize::MAX), |p| {
                pieces.push(p.len());
                p.iter_mut().for_each(|b| *b ^= 0x5a);
            })
            .unwrap();
        assert_eq!(n, MAX_RECORDS_PER_FILL * MAX_OUTGOING_PAYLOAD);
        assert_eq!(pieces, vec![MAX_OUTGOING_PAYLOAD; MAX_RECORDS_PER_FILL]);
        // A short read continues in the fifth record; the next one fills it to the end.
        enc.fill_vectored(readv_from(&data, &mut fed, 100), |p| {
            p.iter_mut().for_each(|b| *b ^= 0x5a)
        })
        .unwrap();
        enc.fill_vectored(readv_from(&data, &mut fed, usize::MAX), |p| {
            p.iter_mut().for_each(|b| *b ^= 0x5a)
        })
        .unwrap();
        assert!(enc.is_full());
        assert_eq!(fed, 5 * MAX_OUTGOING_PAYLOAD);
        let records = parse_records(enc.as_bytes());
        assert_eq!(records.len(), 5, "the short read did not end its record");
        let unmasked: Vec<u8> = records.concat().iter().map(|b| b ^ 0x5a).collect();
        assert_eq!(unmasked, data[..fed]);
        // Full: nothing is offered to `read`.
        let n = enc
            .fill_vectored(|_| panic!("read called on a full encoder"), |_| {})
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn vectored_fill_passes_end_of_stream_and_errors_through() {
        let mut enc = RecordEncoder::with_capacity(2 * FULL_RECORD_LEN);
        assert_eq!(enc.fill_vectored(|_| Ok(0), |_| {}).unwrap(), 0);
        assert!(enc.is_empty());
        let err = enc
            .fill_vectored(|_| Err(io::ErrorKind::WouldBlock.into()), |_| {})
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(enc.is_empty());
    }

    #[test]
    fn records_follow_the_sizing_across_fills_and_buffers() {
        use crate::mtproto::record_sizing::RecordSizing;
        let mut site = vec![300, 1386, 1386];
        site.extend([4113; 3]);
        site.push(10);
        let sizing = RecordSizing::from_site_records(&site).unwrap();
        let cursor = Arc::new(SizingCursor::new(sizing));
        let mut sizes = Vec::new();
        // Two buffers in turn, as the relay makes a new one after a quiet spell.
        for _ in 0..2 {
            let mut enc = RecordEncoder::with_sizing(4 * FULL_RECORD_LEN, cursor.clone());
            let data = vec![7u8; 6000];
            feed(&mut enc, &data, &[100, 5900]);
            sizes.extend(parse_records(enc.as_bytes()).iter().map(Vec::len));
        }
        // 300 | 1386 1386 | 4113 (+ 815 in the open record), then the second buffer's
        // records continue at the steady size.
        assert_eq!(sizes, vec![300, 1386, 1386, 2928, 4113, 1887]);
    }

    #[test]
    fn a_record_is_never_cut_short_by_the_buffer_end() {
        use crate::mtproto::record_sizing::RecordSizing;
        let sizing = RecordSizing::from_site_records(&[4113, 4113, 9]).unwrap();
        let cursor = Arc::new(SizingCursor::new(sizing));
        let mut enc = RecordEncoder::with_sizing(3 * (4113 + 5) + 100, cursor);
        let data = vec![1u8; 20_000];
        assert_eq!(feed(&mut enc, &data, &[20_000]), 3 * 4113);
        assert!(enc.is_full(), "100 bytes are left, less than a record");
        let sizes: Vec<usize> = parse_records(enc.as_bytes()).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4113; 3]);
    }
}
