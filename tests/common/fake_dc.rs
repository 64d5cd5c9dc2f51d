//! A fake Telegram DC on 127.0.0.1: reads the proxy's 64-byte obfuscated2 init, derives
//! the unsalted DC ciphers (PROTOCOL.md §6) with the crypto crates directly, and echoes
//! every decrypted byte back re-encrypted. Reports each init it saw.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;

use aes::cipher::{KeyIvInit, StreamCipher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Ctr = ctr::Ctr128BE<aes::Aes256>;

/// What the DC saw at the start of one connection.
#[derive(Debug, Clone)]
pub struct DcSeen {
    /// The init as it arrived.
    pub wire_init: [u8; 64],
    /// Decrypted protocol tag.
    pub tag: [u8; 4],
    /// Decrypted DC index.
    pub dc: i16,
}

/// A running fake DC.
pub struct FakeDc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// One entry per accepted connection.
    pub seen: mpsc::UnboundedReceiver<DcSeen>,
}

fn ctr(key_iv: &[u8]) -> Ctr {
    Ctr::new(key_iv[..32].into(), key_iv[32..48].into())
}

/// Starts the DC. With `raw_echo` it echoes the ciphertext unchanged (throughput runs, where
/// the peers do no crypto).
pub async fn spawn(raw_echo: bool) -> FakeDc {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            sock.set_nodelay(true).ok();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut wire_init = [0u8; 64];
                if sock.read_exact(&mut wire_init).await.is_err() {
                    return;
                }
                let mut decrypt = ctr(&wire_init[8..56]);
                let mut rev = wire_init[8..56].to_vec();
                rev.reverse();
                let mut encrypt = ctr(&rev);
                let mut plain = wire_init;
                decrypt.apply_keystream(&mut plain);
                let _ = tx.send(DcSeen {
                    wire_init,
                    tag: plain[56..60].try_into().unwrap(),
                    dc: i16::from_le_bytes([plain[60], plain[61]]),
                });
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !raw_echo {
                        decrypt.apply_keystream(&mut buf[..n]);
                        encrypt.apply_keystream(&mut buf[..n]);
                    }
                    if sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    FakeDc { addr, seen }
}
