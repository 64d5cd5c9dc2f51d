//! How large the records are that frontgate sends a fake-TLS client after the handshake, so
//! that a download through the MTProto core has the record sizes of a download from the
//! route's real site.
//!
//! A TLS 1.3 server's full record is 2^14 + 17 = 16401 bytes on the wire (TLS 1.2 AES-GCM:
//! 16408). A fake-TLS client cannot take that: TDLib refuses any record over 2^14 payload
//! bytes (`td/mtproto/TlsReaderByteFlow.cpp`: `if (len > (1 << 14))` → "Packet length is too
//! big (emulated tls)"); Telegram Android's `ConnectionSocket.cpp` allows up to 64 KiB and
//! Telegram Desktop's `mtproto_tls_socket.cpp` reads any 16-bit length, so TDLib's 2^14 is
//! the bound for every client. Within it, the policy is the site's own where the site's
//! records fit (a site with `ssl_buffer_size 4k`, or one with dynamic record sizing that
//! starts with segment-sized records, is matched byte for byte), and the largest record a
//! client takes where they do not (16384 for the site's 16401: 17 bytes short, the one
//! difference no fake-TLS server can avoid).
//!
//! The site's sizes come from [`crate::mtproto::site_sample`]: one real HTTPS download
//! from the route's `to`. Its records are read as: the records before the first one of the
//! largest size are the site's ramp (the first records of a response: headers, dynamic
//! record sizing's small records), each record after the ramp is one of the steady size.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::mtproto::records::MAX_OUTGOING_PAYLOAD;

/// Most ramp records kept: dynamic record sizing ramps over some tens of records (the
/// Cloudflare and F5 write-ups describe about 40 segment-sized ones, then a step), and a
/// ramp longer than this is the site's steady state anyway.
pub const MAX_RAMP: usize = 64;

/// The record sizes of one route's downloads: a ramp for the first records, then a steady
/// size. Each size is a ceiling: a record is smaller when less data is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSizing {
    ramp: Vec<u16>,
    steady: u16,
    /// The site's own full record, before clamping to what clients take.
    site_full: usize,
}

impl Default for RecordSizing {
    /// The largest record every client takes, from the first record on: what frontgate does
    /// for `mimic: off` and until a site's sizes are learned.
    fn default() -> RecordSizing {
        RecordSizing {
            ramp: Vec::new(),
            steady: MAX_OUTGOING_PAYLOAD as u16,
            site_full: MAX_OUTGOING_PAYLOAD,
        }
    }
}

impl RecordSizing {
    /// The sizing learned from the lengths (record header's length field) of the
    /// application-data records of one response from the site, in order, without the
    /// handshake, session tickets and the closing alert. The last record only carries the
    /// rest of the body, so it says nothing of the sizing and is not used. `None` when too
    /// few records remain to tell a size.
    pub fn from_site_records(lengths: &[usize]) -> Option<RecordSizing> {
        let body = lengths.split_last().map(|(_, body)| body)?;
        let largest = *body.iter().max()?;
        let first_full = body.iter().position(|&len| len == largest)?;
        let clamp = |len: usize| len.clamp(1, MAX_OUTGOING_PAYLOAD) as u16;
        Some(RecordSizing {
            ramp: body[..first_full.min(MAX_RAMP)]
                .iter()
                .map(|&len| clamp(len))
                .collect(),
            steady: clamp(largest),
            site_full: largest,
        })
    }

    /// The ceiling of the record with 0-based `index` in the session's download.
    pub fn ceiling(&self, index: usize) -> usize {
        usize::from(self.ramp.get(index).copied().unwrap_or(self.steady))
    }

    /// The ramp's record sizes.
    pub fn ramp(&self) -> &[u16] {
        &self.ramp
    }

    /// The size of every record after the ramp.
    pub fn steady(&self) -> usize {
        usize::from(self.steady)
    }

    /// The site's own full record size (larger than [`steady`](Self::steady) when the site
    /// sends records no client takes).
    pub fn site_full(&self) -> usize {
        self.site_full
    }
}

/// One session's place in its sizing: how many records it has started. Shared by the
/// download's successive buffers (the relay drops its buffer in a quiet spell and makes
/// another at the next byte), so the ramp is not restarted by a pause.
#[derive(Debug, Default)]
pub struct SizingCursor {
    sizing: RecordSizing,
    started: AtomicUsize,
}

impl SizingCursor {
    /// A cursor at the first record of `sizing`.
    pub fn new(sizing: RecordSizing) -> SizingCursor {
        SizingCursor {
            sizing,
            started: AtomicUsize::new(0),
        }
    }

    /// The ceiling of the record `ahead` records after the next one to start.
    pub fn ceiling_ahead(&self, ahead: usize) -> usize {
        let next = self.started.load(Ordering::Relaxed);
        self.sizing.ceiling(next.saturating_add(ahead))
    }

    /// Counts one record as started.
    pub fn start_record(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx 1.22 / OpenSSL 3.0 with TLS 1.3 serving a 16 MiB file (FIDELITY.md's bulk
    /// table): every record full, then the rest.
    #[test]
    fn a_tls13_site_sending_full_records_gets_the_largest_a_client_takes() {
        let mut records = vec![16401; 1024];
        records.push(281);
        let sizing = RecordSizing::from_site_records(&records).unwrap();
        assert_eq!(sizing.ramp(), &[] as &[u16]);
        assert_eq!(sizing.steady(), 16384);
        assert_eq!(sizing.site_full(), 16401);
        assert_eq!(sizing.ceiling(0), 16384);
    }

    /// nginx with `ssl_buffer_size 4k`: 4096 + 17 bytes per record, within a client's bound,
    /// so matched exactly.
    #[test]
    fn a_site_with_small_records_is_matched_exactly() {
        let mut records = vec![4113; 300];
        records.push(1000);
        let sizing = RecordSizing::from_site_records(&records).unwrap();
        assert_eq!(sizing.steady(), 4113);
        assert_eq!(sizing.ceiling(5000), 4113);
    }

    /// Dynamic record sizing (Cloudflare, Go's crypto/tls): segment-sized records first,
    /// then a step, then full ones.
    #[test]
    fn a_dynamic_record_sizing_ramp_is_followed_record_for_record() {
        let mut records = vec![1386; 40];
        records.extend([4113; 20]);
        records.extend([16401; 30]);
        records.push(77);
        let sizing = RecordSizing::from_site_records(&records).unwrap();
        assert_eq!(sizing.ramp().len(), 60);
        assert_eq!(sizing.ceiling(0), 1386);
        assert_eq!(sizing.ceiling(39), 1386);
        assert_eq!(sizing.ceiling(40), 4113);
        assert_eq!(sizing.ceiling(59), 4113);
        assert_eq!(sizing.ceiling(60), 16384);
    }

    #[test]
    fn a_ramp_is_bounded() {
        let mut records: Vec<usize> = (1..=200).collect();
        records.push(16401);
        records.push(5);
        let sizing = RecordSizing::from_site_records(&records).unwrap();
        assert_eq!(sizing.ramp().len(), MAX_RAMP);
        assert_eq!(sizing.ceiling(MAX_RAMP), 16384);
    }

    #[test]
    fn too_few_records_tell_nothing() {
        assert_eq!(RecordSizing::from_site_records(&[]), None);
        assert_eq!(RecordSizing::from_site_records(&[16401]), None);
        let two = RecordSizing::from_site_records(&[16401, 200]).unwrap();
        assert_eq!(two.steady(), 16384);
    }

    #[test]
    fn the_cursor_walks_the_ramp_once() {
        let cursor = SizingCursor::new(RecordSizing {
            ramp: vec![100, 200],
            steady: 300,
            site_full: 300,
        });
        assert_eq!(cursor.ceiling_ahead(0), 100);
        assert_eq!(cursor.ceiling_ahead(1), 200);
        assert_eq!(cursor.ceiling_ahead(2), 300);
        cursor.start_record();
        assert_eq!(cursor.ceiling_ahead(0), 200);
        cursor.start_record();
        cursor.start_record();
        assert_eq!(cursor.ceiling_ahead(0), 300);
        assert_eq!(cursor.ceiling_ahead(usize::MAX), 300, "no overflow");
    }
}
