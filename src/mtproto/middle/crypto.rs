//! The ME connection's keys: MD5 and SHA-1 over both nonces, the timestamp, both addresses
//! and the proxy secret (the derivation Telegram's MTProxy and mtprotoproxy use), and the
//! AES-256-CBC streams they key. Composed from the `md-5`, `sha1`, `aes` and `cbc` crates.

use std::net::{IpAddr, SocketAddr};

use aes::cipher::inout::InOutBuf;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::Md5;
use sha1::{Digest, Sha1};

/// AES block length: every ME frame is padded to it.
pub const BLOCK: usize = 16;

/// Which direction a key is for, from the proxy's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proxy -> ME (the proxy encrypts, the ME decrypts).
    Client,
    /// ME -> proxy.
    Server,
}

impl Purpose {
    fn label(self) -> &'static [u8; 6] {
        match self {
            Purpose::Client => b"CLIENT",
            Purpose::Server => b"SERVER",
        }
    }
}

/// What both sides put into the key derivation.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The ME's nonce (from its RPC_NONCE answer).
    pub nonce_server: &'a [u8; 16],
    /// The proxy's nonce.
    pub nonce_client: &'a [u8; 16],
    /// The proxy's RPC_NONCE timestamp, as sent (little-endian Unix seconds).
    pub client_time: [u8; 4],
    /// The proxy's address as the ME sees it (its external address behind NAT).
    pub client: SocketAddr,
    /// The ME's address.
    pub server: SocketAddr,
    /// The middle-proxy secret (getProxySecret).
    pub secret: &'a [u8],
}

/// An AES-256 key and CBC IV.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyIv {
    /// The key.
    pub key: [u8; 32],
    /// The IV.
    pub iv: [u8; 16],
}

impl std::fmt::Debug for KeyIv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyIv(..)")
    }
}

/// Derives the key and IV for `purpose`: with `s` = nonce_srv, nonce_clt, client_time,
/// server IPv4 (reversed bytes), client port (LE), purpose, client IPv4 (reversed), server
/// port (LE), secret, nonce_srv, [client IPv6, server IPv6,] nonce_clt, the key is
/// MD5(s[1..])[..12] + SHA1(s) and the IV MD5(s[2..]). IPv6 peers put zeros in the IPv4
/// fields and their addresses in the IPv6 ones.
pub fn derive(input: &KeyInput<'_>, purpose: Purpose) -> KeyIv {
    let mut s = Vec::with_capacity(128 + input.secret.len());
    s.extend_from_slice(input.nonce_server);
    s.extend_from_slice(input.nonce_client);
    s.extend_from_slice(&input.client_time);
    let (v4, v6) = match (input.client.ip(), input.server.ip()) {
        (IpAddr::V4(client), IpAddr::V4(server)) => {
            let reversed = |ip: std::net::Ipv4Addr| {
                let mut b = ip.octets();
                b.reverse();
                b
            };
            ((reversed(client), reversed(server)), None)
        }
        (client, server) => (
            (([0; 4]), [0; 4]),
            Some((v6_bytes(client), v6_bytes(server))),
        ),
    };
    s.extend_from_slice(&v4.1);
    s.extend_from_slice(&input.client.port().to_le_bytes());
    s.extend_from_slice(purpose.label());
    s.extend_from_slice(&v4.0);
    s.extend_from_slice(&input.server.port().to_le_bytes());
    s.extend_from_slice(input.secret);
    s.extend_from_slice(input.nonce_server);
    if let Some((client, server)) = v6 {
        s.extend_from_slice(&client);
        s.extend_from_slice(&server);
    }
    s.extend_from_slice(input.nonce_client);
    let md5_1 = Md5::digest(&s[1..]);
    let sha1 = Sha1::digest(&s);
    let md5_2 = Md5::digest(&s[2..]);
    let mut key = [0u8; 32];
    key[..12].copy_from_slice(&md5_1[..12]);
    key[12..].copy_from_slice(&sha1);
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&md5_2);
    KeyIv { key, iv }
}

fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// AES-256-CBC encryption over a stream of whole blocks (the chain continues across calls).
pub struct CbcEncrypt(cbc::Encryptor<aes::Aes256>);

/// AES-256-CBC decryption over a stream of whole blocks.
pub struct CbcDecrypt(cbc::Decryptor<aes::Aes256>);

impl CbcEncrypt {
    /// A stream keyed with `k`.
    pub fn new(k: &KeyIv) -> CbcEncrypt {
        CbcEncrypt(cbc::Encryptor::new(&k.key.into(), &k.iv.into()))
    }

    /// Encrypts `buf` in place; its length must be a multiple of [`BLOCK`] (a tail is left
    /// as is, and the framing never produces one).
    pub fn apply(&mut self, buf: &mut [u8]) {
        let (blocks, _tail) = InOutBuf::from(buf).into_chunks();
        self.0.encrypt_blocks_inout_mut(blocks);
    }
}

impl CbcDecrypt {
    /// A stream keyed with `k`.
    pub fn new(k: &KeyIv) -> CbcDecrypt {
        CbcDecrypt(cbc::Decryptor::new(&k.key.into(), &k.iv.into()))
    }

    /// Decrypts `buf` in place; its length must be a multiple of [`BLOCK`].
    pub fn apply(&mut self, buf: &mut [u8]) {
        // All the blocks in one call: CBC decryption runs several blocks in parallel.
        let (blocks, _tail) = InOutBuf::from(buf).into_chunks();
        self.0.decrypt_blocks_inout_mut(blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from mtprotoproxy 1.0.6 (PyPI), produced by calling its
    /// `get_middleproxy_aes_key_and_iv` with nonce_srv = 10..1f, nonce_clt = 20..2f,
    /// clt_ts = 0x5f000000 (LE), secret = bytes(range(128)), the proxy at 203.0.113.7:43210
    /// (IPv6 case: [2001:db8::7]:43210) and the ME at 149.154.175.50:8888 (IPv6:
    /// [2001:67c:4e8:f004::d]:8888); IPv4 addresses passed as `inet_pton(...)[::-1]` and ports
    /// as 2 LE bytes, exactly as its `do_middleproxy_handshake` does.
    #[test]
    fn keys_match_the_reference_implementation() {
        let secret: Vec<u8> = (0..128).collect();
        let nonce_server: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
        let nonce_client: [u8; 16] = std::array::from_fn(|i| 0x20 + i as u8);
        let input = |client: &str, server: &str| KeyInput {
            nonce_server: &nonce_server,
            nonce_client: &nonce_client,
            client_time: 0x5f00_0000u32.to_le_bytes(),
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            secret: &secret,
        };
        let v4 = input("203.0.113.7:43210", "149.154.175.50:8888");
        let check = |k: KeyIv, key: &str, iv: &str| {
            assert_eq!(hex::encode(k.key), key);
            assert_eq!(hex::encode(k.iv), iv);
        };
        check(
            derive(&v4, Purpose::Client),
            "7df774e29d46877851cb6a2d846dcc0ab5cdb398f64d4455752d1c23d2a6188f",
            "e9f24f28524d0ce8382ecdd5bf2ea736",
        );
        check(
            derive(&v4, Purpose::Server),
            "4b824f5668f0a11ef1e3f2ca67b7c4413994530830ff44d7ff0148161e0f3136",
            "b7a8509aab5e67820a6db05ac896d715",
        );
        let v6 = input("[2001:db8::7]:43210", "[2001:67c:4e8:f004::d]:8888");
        check(
            derive(&v6, Purpose::Client),
            "ca4b3de49dca35f9bcdf2acaa2fc6cf2c51f1027444d90291169e4b200463425",
            "9dfd5bfddb5156139a9a9b6a5289e88f",
        );
    }

    #[test]
    fn cbc_streams_invert_each_other_across_calls() {
        let k = KeyIv {
            key: [3; 32],
            iv: [4; 16],
        };
        let plain: Vec<u8> = (0..96).collect();
        let mut wire = plain.clone();
        let mut enc = CbcEncrypt::new(&k);
        enc.apply(&mut wire[..32]);
        enc.apply(&mut wire[32..]);
        assert_ne!(wire, plain);
        let mut dec = CbcDecrypt::new(&k);
        dec.apply(&mut wire[..48]);
        dec.apply(&mut wire[48..]);
        assert_eq!(wire, plain);
    }
}
