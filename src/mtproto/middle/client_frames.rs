//! The client's MTProto transport inside obfuscated2, which middle-proxy mode must parse
//! (each message becomes one `RPC_PROXY_REQ`) and write (each `RPC_PROXY_ANS` becomes one
//! message): abridged (a length in words, one byte or `7f` + three), intermediate (a 4-byte
//! length) and padded intermediate (the same, with 0-3 random bytes after the message). The
//! high bit of a length asks for a quick ack.

use rand::{Rng, RngCore};

use crate::mtproto::obfuscated2::ProtocolTag;

/// The longest client message accepted (MTProto caps messages near 1 MiB; this leaves room).
pub const MESSAGE_MAX: usize = 1 << 24;

/// A client message that breaks its transport: the session ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client message of {0} bytes breaks its transport (longest {MESSAGE_MAX}, whole words)")]
pub struct BadMessage(pub usize);

/// Splits the decrypted client stream into messages.
#[derive(Debug)]
pub struct ClientFrames {
    tag: ProtocolTag,
    buf: Vec<u8>,
}

/// One client message and whether it asks for a quick ack.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// The message (whole 4-byte words).
    pub data: Vec<u8>,
    /// The client wants an `RPC_SIMPLE_ACK`.
    pub quick_ack: bool,
}

impl ClientFrames {
    /// A parser for `tag`'s transport.
    pub fn new(tag: ProtocolTag) -> ClientFrames {
        ClientFrames {
            tag,
            buf: Vec::new(),
        }
    }

    /// Adds decrypted client bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` until one is complete.
    pub fn next_message(&mut self) -> Result<Option<Message>, BadMessage> {
        let (header, len, quick_ack) = match self.tag {
            ProtocolTag::Abridged => {
                let Some(&first) = self.buf.first() else {
                    return Ok(None);
                };
                let quick_ack = first & 0x80 != 0;
                let words = first & 0x7f;
                if words == 0x7f {
                    if self.buf.len() < 4 {
                        return Ok(None);
                    }
                    let n = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], 0]);
                    (4, n as usize * 4, quick_ack)
                } else {
                    (1, usize::from(words) * 4, quick_ack)
                }
            }
            ProtocolTag::Intermediate | ProtocolTag::PaddedIntermediate => {
                if self.buf.len() < 4 {
                    return Ok(None);
                }
                let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                (4, (n & 0x7fff_ffff) as usize, n & 0x8000_0000 != 0)
            }
        };
        let aligned = len % 4 == 0 || self.tag == ProtocolTag::PaddedIntermediate;
        if len > MESSAGE_MAX || len == 0 || !aligned {
            return Err(BadMessage(len));
        }
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let mut data: Vec<u8> = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        // Padded intermediate: the bytes past the last whole word are padding.
        data.truncate(len / 4 * 4);
        if data.is_empty() {
            return Err(BadMessage(len));
        }
        Ok(Some(Message { data, quick_ack }))
    }
}

/// Appends `message` (from the ME) in the client's transport to `out`.
pub fn encode_message(tag: ProtocolTag, message: &[u8], out: &mut Vec<u8>) {
    match tag {
        ProtocolTag::Abridged => {
            let words = message.len() / 4;
            if words < 0x7f {
                out.push(words as u8);
            } else {
                out.push(0x7f);
                out.extend_from_slice(&(words as u32).to_le_bytes()[..3]);
            }
            out.extend_from_slice(message);
        }
        ProtocolTag::Intermediate => {
            out.extend_from_slice(&(message.len() as u32).to_le_bytes());
            out.extend_from_slice(message);
        }
        ProtocolTag::PaddedIntermediate => {
            let mut rng = rand::thread_rng();
            let padding = rng.gen_range(0..4);
            out.extend_from_slice(&((message.len() + padding) as u32).to_le_bytes());
            out.extend_from_slice(message);
            let start = out.len();
            out.resize(start + padding, 0);
            rng.fill_bytes(&mut out[start..]);
        }
    }
}

/// Appends a quick-ack confirmation in the client's transport to `out` (abridged sends the
/// four bytes reversed, the intermediate transports as they are).
pub fn encode_ack(tag: ProtocolTag, confirm: [u8; 4], out: &mut Vec<u8>) {
    let mut confirm = confirm;
    if tag == ProtocolTag::Abridged {
        confirm.reverse();
    }
    out.extend_from_slice(&confirm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_round_trips_short_and_long_messages() {
        for tag in [
            ProtocolTag::Abridged,
            ProtocolTag::Intermediate,
            ProtocolTag::PaddedIntermediate,
        ] {
            let short = vec![1u8; 8];
            let long = vec![2u8; 4 * 0x90];
            let mut wire = Vec::new();
            encode_message(tag, &short, &mut wire);
            encode_message(tag, &long, &mut wire);
            let mut frames = ClientFrames::new(tag);
            for byte in &wire {
                frames.push(std::slice::from_ref(byte));
            }
            assert_eq!(
                frames.next_message().unwrap().unwrap().data,
                short,
                "{tag:?}"
            );
            assert_eq!(
                frames.next_message().unwrap().unwrap().data,
                long,
                "{tag:?}"
            );
            assert_eq!(frames.next_message().unwrap(), None);
        }
    }

    #[test]
    fn quick_ack_bits_and_bad_lengths() {
        let mut frames = ClientFrames::new(ProtocolTag::Abridged);
        frames.push(&[0x81, 1, 2, 3, 4]);
        assert!(frames.next_message().unwrap().unwrap().quick_ack);
        let mut frames = ClientFrames::new(ProtocolTag::Intermediate);
        frames.push(&(0x8000_0004u32).to_le_bytes());
        frames.push(&[0; 4]);
        assert!(frames.next_message().unwrap().unwrap().quick_ack);
        let mut frames = ClientFrames::new(ProtocolTag::Intermediate);
        frames.push(&5u32.to_le_bytes());
        assert_eq!(frames.next_message(), Err(BadMessage(5)));
        let mut frames = ClientFrames::new(ProtocolTag::Intermediate);
        frames.push(&0x7fff_fff0u32.to_le_bytes());
        assert!(
            frames.next_message().is_err(),
            "no 2 GiB message is buffered"
        );
    }
}
