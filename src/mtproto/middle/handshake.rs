//! Opening one ME connection: `RPC_NONCE` both ways in the clear, the key derivation over
//! both nonces and both addresses, then `RPC_HANDSHAKE` both ways under AES-256-CBC. The
//! result is a [`Link`]: a frame writer and a frame reader, each with its cipher.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::crypto::{derive, CbcDecrypt, CbcEncrypt, KeyInput, Purpose, BLOCK};
use super::framing::{encode, FrameDecoder, FrameError, START_SEQ};
use super::rpc::{RPC_HANDSHAKE, RPC_NONCE};

/// The only crypto schema: AES (RPC_NONCE's `crypto_schema`).
const CRYPTO_AES: u32 = 1;
/// The 12-byte process id the proxy names itself with (as the references send it).
const SENDER_PID: &[u8; 12] = b"IPIPPRPDTIME";

/// Why an ME connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The ME closed the connection before its RPC_NONCE answer.
    #[error("the middle proxy closed the connection before answering RPC_NONCE")]
    ClosedBeforeNonce,
    /// The ME closed (or sent garbage) right after our RPC_HANDSHAKE: it derived other keys,
    /// which nearly always means the address it sees is not the one we used.
    #[error(
        "the middle proxy closed the connection after RPC_HANDSHAKE: its keys differ from ours, \
         so the address it sees is not {client} (set mtproto.public_ip to this host's external \
         address; behind NAT the local address is wrong)"
    )]
    KeysDiffer {
        /// The address put into the key derivation.
        client: SocketAddr,
    },
    /// An answer that breaks the protocol.
    #[error("bad middle-proxy answer: {0}")]
    Protocol(String),
    /// A frame that breaks the transport.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// No answer in time.
    #[error("the middle proxy did not answer within {0:?}")]
    Timeout(Duration),
}

/// The sending half of an established ME connection.
pub struct LinkWriter {
    half: OwnedWriteHalf,
    encrypt: CbcEncrypt,
    seq: i32,
    buf: Vec<u8>,
}

impl LinkWriter {
    /// Frames, encrypts and writes several payloads in one write.
    pub async fn send_all<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        self.buf.clear();
        for payload in payloads {
            encode(&mut self.seq, payload, &mut self.buf);
        }
        self.encrypt.apply(&mut self.buf);
        self.half.write_all(&self.buf).await?;
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// The receiving half of an established ME connection.
pub struct LinkReader {
    half: OwnedReadHalf,
    decrypt: CbcDecrypt,
    frames: FrameDecoder,
    /// Ciphertext not yet a whole block.
    tail: Vec<u8>,
    /// Read buffer.
    buf: Box<[u8]>,
}

impl LinkReader {
    /// The next frame payload; `Ok(None)` when the ME closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(frame));
            }
            let n = match self.half.read(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => n,
            };
            self.tail.extend_from_slice(&self.buf[..n]);
            let whole = self.tail.len() / BLOCK * BLOCK;
            self.decrypt.apply(&mut self.tail[..whole]);
            self.frames.push(&self.tail[..whole]);
            self.tail.drain(..whole);
        }
    }
}

/// An established ME connection.
pub struct Link {
    /// Frames to the ME.
    pub writer: LinkWriter,
    /// Frames from the ME.
    pub reader: LinkReader,
}

/// Addresses of one ME connection for the key derivation.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The proxy as the ME sees it (public_ip, or the local / SOCKS-bound address).
    pub client: SocketAddr,
    /// The ME.
    pub server: SocketAddr,
}

/// Runs the handshake on a connected `stream` with the middle-proxy `secret`; each answer
/// must come within `timeout`.
pub async fn handshake(
    stream: TcpStream,
    ends: Ends,
    secret: &[u8],
    timeout: Duration,
) -> Result<Link, HandshakeError> {
    let (mut read, mut write) = stream.into_split();
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let client_time = now.to_le_bytes();
    let selector: [u8; 4] = secret
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| HandshakeError::Protocol("middle-proxy secret too short".into()))?;
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&RPC_NONCE.to_le_bytes());
    msg.extend_from_slice(&selector);
    msg.extend_from_slice(&CRYPTO_AES.to_le_bytes());
    msg.extend_from_slice(&client_time);
    msg.extend_from_slice(&nonce);
    let mut out = Vec::new();
    let mut seq = START_SEQ;
    encode(&mut seq, &msg, &mut out);
    write.write_all(&out).await?;

    let mut plain = FrameDecoder::default();
    let answer = within(timeout, read_plain(&mut read, &mut plain)).await??;
    let answer = answer.ok_or(HandshakeError::ClosedBeforeNonce)?;
    if answer.len() != 32
        || answer[..4] != RPC_NONCE.to_le_bytes()
        || answer[4..8] != selector
        || answer[8..12] != CRYPTO_AES.to_le_bytes()
    {
        return Err(HandshakeError::Protocol(
            "RPC_NONCE answer of the wrong shape, key selector or schema (is the proxy secret current?)"
                .into(),
        ));
    }
    let mut server_nonce = [0u8; 16];
    server_nonce.copy_from_slice(&answer[16..32]);
    let input = KeyInput {
        nonce_server: &server_nonce,
        nonce_client: &nonce,
        client_time,
        client: ends.client,
        server: ends.server,
        secret,
    };
    let mut encrypt = CbcEncrypt::new(&derive(&input, Purpose::Client));
    let decrypt = CbcDecrypt::new(&derive(&input, Purpose::Server));

    let mut hs = Vec::with_capacity(32);
    hs.extend_from_slice(&RPC_HANDSHAKE.to_le_bytes());
    hs.extend_from_slice(&[0; 4]);
    hs.extend_from_slice(SENDER_PID);
    hs.extend_from_slice(SENDER_PID);
    out.clear();
    encode(&mut seq, &hs, &mut out);
    encrypt.apply(&mut out);
    write.write_all(&out).await?;

    let mut reader = LinkReader {
        half: read,
        decrypt,
        frames: FrameDecoder::starting_at(START_SEQ + 1),
        tail: Vec::new(),
        buf: vec![0u8; 64 * 1024].into_boxed_slice(),
    };
    let keys_differ = HandshakeError::KeysDiffer {
        client: ends.client,
    };
    let answer = match within(timeout, reader.recv()).await? {
        Ok(Some(answer)) => answer,
        Ok(None) | Err(_) => return Err(keys_differ),
    };
    if answer.len() != 32 || answer[..4] != RPC_HANDSHAKE.to_le_bytes() {
        return Err(keys_differ);
    }
    if &answer[20..32] != SENDER_PID {
        return Err(HandshakeError::Protocol(
            "RPC_HANDSHAKE answer names another peer".into(),
        ));
    }
    Ok(Link {
        writer: LinkWriter {
            half: write,
            encrypt,
            seq,
            buf: Vec::new(),
        },
        reader,
    })
}

async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))
}

/// Reads the plaintext RPC_NONCE answer. The ME sends nothing more before our handshake, so
/// whatever follows the frame in the buffer can only be its padding.
async fn read_plain(
    read: &mut OwnedReadHalf,
    frames: &mut FrameDecoder,
) -> Result<Option<Vec<u8>>, HandshakeError> {
    let mut buf = [0u8; 256];
    loop {
        if let Some(frame) = frames.next_frame()? {
            return Ok(Some(frame));
        }
        let n = read.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        frames.push(&buf[..n]);
    }
}
