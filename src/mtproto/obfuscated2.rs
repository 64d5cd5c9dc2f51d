//! obfuscated2: the 64-byte init that opens every MTProto transport connection and the
//! AES-256-CTR streams it keys, on the client leg (PROTOCOL.md §5, salted with the user
//! secret) and on the DC leg (§6, unsalted, including mtprotoproxy's fast path).

use std::fmt;

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::secret::Secret;

pub use crate::mtproto::aes_ctr::{reencrypt, AesCtr};

/// Length of the obfuscated2 init.
pub const INIT_LEN: usize = 64;

const KEY_IV_START: usize = 8;
const KEY_IV_END: usize = 56; // 32-byte key + 16-byte iv
const TAG_AT: usize = 56;
const DC_AT: usize = 60;

/// The MTProto transport the client speaks inside obfuscated2; the proxy passes it to the DC
/// and otherwise does not parse the framing (direct mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolTag {
    /// `ef ef ef ef`.
    Abridged,
    /// `ee ee ee ee`.
    Intermediate,
    /// `dd dd dd dd` (what `dd`/`ee` secrets use).
    PaddedIntermediate,
}

impl ProtocolTag {
    /// The four tag bytes as they sit at init offset 56.
    pub fn to_bytes(self) -> [u8; 4] {
        match self {
            ProtocolTag::Abridged => [0xef; 4],
            ProtocolTag::Intermediate => [0xee; 4],
            ProtocolTag::PaddedIntermediate => [0xdd; 4],
        }
    }

    /// The tag these bytes name, or `None` (then the init was not made with this secret).
    pub fn from_bytes(bytes: &[u8; 4]) -> Option<ProtocolTag> {
        match bytes {
            [0xef, 0xef, 0xef, 0xef] => Some(ProtocolTag::Abridged),
            [0xee, 0xee, 0xee, 0xee] => Some(ProtocolTag::Intermediate),
            [0xdd, 0xdd, 0xdd, 0xdd] => Some(ProtocolTag::PaddedIntermediate),
            _ => None,
        }
    }
}

/// The client leg after a valid init: what the client asked for and the two ciphers.
pub struct ClientObfuscation {
    /// The client's transport.
    pub tag: ProtocolTag,
    /// The DC index from the init (negative = media DC, +10000 = test DC).
    pub dc: i16,
    /// Decrypts client -> proxy bytes; positioned after the 64 init bytes.
    pub decrypt: AesCtr,
    /// Encrypts proxy -> client bytes; positioned at the stream start.
    pub encrypt: AesCtr,
    /// Key and IV of `encrypt`, kept for the fast path of [`dc_init`].
    encrypt_key_iv: [u8; KEY_IV_END - KEY_IV_START],
}

impl fmt::Debug for ClientObfuscation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientObfuscation")
            .field("tag", &self.tag)
            .field("dc", &self.dc)
            .finish_non_exhaustive()
    }
}

fn salted_cipher(key_iv: &[u8], secret: &Secret) -> (AesCtr, [u8; 48]) {
    let mut hasher = Sha256::new();
    hasher.update(&key_iv[..32]);
    hasher.update(secret.as_bytes());
    let key = hasher.finalize();
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(&key);
    material[32..].copy_from_slice(&key_iv[32..48]);
    (cipher_from(&material), material)
}

fn cipher_from(key_iv: &[u8; 48]) -> AesCtr {
    AesCtr::new(key_iv[..32].into(), key_iv[32..].into())
}

fn reversed_key_iv(init: &[u8; INIT_LEN]) -> [u8; 48] {
    let mut rev = [0u8; 48];
    rev.copy_from_slice(&init[KEY_IV_START..KEY_IV_END]);
    rev.reverse();
    rev
}

/// Derives the client ciphers from `init` with `secret` and checks the protocol tag
/// (PROTOCOL.md §5). `None` means the init was not made with this secret (or is not
/// obfuscated2 at all).
pub fn parse_client_init(init: &[u8; INIT_LEN], secret: &Secret) -> Option<ClientObfuscation> {
    let (mut decrypt, _) = salted_cipher(&init[KEY_IV_START..KEY_IV_END], secret);
    let (encrypt, encrypt_key_iv) = salted_cipher(&reversed_key_iv(init), secret);
    let mut plain = *init;
    decrypt.apply_keystream(&mut plain);
    let tag = ProtocolTag::from_bytes(&[
        plain[TAG_AT],
        plain[TAG_AT + 1],
        plain[TAG_AT + 2],
        plain[TAG_AT + 3],
    ])?;
    let dc = i16::from_le_bytes([plain[DC_AT], plain[DC_AT + 1]]);
    Some(ClientObfuscation {
        tag,
        dc,
        decrypt,
        encrypt,
        encrypt_key_iv,
    })
}

/// Tries every user's secret on a plain (non-TLS) init; the first one yielding a valid tag
/// identifies the user (false positives: 2^-32 per user).
pub fn try_users<'a>(
    init: &[u8; INIT_LEN],
    users: impl IntoIterator<Item = &'a Secret>,
) -> Option<(usize, ClientObfuscation)> {
    users
        .into_iter()
        .enumerate()
        .find_map(|(index, secret)| parse_client_init(init, secret).map(|obf| (index, obf)))
}

/// What the proxy does with bytes coming back from the DC.
pub enum Downlink {
    /// Decrypt with this DC cipher, then encrypt with the client's cipher.
    Reencrypt(Box<AesCtr>),
    /// Fast path: the DC already encrypts with the client's keystream; forward as is and skip
    /// both ciphers.
    PassThrough,
}

/// The DC leg: the init to send first, and the ciphers for each direction.
pub struct DcObfuscation {
    /// The 64 bytes to send to the DC before anything else.
    pub init: [u8; INIT_LEN],
    /// Encrypts proxy -> DC bytes; positioned after the init.
    pub encrypt: AesCtr,
    /// How DC -> proxy bytes are handled.
    pub downlink: Downlink,
}

impl fmt::Debug for DcObfuscation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fast = matches!(self.downlink, Downlink::PassThrough);
        f.debug_struct("DcObfuscation")
            .field("fast", &fast)
            .finish_non_exhaustive()
    }
}

/// Whether the first 8 bytes of a DC init are ones Telegram reserves (they would make the DC
/// take the stream for another transport): PROTOCOL.md §6.
pub fn is_forbidden_init_prefix(init: &[u8]) -> bool {
    const BEGINNINGS: [[u8; 4]; 6] = [
        *b"HEAD",
        *b"POST",
        *b"GET ",
        *b"OPTI",
        [0x16, 0x03, 0x01, 0x02],
        [0xdd, 0xdd, 0xdd, 0xdd],
    ];
    init.len() < 8
        || init[0] == 0xef
        || BEGINNINGS.iter().any(|b| init[..4] == b[..])
        || init[..4] == [0xee; 4]
        || init[4..8] == [0; 4]
}

/// Builds a fresh init for the DC (PROTOCOL.md §6) from the OS RNG, carrying the client's tag
/// and DC index. With `fast` set to the client leg, the init carries the client's encrypt
/// key and IV (reversed) so the DC's replies need no re-encryption ([`Downlink::PassThrough`]);
/// those key bytes then cross the proxy-DC leg in the clear.
pub fn dc_init(tag: ProtocolTag, dc: i16, fast: Option<&ClientObfuscation>) -> DcObfuscation {
    let mut init = [0u8; INIT_LEN];
    OsRng.fill_bytes(&mut init);
    if let Some(client) = fast {
        let mut rev = client.encrypt_key_iv;
        rev.reverse();
        init[KEY_IV_START..KEY_IV_END].copy_from_slice(&rev);
    }
    while is_forbidden_init_prefix(&init) {
        OsRng.fill_bytes(&mut init[..KEY_IV_START]);
    }
    init[TAG_AT..TAG_AT + 4].copy_from_slice(&tag.to_bytes());
    init[DC_AT..DC_AT + 2].copy_from_slice(&dc.to_le_bytes());

    let mut key_iv = [0u8; 48];
    key_iv.copy_from_slice(&init[KEY_IV_START..KEY_IV_END]);
    let mut encrypt = cipher_from(&key_iv);
    let mut encrypted = init;
    encrypt.apply_keystream(&mut encrypted);
    let mut wire = init;
    wire[TAG_AT..].copy_from_slice(&encrypted[TAG_AT..]);

    let downlink = match fast {
        Some(_) => Downlink::PassThrough,
        None => Downlink::Reencrypt(Box::new(cipher_from(&reversed_key_iv(&init)))),
    };
    DcObfuscation {
        init: wire,
        encrypt,
        downlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtproto::test_vectors::{b64, testdata};

    struct Snapshot {
        secret: Secret,
        frame: [u8; 64],
        dc: i16,
        enc_text: Vec<u8>,
        enc_cipher: Vec<u8>,
        dec_text: Vec<u8>,
        dec_cipher: Vec<u8>,
    }

    fn snapshots() -> Vec<Snapshot> {
        let dir = testdata("mtg/obfuscation");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                let secret: [u8; 16] = b64(&v["secret"]).try_into().unwrap();
                Snapshot {
                    secret: Secret::from_bytes(secret),
                    frame: b64(&v["frame"]).try_into().unwrap(),
                    dc: v["dc"].as_i64().unwrap() as i16,
                    enc_text: b64(&v["encrypted"]["text"]),
                    enc_cipher: b64(&v["encrypted"]["cipher"]),
                    dec_text: b64(&v["decrypted"]["text"]),
                    dec_cipher: b64(&v["decrypted"]["cipher"]),
                }
            })
            .collect()
    }

    #[test]
    fn mtg_snapshots() {
        let all = snapshots();
        assert_eq!(all.len(), 2);
        for s in all {
            let mut obf = parse_client_init(&s.frame, &s.secret).expect("valid init");
            assert_eq!(obf.tag, ProtocolTag::PaddedIntermediate);
            assert_eq!(obf.dc, s.dc);
            let mut buf = s.dec_cipher.clone();
            obf.decrypt.apply_keystream(&mut buf);
            assert_eq!(buf, s.dec_text);
            let mut buf = s.enc_text.clone();
            obf.encrypt.apply_keystream(&mut buf);
            assert_eq!(buf, s.enc_cipher);

            // A different secret does not produce a valid tag.
            assert!(parse_client_init(&s.frame, &Secret::from_bytes([1; 16])).is_none());
            let users = [Secret::from_bytes([1; 16]), s.secret.clone()];
            assert_eq!(try_users(&s.frame, &users).map(|(i, _)| i), Some(1));
            assert!(try_users(&s.frame, &users[..1]).is_none());
        }
    }

    #[test]
    fn tag_bytes_round_trip() {
        for tag in [
            ProtocolTag::Abridged,
            ProtocolTag::Intermediate,
            ProtocolTag::PaddedIntermediate,
        ] {
            assert_eq!(ProtocolTag::from_bytes(&tag.to_bytes()), Some(tag));
        }
        assert_eq!(ProtocolTag::from_bytes(&[0xdd, 0xdd, 0xdd, 0xde]), None);
    }

    /// The DC's view: decrypt key from init[8..56], reply key from the reversed bytes.
    fn dc_side(wire: &[u8; 64]) -> (AesCtr, AesCtr, [u8; 64]) {
        let mut key_iv = [0u8; 48];
        key_iv.copy_from_slice(&wire[8..56]);
        let mut dec = cipher_from(&key_iv);
        let mut plain = *wire;
        dec.apply_keystream(&mut plain);
        key_iv.reverse();
        (dec, cipher_from(&key_iv), plain)
    }

    #[test]
    fn dc_init_is_well_formed_and_keys_match() {
        let mut obf = dc_init(ProtocolTag::Intermediate, -3, None);
        assert!(!is_forbidden_init_prefix(&obf.init));
        let (mut dc_dec, mut dc_enc, plain) = dc_side(&obf.init);
        assert_eq!(plain[56..60], [0xee; 4]);
        assert_eq!(i16::from_le_bytes([plain[60], plain[61]]), -3);

        let mut msg = *b"hello dc";
        obf.encrypt.apply_keystream(&mut msg);
        dc_dec.apply_keystream(&mut msg);
        assert_eq!(&msg, b"hello dc");

        let mut reply = *b"hello proxy";
        dc_enc.apply_keystream(&mut reply);
        let Downlink::Reencrypt(mut down) = obf.downlink else {
            panic!("slow path expected");
        };
        down.apply_keystream(&mut reply);
        assert_eq!(&reply, b"hello proxy");
    }

    #[test]
    fn fast_path_dc_replies_are_client_ciphertext() {
        let s = &snapshots()[0];
        let mut client = parse_client_init(&s.frame, &s.secret).unwrap();
        let obf = dc_init(client.tag, client.dc, Some(&client));
        assert!(matches!(obf.downlink, Downlink::PassThrough));
        assert!(!is_forbidden_init_prefix(&obf.init));
        let (_, mut dc_enc, plain) = dc_side(&obf.init);
        assert_eq!(plain[56..60], [0xdd; 4]);
        // What the DC sends equals what the proxy would have sent the client.
        let mut from_dc = s.enc_text.clone();
        dc_enc.apply_keystream(&mut from_dc);
        assert_eq!(from_dc, s.enc_cipher);
        let mut via_proxy = s.enc_text.clone();
        client.encrypt.apply_keystream(&mut via_proxy);
        assert_eq!(from_dc, via_proxy);
    }

    /// The 4-byte starts PROTOCOL.md §6 forbids for an init (besides a 0xef first byte).
    const FORBIDDEN_STARTS: [&[u8]; 7] = [
        b"HEAD",
        b"POST",
        b"GET ",
        b"OPTI",
        &[0x16, 3, 1, 2],
        &[0xdd; 4],
        &[0xee; 4],
    ];

    #[test]
    fn dc_inits_never_use_forbidden_prefixes() {
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let obf = dc_init(ProtocolTag::Abridged, 2, None);
            let i = &obf.init;
            assert_ne!(i[0], 0xef);
            for bad in FORBIDDEN_STARTS {
                assert_ne!(&i[..4], bad);
            }
            assert_ne!(i[4..8], [0; 4]);
            firsts.insert(i[0]);
        }
        assert!(firsts.len() > 200, "first byte is random");
        // The predicate itself catches each rule.
        let mut init = [0x42u8; 64];
        assert!(!is_forbidden_init_prefix(&init));
        for prefix in FORBIDDEN_STARTS.into_iter().chain([&[0xef][..]]) {
            init[..prefix.len()].copy_from_slice(prefix);
            assert!(is_forbidden_init_prefix(&init), "{prefix:?}");
            init[..4].fill(0x42);
        }
        init[4..8].fill(0);
        assert!(is_forbidden_init_prefix(&init));
    }
}
