//! The fake server flight, shaped like the route's real site (PROTOCOL.md §3 and §8).
//!
//! A prober that captured a Telegram client's ClientHello can replay it: the replay cache
//! sends the replay to the route's real backend, so the prober sees the backend's true answer
//! to that exact hello and can compare it with what the client got. So the client must get the
//! backend's shape: the same record and legacy versions, cipher suite, extensions in the same
//! order, the same key_share group with a key of the same length, the session id echoed as the
//! backend echoes it, and a flight of the same number of bytes on the wire.
//!
//! Telegram clients accept exactly ONE application-data record in the flight (TDLib
//! `td/mtproto/TlsInit.cpp`, `wait_hello_response`: it reads `16 03 03` + length + body, then
//! expects `14 03 03 00 01 01 17 03 03` + length + body and checks the HMAC over exactly those
//! bytes), so the backend's encrypted records (EncryptedExtensions, Certificate,
//! CertificateVerify, Finished: four records from OpenSSL, fewer from other stacks) become one
//! record of their combined wire size.
//!
//! [`FlightProfile::from_backend`] learns the shape from the backend's bytes;
//! [`FlightProfile::fixed`] is the last resort (a known fingerprint); [`FlightProfile::build`]
//! writes the flight with the server digest. Nothing here does I/O.

use std::fmt;

use rand::RngCore;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_extension_unknown, parse_tls_plaintext,
    parse_tls_raw_record, TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
};

use crate::config::Secret;
use crate::mtproto::faketls::{choose_cipher_suite, is_grease, sign_flight, DIGEST_LEN};

/// Record header length.
const HEADER_LEN: usize = 5;
/// The ChangeCipherSpec record every Telegram client expects after the ServerHello.
const CHANGE_CIPHER_SPEC: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
/// The most payload one record may carry (RFC 8446 §5.1; TDLib refuses more).
pub const MAX_RECORD_PAYLOAD: usize = 16384;
/// `supported_versions` extension type.
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
/// `key_share` extension type.
const EXT_KEY_SHARE: u16 = 0x0033;
/// The x25519 group.
const GROUP_X25519: u16 = 0x001d;
/// Handshake message type of a ServerHello.
const SERVER_HELLO: u8 = 2;
/// The most bytes of a backend flight that are looked at.
pub const MAX_FLIGHT_LEN: usize = 64 * 1024;

/// One extension of the ServerHello, in the backend's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionShape {
    /// `key_share`: the group the backend chose and the length of its key exchange; the fake
    /// flight sends fresh random bytes of that length.
    KeyShare {
        /// Named group (`00 1d` x25519, `11 ec` X25519MLKEM768, ...).
        group: u16,
        /// Length of the key exchange bytes (32 for x25519, 1120 for X25519MLKEM768).
        key_len: usize,
    },
    /// Any other extension, sent as the backend sent it (e.g. `supported_versions`).
    Verbatim {
        /// Extension type.
        kind: u16,
        /// Extension data.
        data: Vec<u8>,
    },
}

/// The shape of a TLS 1.3 server's first flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightProfile {
    /// Version in the ServerHello's record header.
    pub record_version: u16,
    /// The ServerHello's `legacy_version`.
    pub legacy_version: u16,
    /// The cipher suite chosen.
    pub cipher_suite: u16,
    /// Whether the backend echoed the client's session id (TLS 1.3 middlebox compatibility);
    /// otherwise it sent one of this length.
    pub session_id_echoed: bool,
    /// Length of the backend's session id when not echoed.
    pub session_id_len: usize,
    /// The ServerHello extensions, in order.
    pub extensions: Vec<ExtensionShape>,
    /// Whether the backend sent a ChangeCipherSpec (the fake flight always does: clients
    /// require it; a backend without one is reported, not matched).
    pub change_cipher_spec: bool,
    /// Wire bytes of the backend's records after the ServerHello and ChangeCipherSpec.
    pub encrypted_len: usize,
    /// Number of those records (the fake flight sends one).
    pub encrypted_records: usize,
}

/// Why a backend's answer cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimicError {
    /// The answer does not start with a TLS handshake record.
    #[error("the backend did not answer with TLS")]
    NotTls,
    /// The backend sent an alert instead of a ServerHello.
    #[error("the backend answered with a TLS alert")]
    Alert,
    /// The backend answered with TLS 1.2 (or older): no TLS 1.3 flight can look like it.
    #[error(
        "the backend answered TLS {version} (no TLS 1.3): a Telegram client's flight cannot \
         match it; enable TLS 1.3 on the backend (nginx: `ssl_protocols TLSv1.2 TLSv1.3;`)"
    )]
    NotTls13 {
        /// The version the backend chose, as text.
        version: TlsVersionName,
    },
    /// The flight is incomplete or breaks TLS framing.
    #[error("unusable backend flight: {0}")]
    Malformed(&'static str),
}

/// A TLS version as operators write it (`1.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersionName(pub u16);

impl fmt::Display for TlsVersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0x0300 => f.write_str("SSL 3.0"),
            0x0301..=0x0304 => write!(f, "1.{}", self.0 - 0x0301),
            other => write!(f, "0x{other:04x}"),
        }
    }
}

/// What in a ClientHello decides the shape of a server's answer: the offered cipher suites
/// and the groups it sent key shares for (GREASE left out). A profile learned from one shape
/// serves only hellos of the same shape: a server that picked X25519MLKEM768 for one client
/// must not appear to pick it for a client that offered x25519 only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HelloShape {
    /// Cipher suites, in order.
    pub suites: Vec<u16>,
    /// Groups of the key shares, in order.
    pub key_share_groups: Vec<u16>,
}

impl HelloShape {
    /// The shape of the ClientHello record `single_record` (as one record) offering
    /// `cipher_suites`; a hello whose extensions cannot be read has no key-share groups.
    pub fn of(single_record: &[u8], cipher_suites: &[u16]) -> HelloShape {
        HelloShape {
            suites: cipher_suites
                .iter()
                .copied()
                .filter(|&s| !is_grease(s))
                .collect(),
            key_share_groups: key_share_groups(single_record).unwrap_or_default(),
        }
    }
}

/// The groups a ClientHello sent key shares for, in order, GREASE left out.
fn key_share_groups(single_record: &[u8]) -> Option<Vec<u16>> {
    let (_, plain) = parse_tls_plaintext(single_record).ok()?;
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))) = plain.msg.first()
    else {
        return None;
    };
    let (_, extensions) = parse_tls_client_hello_extensions(hello.ext?).ok()?;
    let shares = extensions.iter().find_map(|e| match e {
        TlsExtension::KeyShare(data) => Some(*data),
        _ => None,
    })?;
    // KeyShareClientHello: u16 length, then entries of group (u16) + key_exchange<u16>.
    let mut rest = shares.get(2..)?;
    let mut groups = Vec::new();
    while let [g0, g1, l0, l1, tail @ ..] = rest {
        let group = u16::from_be_bytes([*g0, *g1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        rest = tail.get(len..)?;
        if !is_grease(group) {
            groups.push(group);
        }
    }
    Some(groups)
}

/// How far a backend's flight has arrived, for the reader that waits for it. The end of a
/// flight cannot be read from its bytes (the records are encrypted), so the reader stops at
/// [`Arrival::Complete`], or after a short quiet spell once [`Arrival::Plausible`]: both
/// OpenSSL and rustls write their whole first flight at once (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// More bytes are needed before anything can be said.
    Incomplete,
    /// Whole records up to a ServerHello and at least one record after it: the flight may be
    /// complete (a short quiet spell decides).
    Plausible,
    /// The last record looks like the Finished of this suite's hash, or the answer is
    /// already known to be unusable: stop reading.
    Complete,
}

/// Walks whole records of `bytes` and says whether the first server flight has arrived.
pub fn arrival(bytes: &[u8]) -> Arrival {
    if bytes.len() >= MAX_FLIGHT_LEN || bytes.first().is_some_and(|&b| b != 0x16) {
        // Full, or no ServerHello at all (an alert, or not TLS): nothing more to wait for.
        return Arrival::Complete;
    }
    let mut rest = bytes;
    let mut cipher_suite = None;
    let mut after_hello = 0;
    let mut last_len = 0;
    while !rest.is_empty() {
        if !matches!(rest[0], 0x14..=0x17) {
            return Arrival::Complete;
        }
        let Ok((next, record)) = parse_tls_raw_record(rest) else {
            return Arrival::Incomplete;
        };
        match (cipher_suite, record.hdr.record_type) {
            (None, _) => match server_hello_suite(record.data) {
                Some(suite) => cipher_suite = Some(suite),
                None => return Arrival::Complete,
            },
            (Some(_), TlsRecordType::ChangeCipherSpec) => {}
            (Some(_), TlsRecordType::Alert) => return Arrival::Complete,
            (Some(_), _) => {
                after_hello += 1;
                last_len = record.data.len();
            }
        }
        rest = next;
    }
    match cipher_suite {
        None => Arrival::Incomplete,
        // A TLS 1.2 ServerHello is followed by its Certificate in handshake records, which
        // OpenSSL packs into the same record: a quiet spell decides.
        Some(_) if after_hello == 0 => Arrival::Plausible,
        Some(suite) => {
            // TLS 1.3 Finished: 4-byte header + verify_data (the suite's hash length) + the
            // inner content type + the 16-byte AEAD tag.
            let hash_len = if suite == 0x1302 { 48 } else { 32 };
            if last_len == 4 + hash_len + 1 + 16 {
                Arrival::Complete
            } else {
                Arrival::Plausible
            }
        }
    }
}

/// The cipher suite of a handshake record holding a ServerHello.
fn server_hello_suite(handshake: &[u8]) -> Option<u16> {
    let (&kind, body) = handshake.split_first()?;
    if kind != SERVER_HELLO {
        return None;
    }
    // u24 length, version (2), random (32), session id (1 + n), suite (2).
    let sid_len = usize::from(*body.get(3 + 2 + 32)?);
    let at = 3 + 2 + 32 + 1 + sid_len;
    Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
}

impl FlightProfile {
    /// Learns the shape from a backend's answer to the client's ClientHello whose session id
    /// was `client_session_id`.
    pub fn from_backend(bytes: &[u8], client_session_id: &[u8]) -> Result<Self, MimicError> {
        let (mut rest, first) =
            parse_tls_plaintext(bytes).map_err(|_| classify_unparsable(bytes))?;
        let hello = match first.msg.first() {
            Some(TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello))) => hello,
            Some(TlsMessage::Alert(_)) => return Err(MimicError::Alert),
            _ => return Err(MimicError::Malformed("the first record is no ServerHello")),
        };
        let mut extensions = Vec::new();
        let mut ext_bytes = hello.ext.unwrap_or_default();
        let mut chosen_version = hello.version.0;
        while !ext_bytes.is_empty() {
            let (next, ext) = parse_tls_extension_unknown(ext_bytes)
                .map_err(|_| MimicError::Malformed("ServerHello extensions"))?;
            let TlsExtension::Unknown(kind, data) = ext else {
                return Err(MimicError::Malformed("ServerHello extensions"));
            };
            extensions.push(match kind.0 {
                EXT_KEY_SHARE => key_share_shape(data)?,
                EXT_SUPPORTED_VERSIONS => {
                    if let [hi, lo] = data {
                        chosen_version = u16::from_be_bytes([*hi, *lo]);
                    }
                    verbatim(kind.0, data)
                }
                other => verbatim(other, data),
            });
            ext_bytes = next;
        }
        if chosen_version != 0x0304 {
            return Err(MimicError::NotTls13 {
                version: TlsVersionName(chosen_version),
            });
        }
        let session_id = hello.session_id.unwrap_or_default();
        let mut profile = FlightProfile {
            record_version: first.hdr.version.0,
            legacy_version: hello.version.0,
            cipher_suite: hello.cipher.0,
            session_id_echoed: session_id == client_session_id,
            session_id_len: session_id.len(),
            extensions,
            change_cipher_spec: false,
            encrypted_len: 0,
            encrypted_records: 0,
        };
        while !rest.is_empty() {
            let (next, record) = parse_tls_raw_record(rest)
                .map_err(|_| MimicError::Malformed("a record after the ServerHello is cut"))?;
            match record.hdr.record_type {
                TlsRecordType::ChangeCipherSpec if profile.encrypted_records == 0 => {
                    profile.change_cipher_spec = true;
                }
                TlsRecordType::ApplicationData => {
                    profile.encrypted_len += HEADER_LEN + record.data.len();
                    profile.encrypted_records += 1;
                }
                _ => return Err(MimicError::Malformed("unexpected record in the flight")),
            }
            rest = next;
        }
        if profile.encrypted_records == 0 {
            return Err(MimicError::Malformed(
                "no encrypted record after the ServerHello",
            ));
        }
        Ok(profile)
    }

    /// The shape used when nothing was learned from the backend: x25519, `key_share` before
    /// `supported_versions`, the client's first TLS 1.3 suite, a random 1024..4096-byte
    /// record. It is a known fingerprint (OpenSSL sends `supported_versions` first), so it
    /// serves only where the operator turned mimicry off or nothing was ever learned.
    pub fn fixed(client_cipher_suites: &[u16], encrypted_payload: usize) -> Self {
        FlightProfile {
            record_version: 0x0303,
            legacy_version: 0x0303,
            cipher_suite: choose_cipher_suite(client_cipher_suites),
            session_id_echoed: true,
            session_id_len: 32,
            extensions: vec![
                ExtensionShape::KeyShare {
                    group: GROUP_X25519,
                    key_len: 32,
                },
                verbatim(EXT_SUPPORTED_VERSIONS, &[0x03, 0x04]),
            ],
            change_cipher_spec: true,
            encrypted_len: HEADER_LEN + encrypted_payload.min(MAX_RECORD_PAYLOAD),
            encrypted_records: 1,
        }
    }

    /// The key-share group of the profile, if it has a `key_share`.
    pub fn key_share(&self) -> Option<(u16, usize)> {
        self.extensions.iter().find_map(|e| match e {
            ExtensionShape::KeyShare { group, key_len } => Some((*group, *key_len)),
            ExtensionShape::Verbatim { .. } => None,
        })
    }

    /// Wire bytes of the ServerHello record this profile produces (header included).
    pub fn server_hello_len(&self) -> usize {
        let extensions: usize = self
            .extensions
            .iter()
            .map(|e| {
                4 + match e {
                    ExtensionShape::KeyShare { key_len, .. } => 4 + key_len,
                    ExtensionShape::Verbatim { data, .. } => data.len(),
                }
            })
            .sum();
        HEADER_LEN + 4 + 2 + DIGEST_LEN + 1 + self.session_id_len + 2 + 1 + 2 + extensions
    }

    /// Writes the fake flight for a client whose hello carried `client_random` and
    /// `client_session_id`, signed with `secret`: ServerHello, ChangeCipherSpec, and ONE
    /// application-data record sized so the flight has the backend's wire length.
    pub fn build(
        &self,
        secret: &Secret,
        client_random: &[u8; 32],
        client_session_id: &[u8],
    ) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        let session_id: Vec<u8> = if self.session_id_echoed {
            client_session_id[..client_session_id.len().min(32)].to_vec()
        } else {
            let mut fresh = vec![0u8; self.session_id_len.min(32)];
            rng.fill_bytes(&mut fresh);
            fresh
        };
        let mut extensions = Vec::new();
        for ext in &self.extensions {
            match ext {
                ExtensionShape::KeyShare { group, key_len } => {
                    let key = key_share_bytes(*group, *key_len);
                    push_u16(&mut extensions, usize::from(EXT_KEY_SHARE));
                    push_u16(&mut extensions, 4 + key_len);
                    push_u16(&mut extensions, usize::from(*group));
                    push_u16(&mut extensions, *key_len);
                    extensions.extend_from_slice(&key);
                }
                ExtensionShape::Verbatim { kind, data } => {
                    push_u16(&mut extensions, usize::from(*kind));
                    push_u16(&mut extensions, data.len());
                    extensions.extend_from_slice(data);
                }
            }
        }
        let body_len = 2 + DIGEST_LEN + 1 + session_id.len() + 2 + 1 + 2 + extensions.len();
        // One record carries the backend's encrypted records: their total minus one header.
        let payload = self
            .encrypted_len
            .saturating_sub(HEADER_LEN)
            .clamp(1, MAX_RECORD_PAYLOAD);
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + body_len + 6 + HEADER_LEN + payload);
        out.push(0x16);
        push_u16(&mut out, usize::from(self.record_version));
        push_u16(&mut out, 4 + body_len);
        out.push(SERVER_HELLO);
        out.extend_from_slice(&u24(body_len));
        push_u16(&mut out, usize::from(self.legacy_version));
        out.extend_from_slice(&[0u8; DIGEST_LEN]);
        out.push(session_id.len() as u8); // <= 32 above
        out.extend_from_slice(&session_id);
        push_u16(&mut out, usize::from(self.cipher_suite));
        out.push(0x00);
        push_u16(&mut out, extensions.len());
        out.extend_from_slice(&extensions);
        out.extend_from_slice(&CHANGE_CIPHER_SPEC);
        out.extend_from_slice(&[0x17, 0x03, 0x03]);
        push_u16(&mut out, payload);
        let start = out.len();
        out.resize(start + payload, 0);
        rng.fill_bytes(&mut out[start..]);
        sign_flight(secret, client_random, &mut out);
        out
    }
}

/// A fresh key exchange value of `group` and `len` that passes the checks a prober can make
/// without the private key: a real public key for the curves (a random x25519 string has its
/// top bit set half of the time, a random P-256 string is no point on the curve), the ML-KEM
/// part of X25519MLKEM768 random (its ciphertext is uniform-looking) before a real x25519 key.
fn key_share_bytes(group: u16, len: usize) -> Vec<u8> {
    use ring::agreement::{EphemeralPrivateKey, ECDH_P256, ECDH_P384, X25519};
    let rng = ring::rand::SystemRandom::new();
    let public = |algorithm| {
        EphemeralPrivateKey::generate(algorithm, &rng)
            .and_then(|key| key.compute_public_key())
            .map(|key| key.as_ref().to_vec())
            .ok()
    };
    let real = match (group, len) {
        (GROUP_X25519, 32) => public(&X25519),
        (0x0017, 65) => public(&ECDH_P256),
        (0x0018, 97) => public(&ECDH_P384),
        (0x11ec, 1120) => public(&X25519).map(|x25519| {
            let mut share = vec![0u8; 1120 - x25519.len()];
            rand::thread_rng().fill_bytes(&mut share);
            share.extend_from_slice(&x25519);
            share
        }),
        _ => None,
    };
    real.filter(|key| key.len() == len).unwrap_or_else(|| {
        let mut key = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut key);
        key
    })
}

fn classify_unparsable(bytes: &[u8]) -> MimicError {
    match bytes.first() {
        Some(0x15) => MimicError::Alert,
        Some(0x16) => MimicError::Malformed("the ServerHello record is cut or malformed"),
        _ => MimicError::NotTls,
    }
}

fn key_share_shape(data: &[u8]) -> Result<ExtensionShape, MimicError> {
    match data {
        [g0, g1, l0, l1, key @ ..] if key.len() == usize::from(u16::from_be_bytes([*l0, *l1])) => {
            Ok(ExtensionShape::KeyShare {
                group: u16::from_be_bytes([*g0, *g1]),
                key_len: key.len(),
            })
        }
        // A HelloRetryRequest carries only the group; it is not a flight to mirror.
        _ => Err(MimicError::Malformed("key_share without a key")),
    }
}

fn verbatim(kind: u16, data: &[u8]) -> ExtensionShape {
    ExtensionShape::Verbatim {
        kind,
        data: data.to_vec(),
    }
}

fn push_u16(out: &mut Vec<u8>, value: usize) {
    // Every caller passes a length bounded below 65536 (records and extensions are small).
    out.extend_from_slice(&(value as u16).to_be_bytes());
}

fn u24(value: usize) -> [u8; 3] {
    [(value >> 16) as u8, (value >> 8) as u8, value as u8]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtproto::test_vectors::{b64, testdata};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use tls_parser::{parse_tls_plaintext, TlsMessage, TlsMessageHandshake};

    fn flight(name: &str) -> Vec<u8> {
        std::fs::read(testdata(&format!("flights/{name}.bin"))).unwrap()
    }

    /// TDLib's recorded hello: its random and session id.
    fn tdlib_hello() -> ([u8; 32], Vec<u8>) {
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(testdata("tdlib/client-hello-tdlib-1.8.66.json")).unwrap(),
        )
        .unwrap();
        let record = b64(&json["full"]);
        let (_, plain) = parse_tls_plaintext(&record).unwrap();
        let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))) =
            plain.msg.first()
        else {
            panic!("no ClientHello");
        };
        let mut random = [0u8; 32];
        random.copy_from_slice(hello.random);
        (random, hello.session_id.unwrap().to_vec())
    }

    /// The JA3S of a ServerHello record: version, cipher, extension types in order.
    fn ja3s(bytes: &[u8]) -> String {
        let (_, plain) = parse_tls_plaintext(bytes).unwrap();
        let Some(TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello))) =
            plain.msg.first()
        else {
            panic!("no ServerHello");
        };
        let mut types = Vec::new();
        let mut ext = hello.ext.unwrap_or_default();
        while !ext.is_empty() {
            let (next, TlsExtension::Unknown(kind, _)) = parse_tls_extension_unknown(ext).unwrap()
            else {
                unreachable!()
            };
            types.push(kind.0.to_string());
            ext = next;
        }
        format!("{},{},{}", hello.version.0, hello.cipher.0, types.join("-"))
    }

    /// (record type, payload length) of every record.
    fn records(bytes: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (next, record) = parse_tls_raw_record(rest).unwrap();
            out.push((record.hdr.record_type.0, record.data.len()));
            rest = next;
        }
        out
    }

    const MATCHABLE: [&str; 3] = [
        "nginx-openssl30-tls13",
        "pyopenssl-openssl40-mlkem",
        "rustls-0.23-ring",
    ];

    #[test]
    fn the_fake_flight_has_the_backends_shape_and_size() {
        let (random, session_id) = tdlib_hello();
        let secret = Secret::from_bytes([7; 16]);
        for name in MATCHABLE {
            let backend = flight(name);
            let profile = FlightProfile::from_backend(&backend, &session_id)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let fake = profile.build(&secret, &random, &session_id);
            assert_eq!(ja3s(&fake), ja3s(&backend), "{name}: JA3S");
            assert_eq!(
                fake.len(),
                backend.len(),
                "{name}: flight bytes on the wire"
            );
            let shape = records(&fake);
            assert_eq!(shape.len(), 3, "{name}: ServerHello, CCS, one data record");
            assert_eq!((shape[1].0, shape[2].0), (0x14, 0x17), "{name}");
            assert_eq!(shape[0], records(&backend)[0], "{name}: ServerHello length");
            assert!(profile.session_id_echoed, "{name}");
            assert_eq!(
                &fake[44..76],
                session_id.as_slice(),
                "{name}: session id echoed"
            );
        }
    }

    #[test]
    fn key_shares_keep_the_backends_group_and_length() {
        let (_, session_id) = tdlib_hello();
        let group = |name| {
            FlightProfile::from_backend(&flight(name), &session_id)
                .unwrap()
                .key_share()
        };
        assert_eq!(group("nginx-openssl30-tls13"), Some((0x001d, 32)));
        assert_eq!(group("rustls-0.23-ring"), Some((0x001d, 32)));
        assert_eq!(group("pyopenssl-openssl40-mlkem"), Some((0x11ec, 1120)));
        let nginx = FlightProfile::from_backend(&flight("nginx-openssl30-tls13"), &session_id);
        let nginx = nginx.unwrap();
        assert_eq!(nginx.encrypted_records, 4);
        assert!(matches!(
            nginx.extensions[0],
            ExtensionShape::Verbatim { kind: 0x002b, .. }
        ));
    }

    #[test]
    fn the_flight_carries_a_digest_a_client_verifies() {
        let (random, session_id) = tdlib_hello();
        let secret = Secret::from_bytes([9; 16]);
        for name in MATCHABLE {
            let profile = FlightProfile::from_backend(&flight(name), &session_id).unwrap();
            let fake = profile.build(&secret, &random, &session_id);
            // What TDLib checks: HMAC(secret, client random || flight with the digest zeroed).
            let mut zeroed = fake.clone();
            zeroed[11..43].fill(0);
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&random);
            mac.update(&zeroed);
            assert_eq!(
                &fake[11..43],
                mac.finalize().into_bytes().as_slice(),
                "{name}"
            );
            assert_eq!(&fake[..3], &[0x16, 0x03, 0x03]);
            let sh_len = usize::from(u16::from_be_bytes([fake[3], fake[4]]));
            assert_eq!(
                &fake[5 + sh_len..5 + sh_len + 9],
                b"\x14\x03\x03\x00\x01\x01\x17\x03\x03"
            );
        }
    }

    #[test]
    fn a_tls12_backend_is_reported_with_the_fix() {
        let (_, session_id) = tdlib_hello();
        let err = FlightProfile::from_backend(&flight("nginx-openssl30-default"), &session_id)
            .unwrap_err();
        assert_eq!(
            err,
            MimicError::NotTls13 {
                version: TlsVersionName(0x0303)
            }
        );
        assert!(err.to_string().contains("TLS 1.2"), "{err}");
        assert!(
            err.to_string().contains("ssl_protocols TLSv1.2 TLSv1.3;"),
            "{err}"
        );
    }

    #[test]
    fn unusable_answers_are_named() {
        let sid = [0u8; 32];
        assert_eq!(
            FlightProfile::from_backend(b"HTTP/1.1 400 Bad Request\r\n\r\n", &sid),
            Err(MimicError::NotTls)
        );
        assert_eq!(
            FlightProfile::from_backend(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], &sid),
            Err(MimicError::Alert)
        );
        let whole = flight("nginx-openssl30-tls13");
        for cut in [1, 5, 60, 127, 133, whole.len() - 1] {
            assert!(
                FlightProfile::from_backend(&whole[..cut], &sid).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn arrival_waits_for_whole_records_and_stops_at_finished() {
        for name in MATCHABLE {
            let whole = flight(name);
            for cut in 0..whole.len() {
                assert_ne!(
                    arrival(&whole[..cut]),
                    Arrival::Complete,
                    "{name} cut {cut}"
                );
            }
        }
        assert_eq!(arrival(&flight("nginx-openssl30-tls13")), Arrival::Complete);
        assert_eq!(
            arrival(&flight("pyopenssl-openssl40-mlkem")),
            Arrival::Complete
        );
        // rustls sends one record of everything: only a quiet spell can end it.
        assert_eq!(arrival(&flight("rustls-0.23-ring")), Arrival::Plausible);
        assert_eq!(
            arrival(&flight("nginx-openssl30-default")),
            Arrival::Plausible
        );
        assert_eq!(arrival(b"HTTP/1.1 400"), Arrival::Complete);
        assert_eq!(
            arrival(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x01, 0, 0, 0]),
            Arrival::Complete
        );
    }

    #[test]
    fn key_shares_are_real_public_keys() {
        use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey};
        let rng = ring::rand::SystemRandom::new();
        let agrees = |algorithm, public: &[u8]| {
            let mine = EphemeralPrivateKey::generate(algorithm, &rng).unwrap();
            agree_ephemeral(mine, &UnparsedPublicKey::new(algorithm, public), |_| ()).is_ok()
        };
        for _ in 0..64 {
            let x = key_share_bytes(0x001d, 32);
            assert!(x[31] < 0x80, "x25519 public keys have the top bit clear");
            assert!(agrees(&ring::agreement::X25519, &x));
            assert!(agrees(
                &ring::agreement::ECDH_P256,
                &key_share_bytes(0x0017, 65)
            ));
            let hybrid = key_share_bytes(0x11ec, 1120);
            assert_eq!(hybrid.len(), 1120);
            assert!(agrees(&ring::agreement::X25519, &hybrid[1088..]));
        }
        assert_eq!(key_share_bytes(0x0101, 7).len(), 7);
    }

    #[test]
    fn hello_shapes_tell_post_quantum_hellos_apart() {
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(testdata("tdlib/client-hello-tdlib-1.8.66.json")).unwrap(),
        )
        .unwrap();
        let tdlib = b64(&json["full"]);
        let shape = HelloShape::of(&tdlib, &[0x0a0a, 0x1301, 0x1302]);
        assert_eq!(shape.suites, vec![0x1301, 0x1302], "GREASE left out");
        assert_eq!(shape.key_share_groups, vec![0x11ec, 0x001d]);
        let mtg = testdata("mtg/faketls/client-hello-ok-19dfe38384b9884b.json");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(mtg).unwrap()).unwrap();
        let other = HelloShape::of(&b64(&json["full"]), &[0x1301, 0x1302]);
        assert_eq!(other.key_share_groups, vec![0x001d]);
        assert_ne!(shape, other);
        assert!(HelloShape::of(b"garbage", &[]).key_share_groups.is_empty());
    }

    #[test]
    fn the_fixed_shape_is_todays_flight() {
        let (random, session_id) = tdlib_hello();
        let profile = FlightProfile::fixed(&[0x1301, 0x1302], 2000);
        let fake = profile.build(&Secret::from_bytes([1; 16]), &random, &session_id);
        assert_eq!(records(&fake), vec![(0x16, 122), (0x14, 1), (0x17, 2000)]);
        assert_eq!(profile.key_share(), Some((0x001d, 32)));
        assert!(ja3s(&fake).ends_with(",4865,51-43"), "{}", ja3s(&fake));
    }
}
