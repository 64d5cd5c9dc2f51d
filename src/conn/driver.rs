//! One client connection from accept to close: admission, inbound PROXY header, ClientHello
//! peek, the routing decision on the table snapshot taken at accept, the backend connect and
//! the relay. Whatever happens, exactly one log line describes the connection at its end.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::admission::limits::{IpSlot, TotalSlot};
use crate::admission::loop_guard::{Guarded, Held};
use crate::admission::netpolicy::{self, Refusal};
use crate::admission::proxy_in;
use crate::config::{Action, Config, Forward, Terminate};
use crate::conn::context::{Context, Snapshot};
use crate::conn::hello::{self, ClientHello, FirstFlight, PeekError, Peeked};
use crate::conn::router;
use crate::forward::idle::deadline_after;
use crate::forward::pool;
use crate::forward::prefixed::PrefixedStream;
use crate::forward::proxy_out;
use crate::forward::relay::{self, RelayEnd, RelayStats, Side, SideError};
use crate::forward::shutdown::Shutdown;
use crate::forward::upstream;
use crate::mtproto::gate::{self, Core, Gate, HelloView, Mirror};
use crate::mtproto::session::RejectReason;
use crate::tls::{Accepted, TlsError, TlsTerminator};

/// How a connection ended; the `outcome` field of its log line.
#[derive(Debug)]
pub enum Outcome {
    /// Relayed to a backend until both sides closed.
    Closed,
    /// Relayed, then closed after `timeouts.idle` without traffic.
    IdleTimeout,
    /// Relayed, then a socket failed on one side.
    RelayError(SideError),
    /// Over `limits.max_connections`.
    OverTotalLimit,
    /// Over `limits.max_connections_per_ip`.
    OverIpLimit,
    /// The connection came from frontgate's own backend connection.
    Loop,
    /// A network policy (`allow`/`deny`/`deny_file`) refuses the client's address.
    Refused(Refusal),
    /// A trusted balancer sent no valid PROXY header.
    BadProxyHeader(proxy_in::InboundError),
    /// The ClientHello did not arrive within `timeouts.client_hello`.
    HelloTimeout,
    /// The client closed or failed before its first flight was complete.
    ClientGone(PeekError),
    /// No route (and no `default`/`non_tls`) for this connection.
    NoRoute,
    /// Every backend of the route refused or timed out.
    ConnectFailed(upstream::ConnectError),
    /// The ACME server validated a TLS-ALPN-01 challenge on this connection.
    AcmeChallenge,
    /// The TLS handshake of a `tls:` route failed (or the route has no certificate yet).
    TlsFailed(TlsError),
    /// An MTProto session ran and ended.
    Mtproto {
        /// The DC index the client asked for.
        dc: i16,
        /// Why it ended.
        end: String,
    },
    /// A fake-TLS client with a valid digest that failed its handshake after our fake server
    /// flight: closed, never fronted (the site's ServerHello after ours would give it away).
    MtprotoRejected(RejectReason),
    /// A valid MTProto client whose DC could not be reached.
    DcUnreachable {
        /// The DC index.
        dc: i16,
        /// The last connect error.
        error: std::io::Error,
    },
    /// Ended by the gateway's shutdown: a quiet relay or a connection still before its relay
    /// when the drain began, or one still open when the grace period ran out. (A quiet
    /// MTProto session ends as [`Outcome::Mtproto`] with `end` "shutdown".)
    Shutdown,
}

impl Outcome {
    /// The outcome's short name: the `outcome` label of the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::RelayError(e) if e.side == Side::Client => "client_error",
            Outcome::RelayError(_) => "backend_error",
            Outcome::OverTotalLimit => "refused_max_connections",
            Outcome::OverIpLimit => "refused_max_connections_per_ip",
            Outcome::Loop => "refused_loop",
            Outcome::Refused(_) => "refused_network_policy",
            Outcome::BadProxyHeader(_) => "refused_proxy_header",
            Outcome::HelloTimeout => "client_hello_timeout",
            Outcome::ClientGone(_) => "client_gone",
            Outcome::NoRoute => "no_route",
            Outcome::ConnectFailed(_) => "connect_failed",
            Outcome::AcmeChallenge => "acme_challenge_answered",
            Outcome::TlsFailed(_) => "tls_failed",
            Outcome::Mtproto { .. } => "mtproto_closed",
            Outcome::MtprotoRejected(_) => "mtproto_rejected",
            Outcome::DcUnreachable { .. } => "mtproto_dc_unreachable",
            Outcome::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Closed => f.write_str("closed"),
            Outcome::IdleTimeout => f.write_str("idle_timeout"),
            Outcome::RelayError(e) => write!(f, "relay_error ({e})"),
            Outcome::OverTotalLimit => f.write_str("refused: max_connections reached"),
            Outcome::OverIpLimit => f.write_str("refused: max_connections_per_ip reached"),
            Outcome::Loop => f.write_str(
                "refused: connection from frontgate's own backend connection (fronting loop)",
            ),
            Outcome::Refused(refusal) => write!(f, "refused: network policy {refusal}"),
            Outcome::BadProxyHeader(e) => write!(f, "refused: {e}"),
            Outcome::HelloTimeout => f.write_str("client_hello_timeout"),
            Outcome::ClientGone(e) => write!(f, "client_gone ({e})"),
            Outcome::NoRoute => f.write_str("no_route"),
            Outcome::ConnectFailed(e) => write!(f, "connect_failed ({e})"),
            Outcome::AcmeChallenge => f.write_str("acme_challenge_answered"),
            Outcome::TlsFailed(e) => write!(f, "tls_failed ({e})"),
            Outcome::Mtproto { dc, end } => write!(f, "mtproto_closed (dc {dc}, {end})"),
            Outcome::MtprotoRejected(reason) => write!(f, "mtproto_rejected ({reason})"),
            Outcome::DcUnreachable { dc, error } => {
                write!(f, "mtproto_dc_unreachable (dc {dc}: {error})")
            }
            Outcome::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// The facts gathered along the way, for the connection's single log line.
#[derive(Debug)]
struct Record {
    peer: SocketAddr,
    client: SocketAddr,
    sni: Option<String>,
    route: Option<String>,
    user: Option<String>,
    backend: Option<SocketAddr>,
    upstream_bytes: u64,
    downstream_bytes: u64,
    started: Instant,
}

impl Record {
    fn log(&self, outcome: &Outcome) {
        tracing::info!(
            client = %self.client,
            peer = %self.peer,
            sni = self.sni.as_deref().unwrap_or("-"),
            route = self.route.as_deref().unwrap_or("-"),
            user = self.user.as_deref().unwrap_or("-"),
            backend = %self.backend.map_or_else(|| "-".to_string(), |b| b.to_string()),
            bytes_up = self.upstream_bytes,
            bytes_down = self.downstream_bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = %outcome,
            "connection closed"
        );
    }
}

/// Serves one accepted connection to its end and logs it. `shutdown` is the connection's
/// view of the gateway's shutdown: before its relay starts the connection ends as soon as
/// the drain begins; its relay ends once quiet; and everything ends when all are cut.
///
/// The TLS-termination and MTProto paths are boxed: their state machines are large, and the
/// future of every connection would otherwise be as large as the largest path even for a
/// plain relay (memory per idle connection is a benchmark target).
// An `async move` block rather than an `async fn`: the block keeps its captures in place,
// where an `async fn` would keep a second copy of its arguments in its state.
#[allow(clippy::manual_async_fn)]
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> impl Future<Output = ()> {
    let arrived = Box::new(NewConnection { stream, local });
    // Made here, not in the block, so that the block holds the record and not `peer` too.
    let mut record = Record {
        peer,
        client: proxy_out::canonical(peer),
        sni: None,
        route: None,
        user: None,
        backend: None,
        upstream_bytes: 0,
        downstream_bytes: 0,
        started: Instant::now(),
    };
    async move {
        let snapshot = ctx.current.load_full();
        let outcome = set_up_then_relay(arrived, &snapshot, &ctx, &shutdown, &mut record).await;
        record.log(&outcome);
        if let Outcome::Refused(refusal) = &outcome {
            refused(refusal, &record, &ctx);
        }
        let route = record.route.as_deref().unwrap_or("-");
        ctx.metrics.connection_closed(
            route,
            outcome.kind(),
            record.upstream_bytes,
            record.downstream_bytes,
        );
    }
}

/// Sets the connection up in a boxed future, freed before a passthrough relay starts, so an
/// idle relayed connection carries the relay's state and not the room of every step before it
/// (the nested setup futures are larger than the relay; memory per idle connection is a
/// benchmark target). The setup (with the TLS-terminated and MTProto paths, which end in it)
/// races the shutdown's [`Shutdown::interrupted`]; the passthrough relay's own watch ends it
/// when the shutdown cuts it.
async fn set_up_then_relay(
    arrived: Box<NewConnection>,
    snapshot: &Snapshot,
    ctx: &Context,
    shutdown: &Shutdown,
    record: &mut Record,
) -> Outcome {
    let setting_up = Box::pin(async {
        tokio::select! {
            // A connection that ends on its own in the same instant is reported as it ended.
            biased;
            step = serve(*arrived, snapshot, ctx, shutdown, &mut *record) => step,
            () = shutdown.interrupted() => Step::Done(Outcome::Shutdown),
        }
    });
    let relay = match setting_up.await {
        Step::Done(outcome) => return outcome,
        Step::Relay(passthrough) => passthrough,
    };
    let idle = snapshot.config.timeouts.idle;
    let stats = relay::relay_tcp(&relay.client, &relay.backend, idle, shutdown).await;
    relayed(stats, record)
}

/// The accepted socket and the local address it reached, boxed until the setup takes them:
/// a future keeps the room of its captures for its whole life, so unboxed they would stay as
/// dead bytes in the state of every idle relay, twice (memory per idle connection is a
/// benchmark target).
struct NewConnection {
    stream: TcpStream,
    local: SocketAddr,
}

/// Where setting a connection up left it.
enum Step {
    /// It has ended (refused, served by TLS termination or MTProto, or failed).
    Done(Outcome),
    /// A passthrough relay is ready to start.
    Relay(Passthrough),
}

impl From<Outcome> for Step {
    fn from(outcome: Outcome) -> Self {
        Step::Done(outcome)
    }
}

/// The admission slots a connection holds until it ends.
struct Admitted {
    _total: TotalSlot,
    _per_ip: IpSlot,
}

/// A client and the backend it is relayed to, with everything held while the relay runs.
struct Passthrough {
    client: TcpStream,
    backend: TcpStream,
    _held: Held,
    _admitted: Admitted,
}

async fn serve(
    arrived: NewConnection,
    snapshot: &Snapshot,
    ctx: &Context,
    shutdown: &Shutdown,
    record: &mut Record,
) -> Step {
    let NewConnection { mut stream, local } = arrived;
    let config = &*snapshot.config;
    // A direct client is checked at accept, before anything else is spent on it; a trusted
    // balancer's client once its PROXY header has said who the client is.
    let balancer = config.is_trusted_proxy(record.peer.ip());
    if !balancer {
        if let Err(refused) = check_global(snapshot, record) {
            return refused.into();
        }
    }
    let Some(total) = ctx.counts.admit(config.limits.max_connections) else {
        return Outcome::OverTotalLimit.into();
    };
    if ctx.outbound.is_ours(record.peer, local).await {
        return Outcome::Loop.into();
    }
    // Nagle would delay the small handshake records both ways.
    let _ = stream.set_nodelay(true);

    let deadline = deadline_after(config.timeouts.client_hello);
    let already_read = if balancer {
        let header = read_proxy_header(&mut stream, deadline, record).await;
        match header.and_then(|rest| check_global(snapshot, record).map(|()| rest)) {
            Ok(already_read) => already_read,
            Err(outcome) => return outcome.into(),
        }
    } else {
        Vec::new()
    };
    let Some(per_ip) = ctx
        .counts
        .admit_ip(record.client.ip(), config.limits.max_connections_per_ip)
    else {
        return Outcome::OverIpLimit.into();
    };
    let admitted = Admitted {
        _total: total,
        _per_ip: per_ip,
    };
    let Peeked { flight, bytes } =
        match tokio::time::timeout_at(deadline, hello::peek(&mut stream, already_read)).await {
            Err(_) => return Outcome::HelloTimeout.into(),
            Ok(Err(e)) => return Outcome::ClientGone(e).into(),
            Ok(Ok(peeked)) => peeked,
        };
    let client_ip = record.client.ip();
    let plain = try_plain_mtproto(stream, client_ip, &flight, bytes, snapshot, shutdown);
    let (stream, bytes) = match plain.await {
        Gate::Fallback { client, bytes } => (client, bytes),
        served => return mtproto_outcome(served, record).into(),
    };
    if let FirstFlight::Tls(hello) = &flight {
        record.sni = hello.server_name.clone();
    }
    let Some(route) = router::decide(&config.routes, &flight).cloned() else {
        return Outcome::NoRoute.into();
    };
    record.route = Some(route.label.clone());
    if let Err(refusal) = netpolicy::check_route(&route, record.client.ip()) {
        return Outcome::Refused(refusal).into();
    }
    let conn = Conn {
        local,
        config,
        ctx,
        shutdown,
        snapshot,
    };
    let arrival = Arrival {
        stream,
        flight,
        bytes,
        admitted,
    };
    dispatch(arrival, &route.action, snapshot, &conn, record).await
}

/// A connection whose first flight is read and whose route is decided.
struct Arrival {
    stream: TcpStream,
    flight: FirstFlight,
    /// Every byte read so far, to be replayed to the backend.
    bytes: Vec<u8>,
    admitted: Admitted,
}

/// The global network policy for the client in `record` (the peer, or the address a trusted
/// balancer's PROXY header gave).
fn check_global(snapshot: &Snapshot, record: &Record) -> Result<(), Outcome> {
    let config = &snapshot.config;
    let deny_file = snapshot.deny_file.as_ref();
    netpolicy::check_global(&config.access, deny_file, record.client.ip()).map_err(Outcome::Refused)
}

/// Logs a network-policy refusal in a line of its own (for fail2ban or a firewall script;
/// it is not the MTProto auth-failure line) and counts it by rule and scope.
fn refused(refusal: &Refusal, record: &Record, ctx: &Context) {
    let client = record.client.ip();
    let (rule, scope) = (refusal.rule.as_str(), refusal.scope.label());
    tracing::info!(%client, rule, scope, "network policy refused {client}");
    ctx.metrics.refused(rule, scope);
}

/// Reads the inbound PROXY header of a trusted balancer (its client address goes into
/// `record`); returns the bytes read past the header.
async fn read_proxy_header(
    stream: &mut TcpStream,
    deadline: tokio::time::Instant,
    record: &mut Record,
) -> Result<Vec<u8>, Outcome> {
    match tokio::time::timeout_at(deadline, proxy_in::read_inbound(stream)).await {
        Err(_) => Err(Outcome::HelloTimeout),
        Ok(Err(e)) => Err(Outcome::BadProxyHeader(e)),
        Ok(Ok(inbound)) => {
            if let Some(client) = inbound.client {
                record.client = client;
            }
            Ok(inbound.rest)
        }
    }
}

/// A connection that does not start with TLS may be a plain obfuscated2 client when
/// `mtproto.allow_plain` is on; anything else comes back as [`Gate::Fallback`] unchanged.
async fn try_plain_mtproto(
    stream: TcpStream,
    client_ip: std::net::IpAddr,
    flight: &FirstFlight,
    bytes: Vec<u8>,
    snapshot: &Snapshot,
    shutdown: &Shutdown,
) -> Gate {
    match (flight, &snapshot.config.mtproto, &snapshot.mtproto) {
        (FirstFlight::NotTls, Some(settings), Some(state)) if settings.allow_plain => {
            let core = Core { settings, state };
            Box::pin(gate::plain(stream, client_ip, bytes, core, shutdown)).await
        }
        _ => Gate::Fallback {
            client: stream,
            bytes,
        },
    }
}

/// Carries out the route's action. Every path but TLS termination ends in one passthrough
/// relay; `flight` is consumed before it so the parsed hello is not kept for the
/// connection's whole life. TLS termination and MTProto sessions run here, holding the
/// admission slots; a passthrough relay is handed back ready to start.
async fn dispatch(
    arrival: Arrival,
    action: &Action,
    snapshot: &Snapshot,
    conn: &Conn<'_>,
    record: &mut Record,
) -> Step {
    let Arrival {
        stream,
        flight,
        bytes,
        admitted,
    } = arrival;
    let (stream, forward, bytes) = match action {
        Action::Forward(forward) => {
            drop(flight);
            (stream, forward, bytes)
        }
        Action::Terminate(terminate) => {
            drop(flight);
            let terminator = snapshot.terminators.get(&terminate.settings).cloned();
            let terminated = terminate_tls(stream, terminate, terminator, bytes, conn, record);
            return Box::pin(terminated).await.into();
        }
        Action::Mtproto(target) => {
            let gate = match (flight, &snapshot.config.mtproto, &snapshot.mtproto) {
                (FirstFlight::Tls(hello), Some(settings), Some(state)) => {
                    let client_ip = record.client.ip();
                    let forward = &target.forward;
                    let mirror = Mirror {
                        route: record.route.as_deref().unwrap_or_default(),
                        target,
                        head: proxy_out::encode(forward.proxy_protocol, record.client, conn.local),
                        budget: conn.config.timeouts.connect,
                        outbound: conn.ctx.outbound.clone(),
                        pool: pool::running_or_fresh(&snapshot.pools, &forward.pool),
                        client: client_ip,
                    };
                    let core = Core { settings, state };
                    let shutdown = conn.shutdown;
                    let check = async move {
                        let view = hello_view(&hello);
                        gate::fake_tls(stream, client_ip, view, bytes, mirror, core, shutdown).await
                    };
                    Box::pin(check).await
                }
                _ => Gate::Fallback {
                    client: stream,
                    bytes,
                },
            };
            match gate {
                Gate::Fallback { client, bytes } => (client, &target.forward, bytes),
                served => return mtproto_outcome(served, record).into(),
            }
        }
    };
    match open_backend(forward, &bytes, conn, record).await {
        Ok((backend, held)) => Step::Relay(Passthrough {
            client: stream,
            backend,
            _held: held,
            _admitted: admitted,
        }),
        Err(outcome) => outcome.into(),
    }
}

/// What the MTProto gate needs of the parsed hello.
fn hello_view(hello: &ClientHello) -> HelloView<'_> {
    HelloView {
        single_record: &hello.single_record,
        raw_len: hello.raw_len,
        session_id: &hello.session_id,
        cipher_suites: &hello.cipher_suites,
        server_name: hello.server_name.as_deref(),
    }
}

/// What the relay stages need besides the client and the route.
struct Conn<'a> {
    /// The listener address the client connected to (the PROXY header's destination).
    local: SocketAddr,
    config: &'a Config,
    ctx: &'a Context,
    /// The connection's view of the gateway's shutdown, for its relay.
    shutdown: &'a Shutdown,
    /// The snapshot taken at accept (its backend pools).
    snapshot: &'a Snapshot,
}

/// Records an MTProto session's facts and turns it into the connection's outcome.
fn mtproto_outcome(gate: Gate, record: &mut Record) -> Outcome {
    match gate {
        Gate::Served {
            user,
            dc,
            dc_addr,
            from_client,
            to_client,
            end,
        } => {
            record.user = Some(user);
            record.backend = dc_addr;
            record.upstream_bytes = from_client;
            record.downstream_bytes = to_client;
            Outcome::Mtproto { dc, end }
        }
        Gate::Rejected {
            user,
            reason,
            from_client,
            to_client,
        } => {
            record.user = Some(user);
            record.upstream_bytes = from_client;
            record.downstream_bytes = to_client;
            Outcome::MtprotoRejected(reason)
        }
        Gate::DcUnreachable { user, dc, error } => {
            record.user = Some(user);
            Outcome::DcUnreachable { dc, error }
        }
        // Callers handle fallbacks themselves; reaching here would be a bug, not a client's doing.
        Gate::Fallback { .. } => Outcome::NoRoute,
    }
}

/// Connects to the route's backends (through its pool: balancing, health) and sends the
/// PROXY header (if any) plus `first`.
async fn open_backend(
    forward: &Forward,
    first: &[u8],
    conn: &Conn<'_>,
    record: &mut Record,
) -> Result<(TcpStream, Held), Outcome> {
    // Each attempt is announced to the loop guard before it connects: the other end of a
    // loop can be accepted before `connect` returns here.
    let outbound = &conn.ctx.outbound;
    // Every route's pool is built with its snapshot.
    let pool = pool::running_or_fresh(&conn.snapshot.pools, &forward.pool);
    let Guarded {
        stream: mut backend,
        addr,
        held,
    } = outbound
        .connect(&pool, record.client.ip(), conn.config.timeouts.connect)
        .await
        .map_err(Outcome::ConnectFailed)?;
    record.backend = Some(addr);
    let mut head = proxy_out::encode(forward.proxy_protocol, record.client, conn.local);
    head.extend_from_slice(first);
    backend
        .write_all(&head)
        .await
        .map_err(|e| Outcome::RelayError(Side::Backend.error(e)))?;
    record.upstream_bytes = first.len() as u64;
    Ok((backend, held))
}

/// Records the relay's counters and turns its end into the connection's outcome.
fn relayed(stats: RelayStats, record: &mut Record) -> Outcome {
    record.upstream_bytes += stats.upstream_bytes;
    record.downstream_bytes = stats.downstream_bytes;
    match stats.end {
        RelayEnd::Finished => Outcome::Closed,
        RelayEnd::IdleTimeout => Outcome::IdleTimeout,
        RelayEnd::Failed(e) => Outcome::RelayError(e),
        RelayEnd::Shutdown => Outcome::Shutdown,
    }
}

/// TLS termination: handshake here (rustls reads the peeked hello first), then relay the
/// plaintext to the backend.
async fn terminate_tls(
    client: TcpStream,
    terminate: &Terminate,
    terminator: Option<Arc<TlsTerminator>>,
    peeked: Vec<u8>,
    conn: &Conn<'_>,
    record: &mut Record,
) -> Outcome {
    let Some(terminator) = terminator else {
        return Outcome::TlsFailed(TlsError::NoCertificateYet {
            names: record.route.clone().unwrap_or_default(),
            reason: "the route's TLS terminator is not running".into(),
        });
    };
    let session = match terminator.accept(PrefixedStream::new(peeked, client)).await {
        Ok(Accepted::Session(session)) => session,
        Ok(Accepted::AcmeChallenge) => return Outcome::AcmeChallenge,
        Err(e) => return Outcome::TlsFailed(e),
    };
    let (backend, _held) = match open_backend(&terminate.forward, &[], conn, record).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    let idle = conn.config.timeouts.idle;
    let stats = relay::relay_streams(session.stream, backend, idle, conn.shutdown).await;
    relayed(stats, record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_mtproto_client_has_its_own_outcome() {
        let outcome = Outcome::MtprotoRejected(RejectReason::BadInit);
        assert_eq!(outcome.kind(), "mtproto_rejected");
        assert_eq!(
            outcome.to_string(),
            "mtproto_rejected (no valid obfuscated2 init)"
        );
    }
}
