//! The log subscriber `run` installs: text for people and fail2ban, or JSON lines.

use std::io::IsTerminal;

use clap::ValueEnum;

/// Log line format.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum LogFormat {
    /// `key=value` lines for people and fail2ban.
    Text,
    /// One JSON object per line for log pipelines.
    Json,
}

/// Installs the global subscriber; `FRONTGATE_LOG` filters (default `info`).
pub(super) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRONTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, files and fail2ban want plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
