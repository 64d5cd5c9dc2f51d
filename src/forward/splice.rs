//! The passthrough relay's directions on Linux: light traffic is copied through a small
//! buffer as elsewhere, and a burst is moved by the kernel, `splice(2)` from the source socket
//! into a pipe and from the pipe into the destination socket, so its bytes never cross into
//! user space.
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
//!
//! Each direction is a small state machine polled by hand (`SplicePump`) rather than an
//! `async fn`: an idle relay holds only the phase it is in (a few words per direction, the
//! burst's timer boxed) instead of the room of every nested future a phase could await, and
//! memory per idle relayed connection is a benchmark target.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::task::coop;
use tokio::time::{sleep_until, Sleep};

use crate::forward::buffer::QUIET;
use crate::forward::idle::deadline_after;
use crate::forward::relay::{
    poll_write_tcp, read_ready, shutdown_write, Direction, SideError, SMALL_BUFFER,
};
use crate::forward::shutdown::InFlightGuard;

/// Most bytes one `splice` moves from the source into the pipe: the default pipe size.
const PIPE_CHUNK: usize = 64 * 1024;

/// Relays both directions of a passthrough relay until both have ended or one fails.
pub(crate) async fn pump_both(up: &Direction<'_>, down: &Direction<'_>) -> Result<(), SideError> {
    let (mut up_pump, mut down_pump) = (SplicePump::default(), SplicePump::default());
    // Which direction goes first alternates from poll to poll (as in `tokio::join!`): the
    // first may spend the task's whole budget, and the other must not always find it spent.
    let mut up_first = false;
    poll_fn(|cx| {
        up_first = !up_first;
        let (up_done, down_done) = if up_first {
            let up_done = up_pump.poll(up, cx)?.is_ready();
            (up_done, down_pump.poll(down, cx)?.is_ready())
        } else {
            let down_done = down_pump.poll(down, cx)?.is_ready();
            (up_pump.poll(up, cx)?.is_ready(), down_done)
        };
        if up_done && down_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One direction between TCP sockets; see the module documentation.
#[derive(Default)]
pub(crate) struct SplicePump<'a> {
    phase: Phase<'a>,
}

/// Where a direction is.
enum Phase<'a> {
    /// Light traffic, or waiting for the source.
    Light(Light<'a>),
    /// A burst, moved through a pipe.
    Burst(Burst<'a>),
    /// The source ended; the destination's write side is shut down.
    Ended,
}

impl Default for Phase<'_> {
    fn default() -> Self {
        Phase::Light(Light::default())
    }
}

/// Light traffic: the small buffer, held only while the source has bytes.
#[derive(Default)]
struct Light<'a> {
    buffer: Option<Box<[u8]>>,
    /// How much of `buffer` the last read filled.
    filled: usize,
    /// How much of that is written.
    written: usize,
    /// Held while `written < filled`.
    in_flight: Option<InFlightGuard<'a>>,
}

/// A burst: its pipe, the bytes in it, and the timer that ends the burst after a quiet spell.
struct Burst<'a> {
    pipe: Pipe,
    /// Bytes spliced into the pipe and not written out yet.
    in_pipe: usize,
    /// Held while `in_pipe` is not zero.
    in_flight: Option<InFlightGuard<'a>>,
    /// Boxed: a burst is rare and short, an idle direction should not carry a timer.
    quiet: Pin<Box<Sleep>>,
}

/// The two ends of a pipe, both non-blocking.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl<'a> SplicePump<'a> {
    /// Moves what can be moved now; `Ready(Ok)` once the source has ended and the
    /// destination's write side is shut down (and on every poll after that).
    pub(crate) fn poll(
        &mut self,
        dir: &Direction<'a>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SideError>> {
        loop {
            let next = match &mut self.phase {
                Phase::Ended => return Poll::Ready(Ok(())),
                Phase::Light(light) => ready!(light.poll(dir, cx))?,
                Phase::Burst(burst) => ready!(burst.poll(dir, cx))?,
            };
            self.phase = next;
        }
    }
}

impl<'a> Light<'a> {
    /// Copies through the small buffer until the source ends or a read fills the buffer
    /// (then the burst begins).
    fn poll(
        &mut self,
        dir: &Direction<'a>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Phase<'a>, SideError>> {
        loop {
            if let Some(buffer) = &self.buffer {
                if self.written < self.filled {
                    let before = self.written;
                    let wrote =
                        poll_write_tcp(dir.to, &buffer[..self.filled], &mut self.written, cx);
                    if self.written > before {
                        dir.progress.moved(dir.counter, self.written - before);
                    }
                    ready!(wrote).map_err(|e| dir.to_side.error(e))?;
                    self.in_flight = None;
                    if self.filled == buffer.len() {
                        return Poll::Ready(Burst::start(dir).map(Phase::Burst));
                    }
                }
            }
            // Each read counts against tokio's budget, so a direction whose peers are always
            // ready yields now and then to the other one, which shares the task.
            let budget = ready!(coop::poll_proceed(cx));
            match dir.from.poll_read_ready(cx) {
                // Drained (a short read tells tokio so): the buffer goes back while it waits.
                Poll::Pending => {
                    self.buffer = None;
                    return Poll::Pending;
                }
                Poll::Ready(ready) => ready.map_err(|e| dir.from_side.error(e))?,
            }
            let buffer = self
                .buffer
                .get_or_insert_with(|| vec![0u8; SMALL_BUFFER].into_boxed_slice());
            match read_ready(dir.from, buffer) {
                Ok(0) => {
                    shutdown_write(dir.to);
                    return Poll::Ready(Ok(Phase::Ended));
                }
                Ok(n) => {
                    budget.made_progress();
                    (self.filled, self.written) = (n, 0);
                    self.in_flight = Some(dir.progress.in_flight.hold());
                }
                // Drained: the next look waits for the source.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(dir.from_side.error(e))),
            }
        }
    }
}

impl<'a> Burst<'a> {
    /// A burst with a new pipe. No pipe (file descriptors exhausted) fails the relay like a
    /// failed read.
    fn start(dir: &Direction<'_>) -> Result<Self, SideError> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
            .map_err(|e| dir.from_side.error(e.into()))?;
        Ok(Burst {
            pipe: Pipe { read, write },
            in_pipe: 0,
            in_flight: None,
            quiet: Box::pin(sleep_until(deadline_after(QUIET))),
        })
    }

    /// Moves the burst through the pipe until the source ends, or stays quiet for [`QUIET`]
    /// (then back to light traffic, and the pipe is closed).
    fn poll(
        &mut self,
        dir: &Direction<'a>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Phase<'a>, SideError>> {
        loop {
            if self.in_pipe > 0 {
                ready!(self.poll_drain(dir, cx))?;
                self.in_flight = None;
            }
            let budget = ready!(coop::poll_proceed(cx));
            if dir.from.poll_read_ready(cx).is_pending() {
                if self.quiet.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Phase::Light(Light::default())));
                }
                return Poll::Pending;
            }
            // The burst's first look follows the read that filled the small buffer: bytes
            // may wait. The pipe is empty here, so "would block" is the socket's.
            let from = dir.from;
            let spliced = from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    &self.pipe.write,
                    None,
                    PIPE_CHUNK,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            match spliced {
                Ok(0) => {
                    shutdown_write(dir.to);
                    return Poll::Ready(Ok(Phase::Ended));
                }
                Ok(n) => {
                    budget.made_progress();
                    self.in_pipe = n;
                    self.in_flight = Some(dir.progress.in_flight.hold());
                }
                // Drained: the quiet spell starts now.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.quiet.as_mut().reset(deadline_after(QUIET));
                }
                Err(e) => return Poll::Ready(Err(dir.from_side.error(e))),
            }
        }
    }

    /// Writes the bytes in the pipe to the destination, counting what goes out.
    fn poll_drain(
        &mut self,
        dir: &Direction<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SideError>> {
        let to = dir.to;
        while self.in_pipe > 0 {
            let spliced = to.try_io(Interest::WRITABLE, || {
                splice(
                    &self.pipe.read,
                    None,
                    to.as_fd(),
                    None,
                    self.in_pipe,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            match spliced {
                Ok(0) => {
                    return Poll::Ready(Err(dir.to_side.error(io::ErrorKind::WriteZero.into())))
                }
                Ok(m) => {
                    self.in_pipe -= m;
                    dir.progress.moved(dir.counter, m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(to.poll_write_ready(cx)).map_err(|e| dir.to_side.error(e))?;
                }
                Err(e) => return Poll::Ready(Err(dir.to_side.error(e))),
            }
        }
        Poll::Ready(Ok(()))
    }
}
