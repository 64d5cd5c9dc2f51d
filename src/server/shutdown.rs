//! The process's stop signals and what a shutdown reports. The shutdown itself is a value
//! every connection holds ([`crate::forward::shutdown`]); [`crate::server::gateway::Gateway`]
//! throws its switch.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT (Ctrl-C), installed once so that a second signal during the shutdown
/// is seen too (once installed, they no longer end the process by themselves).
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT with its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// How the connections open at a shutdown ended, for its last log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Closed by the drain: quiet relays and connections still before their relay.
    pub cut: usize,
    /// Ended on their own within the grace period.
    pub finished: usize,
    /// Still open when the grace period ran out (or a second signal came); closed then.
    pub left: usize,
}
