//! The live mirror: the route's own backend answers the client's ClientHello, and its first
//! flight is the shape of the fake one ([`crate::mtproto::mimic`]).
//!
//! The end of the backend's flight is detected from its records ([`mimic::arrival`]): a
//! TLS 1.3 Finished-sized last record ends it at once; otherwise whole records followed by a
//! quiet spell of twice the backend's first-byte time (2 to 20 ms) end it (servers write
//! their first flight at once, then wait for the client, PROTOCOL.md §8). The mirror connection is closed right after, before the
//! client's session goes on, so the backend sees a client that gave up after its hello.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::admission::loop_guard::{Guarded, OutboundAddrs};
use crate::forward::pool::Pool;
use crate::forward::upstream::ConnectError;
use crate::mtproto::mimic::{self, Arrival, MAX_FLIGHT_LEN};

/// The longest a flight whose end cannot be seen in its records must stay quiet to count as
/// complete. The wait is twice the time the backend took to send its first byte, between
/// [`MIN_QUIET`] and this: a server writes its whole first flight at once, so a gap longer
/// than its own answer time means the flight is over (on loopback that is about a
/// millisecond, not a fixed 20 ms a prober could time).
pub const QUIET: Duration = Duration::from_millis(20);

/// The shortest quiet wait (scheduling noise on a busy box).
pub const MIN_QUIET: Duration = Duration::from_millis(2);

/// Why no backend flight was had.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// No backend of the route accepted the connection.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// Writing the hello or reading the answer failed.
    #[error("backend I/O: {0}")]
    Io(#[from] io::Error),
    /// The backend closed before its flight was complete.
    #[error("the backend closed after {0} bytes")]
    Closed(usize),
    /// The flight did not arrive within the time allowed.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// Sends `head` (the route's PROXY header, if any) and `hello` to the route's backend and
/// returns its first flight, within `budget` for the connect and the answer together. The
/// backend is the one the route's `pool` gives a connection from `client` (balance and health
/// as for every connection; a failed connect counts against the server), and the connection
/// is registered with the fronting-loop guard like every backend connection.
pub async fn backend_flight(
    pool: &Arc<Pool>,
    client: IpAddr,
    head: &[u8],
    hello: &[u8],
    budget: Duration,
    outbound: &Arc<OutboundAddrs>,
) -> Result<Vec<u8>, MirrorError> {
    let started = Instant::now();
    let deadline = started.checked_add(budget).unwrap_or(started);
    let Guarded {
        stream: mut backend,
        held: _held,
        ..
    } = outbound.connect(pool, client, budget).await?;
    let mut request = Vec::with_capacity(head.len() + hello.len());
    request.extend_from_slice(head);
    request.extend_from_slice(hello);
    tokio::time::timeout_at(deadline, backend.write_all(&request))
        .await
        .map_err(|_| MirrorError::Timeout(budget))??;
    let asked = Instant::now();
    let mut quiet = QUIET;
    let mut flight = Vec::with_capacity(4096);
    loop {
        let wait_until = match mimic::arrival(&flight) {
            Arrival::Complete => return Ok(flight),
            Arrival::Plausible => deadline.min(Instant::now() + quiet),
            Arrival::Incomplete => deadline,
        };
        flight.reserve(4096.min(MAX_FLIGHT_LEN - flight.len()));
        match tokio::time::timeout_at(wait_until, backend.read_buf(&mut flight)).await {
            Ok(Ok(0)) if mimic::arrival(&flight) == Arrival::Plausible => return Ok(flight),
            Ok(Ok(0)) => return Err(MirrorError::Closed(flight.len())),
            Ok(Ok(n)) if n == flight.len() => {
                quiet = (2 * asked.elapsed()).clamp(MIN_QUIET, QUIET);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if mimic::arrival(&flight) == Arrival::Plausible => return Ok(flight),
            Err(_) => return Err(MirrorError::Timeout(budget)),
        }
    }
}
