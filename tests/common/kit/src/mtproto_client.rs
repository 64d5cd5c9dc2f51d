//! A test Telegram client: fake-TLS ClientHello with a valid digest, server-flight check,
//! obfuscated2 init, and TLS-record framing. Written against the crypto crates directly (not
//! the crate under test), so a shared bug cannot make both sides agree.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// AES-256-CTR, big-endian 128-bit counter.
pub type Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Protocol tags.
pub const ABRIDGED: [u8; 4] = [0xef; 4];
/// Intermediate.
pub const INTERMEDIATE: [u8; 4] = [0xee; 4];
/// Padded intermediate.
pub const PADDED: [u8; 4] = [0xdd; 4];
/// Every protocol tag a DC accepts.
pub const TAGS: [[u8; 4]; 3] = [ABRIDGED, INTERMEDIATE, PADDED];

/// Current unix time.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hmac(secret: &[u8; 16], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A ClientHello the way Telegram builds one, plus the fields the router extracts.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The whole record (`16 03 01` + length + handshake).
    pub record: Vec<u8>,
    /// The digest-carrying random.
    pub random: [u8; 32],
    /// The 32-byte session id.
    pub session_id: Vec<u8>,
    /// Offered cipher suites, in order.
    pub cipher_suites: Vec<u16>,
}

fn ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Builds a 517-byte ClientHello record for `sni` whose random is the fake-TLS digest of
/// `secret` at `timestamp`. An empty `sni` leaves the SNI extension out, as some iOS clients do.
pub fn build_hello(secret: &[u8; 16], sni: &str, cipher_suites: &[u16], timestamp: u32) -> Hello {
    let mut rng = rand::thread_rng();
    let mut session_id = vec![0u8; 32];
    rng.fill_bytes(&mut session_id);

    let mut exts = Vec::new();
    if !sni.is_empty() {
        let mut sni_body = Vec::new();
        sni_body.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
        sni_body.push(0);
        sni_body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        sni_body.extend_from_slice(sni.as_bytes());
        ext(&mut exts, 0x0000, &sni_body);
    }
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x1d]);
    let mut ks = vec![0, 36, 0, 0x1d, 0, 32];
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    ks.extend_from_slice(&key);
    ext(&mut exts, 0x0033, &ks);
    ext(&mut exts, 0x002b, &[4, 3, 4, 3, 3]);

    let mut body = vec![3, 3];
    body.extend_from_slice(&[0u8; 32]);
    body.push(32);
    body.extend_from_slice(&session_id);
    body.extend_from_slice(&((cipher_suites.len() * 2) as u16).to_be_bytes());
    for s in cipher_suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    // Pad to the classic 517-byte record with the padding extension.
    let fixed = 5 + 4 + body.len() + 2 + exts.len() + 4;
    let pad = 517usize.saturating_sub(fixed);
    ext(&mut exts, 0x0015, &vec![0u8; pad]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(1);
    record.extend_from_slice(&[0, (body.len() >> 8) as u8, body.len() as u8]);
    record.extend_from_slice(&body);

    let mac = hmac(secret, &[&record]);
    let mut random = mac;
    for (r, t) in random[28..].iter_mut().zip(timestamp.to_le_bytes()) {
        *r ^= t;
    }
    record[11..43].copy_from_slice(&random);
    Hello {
        record,
        random,
        session_id,
        cipher_suites: cipher_suites.to_vec(),
    }
}

/// What the server flight said.
#[derive(Debug)]
pub struct Flight {
    /// Cipher suite in the ServerHello.
    pub cipher_suite: u16,
    /// Length of the ServerHello record (127 for a 32-byte session id).
    pub server_hello_len: usize,
    /// Fake certificate length.
    pub cert_len: usize,
}

async fn read_record<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut hdr = [0u8; 5];
    r.read_exact(&mut hdr).await?;
    let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
    let mut rec = hdr.to_vec();
    rec.resize(5 + len, 0);
    r.read_exact(&mut rec[5..]).await?;
    Ok(rec)
}

/// Reads ServerHello, CCS and one app-data record and verifies the server digest.
pub async fn read_flight<R: AsyncRead + Unpin>(
    r: &mut R,
    secret: &[u8; 16],
    client_random: &[u8; 32],
) -> Result<Flight, String> {
    let sh = read_record(r).await.map_err(|e| e.to_string())?;
    let ccs = read_record(r).await.map_err(|e| e.to_string())?;
    let app = read_record(r).await.map_err(|e| e.to_string())?;
    if sh[..3] != [0x16, 3, 3] || sh[5] != 2 {
        return Err("not a ServerHello".into());
    }
    if ccs != [0x14, 3, 3, 0, 1, 1] {
        return Err("no CCS".into());
    }
    if app[..3] != [0x17, 3, 3] {
        return Err("no app data record".into());
    }
    let mut flight = [sh.clone(), ccs, app.clone()].concat();
    let digest: [u8; 32] = flight[11..43].try_into().unwrap();
    flight[11..43].fill(0);
    if hmac(secret, &[client_random, &flight]) != digest {
        return Err("server digest mismatch".into());
    }
    let sid_len = usize::from(sh[43]);
    let at = 44 + sid_len;
    Ok(Flight {
        cipher_suite: u16::from_be_bytes([sh[at], sh[at + 1]]),
        server_hello_len: sh.len(),
        cert_len: app.len() - 5,
    })
}

/// The client's obfuscated2 state.
pub struct Obfuscated2 {
    /// The 64 bytes to send.
    pub wire_init: [u8; 64],
    /// Client -> proxy cipher (after the init).
    pub encrypt: Ctr,
    /// Proxy -> client cipher.
    pub decrypt: Ctr,
    /// Key and IV of `decrypt` (fast-mode check).
    pub decrypt_key_iv: [u8; 48],
}

fn salted(key_iv: &[u8], secret: &[u8; 16]) -> [u8; 48] {
    let key = Sha256::new()
        .chain_update(&key_iv[..32])
        .chain_update(secret)
        .finalize();
    let mut out = [0u8; 48];
    out[..32].copy_from_slice(&key);
    out[32..].copy_from_slice(&key_iv[32..48]);
    out
}

/// En- or decrypts `buf` in place. Not generic, so this AES work is compiled with the kit
/// (optimised, see frontgate's Cargo.toml) even when a generic reader or writer is built in
/// an unoptimised test crate.
#[inline(never)]
pub fn apply(cipher: &mut Ctr, buf: &mut [u8]) {
    cipher.apply_keystream(buf);
}

/// The cipher keyed by the first 32 bytes of `key_iv` with the next 16 as its IV.
pub fn ctr(key_iv: &[u8]) -> Ctr {
    Ctr::new(key_iv[..32].into(), key_iv[32..48].into())
}

/// A client init with `tag` and `dc`, keyed with `secret`.
pub fn obfuscated2(secret: &[u8; 16], tag: [u8; 4], dc: i16) -> Obfuscated2 {
    let mut rng = rand::thread_rng();
    let mut init = [0u8; 64];
    loop {
        rng.fill_bytes(&mut init);
        let bad = init[0] == 0xef
            || [
                &b"HEAD"[..],
                b"POST",
                b"GET ",
                b"OPTI",
                &[0x16, 3, 1, 2],
                &[0xdd; 4],
                &[0xee; 4],
            ]
            .contains(&&init[..4])
            || init[4..8] == [0; 4];
        if !bad {
            break;
        }
    }
    init[56..60].copy_from_slice(&tag);
    init[60..62].copy_from_slice(&dc.to_le_bytes());
    let enc_key_iv = salted(&init[8..56], secret);
    let mut rev = [0u8; 48];
    rev.copy_from_slice(&init[8..56]);
    rev.reverse();
    let dec_key_iv = salted(&rev, secret);
    let mut encrypt = ctr(&enc_key_iv);
    let mut enc = init;
    encrypt.apply_keystream(&mut enc);
    let mut wire_init = init;
    wire_init[56..].copy_from_slice(&enc[56..]);
    Obfuscated2 {
        wire_init,
        encrypt,
        decrypt: ctr(&dec_key_iv),
        decrypt_key_iv: dec_key_iv,
    }
}

/// The header of a `17 03 03` application-data record of `len` payload bytes.
pub fn record_header(len: usize) -> [u8; 5] {
    let [hi, lo] = (len as u16).to_be_bytes();
    [0x17, 3, 3, hi, lo]
}

/// Wraps `data` into `17 03 03` records of at most `max` payload bytes.
pub fn records(data: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / max.max(1) * 5 + 5);
    for chunk in data.chunks(max.max(1)) {
        out.extend_from_slice(&record_header(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// Sending half of an established test client.
pub struct ClientWriter<W> {
    /// The socket half.
    pub w: W,
    /// Client -> proxy cipher.
    pub encrypt: Ctr,
    /// Whether to wrap in TLS records.
    pub tls: bool,
}

impl<W: AsyncWrite + Unpin> ClientWriter<W> {
    /// Encrypts and sends `data`, in records of random sizes up to 16408 (iOS-like).
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut buf = data.to_vec();
        apply(&mut self.encrypt, &mut buf);
        if !self.tls {
            return self.w.write_all(&buf).await;
        }
        let mut rng = rand::thread_rng();
        let mut out = Vec::with_capacity(buf.len() + 64);
        let mut at = 0;
        while at < buf.len() {
            let n = rng.gen_range(1..=16408).min(buf.len() - at);
            out.extend_from_slice(&records(&buf[at..at + n], n));
            at += n;
        }
        self.w.write_all(&out).await
    }
}

/// Receiving half of an established test client.
pub struct ClientReader<R> {
    /// The socket half.
    pub r: R,
    /// Proxy -> client cipher.
    pub decrypt: Ctr,
    /// Whether the stream is in TLS records.
    pub tls: bool,
    /// Largest record payload seen.
    pub max_record: usize,
    /// Every record's payload length, in order.
    pub record_lengths: Vec<usize>,
    pending: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ClientReader<R> {
    /// Wraps a reader.
    pub fn new(r: R, decrypt: Ctr, tls: bool) -> Self {
        ClientReader {
            r,
            decrypt,
            tls,
            max_record: 0,
            record_lengths: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Reads and decrypts exactly `n` payload bytes (checking every record's header).
    pub async fn recv_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pending.is_empty() {
                if self.tls {
                    let rec = read_record(&mut self.r).await?;
                    assert_eq!(rec[..3], [0x17, 3, 3], "proxy sent a non-data record");
                    let len = rec.len() - 5;
                    assert!((1..=16384).contains(&len), "record payload {len}");
                    self.max_record = self.max_record.max(len);
                    self.record_lengths.push(len);
                    self.pending = rec[5..].to_vec();
                } else {
                    let mut buf = vec![0u8; 65536];
                    let got = self.r.read(&mut buf).await?;
                    if got == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.truncate(got);
                    self.pending = buf;
                }
                apply(&mut self.decrypt, &mut self.pending);
            }
            let take = self.pending.len().min(n - out.len());
            out.extend(self.pending.drain(..take));
        }
        Ok(out)
    }
}

/// The sending half of a connected test client.
pub type Writer = ClientWriter<tokio::net::tcp::OwnedWriteHalf>;
/// The receiving half of a connected test client.
pub type Reader = ClientReader<tokio::net::tcp::OwnedReadHalf>;

/// The client side of the fake-TLS handshake on a connected `sock`: a hello for `secret` and
/// `sni` offering `cipher_suites` (one byte per write when `byte_by_byte`), the server flight
/// read and its digest checked, then CCS + the obfuscated2 init for `tag` and `dc` in one
/// record. Returns what the flight said and the client's ciphers; the next bytes either way
/// are the session's.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    secret: &[u8; 16],
    sni: &str,
    cipher_suites: &[u16],
    tag: [u8; 4],
    dc: i16,
    byte_by_byte: bool,
) -> Result<(Flight, Obfuscated2), String> {
    let io = |e: std::io::Error| e.to_string();
    let hello = build_hello(secret, sni, cipher_suites, now_unix() as u32);
    if byte_by_byte {
        for byte in &hello.record {
            sock.write_all(std::slice::from_ref(byte))
                .await
                .map_err(io)?;
        }
    } else {
        sock.write_all(&hello.record).await.map_err(io)?;
    }
    let flight = read_flight(sock, secret, &hello.random).await?;
    let obf = obfuscated2(secret, tag, dc);
    let mut first = vec![0x14, 3, 3, 0, 1, 1];
    first.extend(records(&obf.wire_init, 64));
    sock.write_all(&first).await.map_err(io)?;
    Ok((flight, obf))
}

/// Connects to `addr` and does the [`handshake`] the way a Telegram client does (a GREASE
/// suite first, then TLS 1.3 suites), checking that the flight looks like the fixed shape
/// (`mimic: off`, or a route whose backend cannot be mirrored).
pub async fn connect_faketls(
    addr: std::net::SocketAddr,
    secret: &[u8; 16],
    sni: &str,
    tag: [u8; 4],
    dc: i16,
    byte_by_byte: bool,
) -> (Writer, Reader, Obfuscated2) {
    let (flight, writer, reader, obf) = connect(addr, secret, sni, tag, dc, byte_by_byte).await;
    assert_eq!(
        flight.cipher_suite, 0x1302,
        "first non-GREASE TLS 1.3 suite"
    );
    assert_eq!(flight.server_hello_len, 127);
    assert!((1024..4096).contains(&flight.cert_len));
    (writer, reader, obf)
}

/// Connects to `addr` and does the [`handshake`] like [`connect_faketls`], accepting a flight
/// of any shape (its digest is checked); returns what the flight said too.
pub async fn connect(
    addr: std::net::SocketAddr,
    secret: &[u8; 16],
    sni: &str,
    tag: [u8; 4],
    dc: i16,
    byte_by_byte: bool,
) -> (Flight, Writer, Reader, Obfuscated2) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.set_nodelay(true).unwrap();
    let suites = [0x0a0a, 0x1302, 0x1301, 0xc02b];
    let (flight, obf) = handshake(&mut sock, secret, sni, &suites, tag, dc, byte_by_byte)
        .await
        .unwrap();
    let (r, w) = sock.into_split();
    let writer = ClientWriter {
        w,
        encrypt: obf.encrypt.clone(),
        tls: true,
    };
    let reader = ClientReader::new(r, obf.decrypt.clone(), true);
    (flight, writer, reader, obf)
}

/// Sends `total` random bytes and asserts the same bytes come back.
pub async fn echo<W, R>(writer: &mut ClientWriter<W>, reader: &mut ClientReader<R>, total: usize)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut data = vec![0u8; total];
    rand::thread_rng().fill_bytes(&mut data);
    let send = async {
        for chunk in data.chunks(100_003) {
            writer.send(chunk).await.unwrap();
        }
    };
    let recv = async { reader.recv_exact(total).await.unwrap() };
    let ((), got) = tokio::join!(send, recv);
    assert!(got == data, "echo mismatch");
}
