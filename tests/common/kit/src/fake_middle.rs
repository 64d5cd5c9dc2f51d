//! A fake Telegram middle proxy (ME) on loopback, the server side of the protocol written
//! from the reference descriptions (MTProxy, mtprotoproxy, mtproto_proxy) with the crypto
//! crates directly: plaintext `RPC_NONCE` both ways, keys from MD5/SHA-1 over both nonces,
//! the timestamp, both addresses and the proxy secret, AES-256-CBC, `RPC_HANDSHAKE` both ways,
//! then every `RPC_PROXY_REQ` is checked (flags, both addresses, the ad_tag), reported and its
//! message echoed back as `RPC_PROXY_ANS` (or, with [`MiddleOptions::forward`], relayed to a
//! DC and its answers sent back). A request that fails a check gets `RPC_CLOSE_EXT`.
//! Like a real ME, it closes a connection whose handshake does not decrypt (wrong keys).
//!
//! Also [`ConfigServer`]: plain-HTTP answers for getProxySecret / getProxyConfig(V6).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aes::cipher::{generic_array::GenericArray, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::Md5;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const RPC_NONCE: u32 = 0x7acb_87aa;
const RPC_HANDSHAKE: u32 = 0x7682_eef5;
const RPC_PROXY_REQ: u32 = 0x36ce_f1ee;
const RPC_PROXY_ANS: u32 = 0x4403_da0d;
const RPC_SIMPLE_ACK: u32 = 0x3bac_409b;
const RPC_CLOSE_EXT: u32 = 0x5eb6_34a2;
const RPC_CLOSE_CONN: u32 = 0x1fcf_425d;
const RPC_PING: u32 = 0x5730_a2df;
const RPC_PONG: u32 = 0x8430_eaa7;
const TL_PROXY_TAG: u32 = 0xdb1e_26ae;

/// Flags every proxy sets in `RPC_PROXY_REQ`: has-ad-tag, magic, extmode2.
pub const REQUIRED_FLAGS: u32 = 0x8 | 0x1000 | 0x20000;
/// Transport flags: abridged, intermediate, and pad (padded intermediate).
pub const FLAG_ABRIDGED: u32 = 0x4000_0000;
/// The intermediate transport.
pub const FLAG_INTERMEDIATE: u32 = 0x2000_0000;
/// With [`FLAG_INTERMEDIATE`]: padded intermediate.
pub const FLAG_PAD: u32 = 0x0800_0000;
/// The client asked for a quick ack.
pub const FLAG_QUICKACK: u32 = 0x8000_0000;

/// One `RPC_PROXY_REQ` as the fake ME saw it.
#[derive(Debug, Clone)]
pub struct ReqSeen {
    /// The request's flags.
    pub flags: u32,
    /// The connection id.
    pub conn_id: u64,
    /// The client address the proxy reported.
    pub client: SocketAddr,
    /// The proxy address the proxy reported.
    pub proxy: SocketAddr,
    /// The ad_tag (`None`: no proxy-tag extra).
    pub ad_tag: Option<[u8; 16]>,
    /// Who connected to the ME (the proxy, or a SOCKS server).
    pub peer: SocketAddr,
    /// Checks the request failed (empty: all passed, the message was echoed).
    pub problems: Vec<String>,
}

/// A running fake ME.
pub struct FakeMiddle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// One entry per `RPC_PROXY_REQ` carrying a new connection id.
    pub requests: mpsc::UnboundedReceiver<ReqSeen>,
    /// Handshakes completed.
    pub handshakes: Arc<AtomicUsize>,
    /// Connections closed because the handshake did not decrypt.
    pub bad_keys: Arc<AtomicUsize>,
    /// `RPC_CLOSE_CONN`s received.
    pub closed: Arc<AtomicUsize>,
}

/// How the fake ME sees its peers.
#[derive(Debug, Clone)]
pub struct MiddleOptions {
    /// The proxy secret (getProxySecret).
    pub secret: Vec<u8>,
    /// The address the ME "sees" the proxy at (a NAT's outside); `None`: the peer's IP.
    pub proxy_ip: Option<IpAddr>,
    /// Instead of echoing, relay each connection id's messages to this DC (obfuscated2,
    /// intermediate transport, DC 2) and its answers back, as a real ME does (the real-client
    /// suites point it at their fake DC).
    pub forward: Option<SocketAddr>,
}

/// Starts a fake ME with `options` on a fresh port of `ip`.
pub async fn spawn(ip: IpAddr, options: MiddleOptions) -> FakeMiddle {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let bad_keys = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let counters = (handshakes.clone(), bad_keys.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            sock.set_nodelay(true).ok();
            let tx = tx.clone();
            let options = options.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                let _ = serve(sock, peer, &options, &tx, &counters).await;
            });
        }
    });
    FakeMiddle {
        addr,
        requests,
        handshakes,
        bad_keys,
        closed,
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);

/// A transport frame of `payload`; `pad` fills it to the AES block with `04 00 00 00` words
/// (always under encryption; the ME's plaintext RPC_NONCE answer is sent unpadded, which
/// mtprotoproxy's client relies on).
fn frame(seq: &mut i32, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((payload.len() + 12) as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    *seq += 1;
    while pad && out.len() % 16 != 0 {
        out.extend_from_slice(&[4, 0, 0, 0]);
    }
    out
}

/// Reads one frame (through `decrypt` if given) with sequence number `seq`; `Err` on EOF or
/// any malformation.
struct Reader {
    sock: tokio::net::tcp::OwnedReadHalf,
    decrypt: Option<cbc::Decryptor<aes::Aes256>>,
    plain: Vec<u8>,
    /// Ciphertext read but not yet decrypted.
    raw: Vec<u8>,
    seq: i32,
}

impl Reader {
    async fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.plain.len() < n {
            let Some(dec) = self.decrypt.as_mut() else {
                let mut buf = vec![0u8; n - self.plain.len()];
                self.sock
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                self.plain.extend_from_slice(&buf);
                continue;
            };
            let have = self.raw.len();
            if have < 16 {
                self.raw.resize(16, 0);
                self.sock
                    .read_exact(&mut self.raw[have..])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let mut block: Vec<u8> = self.raw.drain(..16).collect();
            dec.decrypt_block_mut(GenericArray::from_mut_slice(&mut block));
            self.plain.extend_from_slice(&block);
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<Vec<u8>, String> {
        loop {
            self.fill(4).await?;
            let len = u32::from_le_bytes(self.plain[..4].try_into().unwrap()) as usize;
            if len == 4 {
                self.plain.drain(..4);
                continue;
            }
            if !(12..=1 << 24).contains(&len) || len % 4 != 0 {
                return Err(format!("bad frame length {len}"));
            }
            self.fill(len).await?;
            let seq = i32::from_le_bytes(self.plain[4..8].try_into().unwrap());
            if seq != self.seq {
                return Err(format!("sequence {seq}, expected {}", self.seq));
            }
            let crc = u32::from_le_bytes(self.plain[len - 4..len].try_into().unwrap());
            if crc32fast::hash(&self.plain[..len - 4]) != crc {
                return Err("bad CRC".into());
            }
            self.seq += 1;
            let payload = self.plain[8..len - 4].to_vec();
            self.plain.drain(..len);
            return Ok(payload);
        }
    }
}

fn keys(s_parts: &KeyParts<'_>, purpose: &[u8; 6]) -> ([u8; 32], [u8; 16]) {
    let rev4 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            b.reverse();
            b
        }
        IpAddr::V6(_) => [0; 4],
    };
    let mut s = Vec::new();
    s.extend_from_slice(s_parts.nonce_srv);
    s.extend_from_slice(s_parts.nonce_clt);
    s.extend_from_slice(s_parts.ts);
    s.extend_from_slice(&rev4(s_parts.server.ip()));
    s.extend_from_slice(&s_parts.client.port().to_le_bytes());
    s.extend_from_slice(purpose);
    s.extend_from_slice(&rev4(s_parts.client.ip()));
    s.extend_from_slice(&s_parts.server.port().to_le_bytes());
    s.extend_from_slice(s_parts.secret);
    s.extend_from_slice(s_parts.nonce_srv);
    if let (IpAddr::V6(c), IpAddr::V6(v)) = (s_parts.client.ip(), s_parts.server.ip()) {
        s.extend_from_slice(&c.octets());
        s.extend_from_slice(&v.octets());
    }
    s.extend_from_slice(s_parts.nonce_clt);
    let mut key = [0u8; 32];
    key[..12].copy_from_slice(&Md5::digest(&s[1..])[..12]);
    key[12..].copy_from_slice(&Sha1::digest(&s));
    let iv: [u8; 16] = Md5::digest(&s[2..]).into();
    (key, iv)
}

struct KeyParts<'a> {
    nonce_srv: &'a [u8],
    nonce_clt: &'a [u8],
    ts: &'a [u8],
    client: SocketAddr,
    server: SocketAddr,
    secret: &'a [u8],
}

async fn serve(
    sock: TcpStream,
    peer: SocketAddr,
    options: &MiddleOptions,
    tx: &mpsc::UnboundedSender<ReqSeen>,
    (handshakes, bad_keys, closed): &Counters,
) -> Result<(), String> {
    let local = sock.local_addr().unwrap();
    let (read, mut write) = sock.into_split();
    let mut reader = Reader {
        sock: read,
        decrypt: None,
        plain: Vec::new(),
        raw: Vec::new(),
        seq: -2,
    };
    let nonce = reader.next().await?;
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    if nonce.len() != 32
        || word(&nonce, 0) != RPC_NONCE
        || nonce[4..8] != options.secret[..4]
        || word(&nonce, 8) != 1
    {
        return Err("bad RPC_NONCE".into());
    }
    // A client may pad its plaintext nonce frame to the AES block (mtprotoproxy does): skip
    // those words; anything else is already the first ciphertext.
    let mut consumed = nonce.len() + 12;
    while consumed % 16 != 0 {
        let mut word = [0u8; 4];
        reader
            .sock
            .read_exact(&mut word)
            .await
            .map_err(|e| e.to_string())?;
        if word != [4, 0, 0, 0] {
            reader.raw.extend_from_slice(&word);
            break;
        }
        consumed += 4;
    }
    let server_nonce: [u8; 16] = rand::random();
    let mut answer = Vec::new();
    answer.extend_from_slice(&RPC_NONCE.to_le_bytes());
    answer.extend_from_slice(&options.secret[..4]);
    answer.extend_from_slice(&1u32.to_le_bytes());
    answer.extend_from_slice(&nonce[12..16]);
    answer.extend_from_slice(&server_nonce);
    let mut out_seq = -2;
    write
        .write_all(&frame(&mut out_seq, &answer, false))
        .await
        .map_err(|e| e.to_string())?;
    let proxy_seen = SocketAddr::new(options.proxy_ip.unwrap_or(peer.ip()), peer.port());
    let parts = KeyParts {
        nonce_srv: &server_nonce,
        nonce_clt: &nonce[16..32],
        ts: &nonce[12..16],
        client: proxy_seen,
        server: local,
        secret: &options.secret,
    };
    let (dk, div) = keys(&parts, b"CLIENT");
    let (ek, eiv) = keys(&parts, b"SERVER");
    reader.decrypt = Some(cbc::Decryptor::new(&dk.into(), &div.into()));
    let mut encrypt = cbc::Encryptor::<aes::Aes256>::new(&ek.into(), &eiv.into());
    let hs = match reader.next().await {
        Ok(hs) if hs.len() == 32 && word(&hs, 0) == RPC_HANDSHAKE => hs,
        _ => {
            bad_keys.fetch_add(1, Ordering::Relaxed);
            return Err("handshake did not decrypt".into());
        }
    };
    let mut answer = Vec::new();
    answer.extend_from_slice(&RPC_HANDSHAKE.to_le_bytes());
    answer.extend_from_slice(&[0; 4]);
    answer.extend_from_slice(b"FAKEMIDDLEME");
    answer.extend_from_slice(&hs[8..20]);
    let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
    out.send(answer).ok();
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let mut bytes = frame(&mut out_seq, &first, true);
            while let Ok(more) = queue.try_recv() {
                bytes.extend(frame(&mut out_seq, &more, true));
            }
            for block in bytes.chunks_exact_mut(16) {
                encrypt.encrypt_block_mut(GenericArray::from_mut_slice(block));
            }
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    handshakes.fetch_add(1, Ordering::Relaxed);
    let mut reported: HashMap<u64, bool> = HashMap::new();
    let mut legs: HashMap<u64, DcLeg> = HashMap::new();
    loop {
        let msg = reader.next().await?;
        let kind = word(&msg, 0);
        match kind {
            RPC_PING => {
                let mut pong = RPC_PONG.to_le_bytes().to_vec();
                pong.extend_from_slice(&msg[4..12]);
                out.send(pong).ok();
            }
            RPC_CLOSE_CONN => {
                closed.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = msg.get(4..12) {
                    legs.remove(&u64::from_le_bytes(id.try_into().unwrap()));
                }
            }
            RPC_PROXY_REQ => {
                let (seen, data) = check_request(&msg, peer, proxy_seen)?;
                let conn_id = seen.conn_id;
                let ok = seen.problems.is_empty();
                if reported.insert(conn_id, ok).is_none() || !ok {
                    let _ = tx.send(seen.clone());
                }
                if !ok {
                    let mut close = RPC_CLOSE_EXT.to_le_bytes().to_vec();
                    close.extend_from_slice(&conn_id.to_le_bytes());
                    out.send(close).ok();
                    continue;
                }
                if seen.flags & FLAG_QUICKACK != 0 {
                    let mut ack = RPC_SIMPLE_ACK.to_le_bytes().to_vec();
                    ack.extend_from_slice(&conn_id.to_le_bytes());
                    ack.extend_from_slice(&[0xac, 0x4b, 0x00, 0x80]);
                    out.send(ack).ok();
                }
                let Some(dc) = options.forward else {
                    out.send(proxy_ans(conn_id, data)).ok();
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(slot) = legs.entry(conn_id) {
                    let padded = seen.flags & FLAG_PAD != 0;
                    match DcLeg::open(dc, conn_id, padded, out.clone()).await {
                        Ok(leg) => {
                            slot.insert(leg);
                        }
                        Err(_) => {
                            let mut close = RPC_CLOSE_EXT.to_le_bytes().to_vec();
                            close.extend_from_slice(&conn_id.to_le_bytes());
                            out.send(close).ok();
                            continue;
                        }
                    }
                }
                if let Some(leg) = legs.get_mut(&conn_id) {
                    if leg.send(data).await.is_err() {
                        legs.remove(&conn_id);
                    }
                }
            }
            _ => {}
        }
    }
}

fn proxy_ans(conn_id: u64, data: &[u8]) -> Vec<u8> {
    let mut ans = RPC_PROXY_ANS.to_le_bytes().to_vec();
    ans.extend_from_slice(&[0; 4]);
    ans.extend_from_slice(&conn_id.to_le_bytes());
    ans.extend_from_slice(data);
    ans
}

/// One connection id's leg to the DC in forward mode: obfuscated2 with the client's
/// transport as the flags name it (padded intermediate when `FLAG_PAD` is set: the message
/// may carry the client's transport padding, which the DC then ignores; else intermediate);
/// a task turns each DC message into an `RPC_PROXY_ANS`.
struct DcLeg {
    write: tokio::net::tcp::OwnedWriteHalf,
    encrypt: crate::mtproto_client::Ctr,
}

impl DcLeg {
    async fn open(
        dc: SocketAddr,
        conn_id: u64,
        padded: bool,
        out: mpsc::UnboundedSender<Vec<u8>>,
    ) -> std::io::Result<DcLeg> {
        use aes::cipher::StreamCipher;
        let sock = TcpStream::connect(dc).await?;
        sock.set_nodelay(true).ok();
        let mut init: [u8; 64] = loop {
            let init: [u8; 64] = std::array::from_fn(|_| rand::random());
            if init[0] != 0xef
                && init[4..8] != [0; 4]
                && init[..4] != [0xee; 4]
                && init[..4] != [0xdd; 4]
            {
                break init;
            }
        };
        let tag = if padded {
            crate::mtproto_client::PADDED
        } else {
            crate::mtproto_client::INTERMEDIATE
        };
        init[56..60].copy_from_slice(&tag);
        init[60..62].copy_from_slice(&2i16.to_le_bytes());
        let mut encrypt = crate::mtproto_client::ctr(&init[8..56]);
        let mut rev = init[8..56].to_vec();
        rev.reverse();
        let mut decrypt = crate::mtproto_client::ctr(&rev);
        let mut wire = init;
        encrypt.apply_keystream(&mut wire);
        wire[..56].copy_from_slice(&init[..56]);
        let (mut read, mut write) = sock.into_split();
        write.write_all(&wire).await?;
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if read.read_exact(&mut len).await.is_err() {
                    break;
                }
                decrypt.apply_keystream(&mut len);
                let n = (u32::from_le_bytes(len) & 0x7fff_ffff) as usize;
                if n > 1 << 24 {
                    break;
                }
                let mut data = vec![0u8; n];
                if read.read_exact(&mut data).await.is_err() {
                    break;
                }
                decrypt.apply_keystream(&mut data);
                // Padded intermediate: up to 3 bytes past the message's last word.
                data.truncate(n / 4 * 4);
                if out.send(proxy_ans(conn_id, &data)).is_err() {
                    break;
                }
            }
            let mut close = RPC_CLOSE_EXT.to_le_bytes().to_vec();
            close.extend_from_slice(&conn_id.to_le_bytes());
            let _ = out.send(close);
        });
        Ok(DcLeg { write, encrypt })
    }

    async fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        use aes::cipher::StreamCipher;
        let mut framed = (message.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(message);
        self.encrypt.apply_keystream(&mut framed);
        self.write.write_all(&framed).await
    }
}

fn address(bytes: &[u8]) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..16]).unwrap());
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    let port = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    SocketAddr::new(ip, u16::try_from(port).unwrap_or(0))
}

/// Parses and checks one `RPC_PROXY_REQ`: the required flags and exactly one transport, the
/// proxy address equal to the one the keys were derived with, a loopback client address with
/// a port, and a 16-byte ad_tag in a well-formed extra.
fn check_request(
    msg: &[u8],
    peer: SocketAddr,
    proxy_seen: SocketAddr,
) -> Result<(ReqSeen, &[u8]), String> {
    if msg.len() < 80 {
        return Err("short RPC_PROXY_REQ".into());
    }
    let word = |at: usize| u32::from_le_bytes(msg[at..at + 4].try_into().unwrap());
    let flags = word(4);
    let conn_id = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    let client = address(&msg[16..36]);
    let proxy = address(&msg[36..56]);
    let mut problems = Vec::new();
    if flags & REQUIRED_FLAGS != REQUIRED_FLAGS {
        problems.push(format!("flags {flags:#x} lack has_ad_tag|magic|extmode2"));
    }
    let transport = flags & (FLAG_ABRIDGED | FLAG_INTERMEDIATE | FLAG_PAD);
    if ![
        FLAG_ABRIDGED,
        FLAG_INTERMEDIATE,
        FLAG_INTERMEDIATE | FLAG_PAD,
    ]
    .contains(&transport)
    {
        problems.push(format!("transport flags {transport:#x}"));
    }
    if proxy != proxy_seen {
        problems.push(format!("proxy address {proxy}, keys used {proxy_seen}"));
    }
    if !client.ip().is_loopback() || client.port() == 0 {
        problems.push(format!(
            "client address {client} is not the loopback test client"
        ));
    }
    let extra_ok =
        word(56) == 24 && word(60) == TL_PROXY_TAG && msg[64] == 16 && msg[81..84] == [0; 3];
    let ad_tag = extra_ok.then(|| msg[65..81].try_into().unwrap());
    if ad_tag.is_none() {
        problems.push("no well-formed proxy-tag extra".into());
    }
    let data = msg.get(84..).unwrap_or_default();
    if data.is_empty() || data.len() % 4 != 0 {
        problems.push(format!("message of {} bytes", data.len()));
    }
    Ok((
        ReqSeen {
            flags,
            conn_id,
            client,
            proxy,
            ad_tag,
            peer,
            problems,
        },
        data,
    ))
}

/// Plain-HTTP answers for the middle-proxy configuration URLs; the bodies can change while
/// it runs, and every request is counted.
pub struct ConfigServer {
    /// Where it listens.
    pub addr: SocketAddr,
    bodies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// Requests answered.
    pub hits: Arc<AtomicUsize>,
    /// Who sent each request (the proxy, or the SOCKS server it went through).
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ConfigServer {
    /// Serves `secret` at `/getProxySecret` and `proxy_for` lines naming `me` for DCs 1-5
    /// (and their media DCs) at `/getProxyConfig`; `/getProxyConfigV6` answers 404.
    pub async fn start(secret: &[u8], me: SocketAddr) -> ConfigServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(HashMap::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let server = ConfigServer {
            addr,
            bodies: bodies.clone(),
            hits: hits.clone(),
            peers: peers.clone(),
        };
        server.set("/getProxySecret", secret.to_vec());
        server.set("/getProxyConfig", proxy_config(me).into_bytes());
        tokio::spawn(async move {
            while let Ok((mut sock, peer)) = listener.accept().await {
                peers.lock().unwrap().push(peer);
                let bodies = bodies.clone();
                let hits = hits.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    hits.fetch_add(1, Ordering::Relaxed);
                    let body = bodies.lock().unwrap().get(&path).cloned();
                    let head = match &body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    };
                    let _ = sock.write_all(head.as_bytes()).await;
                    if let Some(b) = body {
                        let _ = sock.write_all(&b).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        server
    }

    /// Replaces the body served at `path`.
    pub fn set(&self, path: &str, body: Vec<u8>) {
        self.bodies.lock().unwrap().insert(path.to_string(), body);
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A getProxyConfig answer naming `me` for DCs 1-5 and -1..-5.
pub fn proxy_config(me: SocketAddr) -> String {
    let mut text = String::from("# force_probability 10 10\ndefault 2;\n");
    for dc in (1..=5).chain(-5..=-1) {
        text.push_str(&format!("proxy_for {dc} {me};\n"));
    }
    text
}
