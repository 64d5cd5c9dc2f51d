//! One MTProto client session, from an authenticated ClientHello (or a plain obfuscated2
//! init) to the end of the relay with its Telegram DC.
//!
//! A plain session is not committed until the DC connection is up: a failure before hands the
//! client back as [`SessionOutcome::Fallback`] with every byte read from it, so the router can
//! replay them to the route's real backend (domain fronting). A fake-TLS session commits
//! earlier, with the first byte of its fake server flight: the client has seen a ServerHello
//! that is not the site's, so replaying its hello to the site would show it a second one (a
//! fingerprint). From there on every failure closes the connection ([`Committed::Rejected`]);
//! [`Committed`] has no fallback, and the code past the commit point owns the client stream,
//! so no fallback can be built there. Once the DC is up the session relays both ways in
//! its own task, en/decrypting in place in one buffer per direction under the relays' policy
//! ([`crate::forward::buffer`]: none while idle, 4 KiB for light traffic, 64 KiB during a
//! burst until a quiet second), with one idle timer covering both directions;
//! a gateway shutdown ends it once it is quiet ([`crate::forward::shutdown`]).
//! DC replies are read with one `readv` straight into the bodies of up to four TLS records.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aes::cipher::StreamCipher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::datacenters::DcAddr;
use crate::config::{MtprotoSettings, Secret};
use crate::forward::buffer::{ByteBuffer, ElasticBuffer};
use crate::forward::idle::{deadline_after, IdleClock};
use crate::forward::relay::{shutdown_write, until_readable, write_all_tcp};
use crate::forward::shutdown::{InFlight, Shutdown, Watched};
use crate::mtproto::dc_health;
use crate::mtproto::faketls::FakeTlsClient;
use crate::mtproto::middle::{self, MiddleProxy};
use crate::mtproto::mimic::FlightProfile;
use crate::mtproto::obfuscated2::{
    dc_init, is_forbidden_init_prefix, parse_client_init, reencrypt, try_users, AesCtr,
    ClientObfuscation, Downlink, INIT_LEN,
};
use crate::mtproto::record_sizing::{RecordSizing, SizingCursor};
use crate::mtproto::records::{RecordDecoder, RecordEncoder, RecordError, FULL_RECORD_LEN};
use crate::mtproto::state::{MtprotoState, UserCounters};
use crate::mtproto::upstreams;
use crate::mtproto::users::{unix_now, Admission, RateLimits, Refusal, TokenBucket};

/// Raw client bytes allowed before the 64-byte init is complete (a real client needs ~75).
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// Per-direction buffer of a session until a read fills it: light traffic (most Telegram
/// connections idle for long stretches between small messages) stays small.
const SMALL_BUF: usize = 4096;
/// Client -> DC read buffer once traffic is heavy.
const UPLOAD_BUF: usize = 64 * 1024;
/// DC -> client batch once traffic is heavy: four full TLS records per write.
const DOWNLOAD_BUF: usize = 4 * FULL_RECORD_LEN;

/// Why a plain obfuscated2 connection was handed back before reaching a DC (nothing was sent
/// to it, so the route's backend can still answer it).
#[derive(Debug, thiserror::Error)]
pub enum FallbackReason {
    /// The init failed the way a committed client's would (see [`RejectReason`]).
    #[error(transparent)]
    Handshake(#[from] RejectReason),
    /// A plain init seen before.
    #[error("replayed obfuscated2 init")]
    Replayed,
    /// A valid init of a user who may not be served now.
    #[error("user refused: {refusal}")]
    Refused {
        /// The user's index.
        user: usize,
        /// Why.
        refusal: Refusal,
    },
}

/// Why a client's handshake failed before its session reached a DC: its records or its
/// obfuscated2 init were bad. After the fake server flight this closes the client; for a
/// plain obfuscated2 client (nothing sent yet) it is a [`FallbackReason::Handshake`].
#[derive(Debug, thiserror::Error)]
pub enum RejectReason {
    /// The client broke the TLS record layer.
    #[error("bad TLS record: {0}")]
    BadRecord(RecordError),
    /// The first 64 payload bytes are no obfuscated2 init for the authenticated user.
    #[error("no valid obfuscated2 init")]
    BadInit,
    /// Too many bytes without a complete init.
    #[error("no obfuscated2 init within the first 64 KiB")]
    InitTooLate,
    /// The init did not arrive within `handshake_timeout`.
    #[error("timed out waiting for the obfuscated2 init")]
    Timeout,
    /// The client closed before sending the whole init.
    #[error("client closed before the obfuscated2 init")]
    ClientClosed,
    /// Reading from or writing to the client failed (the flight write included).
    #[error("client I/O error: {0}")]
    ClientIo(io::Error),
}

/// Why an established relay ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndReason {
    /// Both sides closed their sending direction.
    #[error("closed")]
    Closed,
    /// No byte either way for `idle_timeout`.
    #[error("idle timeout")]
    IdleTimeout,
    /// Client socket error.
    #[error("client I/O error: {0}")]
    ClientIo(io::ErrorKind),
    /// DC socket error.
    #[error("DC I/O error: {0}")]
    DcIo(io::ErrorKind),
    /// The client broke the TLS record layer mid-session.
    #[error("bad TLS record: {0}")]
    BadRecord(RecordError),
    /// The gateway is shutting down and the session was quiet, or every connection was cut.
    #[error("shutdown")]
    Shutdown,
    /// The user may no longer be served (disabled, removed, expired or over quota).
    #[error("user cut off")]
    UserCut,
}

impl From<Watched> for EndReason {
    /// What the relay's shutdown watch ending a session means for its log line.
    fn from(watched: Watched) -> Self {
        match watched {
            Watched::Idle => EndReason::IdleTimeout,
            Watched::Drained | Watched::Cut => EndReason::Shutdown,
        }
    }
}

/// How a session ended; the router logs it (without secrets) and acts on `Fallback`.
#[derive(Debug)]
pub enum SessionOutcome {
    /// Not MTProto after all (or not yet): forward `client_bytes` — every byte read from the
    /// client after the ClientHello, in order — to the route's backend, then relay `client`.
    /// Only possible before the commit point.
    Fallback {
        /// The untouched client connection.
        client: TcpStream,
        /// Bytes consumed from the client so far.
        client_bytes: Vec<u8>,
        /// Why.
        reason: FallbackReason,
    },
    /// Past the commit point: the client was served as MTProto or closed.
    Committed(Committed),
}

/// How a session past its commit point ended: there is no way back to the route's backend,
/// the client connection is closed when this is returned.
#[derive(Debug)]
pub enum Committed {
    /// A fake-TLS client that got the fake server flight, then failed its handshake: closed.
    Rejected {
        /// User index (the one whose digest the hello carried).
        user: usize,
        /// Why.
        reason: RejectReason,
        /// Client socket bytes read after the ClientHello.
        bytes_from_client: u64,
        /// Client socket bytes written (the part of the flight that was written).
        bytes_to_client: u64,
    },
    /// Valid client, but no address of its DC accepted a connection (client closed).
    DcUnreachable {
        /// User index.
        user: usize,
        /// The client's DC index.
        dc: i16,
        /// The last connect error.
        error: io::Error,
    },
    /// A relay ran and ended.
    Finished {
        /// User index.
        user: usize,
        /// The client's DC index.
        dc: i16,
        /// The DC address the session was relayed to.
        dc_addr: Option<SocketAddr>,
        /// Client socket bytes read after the ClientHello.
        bytes_from_client: u64,
        /// Client socket bytes written (the ServerHello flight included).
        bytes_to_client: u64,
        /// Why it ended.
        reason: EndReason,
    },
}

impl From<Committed> for SessionOutcome {
    fn from(committed: Committed) -> Self {
        SessionOutcome::Committed(committed)
    }
}

fn fallback(client: TcpStream, client_bytes: Vec<u8>, reason: FallbackReason) -> SessionOutcome {
    SessionOutcome::Fallback {
        client,
        client_bytes,
        reason,
    }
}

/// Serves a client whose ClientHello passed [`crate::mtproto::faketls::verify_client_hello`]
/// (and the replay check): sends the fake ServerHello flight in one write, reads TLS records
/// until the obfuscated2 init is complete, then connects to the DC and relays until the end.
/// Writing the flight is the commit point: only a failure before it falls back.
///
/// `already_read_after_hello` holds bytes the router read past the hello; `hello_session_id`
/// comes from the parsed ClientHello; `shape` is the flight's shape (the route's backend's,
/// see [`crate::mtproto::mimic`]) and `sizing` the sizes of the records after it (the
/// site's, see [`crate::mtproto::record_sizing`]); the relay ends when `shutdown` finds it
/// quiet.
#[allow(clippy::too_many_arguments)] // each is one fact of the session; a struct would only rename them
pub async fn serve_faketls(
    client: TcpStream,
    already_read_after_hello: Vec<u8>,
    auth: &FakeTlsClient,
    hello_session_id: &[u8],
    shape: &FlightProfile,
    sizing: RecordSizing,
    settings: &MtprotoSettings,
    admission: Admission,
    middle: &Arc<MiddleProxy>,
    shutdown: &Shutdown,
) -> SessionOutcome {
    let raw = already_read_after_hello;
    let secret = &auth.secret;
    let flight = Flight {
        bytes: shape.build(secret, &auth.random, hello_session_id),
        sizing,
    };
    commit_faketls(
        client, raw, auth.user, secret, flight, settings, admission, middle, shutdown,
    )
    .await
    .into()
}

/// The fake server flight and the sizes of the records that follow it.
struct Flight {
    bytes: Vec<u8>,
    sizing: RecordSizing,
}

/// The fake-TLS session from its commit point on: sends the flight, reads the init, serves
/// the session to its end. It owns the client and returns no fallback: every failure closes.
#[allow(clippy::too_many_arguments)] // serve_faketls's facts, past the commit point
async fn commit_faketls(
    mut client: TcpStream,
    mut raw: Vec<u8>,
    user: usize,
    secret: &Secret,
    flight: Flight,
    settings: &MtprotoSettings,
    admission: Admission,
    middle: &Arc<MiddleProxy>,
    shutdown: &Shutdown,
) -> Committed {
    let rejected = |reason, raw: &[u8], to_client| Committed::Rejected {
        user,
        reason,
        bytes_from_client: raw.len() as u64,
        bytes_to_client: to_client,
    };
    if let Err(e) = client.write_all(&flight.bytes).await {
        return rejected(RejectReason::ClientIo(e), &raw, 0);
    }
    let to_client = flight.bytes.len() as u64;

    let deadline = deadline_after(settings.handshake_timeout);
    let mut decoder = RecordDecoder::new();
    let mut payload = Vec::with_capacity(2 * INIT_LEN);
    let mut decoded_upto = 0;
    loop {
        if decoded_upto < raw.len() {
            let mut chunk = raw[decoded_upto..].to_vec();
            decoded_upto = raw.len();
            match decoder.decode_in_place(&mut chunk) {
                Ok(n) => payload.extend_from_slice(&chunk[..n]),
                Err(e) => return rejected(RejectReason::BadRecord(e), &raw, to_client),
            }
        }
        if payload.len() >= INIT_LEN {
            break;
        }
        if let Err(reason) = read_more(&mut client, &mut raw, deadline).await {
            return rejected(reason, &raw, to_client);
        }
    }

    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&payload[..INIT_LEN]);
    let Some(obfuscation) = parse_client_init(&init, secret) else {
        return rejected(RejectReason::BadInit, &raw, to_client);
    };
    let handshake = Handshake {
        user,
        obfuscation,
        leftover: payload.split_off(INIT_LEN),
        decoder: Some(decoder),
        sizing: Arc::new(SizingCursor::new(flight.sizing)),
        admission,
        from_client: raw.len() as u64,
        to_client,
    };
    establish(client, handshake, settings, middle, shutdown).await
}

/// Serves a non-TLS client if its first 64 bytes are an obfuscated2 init for some user.
/// Only for settings with `allow_plain` on: the caller decides that, this does not check.
/// `first_bytes` are the bytes the router already read (any number); the rest of the init
/// is read here. Replayed inits (keyed by their 32 key bytes) fall back.
/// The relay ends when `shutdown` finds it quiet.
pub async fn serve_plain(
    mut client: TcpStream,
    first_bytes: Vec<u8>,
    settings: &MtprotoSettings,
    state: &MtprotoState,
    client_ip: IpAddr,
    shutdown: &Shutdown,
) -> SessionOutcome {
    let (users, replay, middle) = (&state.users, &state.replay, &state.middle);
    let mut raw = first_bytes;
    let deadline = deadline_after(settings.handshake_timeout);
    while raw.len() < INIT_LEN {
        // An HTTP request or other reserved start is never an init: don't wait for 64 bytes
        // that a waiting HTTP client will never send.
        if raw.len() >= 8 && is_forbidden_init_prefix(&raw) {
            return fallback(client, raw, RejectReason::BadInit.into());
        }
        if let Err(reason) = read_more(&mut client, &mut raw, deadline).await {
            return fallback(client, raw, reason.into());
        }
    }
    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&raw[..INIT_LEN]);
    if is_forbidden_init_prefix(&init) {
        return fallback(client, raw, RejectReason::BadInit.into());
    }
    let Some((user, obfuscation)) = try_users(&init, settings.secrets()) else {
        return fallback(client, raw, RejectReason::BadInit.into());
    };
    let mut key = [0u8; 32];
    key.copy_from_slice(&init[8..40]);
    if !replay.insert_if_new(&key).await {
        return fallback(client, raw, FallbackReason::Replayed);
    }
    let (Some(runtime), Some(config)) = (users.get(user), settings.users.get(user)) else {
        return fallback(client, raw, RejectReason::BadInit.into());
    };
    let admission = match runtime.admit(&config.policy, client_ip, unix_now()) {
        Ok(admission) => admission,
        Err(refusal) => return fallback(client, raw, FallbackReason::Refused { user, refusal }),
    };
    let handshake = Handshake {
        user,
        obfuscation,
        leftover: raw[INIT_LEN..].to_vec(),
        decoder: None,
        sizing: Arc::default(),
        admission,
        from_client: raw.len() as u64,
        to_client: 0,
    };
    establish(client, handshake, settings, middle, shutdown)
        .await
        .into()
}

/// Appends one read's worth of client bytes to `raw`, within the handshake limits.
async fn read_more(
    client: &mut TcpStream,
    raw: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), RejectReason> {
    if raw.len() >= MAX_HANDSHAKE_BYTES {
        return Err(RejectReason::InitTooLate);
    }
    raw.reserve(4096);
    match tokio::time::timeout_at(deadline, client.read_buf(raw)).await {
        Err(_) => Err(RejectReason::Timeout),
        Ok(Ok(0)) => Err(RejectReason::ClientClosed),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(RejectReason::ClientIo(e)),
    }
}

/// A client leg that passed its obfuscated2 init.
struct Handshake {
    user: usize,
    obfuscation: ClientObfuscation,
    /// Payload bytes that arrived after the init (still encrypted).
    leftover: Vec<u8>,
    /// The record decoder mid-stream (fake-TLS), or `None` (plain).
    decoder: Option<RecordDecoder>,
    /// The sizes of the records sent to a fake-TLS client.
    sizing: Arc<SizingCursor>,
    /// The user's hold on its session slot, its cut signal and rate limits.
    admission: Admission,
    from_client: u64,
    to_client: u64,
}

/// Decrements the active-session gauge however the relay ends.
struct ActiveGuard(Arc<UserCounters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects to the client's DC and relays: the client is committed to MTProto by now.
async fn establish(
    client: TcpStream,
    handshake: Handshake,
    settings: &MtprotoSettings,
    middle: &Arc<MiddleProxy>,
    shutdown: &Shutdown,
) -> Committed {
    let Handshake {
        user,
        obfuscation: mut client_obf,
        mut leftover,
        decoder,
        sizing,
        admission,
        from_client,
        to_client,
    } = handshake;
    let dc_idx = client_obf.dc;
    if let Some(ad_tag) = middle::tag_for(settings, user) {
        match middle.session(dc_idx).await {
            Ok(me) => {
                let leg = middle::relay::ClientLeg {
                    tag: client_obf.tag,
                    leftover: {
                        client_obf.decrypt.apply_keystream(&mut leftover);
                        leftover
                    },
                    decrypt: client_obf.decrypt,
                    encrypt: client_obf.encrypt,
                    decoder,
                    client_addr: SocketAddr::new(
                        admission.client_ip(),
                        client.peer_addr().map_or(0, |a| a.port()),
                    ),
                    ad_tag,
                    sizing,
                };
                let start = MiddleStart {
                    user,
                    dc: dc_idx,
                    from_client,
                    to_client,
                };
                return serve_middle(
                    client, leg, me, start, settings, &admission, middle, shutdown,
                )
                .await;
            }
            Err(error) if settings.middle.fallback_direct => middle.fell_back(dc_idx, &error),
            Err(error) => {
                middle.failed(dc_idx, &error);
                return Committed::DcUnreachable {
                    user,
                    dc: dc_idx,
                    error: io::Error::other(error.to_string()),
                };
            }
        }
    }
    let addresses = settings.datacenters.addresses(dc_idx, settings.prefer_ipv6);
    let (mut dc, dc_addr) = match connect_dc(&addresses, settings).await {
        Ok(dialled) => dialled,
        Err(error) => {
            return Committed::DcUnreachable {
                user,
                dc: dc_idx,
                error,
            }
        }
    };

    let fast = settings.fast_mode.then_some(&client_obf);
    let mut dc_obf = dc_init(client_obf.tag, dc_idx, fast);
    client_obf.decrypt.apply_keystream(&mut leftover);
    dc_obf.encrypt.apply_keystream(&mut leftover);
    let mut first = Vec::with_capacity(INIT_LEN + leftover.len());
    first.extend_from_slice(&dc_obf.init);
    first.extend_from_slice(&leftover);
    if let Err(error) = dc.write_all(&first).await {
        return Committed::DcUnreachable {
            user,
            dc: dc_idx,
            error,
        };
    }

    let stats = admission.counters().clone();
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(Arc::clone(&stats));
    stats.add_from_client(from_client);
    stats.add_to_client(to_client);

    let legs = Legs {
        client_decrypt: client_obf.decrypt,
        client_encrypt: client_obf.encrypt,
        dc_encrypt: dc_obf.encrypt,
        downlink: dc_obf.downlink,
        decoder,
        sizing,
    };
    let (up, down, reason) = relay(
        client,
        dc,
        legs,
        settings.idle_timeout,
        &admission,
        shutdown,
    )
    .await;
    Committed::Finished {
        user,
        dc: dc_idx,
        dc_addr,
        bytes_from_client: from_client + up,
        bytes_to_client: to_client + down,
        reason,
    }
}

/// What a session brings to middle-proxy mode besides its legs.
struct MiddleStart {
    user: usize,
    dc: i16,
    from_client: u64,
    to_client: u64,
}

/// Relays a session through its ME connection (middle-proxy mode), counted like a direct
/// one and in the middle-proxy gauge.
#[allow(clippy::too_many_arguments)] // establish's facts, for the ME path
async fn serve_middle(
    client: TcpStream,
    leg: middle::relay::ClientLeg,
    me: middle::mux::MeSession,
    start: MiddleStart,
    settings: &MtprotoSettings,
    admission: &Admission,
    middle: &Arc<MiddleProxy>,
    shutdown: &Shutdown,
) -> Committed {
    let stats = admission.counters().clone();
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(Arc::clone(&stats));
    stats.add_from_client(start.from_client);
    stats.add_to_client(start.to_client);
    let me_addr = me.conn.server;
    middle.stats.sessions.fetch_add(1, Ordering::Relaxed);
    let (up, down, reason) =
        middle::relay::relay(client, leg, me, settings.idle_timeout, admission, shutdown).await;
    middle.stats.sessions.fetch_sub(1, Ordering::Relaxed);
    Committed::Finished {
        user: start.user,
        dc: start.dc,
        dc_addr: Some(me_addr),
        bytes_from_client: start.from_client + up,
        bytes_to_client: start.to_client + down,
        reason,
    }
}

/// Dials the client's DC: through `mtproto.via`'s SOCKS5 upstreams when there are any
/// (directly only when none reached it and `via_fallback_direct` allows), else directly.
/// Returns the stream and the DC address it reaches (not the upstream's).
async fn connect_dc(
    addresses: &[DcAddr],
    settings: &MtprotoSettings,
) -> io::Result<(TcpStream, Option<SocketAddr>)> {
    let direct = || async {
        let stream = connect_direct(addresses, settings.connect_timeout).await?;
        let peer = stream.peer_addr().ok();
        Ok((stream, peer))
    };
    if settings.via.is_empty() {
        return direct().await;
    }
    match upstreams::connect_via(&settings.via, addresses, settings.connect_timeout).await {
        Ok((stream, target)) => Ok((stream, Some(target))),
        Err(error) if settings.via_fallback_direct => {
            tracing::warn!(error = %error, "dialling the DC directly (mtproto.via_fallback_direct)");
            direct().await
        }
        Err(error) => Err(error),
    }
}

/// Dials the addresses in the order DC health gives (healthy and fastest first, dead last),
/// each with its own timeout.
async fn connect_direct(addresses: &[DcAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no DC address configured");
    for addr in &dc_health::order(addresses) {
        let started = std::time::Instant::now();
        let attempt = async {
            match addr {
                DcAddr::Ip(sa) => TcpStream::connect(sa).await,
                DcAddr::Host { host, port } => TcpStream::connect((host.as_str(), *port)).await,
            }
        };
        let error = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => {
                dc_health::global().connected(addr, started.elapsed());
                // Small MTProto messages must not wait for Nagle.
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "DC connect timed out"),
        };
        dc_health::global().failed(addr);
        tracing::debug!(dc_addr = %addr, error = %error, "DC connect attempt failed");
        last = error;
    }
    Err(last)
}

/// Cipher state of both legs for the relay.
struct Legs {
    client_decrypt: AesCtr,
    client_encrypt: AesCtr,
    dc_encrypt: AesCtr,
    downlink: Downlink,
    decoder: Option<RecordDecoder>,
    sizing: Arc<SizingCursor>,
}

/// The DC -> client output buffer: TLS records, or the raw stream for plain clients.
enum Framer {
    Tls(RecordEncoder),
    Raw { buf: Box<[u8]>, len: usize },
}

impl Framer {
    /// A framer of `bytes`: TLS records following `sizing` for a fake-TLS client, the raw
    /// stream for a plain one (`None`).
    fn new(sizing: Option<&Arc<SizingCursor>>, bytes: usize) -> Framer {
        if let Some(sizing) = sizing {
            Framer::Tls(RecordEncoder::with_sizing(bytes, sizing.clone()))
        } else {
            Framer::Raw {
                buf: vec![0u8; bytes].into_boxed_slice(),
                len: 0,
            }
        }
    }

    /// Reads what `dc` has ready into the free room (the bodies of several records in one
    /// `readv` for TLS clients), transforming each piece in place. `Ok(0)` is end of stream;
    /// only called while [`is_full`](Self::is_full) is false.
    fn fill_from<T: FnMut(&mut [u8])>(
        &mut self,
        dc: &TcpStream,
        mut transform: T,
    ) -> io::Result<usize> {
        match self {
            Framer::Tls(enc) => enc.fill_vectored(|bodies| dc.try_read_vectored(bodies), transform),
            Framer::Raw { buf, len } => {
                let n = dc.try_read(&mut buf[*len..])?;
                transform(&mut buf[*len..*len + n]);
                *len += n;
                Ok(n)
            }
        }
    }

    fn is_full(&self) -> bool {
        match self {
            Framer::Tls(enc) => enc.is_full(),
            Framer::Raw { buf, len } => *len == buf.len(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Framer::Tls(enc) => enc.as_bytes(),
            Framer::Raw { buf, len } => &buf[..*len],
        }
    }

    fn clear(&mut self) {
        match self {
            Framer::Tls(enc) => enc.clear(),
            Framer::Raw { len, .. } => *len = 0,
        }
    }
}

/// State both directions and the idle watcher share.
struct Shared {
    activity: IdleClock,
    /// Directions holding bytes not yet written (a shutdown waits for them).
    in_flight: InFlight,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    stats: Arc<UserCounters>,
    /// The user's rate limits, if any.
    rate: Option<Arc<RateLimits>>,
}

impl Shared {
    fn moved_up(&self, n: usize) {
        self.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.add_from_client(n as u64);
    }

    fn moved_down(&self, n: usize) {
        self.down_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.add_to_client(n as u64);
    }

    /// Waits out the user's rate limit after `n` bytes went one way (`pick` chooses the
    /// direction's bucket).
    async fn throttle(&self, n: usize, pick: fn(&RateLimits) -> &TokenBucket) {
        if let Some(limits) = &self.rate {
            let wait = pick(limits).take(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Relays until both directions closed, an error, the idle timeout, or a shutdown that finds
/// the session quiet. Both directions run
/// in the session's own task, readiness-driven like the passthrough relay: on a loaded box a
/// second task per connection costs more in cross-thread wake-ups than it gains in
/// parallelism, and many connections spread over the cores anyway. Returns client bytes
/// read, client bytes written, and why it ended.
async fn relay(
    client: TcpStream,
    dc: TcpStream,
    legs: Legs,
    idle_timeout: Duration,
    admission: &Admission,
    shutdown: &Shutdown,
) -> (u64, u64, EndReason) {
    let Legs {
        client_decrypt,
        client_encrypt,
        dc_encrypt,
        downlink,
        decoder,
        sizing,
    } = legs;
    let shared = Shared {
        activity: IdleClock::default(),
        in_flight: InFlight::default(),
        up_bytes: AtomicU64::new(0),
        down_bytes: AtomicU64::new(0),
        stats: admission.counters().clone(),
        rate: admission.rate.clone(),
    };
    let tls = decoder.is_some();
    let framer = ElasticBuffer::new(SMALL_BUF, DOWNLOAD_BUF, move |size| {
        Framer::new(tls.then_some(&sizing), size)
    });
    let up = Upload {
        client_decrypt,
        dc_encrypt,
        decoder,
    };
    let down = Download {
        downlink,
        client_encrypt,
        framer,
    };
    let both = async {
        tokio::try_join!(
            upload(&client, &dc, up, &shared),
            download(&dc, &client, down, &shared)
        )
    };
    let reason = tokio::select! {
        // Bytes that are ready are relayed before a timer may end the session.
        biased;
        done = both => match done {
            Ok(_) => EndReason::Closed,
            Err(reason) => reason,
        },
        watched = shutdown.watch(&shared.activity, &shared.in_flight, idle_timeout) => watched.into(),
        () = admission.cut.cancelled() => EndReason::UserCut,
    };
    (
        shared.up_bytes.load(Ordering::Relaxed),
        shared.down_bytes.load(Ordering::Relaxed),
        reason,
    )
}

/// Client -> DC cipher state.
struct Upload {
    client_decrypt: AesCtr,
    dc_encrypt: AesCtr,
    decoder: Option<RecordDecoder>,
}

/// Client -> DC: strip records, decrypt with the client key, encrypt with the DC key.
async fn upload(
    client: &TcpStream,
    dc: &TcpStream,
    mut up: Upload,
    shared: &Shared,
) -> Result<(), EndReason> {
    let mut buffer = ByteBuffer::bytes(SMALL_BUF, UPLOAD_BUF);
    loop {
        buffer
            .wait(pin!(until_readable(client)))
            .await
            .map_err(|e| EndReason::ClientIo(e.kind()))?;
        loop {
            let buf = buffer.get();
            let n = match client.try_read(buf) {
                Ok(0) => {
                    // Half-close: the client is done sending; let the DC know.
                    shutdown_write(dc);
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buffer.drained();
                    break;
                }
                Err(e) => return Err(EndReason::ClientIo(e.kind())),
            };
            shared.activity.touch();
            shared.moved_up(n);
            // A full read: traffic is heavy, the next read gets the large buffer.
            let full = n == buf.len();
            let m = match up.decoder.as_mut() {
                Some(dec) => dec
                    .decode_in_place(&mut buf[..n])
                    .map_err(EndReason::BadRecord)?,
                None => n,
            };
            if m > 0 {
                reencrypt(&mut up.client_decrypt, &mut up.dc_encrypt, &mut buf[..m]);
                let pending = shared.in_flight.hold();
                write_all_tcp(dc, &buf[..m])
                    .await
                    .map_err(|e| EndReason::DcIo(e.kind()))?;
                drop(pending);
                shared.activity.touch();
            }
            shared.throttle(n, |limits| &limits.up).await;
            if full {
                buffer.grow();
            }
        }
    }
}

/// DC -> client state.
struct Download<M> {
    downlink: Downlink,
    client_encrypt: AesCtr,
    framer: ElasticBuffer<Framer, M>,
}

/// DC -> client: re-encrypt (or pass through in fast mode) and frame, reading whatever the
/// DC has ready (up to the framer's size) before each write to the client.
async fn download<M: Fn(usize) -> Framer>(
    dc: &TcpStream,
    client: &TcpStream,
    down: Download<M>,
    shared: &Shared,
) -> Result<(), EndReason> {
    let Download {
        mut downlink,
        mut client_encrypt,
        mut framer,
    } = down;
    let mut transform = |chunk: &mut [u8]| {
        if let Downlink::Reencrypt(dc_decrypt) = &mut downlink {
            reencrypt(dc_decrypt, &mut client_encrypt, chunk);
        }
    };
    loop {
        framer
            .wait(pin!(until_readable(dc)))
            .await
            .map_err(|e| EndReason::DcIo(e.kind()))?;
        let batch = framer.get();
        let mut eof = false;
        while !batch.is_full() {
            match batch.fill_from(dc, &mut transform) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(EndReason::DcIo(e.kind())),
            }
        }
        let out = batch.as_bytes();
        if !out.is_empty() {
            shared.activity.touch();
            let pending = shared.in_flight.hold();
            write_all_tcp(client, out)
                .await
                .map_err(|e| EndReason::ClientIo(e.kind()))?;
            drop(pending);
            let sent = out.len();
            shared.moved_down(sent);
            // A batch that filled the framer: traffic is heavy, take the large one.
            let full = batch.is_full();
            batch.clear();
            shared.throttle(sent, |limits| &limits.down).await;
            if full {
                framer.grow();
            } else {
                framer.drained();
            }
            shared.activity.touch();
        } else {
            framer.drained();
        }
        if eof {
            shutdown_write(client);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::users::MtprotoUser;
    use crate::config::{DcTable, Secret};

    fn settings(handshake_timeout: Duration) -> MtprotoSettings {
        MtprotoSettings {
            users: vec![MtprotoUser::unlimited("alice", Secret::from_bytes([7; 16]))],
            users_file: None,
            max_clock_skew: Duration::from_secs(600),
            replay_cache: 16,
            allow_plain: true,
            datacenters: DcTable::new(),
            fast_mode: false,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            handshake_timeout,
            prefer_ipv6: false,
            via: Vec::new(),
            via_fallback_direct: false,
            middle: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_longest_handshake_timeout_waits_instead_of_panicking() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&[1, 2, 3]).await.unwrap();
        drop(client);
        let outcome = serve_plain(
            server,
            Vec::new(),
            &settings(Duration::MAX),
            &MtprotoState::new(&settings(Duration::MAX)),
            IpAddr::from([127, 0, 0, 1]),
            &crate::forward::shutdown::ShutdownSwitch::new().subscribe(),
        )
        .await;
        let SessionOutcome::Fallback {
            client_bytes,
            reason,
            ..
        } = outcome
        else {
            panic!("a partial init is handed back");
        };
        assert_eq!(client_bytes, [1, 2, 3]);
        assert!(
            matches!(
                reason,
                FallbackReason::Handshake(RejectReason::ClientClosed)
            ),
            "{reason}"
        );
    }
}
