//! Shutdown as a value: the gateway holds the [`ShutdownSwitch`], every connection holds its
//! own [`Shutdown`] from [`ShutdownSwitch::subscribe`] and hands it to its relay (passthrough,
//! TLS or MTProto), so nothing learns of a shutdown by polling a global.
//!
//! A shutdown has two steps. [`ShutdownSwitch::drain`] ends what is idle: a connection still
//! before its relay (inbound PROXY header, ClientHello, MTProto or TLS handshake, backend
//! connect) ends at once, and a relay ends as soon as it is *quiet*: nothing moved either way
//! for [`QUIET_BEFORE_CUT`] and no direction holds bytes it has read but not yet written
//! ([`InFlight`]). A busy relay goes on until it finishes or goes quiet.
//! [`ShutdownSwitch::cut_all`] (the grace period is over, or a second signal) ends every
//! connection at once.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::forward::idle::{later, IdleClock};

/// How long a relay must have moved no byte (with no write pending) to be cut by a drain.
/// Longer than a pause inside a transfer on a loaded box, short enough that a process with
/// thousands of quiet Telegram sessions stops in about this time.
pub const QUIET_BEFORE_CUT: Duration = Duration::from_millis(500);

/// What the switch and every connection share.
#[derive(Debug, Default)]
struct Signal {
    /// Cancelled when the drain begins.
    drain: CancellationToken,
    /// Cancelled when every connection must end now.
    cut_all: CancellationToken,
    /// Connections the drain ended (idle or before their relay).
    cut: AtomicUsize,
    /// Connections that ended on their own after the drain began, before `cut_all`.
    finished: AtomicUsize,
}

/// The gateway's side of a shutdown: starts the drain, cuts what is left, and counts how
/// connections ended meanwhile. Clones control the same shutdown.
#[derive(Debug, Clone, Default)]
pub struct ShutdownSwitch {
    signal: Arc<Signal>,
}

impl ShutdownSwitch {
    /// A switch that has not been thrown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value one new connection carries for its whole life.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.clone(),
            relaying: AtomicBool::new(false),
            cut: AtomicBool::new(false),
        }
    }

    /// Begins the drain: connections before their relay end at once, relays when quiet.
    pub fn drain(&self) {
        self.signal.drain.cancel();
    }

    /// Ends every connection now (it also begins the drain if it had not begun).
    pub fn cut_all(&self) {
        self.signal.drain.cancel();
        self.signal.cut_all.cancel();
    }

    /// Resolves once [`cut_all`](Self::cut_all) has been called.
    pub async fn all_cut(&self) {
        self.signal.cut_all.cancelled().await;
    }

    /// How many connections the drain cut, and how many finished on their own since it began
    /// (connections ended by [`cut_all`](Self::cut_all) are in neither).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.signal.cut.load(Ordering::Relaxed),
            self.signal.finished.load(Ordering::Relaxed),
        )
    }
}

/// One connection's view of the gateway's shutdown. The connection's driver races its setup
/// against [`interrupted`](Self::interrupted); its relay races the copying against
/// [`watch`](Self::watch). Dropped at the connection's end, it counts the connection as
/// cut or finished for the shutdown's report.
#[derive(Debug)]
pub struct Shutdown {
    signal: Arc<Signal>,
    /// Set when the relay starts: from then on only a quiet relay is cut by the drain.
    relaying: AtomicBool,
    /// Set when the drain ended this connection.
    cut: AtomicBool,
}

impl Shutdown {
    /// Resolves when the connection must end now: when the drain begins (or has begun) while
    /// it has not started relaying yet, and in any phase when every connection is cut.
    pub async fn interrupted(&self) {
        // `cut_all` cancels `drain` too; one wait at a time keeps this future small (every
        // connection holds one).
        self.signal.drain.cancelled().await;
        if !self.relaying.load(Ordering::Relaxed) && !self.signal.cut_all.is_cancelled() {
            self.cut.store(true, Ordering::Relaxed);
            return;
        }
        self.signal.cut_all.cancelled().await;
    }

    /// Marks the start of the connection's relay, whose idle clock is `clock` and whose
    /// pending writes `in_flight` counts, and watches it: resolves with [`Watched::Idle`] once
    /// nothing moved for `idle`, with [`Watched::Drained`] once the drain has begun and the
    /// relay is quiet (see the module documentation), and with [`Watched::Cut`] once every
    /// connection is cut. One timer and one wait serve all three, so the watch stays small:
    /// every relay holds one for its whole life.
    pub fn watch<'a>(
        &'a self,
        clock: &'a IdleClock,
        in_flight: &'a InFlight,
        idle: Duration,
    ) -> impl Future<Output = Watched> + 'a {
        self.relaying.store(true, Ordering::Relaxed);
        Watch {
            shutdown: self,
            clock,
            in_flight,
            idle,
            draining: false,
            signal: self.signal.drain.cancelled(),
            timer: tokio::time::sleep_until(clock.deadline(idle)),
        }
    }

    /// Whether a watched relay ends now, and if not when to look again.
    fn verdict(
        &self,
        clock: &IdleClock,
        in_flight: &InFlight,
        idle: Duration,
        draining: bool,
    ) -> ControlFlow<Watched, Instant> {
        let now = Instant::now();
        let idle_at = clock.deadline(idle);
        if now >= idle_at {
            return ControlFlow::Break(Watched::Idle);
        }
        if !draining {
            return ControlFlow::Continue(idle_at);
        }
        let quiet_at = clock.deadline(QUIET_BEFORE_CUT);
        if now < quiet_at {
            return ControlFlow::Continue(idle_at.min(quiet_at));
        }
        if in_flight.is_empty() {
            self.cut.store(true, Ordering::Relaxed);
            return ControlFlow::Break(Watched::Drained);
        }
        // A write waits for the peer to take it: look again once it could have.
        ControlFlow::Continue(idle_at.min(later(now, QUIET_BEFORE_CUT)))
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Shutdown::watch`], written out so that it holds its two waits and
    /// nothing else.
    struct Watch<'a> {
        shutdown: &'a Shutdown,
        clock: &'a IdleClock,
        in_flight: &'a InFlight,
        idle: Duration,
        // Whether the drain has begun (then `signal` waits for the cut of every connection).
        draining: bool,
        // The drain's start, then (once it has begun) the cut of every connection.
        #[pin]
        signal: WaitForCancellationFuture<'a>,
        #[pin]
        timer: Sleep,
    }
}

impl Future for Watch<'_> {
    type Output = Watched;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Watched> {
        let mut this = self.project();
        let shutdown = *this.shutdown;
        // The drain's start moves the next look forward; otherwise only the timer does.
        let mut look = false;
        while this.signal.as_mut().poll(cx).is_ready() {
            if *this.draining {
                return Poll::Ready(Watched::Cut);
            }
            (*this.draining, look) = (true, true);
            this.signal.set(shutdown.signal.cut_all.cancelled());
        }
        loop {
            if look || this.timer.is_elapsed() {
                let (clock, in_flight) = (*this.clock, *this.in_flight);
                match shutdown.verdict(clock, in_flight, *this.idle, *this.draining) {
                    ControlFlow::Break(watched) => return Poll::Ready(watched),
                    ControlFlow::Continue(at) => this.timer.as_mut().reset(at),
                }
                look = false;
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Why [`Shutdown::watch`] ended a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// Nothing moved either way for the relay's idle timeout.
    Idle,
    /// The drain began and the relay was quiet: the drain cut it.
    Drained,
    /// Every connection was cut (the grace period ran out, or a second signal came).
    Cut,
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        let signal = &self.signal;
        if !signal.drain.is_cancelled() {
            return;
        }
        if self.cut.load(Ordering::Relaxed) {
            signal.cut.fetch_add(1, Ordering::Relaxed);
        } else if !signal.cut_all.is_cancelled() {
            signal.finished.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How many directions of one relay hold bytes they have read but not yet fully written: a
/// relay with any is busy, however long its write has been waiting.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Counts one direction as holding bytes until the guard is dropped.
    pub fn hold(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    fn is_empty(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// One direction's hold on [`InFlight`]; see [`InFlight::hold`].
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_connection_before_its_relay_is_cut_when_the_drain_begins() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        switch.drain();
        conn.interrupted().await;
        drop(conn);
        assert_eq!(switch.counts(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_is_cut_a_busy_one_when_its_write_is_done() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let clock = IdleClock::default();
        let in_flight = InFlight::default();
        let held = in_flight.hold();
        let started = Instant::now();
        {
            let relay = conn.watch(&clock, &in_flight, Duration::MAX);
            tokio::pin!(relay);
            switch.drain();
            // A relaying connection is no longer interrupted by the drain.
            tokio::select! {
                () = conn.interrupted() => panic!("the drain interrupted a relay"),
                _ = &mut relay => panic!("a relay with a pending write was cut"),
                () = tokio::time::sleep(QUIET_BEFORE_CUT * 10) => {}
            }
            drop(held);
            clock.touch();
            assert_eq!(relay.await, Watched::Drained);
        }
        assert!(started.elapsed() >= QUIET_BEFORE_CUT * 11);
        drop(conn);
        assert_eq!(switch.counts(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn cut_all_ends_a_relay_and_it_counts_as_neither() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let (clock, in_flight) = (IdleClock::default(), InFlight::default());
        drop(conn.watch(&clock, &in_flight, Duration::MAX));
        switch.cut_all();
        conn.interrupted().await;
        switch.all_cut().await;
        drop(conn);
        assert_eq!(switch.counts(), (0, 0));
    }

    /// Polls `watch` for `quiet_for`, failing with `too_early` if it ends sooner, then does
    /// `then` and waits for the watch's verdict.
    async fn watch_past(
        watch: impl Future<Output = Watched>,
        quiet_for: Duration,
        then: impl FnOnce(),
        too_early: &str,
    ) -> Watched {
        tokio::pin!(watch);
        tokio::select! {
            watched = &mut watch => panic!("{too_early} ({watched:?})"),
            () = tokio::time::sleep(quiet_for) => then(),
        }
        watch.await
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_ends_an_idle_relay_and_counts_activity() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let (clock, in_flight) = (IdleClock::default(), InFlight::default());
        let started = Instant::now();
        let watched = watch_past(
            conn.watch(&clock, &in_flight, Duration::from_secs(30)),
            Duration::from_secs(20),
            || clock.touch(),
            "the watch ended a relay before its idle timeout",
        );
        assert_eq!(watched.await, Watched::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(50));
        drop(conn);
        assert_eq!(
            switch.counts(),
            (0, 0),
            "an idle timeout is not a drain's cut"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_cuts_a_quiet_relay_before_its_idle_timeout() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let (clock, in_flight) = (IdleClock::default(), InFlight::default());
        let started = Instant::now();
        let watched = watch_past(
            conn.watch(&clock, &in_flight, Duration::from_secs(3600)),
            Duration::from_secs(60),
            || switch.drain(),
            "the watch ended a relay with no drain",
        );
        // Quiet for a minute already: cut as soon as the drain begins.
        assert_eq!(watched.await, Watched::Drained);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(conn);
        assert_eq!(switch.counts(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn cut_all_ends_a_busy_watched_relay_and_it_counts_as_neither() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let (clock, in_flight) = (IdleClock::default(), InFlight::default());
        let held = in_flight.hold();
        switch.drain();
        let watched = watch_past(
            conn.watch(&clock, &in_flight, Duration::from_secs(3600)),
            QUIET_BEFORE_CUT * 10,
            || switch.cut_all(),
            "the drain cut a relay with a pending write",
        );
        assert_eq!(watched.await, Watched::Cut);
        drop(held);
        drop(conn);
        assert_eq!(switch.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_watched_after_the_cut_ends_at_once() {
        let switch = ShutdownSwitch::new();
        let conn = switch.subscribe();
        let (clock, in_flight) = (IdleClock::default(), InFlight::default());
        switch.cut_all();
        let watched = conn
            .watch(&clock, &in_flight, Duration::from_secs(3600))
            .await;
        assert_eq!(watched, Watched::Cut);
    }

    #[test]
    fn a_connection_that_ends_during_the_drain_finished() {
        let switch = ShutdownSwitch::new();
        let before = switch.subscribe();
        drop(before);
        let during = switch.subscribe();
        switch.drain();
        drop(during);
        assert_eq!(switch.counts(), (0, 1));
    }
}
