//! The RPC messages inside ME frames once the handshake is done: `RPC_PROXY_REQ` carries one
//! client message with both addresses and the ad_tag; `RPC_PROXY_ANS`, `RPC_SIMPLE_ACK` and
//! `RPC_CLOSE_EXT` come back per connection id; `RPC_CLOSE_CONN` tells the ME a client left;
//! `RPC_PING` / `RPC_PONG` keep the connection alive and measure its round trip. All
//! integers little-endian.

use std::net::{IpAddr, SocketAddr};

use crate::config::middle::AdTag;
use crate::mtproto::obfuscated2::ProtocolTag;

/// Opens an ME connection (plaintext): key selector, schema, timestamp, nonce.
pub const RPC_NONCE: u32 = 0x7acb_87aa;
/// The first encrypted message each way: flags and the peers' process ids.
pub const RPC_HANDSHAKE: u32 = 0x7682_eef5;
/// One client message for the ME.
pub const RPC_PROXY_REQ: u32 = 0x36ce_f1ee;
/// One message from Telegram for a client.
pub const RPC_PROXY_ANS: u32 = 0x4403_da0d;
/// A quick-ack confirmation for a client.
pub const RPC_SIMPLE_ACK: u32 = 0x3bac_409b;
/// The ME closed a client's connection.
pub const RPC_CLOSE_EXT: u32 = 0x5eb6_34a2;
/// The proxy closed a client's connection.
pub const RPC_CLOSE_CONN: u32 = 0x1fcf_425d;
/// Keepalive request (with an 8-byte id).
pub const RPC_PING: u32 = 0x5730_a2df;
/// Keepalive answer (echoing the id).
pub const RPC_PONG: u32 = 0x8430_eaa7;
/// The `extra` section's proxy-tag constructor.
const TL_PROXY_TAG: u32 = 0xdb1e_26ae;

/// `RPC_PROXY_REQ` flag: the message is an unencrypted MTProto message (auth key id 0).
pub const FLAG_NOT_ENCRYPTED: u32 = 0x2;
/// `RPC_PROXY_REQ` flag: an `extra` section with the ad_tag follows the addresses.
pub const FLAG_HAS_AD_TAG: u32 = 0x8;
/// `RPC_PROXY_REQ` flag set by every proxy.
pub const FLAG_MAGIC: u32 = 0x1000;
/// `RPC_PROXY_REQ` flag set by every proxy.
pub const FLAG_EXTMODE2: u32 = 0x20000;
/// The client uses padded intermediate (with [`FLAG_INTERMEDIATE`]).
pub const FLAG_PAD: u32 = 0x0800_0000;
/// The client uses the intermediate transport.
pub const FLAG_INTERMEDIATE: u32 = 0x2000_0000;
/// The client uses the abridged transport.
pub const FLAG_ABRIDGED: u32 = 0x4000_0000;
/// The client asked for a quick ack of this message.
pub const FLAG_QUICKACK: u32 = 0x8000_0000;

/// The fixed part of an `RPC_PROXY_REQ` before the message: type, flags, conn id, two
/// 20-byte addresses, extra size, and the 24-byte extra.
pub const PROXY_REQ_HEADER: usize = 4 + 4 + 8 + 20 + 20 + 4 + 24;

/// One client's fixed facts, the same in every request of its session.
#[derive(Debug, Clone, Copy)]
pub struct ProxyReqHeader {
    /// The session's connection id on its ME connection.
    pub conn_id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy's address (its external one).
    pub proxy: SocketAddr,
    /// The client's transport.
    pub transport: ProtocolTag,
    /// The promoted channel.
    pub ad_tag: AdTag,
}

/// The flags of a request with `message` for a client on `transport`.
pub fn request_flags(transport: ProtocolTag, message: &[u8], quick_ack: bool) -> u32 {
    let mut flags = FLAG_HAS_AD_TAG | FLAG_MAGIC | FLAG_EXTMODE2;
    flags |= match transport {
        ProtocolTag::Abridged => FLAG_ABRIDGED,
        ProtocolTag::Intermediate => FLAG_INTERMEDIATE,
        ProtocolTag::PaddedIntermediate => FLAG_INTERMEDIATE | FLAG_PAD,
    };
    if quick_ack {
        flags |= FLAG_QUICKACK;
    }
    if message.len() >= 8 && message[..8] == [0; 8] {
        flags |= FLAG_NOT_ENCRYPTED;
    }
    flags
}

/// Appends `RPC_PROXY_REQ` carrying `message` (a whole client message, a multiple of 4
/// bytes) to `out`.
pub fn proxy_req(header: &ProxyReqHeader, message: &[u8], quick_ack: bool, out: &mut Vec<u8>) {
    let flags = request_flags(header.transport, message, quick_ack);
    out.reserve(PROXY_REQ_HEADER + message.len());
    out.extend_from_slice(&RPC_PROXY_REQ.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&header.conn_id.to_le_bytes());
    out.extend_from_slice(&address(header.client));
    out.extend_from_slice(&address(header.proxy));
    out.extend_from_slice(&24u32.to_le_bytes());
    out.extend_from_slice(&TL_PROXY_TAG.to_le_bytes());
    out.push(16);
    out.extend_from_slice(&header.ad_tag.0);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(message);
}

/// An address as `RPC_PROXY_REQ` writes it: 16 bytes of IPv6 (IPv4-mapped for IPv4), then
/// the port as a 4-byte integer.
pub fn address(addr: SocketAddr) -> [u8; 20] {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 20];
    out[..16].copy_from_slice(&ip.octets());
    out[16..].copy_from_slice(&u32::from(addr.port()).to_le_bytes());
    out
}

/// `RPC_CLOSE_CONN` for `conn_id`.
pub fn close_conn(conn_id: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&RPC_CLOSE_CONN.to_le_bytes());
    out[4..].copy_from_slice(&conn_id.to_le_bytes());
    out
}

/// `RPC_PING` with `id`.
pub fn ping(id: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&RPC_PING.to_le_bytes());
    out[4..].copy_from_slice(&id.to_le_bytes());
    out
}

/// What the ME sent on an established connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A message for the client of `conn_id` (starts at `data` of the frame payload).
    ProxyAns {
        /// The connection id.
        conn_id: u64,
        /// Where the message starts in the payload.
        data: usize,
    },
    /// A quick-ack confirmation for the client of `conn_id`.
    SimpleAck {
        /// The connection id.
        conn_id: u64,
        /// The 4 confirmation bytes.
        confirm: [u8; 4],
    },
    /// The ME closed the client of `conn_id`.
    CloseExt {
        /// The connection id.
        conn_id: u64,
    },
    /// The ME pings: answer with a pong carrying `id`.
    Ping {
        /// The ping id.
        id: u64,
    },
    /// The answer to our ping `id`.
    Pong {
        /// The ping id.
        id: u64,
    },
    /// Anything else (ignored, as the references do).
    Other(u32),
}

/// Parses one frame payload from the ME; `None` when it is too short for its type.
pub fn parse_answer(payload: &[u8]) -> Option<Answer> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let long = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    Some(match word(0)? {
        RPC_PROXY_ANS => Answer::ProxyAns {
            conn_id: long(8)?,
            data: 16,
        },
        RPC_SIMPLE_ACK => Answer::SimpleAck {
            conn_id: long(4)?,
            confirm: payload.get(12..16)?.try_into().ok()?,
        },
        RPC_CLOSE_EXT => Answer::CloseExt { conn_id: long(4)? },
        RPC_PING => Answer::Ping { id: long(4)? },
        RPC_PONG => Answer::Pong { id: long(4)? },
        other => Answer::Other(other),
    })
}

/// `RPC_PONG` answering `id`.
pub fn pong(id: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&RPC_PONG.to_le_bytes());
    out[4..].copy_from_slice(&id.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `encode_test` sample of seriyps/mtproto_proxy's `mtp_rpc.erl` (an
    /// unencrypted abridged message, conn id 1, client 109.238.131.159:1128, proxy
    /// 80.211.29.34:53634, tag dcbe8f14...b326): the whole request, byte for byte.
    #[test]
    fn proxy_req_matches_the_reference_encoding() {
        let tag = hex::decode("dcbe8f1493fa4cd9ab300891c0b5b326").unwrap();
        let mut message = vec![0u8; 12];
        message.extend_from_slice(&[
            61, 2, 24, 91, 20, 0, 0, 0, 120, 151, 70, 96, 153, 197, 142, 238, 245, 139, 85, 208,
            160, 241, 68, 89, 106, 7, 118, 167,
        ]);
        let header = ProxyReqHeader {
            conn_id: 1,
            client: "109.238.131.159:1128".parse().unwrap(),
            proxy: "80.211.29.34:53634".parse().unwrap(),
            transport: ProtocolTag::Abridged,
            ad_tag: AdTag(tag.try_into().unwrap()),
        };
        let mut out = Vec::new();
        proxy_req(&header, &message, false, &mut out);
        let mut expected = vec![
            238, 241, 206, 54, 10, 16, 2, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            255, 255, 109, 238, 131, 159, 104, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 80,
            211, 29, 34, 130, 209, 0, 0, 24, 0, 0, 0, 174, 38, 30, 219, 16, 220, 190, 143, 20, 147,
            250, 76, 217, 171, 48, 8, 145, 192, 181, 179, 38, 0, 0, 0,
        ];
        assert_eq!(expected.len(), PROXY_REQ_HEADER);
        expected.extend_from_slice(&message);
        assert_eq!(out, expected);
    }

    #[test]
    fn answers_parse_and_short_ones_are_refused() {
        let mut ans = RPC_PROXY_ANS.to_le_bytes().to_vec();
        ans.extend([0; 4]);
        ans.extend(7u64.to_le_bytes());
        ans.extend(b"data");
        assert_eq!(
            parse_answer(&ans),
            Some(Answer::ProxyAns {
                conn_id: 7,
                data: 16
            })
        );
        let mut ack = RPC_SIMPLE_ACK.to_le_bytes().to_vec();
        ack.extend(9u64.to_le_bytes());
        ack.extend([1, 2, 3, 4]);
        assert_eq!(
            parse_answer(&ack),
            Some(Answer::SimpleAck {
                conn_id: 9,
                confirm: [1, 2, 3, 4]
            })
        );
        assert_eq!(parse_answer(&ack[..10]), None);
        assert_eq!(parse_answer(&[1, 2]), None);
    }
}
