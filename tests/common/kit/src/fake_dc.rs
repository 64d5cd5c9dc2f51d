//! A fake Telegram DC on 127.0.0.1: reads the proxy's 64-byte obfuscated2 init, derives
//! the unsalted DC ciphers (PROTOCOL.md §6) with the crypto crates directly, and echoes
//! every decrypted byte back re-encrypted. Reports each init it saw; closes a connection
//! whose protocol tag is none of the three, as a real DC would.

use std::net::SocketAddr;

use aes::cipher::StreamCipher;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::backend::echo_back;
use crate::mtproto_client::{ctr, TAGS};

/// What the DC saw at the start of one connection.
#[derive(Debug, Clone)]
pub struct DcSeen {
    /// The init as it arrived.
    pub wire_init: [u8; 64],
    /// Decrypted protocol tag.
    pub tag: [u8; 4],
    /// Decrypted DC index.
    pub dc: i16,
    /// Who connected: the proxy, or the SOCKS server it went through.
    pub peer: SocketAddr,
}

/// A running fake DC.
pub struct FakeDc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// One entry per accepted connection.
    pub seen: mpsc::UnboundedReceiver<DcSeen>,
}

/// Starts a DC on a fresh loopback port that decrypts and re-encrypts every connection.
pub async fn spawn() -> FakeDc {
    serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), None)
}

/// Serves `listener` as a DC. Connections whose protocol tag is `raw_echo` get their
/// ciphertext back unchanged (throughput runs: the proxy does all its AES work, the DC
/// none); every other connection is decrypted and re-encrypted like a real peer.
pub fn serve(listener: TcpListener, raw_echo: Option<[u8; 4]>) -> FakeDc {
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, peer)) = listener.accept().await {
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
                let tag: [u8; 4] = plain[56..60].try_into().unwrap();
                let _ = tx.send(DcSeen {
                    wire_init,
                    tag,
                    dc: i16::from_le_bytes([plain[60], plain[61]]),
                    peer,
                });
                if !TAGS.contains(&tag) {
                    return;
                }
                if raw_echo == Some(tag) {
                    echo_back(&mut sock, |_| ()).await;
                } else {
                    echo_back(&mut sock, |bytes| {
                        decrypt.apply_keystream(bytes);
                        encrypt.apply_keystream(bytes);
                    })
                    .await;
                }
            });
        }
    });
    FakeDc { addr, seen }
}
