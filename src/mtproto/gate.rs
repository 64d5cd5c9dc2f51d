//! The gate of `mtproto: true` routes: is this connection a Telegram client with a valid
//! fake-TLS digest for one of our users, fresh and never seen before? If so the MTProto core
//! serves it; anything else — a browser, a prober, a replayed or stale handshake, a client
//! that breaks the protocol before its session starts — comes back as [`Gate::Fallback`] with
//! every byte read, so the route's real backend answers it and the prober sees the real site.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;

use crate::config::MtprotoSettings;
use crate::forward::shutdown::Shutdown;
use crate::mtproto::faketls::{verify_client_hello, FakeTlsReject};
use crate::mtproto::session::{serve_faketls, serve_plain, SessionOutcome};
use crate::mtproto::state::MtprotoState;

/// What the gate needs of a parsed ClientHello (the peek stage's `ClientHello` lends it).
#[derive(Debug, Clone, Copy)]
pub struct HelloView<'a> {
    /// The hello as one TLS record, what the digest covers.
    pub single_record: &'a [u8],
    /// How many raw bytes the hello took on the wire (bytes past it came after the hello).
    pub raw_len: usize,
    /// The legacy session id, echoed in the fake ServerHello.
    pub session_id: &'a [u8],
    /// The offered cipher suites, in order.
    pub cipher_suites: &'a [u16],
}

/// What the gate did with a connection.
#[derive(Debug)]
pub enum Gate {
    /// Served as MTProto until the session ended.
    Served {
        /// The user's name from the route file.
        user: String,
        /// The DC index the client asked for.
        dc: i16,
        /// The DC address the session was relayed to.
        dc_addr: Option<SocketAddr>,
        /// Client bytes read after the ClientHello.
        from_client: u64,
        /// Bytes written to the client.
        to_client: u64,
        /// Why the session ended.
        end: String,
    },
    /// A valid client whose DC could not be reached (the client was closed).
    DcUnreachable {
        /// The user's name.
        user: String,
        /// The DC index.
        dc: i16,
        /// The last connect error.
        error: std::io::Error,
    },
    /// Not (or no longer) MTProto: forward `bytes` — every byte read from the client, in
    /// order — to the route's backend, then relay `client` to it.
    Fallback {
        /// The client connection.
        client: TcpStream,
        /// Everything read from it so far.
        bytes: Vec<u8>,
    },
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs a failed digest check in the line fail2ban reads; never a secret, never the digest.
fn auth_failed(client: IpAddr, reason: &str) {
    tracing::info!(%client, reason, "mtproto auth failed from {client}");
}

/// Checks a TLS ClientHello that reached an `mtproto: true` route and serves it if it is a
/// fake-TLS client. `peeked` holds every byte read so far (the hello and anything after it);
/// the session ends when `shutdown` finds it quiet.
pub async fn fake_tls(
    client: TcpStream,
    client_ip: IpAddr,
    hello: HelloView<'_>,
    peeked: Vec<u8>,
    settings: &MtprotoSettings,
    state: &MtprotoState,
    shutdown: &Shutdown,
) -> Gate {
    let verified = verify_client_hello(
        hello.single_record,
        settings.secrets(),
        unix_now(),
        settings.max_clock_skew,
    );
    let auth = match verified {
        Ok(auth) => auth,
        Err(reject) => {
            if !matches!(reject, FakeTlsReject::Malformed) {
                auth_failed(client_ip, &reject.to_string());
            }
            return Gate::Fallback {
                client,
                bytes: peeked,
            };
        }
    };
    if !state.replay.insert_if_new(&auth.random) {
        auth_failed(client_ip, "replayed handshake");
        return Gate::Fallback {
            client,
            bytes: peeked,
        };
    }
    let after_hello = peeked.get(hello.raw_len..).unwrap_or_default().to_vec();
    let outcome = serve_faketls(
        client,
        after_hello,
        &auth,
        hello.session_id,
        hello.cipher_suites,
        settings,
        &state.counters,
        shutdown,
    )
    .await;
    let mut hello_bytes = peeked;
    hello_bytes.truncate(hello.raw_len);
    finish(outcome, hello_bytes, settings)
}

/// Tries a non-TLS connection as a plain obfuscated2 client (`allow_plain`); the session
/// ends when `shutdown` finds it quiet.
pub async fn plain(
    client: TcpStream,
    peeked: Vec<u8>,
    settings: &MtprotoSettings,
    state: &MtprotoState,
    shutdown: &Shutdown,
) -> Gate {
    let outcome = serve_plain(
        client,
        peeked,
        settings,
        &state.counters,
        &state.replay,
        shutdown,
    )
    .await;
    finish(outcome, Vec::new(), settings)
}

/// Turns a session outcome into the gate's answer; `before` are the bytes read before the
/// session started (the hello), which a fallback must replay first.
fn finish(outcome: SessionOutcome, before: Vec<u8>, settings: &MtprotoSettings) -> Gate {
    let name = |user: usize| {
        settings
            .users
            .get(user)
            .map_or_else(String::new, |(name, _)| name.clone())
    };
    match outcome {
        SessionOutcome::Fallback {
            client,
            client_bytes,
            reason,
        } => {
            tracing::debug!(%reason, "not an MTProto session, forwarding to the route's backend");
            let mut bytes = before;
            bytes.extend_from_slice(&client_bytes);
            Gate::Fallback { client, bytes }
        }
        SessionOutcome::DcUnreachable { user, dc, error } => Gate::DcUnreachable {
            user: name(user),
            dc,
            error,
        },
        SessionOutcome::Finished {
            user,
            dc,
            dc_addr,
            bytes_from_client,
            bytes_to_client,
            reason,
        } => Gate::Served {
            user: name(user),
            dc,
            dc_addr,
            from_client: bytes_from_client,
            to_client: bytes_to_client,
            end: reason.to_string(),
        },
    }
}
