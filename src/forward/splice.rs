//! One passthrough relay direction on Linux: light traffic is copied through a small buffer
//! as elsewhere, and a burst is moved by the kernel, `splice(2)` from the source socket into
//! a pipe and from the pipe into the destination socket, so its bytes never cross into user
//! space.
//!
//! The phases follow the relays' buffer policy ([`crate::forward::buffer`]): nothing is held
//! before the first byte; a message of light traffic takes a small buffer that goes back as
//! soon as the source has nothing more; a read that fills the small buffer starts a burst,
//! which gets a pipe, kept until [`QUIET`] passes without data. So an idle relayed connection
//! holds neither buffer nor pipe, and a request/response connection never makes a pipe. The
//! pipe is empty whenever the direction waits for its source (everything read into it is
//! written out before the next read), so the byte count, the idle clock and the shutdown's
//! wait for in-flight bytes mean what they mean for the buffered relay, and the source's EOF
//! becomes a write shutdown of the destination (half-close) in either phase.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::forward::buffer::{ByteBuffer, QUIET};
use crate::forward::relay::{
    forward_ready, shutdown_write, until_readable, until_writable, Direction, Forwarded, SideError,
    SMALL_BUFFER,
};

/// Most bytes one `splice` moves from the source into the pipe: the default pipe size.
const PIPE_CHUNK: usize = 64 * 1024;

/// Where a phase of a direction left it.
enum Phase {
    /// The source ended; the destination's write side is shut down.
    Ended,
    /// A read filled the small buffer: a burst has started.
    Burst,
    /// A burst ended with a quiet spell; its pipe is closed.
    Quiet,
}

/// The two ends of a pipe, both non-blocking.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// One direction between TCP sockets; see the module documentation.
pub(crate) async fn pump_splice(dir: &Direction<'_>) -> Result<(), SideError> {
    loop {
        if let Phase::Ended = light(dir).await? {
            return Ok(());
        }
        if let Phase::Ended = burst(dir).await? {
            return Ok(());
        }
    }
}

/// Copies light traffic through a small buffer, held only while the source has bytes,
/// until the source ends or a read fills the buffer.
async fn light(dir: &Direction<'_>) -> Result<Phase, SideError> {
    let mut buffer = ByteBuffer::bytes(SMALL_BUFFER, SMALL_BUFFER);
    loop {
        until_readable(dir.from)
            .await
            .map_err(|e| dir.from_side.error(e))?;
        loop {
            match forward_ready(dir, &mut buffer).await? {
                Forwarded::Ended => return Ok(Phase::Ended),
                Forwarded::Drained => break,
                Forwarded::Moved { filled: true } => return Ok(Phase::Burst),
                Forwarded::Moved { filled: false } => {}
            }
        }
    }
}

/// Moves a burst through a pipe until the source ends or stays quiet for [`QUIET`].
async fn burst(dir: &Direction<'_>) -> Result<Phase, SideError> {
    let (from, to) = (dir.from, dir.to);
    // No pipe (file descriptors exhausted) fails the relay like a failed read.
    let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
        .map_err(|e| dir.from_side.error(e.into()))?;
    let pipe = Pipe { read, write };
    loop {
        // The burst's first wake is the read that filled the small buffer: bytes may wait.
        loop {
            let spliced = from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    &pipe.write,
                    None,
                    PIPE_CHUNK,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            let n = match spliced {
                Ok(0) => {
                    shutdown_write(to);
                    return Ok(Phase::Ended);
                }
                Ok(n) => n,
                // The pipe is empty here, so "would block" is the socket's.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(dir.from_side.error(e)),
            };
            let pending = dir.progress.in_flight.hold();
            drain_into(&pipe, n, to)
                .await
                .map_err(|e| dir.to_side.error(e))?;
            drop(pending);
            dir.progress.moved(dir.counter, n);
            // Like `write_all_tcp`: count against tokio's budget so the other direction,
            // which shares the task, gets its turn.
            tokio::task::consume_budget().await;
        }
        match tokio::time::timeout(QUIET, until_readable(from)).await {
            Ok(ready) => ready.map_err(|e| dir.from_side.error(e))?,
            Err(_) => return Ok(Phase::Quiet),
        }
    }
}

/// Writes the `n` bytes in `pipe` to `to`, waiting for write readiness when its send
/// buffer is full.
async fn drain_into(pipe: &Pipe, mut n: usize, to: &TcpStream) -> io::Result<()> {
    while n > 0 {
        let spliced = to.try_io(Interest::WRITABLE, || {
            splice(
                &pipe.read,
                None,
                to.as_fd(),
                None,
                n,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )
            .map_err(io::Error::from)
        });
        match spliced {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => n -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => until_writable(to).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
