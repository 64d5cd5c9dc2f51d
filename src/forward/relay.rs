//! Copying bytes both ways between a client and a backend until both sides are done.
//!
//! One side's EOF becomes a write shutdown on the other (half-close is propagated); an error
//! on either side ends both; `timeouts.idle` closes a relay that moved no byte in either
//! direction for that long, and a gateway shutdown closes it once it is quiet (see
//! [`crate::forward::shutdown`]). Each direction's buffer follows [`crate::forward::buffer`]:
//! none before the first byte, reused while bytes flow, given back after a quiet spell, so an
//! idle relayed connection holds no copy buffer at all.

use std::future::{poll_fn, Future};
use std::io::{self, Read};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::forward::buffer::ByteBuffer;
use crate::forward::idle::IdleClock;
use crate::forward::shutdown::{InFlight, Shutdown, Watched};

/// A direction's buffer for its first reads: a request, a handshake record, a keep-alive.
pub(crate) const SMALL_BUFFER: usize = 4 * 1024;
/// A direction's buffer during a burst: large enough for bulk throughput.
const LARGE_BUFFER: usize = 64 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending direction.
    Finished,
    /// No byte moved in either direction for `timeouts.idle`.
    IdleTimeout,
    /// A socket failed (reset, broken pipe, ...).
    Failed(SideError),
    /// The gateway is shutting down and the relay was quiet, or every connection was cut.
    Shutdown,
}

/// Which end of a relay a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The connection that reached frontgate.
    Client,
    /// The connection frontgate opened to the route's backend.
    Backend,
}

/// A socket error and the side it happened on, so a client's reset is not mistaken for a
/// broken backend in the logs.
#[derive(Debug, thiserror::Error)]
#[error("{} {error}", match .side { Side::Client => "client", Side::Backend => "backend" })]
pub struct SideError {
    /// Where it happened.
    pub side: Side,
    /// What happened.
    pub error: io::Error,
}

impl Side {
    /// Tags `error` with this side.
    pub fn error(self, error: io::Error) -> SideError {
        SideError { side: self, error }
    }
}

/// What a relay moved and how it ended.
#[derive(Debug)]
pub struct RelayStats {
    /// Bytes copied from the client to the backend.
    pub upstream_bytes: u64,
    /// Bytes copied from the backend to the client.
    pub downstream_bytes: u64,
    /// Why it stopped.
    pub end: RelayEnd,
}

/// Shared between both directions: byte counts, the time of the last byte either way and
/// the writes still pending.
#[derive(Default)]
pub(crate) struct Progress {
    clock: IdleClock,
    /// Writes not finished yet (a shutdown waits for them).
    pub(crate) in_flight: InFlight,
    upstream: AtomicU64,
    downstream: AtomicU64,
}

impl Progress {
    /// Counts `n` bytes delivered in one direction and restarts the idle clock.
    pub(crate) fn moved(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.clock.touch();
    }

    /// Runs both directions until they finish, one fails, nothing moves for `idle`, or the
    /// gateway drains while the relay is quiet.
    /// (`both` is pinned by the caller so that the relay's state holds it once.)
    async fn drive<F, T>(&self, both: Pin<&mut F>, idle: Duration, shutdown: &Shutdown) -> RelayEnd
    where
        F: Future<Output = Result<T, SideError>>,
    {
        tokio::select! {
            // Bytes that are ready are relayed before a timer may end the relay.
            biased;
            result = both => match result {
                Ok(_) => RelayEnd::Finished,
                Err(e) => RelayEnd::Failed(e),
            },
            watched = shutdown.watch(&self.clock, &self.in_flight, idle) => match watched {
                Watched::Idle => RelayEnd::IdleTimeout,
                Watched::Drained | Watched::Cut => RelayEnd::Shutdown,
            },
        }
    }

    fn finish(self, end: RelayEnd) -> RelayStats {
        RelayStats {
            upstream_bytes: self.upstream.into_inner(),
            downstream_bytes: self.downstream.into_inner(),
            end,
        }
    }
}

/// Relays between two TCP sockets until both directions are closed, one fails, the relay is
/// idle for `idle`, or `shutdown` finds it quiet. On Linux the kernel moves the bytes
/// (`splice(2)` through a pipe per direction, [`crate::forward::splice`]); elsewhere each
/// direction copies through a buffer.
pub async fn relay_tcp(
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
    shutdown: &Shutdown,
) -> RelayStats {
    let progress = Progress::default();
    let upstream = Direction {
        from: client,
        from_side: Side::Client,
        to: backend,
        to_side: Side::Backend,
        progress: &progress,
        counter: &progress.upstream,
    };
    let downstream = Direction {
        from: backend,
        from_side: Side::Backend,
        to: client,
        to_side: Side::Client,
        progress: &progress,
        counter: &progress.downstream,
    };
    #[cfg(target_os = "linux")]
    let both = crate::forward::splice::pump_both(&upstream, &downstream);
    #[cfg(not(target_os = "linux"))]
    let both = async { tokio::try_join!(pump_tcp(&upstream), pump_tcp(&downstream)) };
    let end = progress.drive(pin!(both), idle, shutdown).await;
    progress.finish(end)
}

/// One direction of a TCP relay: where it reads, where it writes, and where it counts.
/// The pumps take it by reference, so each of their nested futures holds one pointer
/// instead of a copy of every argument (an idle relay's state is a benchmark target).
pub(crate) struct Direction<'a> {
    /// The socket read from.
    pub(crate) from: &'a TcpStream,
    /// Which end `from` is, for errors.
    pub(crate) from_side: Side,
    /// The socket written to.
    pub(crate) to: &'a TcpStream,
    /// Which end `to` is, for errors.
    pub(crate) to_side: Side,
    /// The relay's shared clock and in-flight count.
    pub(crate) progress: &'a Progress,
    /// This direction's byte count.
    pub(crate) counter: &'a AtomicU64,
}

/// One direction between TCP sockets, readiness-driven so that no buffer is taken before
/// the first byte.
#[cfg(not(target_os = "linux"))]
async fn pump_tcp(dir: &Direction<'_>) -> Result<(), SideError> {
    let mut buffer = ByteBuffer::bytes(SMALL_BUFFER, LARGE_BUFFER);
    loop {
        buffer
            .wait(pin!(until_readable(dir.from)))
            .await
            .map_err(|e| dir.from_side.error(e))?;
        loop {
            match forward_ready(dir, &mut buffer).await? {
                Forwarded::Ended => return Ok(()),
                Forwarded::Drained => break,
                Forwarded::Moved { filled: true } => buffer.grow(),
                Forwarded::Moved { filled: false } => {}
            }
        }
    }
}

/// What [`forward_ready`] did with one read.
#[cfg(not(target_os = "linux"))]
enum Forwarded {
    /// The source ended; the destination's write side is shut down.
    Ended,
    /// The source has nothing more now; the buffer was given back.
    Drained,
    /// A read was written on in full; `filled` when it filled the buffer.
    Moved {
        /// The read took the whole buffer: the source may have more than it holds.
        filled: bool,
    },
}

/// One non-blocking read of the direction's source into `buffer`, written in full to its
/// destination and counted (the copy step of the readiness-driven directions).
#[cfg(not(target_os = "linux"))]
async fn forward_ready(
    dir: &Direction<'_>,
    buffer: &mut ByteBuffer,
) -> Result<Forwarded, SideError> {
    let buf = buffer.get();
    let n = match read_ready(dir.from, buf) {
        Ok(0) => {
            shutdown_write(dir.to);
            return Ok(Forwarded::Ended);
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            buffer.drained();
            return Ok(Forwarded::Drained);
        }
        Err(e) => return Err(dir.from_side.error(e)),
    };
    let pending = dir.progress.in_flight.hold();
    write_all_tcp(dir.to, &buf[..n])
        .await
        .map_err(|e| dir.to_side.error(e))?;
    drop(pending);
    dir.progress.moved(dir.counter, n);
    Ok(Forwarded::Moved {
        filled: n == buf.len(),
    })
}

/// One non-blocking read of `from` into `buf`. A read shorter than `buf` has emptied the
/// socket's receive queue, so on Linux tokio is told the socket is no longer readable: the
/// direction's next read waits for epoll's next edge instead of finding out with a read that
/// fails with `EAGAIN` (tokio's own `poll_read` does the same; an EOF already seen stays
/// readable, since tokio never clears a closed state).
pub(crate) fn read_ready(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = None;
    let read = from.try_io(Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(from)).read(buf)?;
        if cfg!(target_os = "linux") && 0 < n && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => read,
    }
}

/// Writes all of `data` to a socket shared with a reader of the same socket (no `&mut`
/// needed), waiting for write readiness when its send buffer is full.
pub(crate) async fn write_all_tcp(to: &TcpStream, data: &[u8]) -> io::Result<()> {
    // Polled by hand rather than awaiting a writability future: the wait keeps no state of
    // its own (see `until_readable`).
    let mut written = 0;
    poll_fn(|cx| poll_write_tcp(to, data, &mut written, cx)).await?;
    // `try_read` and `try_write` never yield: a direction whose peers are always ready (a
    // client uploading flat out over loopback) would keep its task to itself and starve the
    // other direction, which shares the task. Each write counts against tokio's cooperative
    // budget, so the task yields now and then.
    tokio::task::consume_budget().await;
    Ok(())
}

/// Writes `data[*written..]` to `to`, advancing `written` as bytes go out and waiting for
/// write readiness (the waker in the socket's one writer slot) when its send buffer is full.
pub(crate) fn poll_write_tcp(
    to: &TcpStream,
    data: &[u8],
    written: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *written < data.len() {
        match to.try_write(&data[*written..]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(to.poll_write_ready(cx))?,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Waits until `stream` is readable. tokio keeps the task's waker in the socket's one reader
/// slot (a relay direction is the only reader of its source), where `readable()` would keep a
/// 150-byte waiter in the relay's own state: on every idle connection, for its whole life.
pub(crate) async fn until_readable(stream: &TcpStream) -> io::Result<()> {
    poll_fn(|cx| stream.poll_read_ready(cx)).await
}

/// Propagates EOF; the peer may already be gone, which is not an error worth reporting.
pub(crate) fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Relays between any two byte streams (e.g. a TLS stream terminated here and a plain
/// backend), with the same half-close, idle and shutdown semantics as [`relay_tcp`].
pub async fn relay_streams<A, B>(
    client: A,
    backend: B,
    idle: Duration,
    shutdown: &Shutdown,
) -> RelayStats
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let progress = Progress::default();
    let (client_read, client_write) = tokio::io::split(client);
    let (backend_read, backend_write) = tokio::io::split(backend);
    let both = async {
        tokio::try_join!(
            pump_stream(
                (client_read, Side::Client),
                (backend_write, Side::Backend),
                &progress,
                &progress.upstream
            ),
            pump_stream(
                (backend_read, Side::Backend),
                (client_write, Side::Client),
                &progress,
                &progress.downstream
            ),
        )
    };
    let end = progress.drive(pin!(both), idle, shutdown).await;
    progress.finish(end)
}

/// One direction between byte streams. A stream has no readiness to wait on, so each round
/// waits for its first byte in a one-byte array (no buffer taken while idle), then reads
/// what else is ready into the direction's buffer and writes it all at once.
async fn pump_stream<R, W>(
    (mut from, from_side): (R, Side),
    (mut to, to_side): (W, Side),
    progress: &Progress,
    counter: &AtomicU64,
) -> Result<(), SideError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = ByteBuffer::bytes(SMALL_BUFFER, LARGE_BUFFER);
    let mut eof = false;
    while !eof {
        let mut first = [0u8; 1];
        let n = buffer
            .wait(pin!(from.read(&mut first)))
            .await
            .map_err(|e| from_side.error(e))?;
        if n == 0 {
            break;
        }
        let buf = buffer.get();
        buf[0] = first[0];
        let mut len = 1;
        let mut drained = false;
        while len < buf.len() {
            match read_now(&mut from, &mut buf[len..]).await {
                None => {
                    drained = true;
                    break;
                }
                Some(Ok(0)) => {
                    eof = true;
                    break;
                }
                Some(Ok(n)) => len += n,
                Some(Err(e)) => return Err(from_side.error(e)),
            }
        }
        let pending = progress.in_flight.hold();
        // Flushed too: a TLS stream may keep records it could not send yet until flushed.
        let written = async {
            to.write_all(&buf[..len]).await?;
            to.flush().await
        };
        written.await.map_err(|e| to_side.error(e))?;
        drop(pending);
        progress.moved(counter, len);
        if len == buf.len() {
            buffer.grow();
        } else if drained {
            buffer.drained();
        }
    }
    // The peer may already have closed its side; nothing left to tell it.
    let _ = to.shutdown().await;
    Ok(())
}

/// One read of what `from` has ready now, without waiting: `None` when nothing is.
async fn read_now<R: AsyncRead + Unpin>(from: &mut R, buf: &mut [u8]) -> Option<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    std::future::poll_fn(|cx| match Pin::new(&mut *from).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(buf.filled().len()))),
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::shutdown::ShutdownSwitch;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    /// A connection's shutdown handle from a switch nobody throws.
    fn no_shutdown() -> Shutdown {
        ShutdownSwitch::new().subscribe()
    }

    /// A TCP relay with a 5 s idle timeout, as a task.
    fn spawn_tcp_relay(
        client_side: TcpStream,
        backend_side: TcpStream,
    ) -> tokio::task::JoinHandle<RelayStats> {
        tokio::spawn(async move {
            let idle = Duration::from_secs(5);
            relay_tcp(&client_side, &backend_side, idle, &no_shutdown()).await
        })
    }

    /// A connected pair of sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let relay = spawn_tcp_relay(client_side, backend_side);
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "backend must see EOF after the request");
        let reply = vec![7u8; 300_000];
        backend.write_all(&reply).await.unwrap();
        backend.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, reply);
        let stats = relay.await.unwrap();
        assert!(matches!(stats.end, RelayEnd::Finished), "{:?}", stats.end);
        assert_eq!((stats.upstream_bytes, stats.downstream_bytes), (7, 300_000));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_relay_is_closed() {
        let (_client, client_side) = pair().await;
        let (backend_side, _backend) = pair().await;
        let stats = relay_tcp(
            &client_side,
            &backend_side,
            Duration::from_secs(30),
            &no_shutdown(),
        )
        .await;
        assert!(
            matches!(stats.end, RelayEnd::IdleTimeout),
            "{:?}",
            stats.end
        );
    }

    #[tokio::test]
    async fn a_client_reset_is_blamed_on_the_client() {
        let (client, client_side) = pair().await;
        let (backend_side, _backend) = pair().await;
        let relay = spawn_tcp_relay(client_side, backend_side);
        // Linger 0: close sends RST instead of FIN.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let stats = relay.await.unwrap();
        match stats.end {
            RelayEnd::Failed(SideError { side, error }) => {
                assert_eq!(side, Side::Client);
                assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
            }
            other => panic!("expected a client reset, got {other:?}"),
        }
    }

    /// `len` bytes of a pattern that a shifted or dropped byte would break.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Sends `data` in writes of varied sizes (small ones and bursts), then half-closes.
    async fn send_varied<W: AsyncWrite + Unpin>(to: &mut W, data: &[u8]) {
        let sizes = [1, 7, 4096, 4095, 70_000, 300, 65_536, 1_000_000];
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            to.write_all(&data[at..end]).await.unwrap();
            at = end;
        }
        to.shutdown().await.unwrap();
    }

    /// Both relays move every byte each way, in order, and pass each half-close on.
    async fn moves_every_byte<F, Fut>(relay: F)
    where
        F: FnOnce(TcpStream, TcpStream) -> Fut,
        Fut: Future<Output = RelayStats> + Send + 'static,
    {
        let (client, client_side) = pair().await;
        let (backend_side, backend) = pair().await;
        let relay = tokio::spawn(relay(client_side, backend_side));
        let (up, down) = (pattern(3_000_003, 0x5a), pattern(2_000_001, 0xa5));
        let (mut client_read, mut client_write) = client.into_split();
        let (mut backend_read, mut backend_write) = backend.into_split();
        let upload = async {
            send_varied(&mut client_write, &up).await;
        };
        let backend_side = async {
            let mut got = Vec::new();
            backend_read.read_to_end(&mut got).await.unwrap();
            assert!(got == up, "the backend got every byte, then EOF");
            // The client's half-close did not close the other direction.
            send_varied(&mut backend_write, &down).await;
        };
        let download = async {
            let mut got = Vec::new();
            client_read.read_to_end(&mut got).await.unwrap();
            assert!(got == down, "the client got every byte, then EOF");
        };
        tokio::join!(upload, backend_side, download);
        let stats = relay.await.unwrap();
        assert!(matches!(stats.end, RelayEnd::Finished), "{:?}", stats.end);
        assert_eq!(
            (stats.upstream_bytes, stats.downstream_bytes),
            (up.len() as u64, down.len() as u64)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_relay_moves_every_byte_with_half_close() {
        moves_every_byte(|client, backend| async move {
            relay_tcp(&client, &backend, Duration::from_secs(30), &no_shutdown()).await
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_relay_moves_every_byte_with_half_close() {
        moves_every_byte(|client, backend| async move {
            relay_streams(client, backend, Duration::from_secs(30), &no_shutdown()).await
        })
        .await;
    }

    /// A destination that reads slowly fills its socket: the relay waits for it in the
    /// middle of its writes (a burst's pipe drain, a light write) and still delivers every
    /// byte in order and counts it, and the transfer is not mistaken for idleness.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_reader_gets_every_byte_and_each_is_counted() {
        let (client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let relay = spawn_tcp_relay(client_side, backend_side);
        let up = pattern(6 * 1024 * 1024 + 3, 0x33);
        let (mut client_read, mut client_write) = client.into_split();
        let upload = async {
            // A small message first (light traffic), then a burst.
            client_write.write_all(&up[..2]).await.unwrap();
            client_write.write_all(&up[2..]).await.unwrap();
            client_write.shutdown().await.unwrap();
        };
        let slow_backend = async {
            let (mut got, mut buf) = (Vec::new(), vec![0u8; 16 * 1024]);
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                match backend.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            assert!(got == up, "every byte, in order");
            backend.write_all(b"bye").await.unwrap();
            backend.shutdown().await.unwrap();
        };
        let download = async {
            let mut got = Vec::new();
            client_read.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"bye");
        };
        tokio::join!(upload, slow_backend, download);
        let stats = relay.await.unwrap();
        assert!(matches!(stats.end, RelayEnd::Finished), "{:?}", stats.end);
        assert_eq!(
            (stats.upstream_bytes, stats.downstream_bytes),
            (up.len() as u64, 3)
        );
    }

    /// One side's script: writes of these sizes, some after a pause.
    type Script = Vec<(usize, bool)>;

    /// Writes from one byte (light traffic) to bursts several times the small buffer, each
    /// after a pause longer than a burst's [`crate::forward::buffer::QUIET`] or not.
    fn script() -> impl Strategy<Value = Script> {
        let size = prop_oneof![1usize..16, 1_000usize..5_000, 60_000usize..300_000];
        prop::collection::vec((size, any::<bool>()), 1..7)
    }

    /// Plays `script` of `data` into `to` (each pause 1.5 s of the paused clock), then
    /// half-closes.
    async fn play<W: AsyncWrite + Unpin>(to: &mut W, script: &Script, data: &[u8]) {
        let mut at = 0;
        for &(size, pause) in script {
            if pause {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
            to.write_all(&data[at..at + size]).await.unwrap();
            at += size;
        }
        to.shutdown().await.unwrap();
    }

    /// Runs `relay` between two socket pairs on a paused clock while `up` and `down` play
    /// at once, and checks that every byte arrived in order each way, then EOF.
    fn play_through<F, Fut>(up: &Script, down: &Script, relay: F) -> (u64, u64, RelayStats)
    where
        F: FnOnce(TcpStream, TcpStream) -> Fut,
        Fut: Future<Output = RelayStats> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, client_side) = pair().await;
            let (backend_side, backend) = pair().await;
            let relay = tokio::spawn(relay(client_side, backend_side));
            let total = |script: &Script| script.iter().map(|(size, _)| size).sum::<usize>();
            let (up_bytes, down_bytes) = (pattern(total(up), 0x3c), pattern(total(down), 0xc3));
            let (mut client_read, mut client_write) = client.into_split();
            let (mut backend_read, mut backend_write) = backend.into_split();
            let (mut at_backend, mut at_client) = (Vec::new(), Vec::new());
            tokio::join!(
                play(&mut client_write, up, &up_bytes),
                play(&mut backend_write, down, &down_bytes),
                async { backend_read.read_to_end(&mut at_backend).await.unwrap() },
                async { client_read.read_to_end(&mut at_client).await.unwrap() },
            );
            assert!(at_backend == up_bytes, "every byte up, in order, then EOF");
            assert!(
                at_client == down_bytes,
                "every byte down, in order, then EOF"
            );
            let stats = relay.await.unwrap();
            (up_bytes.len() as u64, down_bytes.len() as u64, stats)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 32,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the sizes of the writes and the pauses between them, each way at once,
        /// both relays move every byte in order, pass each half-close on and count exactly:
        /// the TCP relay's bursts start, end after a quiet spell (the paused clock makes the
        /// pauses instant) and start again with light traffic between them, and the stream
        /// relay's buffer grows and goes back the same way.
        #[test]
        fn both_relays_move_any_script_of_writes_and_pauses(up in script(), down in script()) {
            let idle = Duration::from_secs(86_400);
            let by_tcp = play_through(&up, &down, |client, backend| async move {
                relay_tcp(&client, &backend, idle, &no_shutdown()).await
            });
            let by_streams = play_through(&up, &down, |client, backend| async move {
                relay_streams(client, backend, idle, &no_shutdown()).await
            });
            for (sent_up, sent_down, stats) in [by_tcp, by_streams] {
                prop_assert!(matches!(stats.end, RelayEnd::Finished), "{:?}", stats.end);
                prop_assert_eq!((stats.upstream_bytes, stats.downstream_bytes), (sent_up, sent_down));
            }
        }
    }

    #[tokio::test]
    async fn generic_relay_half_closes_too() {
        let (mut a, a_side) = tokio::io::duplex(1024);
        let (b_side, mut b) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            relay_streams(a_side, b_side, Duration::from_secs(5), &no_shutdown()).await
        });
        a.write_all(b"ping").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        b.write_all(b"pong").await.unwrap();
        drop(b);
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
        let stats = relay.await.unwrap();
        assert_eq!((stats.upstream_bytes, stats.downstream_bytes), (4, 4));
    }
}
