//! One client session in middle-proxy mode: client bytes are unwrapped (TLS records),
//! decrypted (obfuscated2), split into transport messages and sent as `RPC_PROXY_REQ`s;
//! what the ME sends back for the session's connection id is framed in the client's
//! transport, encrypted and wrapped in records. The session ends when either side closes,
//! on the idle timeout, when the user is cut off, or when a shutdown finds it quiet.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use aes::cipher::StreamCipher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client_frames::{encode_ack, encode_message, ClientFrames};
use super::mux::{Incoming, MeSession};
use super::rpc::{proxy_req, ProxyReqHeader};
use crate::config::middle::AdTag;
use crate::forward::idle::IdleClock;
use crate::forward::shutdown::{InFlight, Shutdown};
use crate::mtproto::obfuscated2::{AesCtr, ProtocolTag};
use crate::mtproto::record_sizing::SizingCursor;
use crate::mtproto::records::{record_header_for, RecordDecoder};
use crate::mtproto::session::EndReason;
use crate::mtproto::users::Admission;

/// Client read size.
const READ_BUF: usize = 64 * 1024;
/// Bytes of ME messages gathered into one client write.
const WRITE_BATCH: usize = 64 * 1024;

/// The client leg of an ME-mode session.
pub struct ClientLeg {
    /// The client's transport.
    pub tag: ProtocolTag,
    /// Decrypts client bytes (positioned after the init and any leftover).
    pub decrypt: AesCtr,
    /// Encrypts bytes for the client.
    pub encrypt: AesCtr,
    /// Decrypted client payload that arrived with the init.
    pub leftover: Vec<u8>,
    /// The TLS record decoder (fake-TLS) or `None` (plain obfuscated2).
    pub decoder: Option<RecordDecoder>,
    /// The client's address (for `RPC_PROXY_REQ`).
    pub client_addr: SocketAddr,
    /// The promoted channel.
    pub ad_tag: AdTag,
    /// The sizes of the records to the client: the site's, as in direct mode.
    pub sizing: Arc<SizingCursor>,
}

/// Relays `leg` through `me`; returns client bytes read, client bytes written and why it
/// ended.
pub async fn relay(
    mut client: TcpStream,
    leg: ClientLeg,
    me: MeSession,
    idle_timeout: std::time::Duration,
    admission: &Admission,
    shutdown: &Shutdown,
) -> (u64, u64, EndReason) {
    let header = ProxyReqHeader {
        conn_id: me.conn_id,
        client: leg.client_addr,
        proxy: me.conn.proxy,
        transport: leg.tag,
        ad_tag: leg.ad_tag,
    };
    let activity = IdleClock::default();
    let in_flight = InFlight::default();
    let (mut read, mut write) = client.split();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let mut me = me;
    let mut incoming_rx = me.take_incoming();
    let me = me;
    let tls = leg.decoder.is_some();
    let upload = async {
        let mut frames = ClientFrames::new(leg.tag);
        frames.push(&leg.leftover);
        let mut decoder = leg.decoder;
        let mut decrypt = leg.decrypt;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            while let Some(message) = frames.next_message().map_err(|_| EndReason::Closed)? {
                let mut out = Vec::new();
                proxy_req(&header, &message.data, message.quick_ack, &mut out);
                let _pending = in_flight.hold();
                if !me.send(out).await {
                    return Err(EndReason::DcIo(io::ErrorKind::BrokenPipe));
                }
            }
            let n = match read.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(EndReason::ClientIo(e.kind())),
            };
            activity.touch();
            up_bytes += n as u64;
            admission.counters().add_from_client(n as u64);
            let m = match decoder.as_mut() {
                Some(dec) => dec
                    .decode_in_place(&mut buf[..n])
                    .map_err(EndReason::BadRecord)?,
                None => n,
            };
            decrypt.apply_keystream(&mut buf[..m]);
            frames.push(&buf[..m]);
            if let Some(rate) = &admission.rate {
                let wait = rate.up.take(n);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    };
    let mut encrypt = leg.encrypt;
    let sizing = leg.sizing;
    let download = async {
        let mut plain = Vec::with_capacity(WRITE_BATCH);
        let mut wire = Vec::with_capacity(WRITE_BATCH + 64);
        // Encrypted bytes of a record the last batch could not fill (more was queued).
        let mut held = Vec::new();
        loop {
            let first = if held.is_empty() {
                incoming_rx.recv().await
            } else {
                incoming_rx.try_recv().ok()
            };
            // Nothing followed the held bytes at once: they go now, whole or not.
            let end = match first {
                Some(_) => false,
                None if held.is_empty() => return Ok::<(), EndReason>(()),
                None => true,
            };
            plain.clear();
            plain.append(&mut held);
            let start = plain.len();
            // Whether the batch stopped full, with more queued behind it.
            let mut more = false;
            let mut next = first;
            while let Some(item) = next.take() {
                match item {
                    Incoming::Data(frame, at) => encode_message(leg.tag, &frame[at..], &mut plain),
                    Incoming::Ack(confirm) => encode_ack(leg.tag, confirm, &mut plain),
                }
                if plain.len() < WRITE_BATCH {
                    next = incoming_rx.try_recv().ok();
                } else {
                    more = true;
                }
            }
            encrypt.apply_keystream(&mut plain[start..]);
            let out: &[u8] = if tls {
                wire.clear();
                let rest = frame_records(&plain, &sizing, more && !end, &mut wire);
                held.extend_from_slice(&plain[plain.len() - rest..]);
                &wire
            } else {
                &plain
            };
            activity.touch();
            let pending = in_flight.hold();
            write
                .write_all(out)
                .await
                .map_err(|e| EndReason::ClientIo(e.kind()))?;
            drop(pending);
            down_bytes += out.len() as u64;
            admission.counters().add_to_client(out.len() as u64);
            if let Some(rate) = &admission.rate {
                let wait = rate.down.take(out.len());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    };
    let reason = tokio::select! {
        biased;
        done = upload => done.err().unwrap_or(EndReason::Closed),
        done = download => done.err().unwrap_or(EndReason::Closed),
        watched = shutdown.watch(&activity, &in_flight, idle_timeout) => watched.into(),
        () = admission.cut.cancelled() => EndReason::UserCut,
    };
    let _ = client.shutdown().await;
    (up_bytes, down_bytes, reason)
}

/// Wraps `payload` (encrypted, in stream order) into TLS records of the sizes `sizing` gives
/// next, appended to `wire`. With `hold_tail`, a last record that would be cut short is not
/// written (more payload follows at once, and a site's records are not cut by a buffer's
/// end); returns how many bytes of `payload` that left out.
fn frame_records(
    payload: &[u8],
    sizing: &SizingCursor,
    hold_tail: bool,
    wire: &mut Vec<u8>,
) -> usize {
    let mut rest = payload;
    while !rest.is_empty() {
        let ceiling = sizing.ceiling_ahead(0);
        if hold_tail && rest.len() < ceiling {
            break;
        }
        let n = rest.len().min(ceiling);
        sizing.start_record();
        wire.extend_from_slice(&record_header_for(n));
        wire.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    rest.len()
}
