//! The log subscriber `run` installs: text for people and fail2ban, or JSON lines.
//!
//! Lines are written by a thread of their own: a connection task only formats its line and
//! queues it, so a log reader that stalls (journald under pressure, a full pipe) never stalls
//! the gateway. The writer drains the queue into one buffer and writes it with one call, so a
//! burst of lines costs one write, and flushes every time the queue is empty: no line waits
//! for the next one. A full queue makes the next line wait for room instead of dropping it,
//! since fail2ban must see every refusal.

use std::io::{BufWriter, IsTerminal};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// Log line format.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum LogFormat {
    /// `key=value` lines for people and fail2ban.
    Text,
    /// One JSON object per line for log pipelines.
    Json,
}

/// Lines the queue holds before a new line waits: a second or more of a busy gateway's lines
/// (about 1.2 MiB of 300-byte lines at most; the queue's own slots take 128 KiB).
const QUEUED_LINES: usize = 4 * 1024;
/// The writer's buffer: the lines of one drain of the queue go out in one write.
const WRITE_BUFFER: usize = 64 * 1024;

/// Installs the global subscriber; `FRONTGATE_LOG` filters (default `info`). Keep the guard
/// until the process ends: dropping it writes out what is still queued.
#[must_use = "dropping the guard stops the log writer"]
pub(super) fn init(format: LogFormat) -> WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRONTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, files and fail2ban want plain text.
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("frontgate-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}
