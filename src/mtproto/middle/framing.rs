//! The MTProto transport frames an ME connection carries: `len` (LE u32, the whole frame),
//! `seq` (LE i32, from -2 for RPC_NONCE up by one per frame and direction), the payload,
//! and the CRC32 of everything before it; `04 00 00 00` words pad the stream to the AES
//! block so that CBC always has whole blocks.

use super::crypto::BLOCK;

/// The first sequence number of each direction (RPC_NONCE is frame -2, the handshake -1).
pub const START_SEQ: i32 = -2;
/// The padding word, which reads as a frame length of 4.
const PADDING: [u8; 4] = [4, 0, 0, 0];
/// The shortest frame: length, sequence number and CRC.
const MIN_FRAME: usize = 12;
/// The longest frame accepted (as MTProxy and mtprotoproxy bound it).
pub const MAX_FRAME: usize = 1 << 24;

/// Why the ME's byte stream is no valid frame sequence: the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length out of range or not a multiple of 4.
    #[error("ME frame length {0} out of range")]
    Length(usize),
    /// The sequence number is not the next one.
    #[error("ME frame sequence number {got}, expected {expected}")]
    Sequence {
        /// What the frame said.
        got: i32,
        /// What was due.
        expected: i32,
    },
    /// The checksum does not match.
    #[error("ME frame CRC32 mismatch")]
    Checksum,
}

/// Appends the frame of `payload` with sequence number `*seq` (then incremented) to `out`,
/// padded so that `out` grows by a multiple of [`BLOCK`].
pub fn encode(seq: &mut i32, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = (payload.len() + MIN_FRAME) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    *seq = seq.wrapping_add(1);
    while !(out.len() - start).is_multiple_of(BLOCK) {
        out.extend_from_slice(&PADDING);
    }
}

/// Splits the (decrypted) byte stream from the ME into frame payloads, checking lengths,
/// sequence numbers and checksums.
#[derive(Debug)]
pub struct FrameDecoder {
    seq: i32,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start (consumed frames are dropped in one move).
    at: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            seq: START_SEQ,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl FrameDecoder {
    /// A decoder whose first frame has sequence number `seq`.
    pub fn starting_at(seq: i32) -> FrameDecoder {
        FrameDecoder {
            seq,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// Adds bytes read (and decrypted) from the ME.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `Ok(None)` until one is complete. A frame claims
    /// at most [`MAX_FRAME`] bytes, so the buffer stays bounded.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let rest = &self.buf[self.at..];
            if rest.len() < 4 {
                return Ok(None);
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len == PADDING.len() {
                self.at += 4;
                continue;
            }
            if !(MIN_FRAME..=MAX_FRAME).contains(&len) || !len.is_multiple_of(4) {
                return Err(FrameError::Length(len));
            }
            if rest.len() < len {
                return Ok(None);
            }
            let got = i32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if got != self.seq {
                return Err(FrameError::Sequence {
                    got,
                    expected: self.seq,
                });
            }
            let crc_at = len - 4;
            let crc = u32::from_le_bytes([
                rest[crc_at],
                rest[crc_at + 1],
                rest[crc_at + 2],
                rest[crc_at + 3],
            ]);
            if crc32fast::hash(&rest[..crc_at]) != crc {
                return Err(FrameError::Checksum);
            }
            self.seq = self.seq.wrapping_add(1);
            let payload = rest[8..crc_at].to_vec();
            self.at += len;
            return Ok(Some(payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mtprotoproxy 1.0.6's `MTProtoFrameStreamWriter(sink, -2)` writing an RPC_NONCE
    /// (selector 00010203, schema 1, time 0x5f000000, nonce 20..2f) and then `abcdefgh`, its
    /// output captured by a sink that records every `write`.
    const REFERENCE: &str = "2c000000feffffffaa87cb7a00010203010000000000005f202122232425262728292a2b2c2d2e2f4f3c54420400000014000000ffffffff6162636465666768e5f54a91040000000400000004000000";

    fn nonce() -> Vec<u8> {
        let mut msg = hex::decode("aa87cb7a00010203010000000000005f").unwrap();
        msg.extend(0x20..0x30u8);
        msg
    }

    #[test]
    fn frames_match_the_reference_implementation() {
        let mut seq = START_SEQ;
        let mut out = Vec::new();
        encode(&mut seq, &nonce(), &mut out);
        encode(&mut seq, b"abcdefgh", &mut out);
        assert_eq!(hex::encode(&out), REFERENCE);
        assert_eq!(seq, 0);
    }

    #[test]
    fn the_decoder_checks_sequence_and_checksum() {
        let wire = hex::decode(REFERENCE).unwrap();
        let mut frames = FrameDecoder::default();
        for byte in &wire {
            frames.push(std::slice::from_ref(byte));
        }
        assert_eq!(frames.next_frame().unwrap().unwrap(), nonce());
        assert_eq!(frames.next_frame().unwrap().unwrap(), b"abcdefgh");
        assert_eq!(frames.next_frame().unwrap(), None);

        let mut flipped = wire.clone();
        flipped[20] ^= 1;
        let mut frames = FrameDecoder::default();
        frames.push(&flipped);
        assert_eq!(frames.next_frame(), Err(FrameError::Checksum));

        let mut frames = FrameDecoder::starting_at(5);
        frames.push(&wire);
        assert!(matches!(
            frames.next_frame(),
            Err(FrameError::Sequence { .. })
        ));

        let mut frames = FrameDecoder::default();
        frames.push(&(MAX_FRAME as u32 + 4).to_le_bytes());
        assert!(matches!(frames.next_frame(), Err(FrameError::Length(_))));
    }
}
