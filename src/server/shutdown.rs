//! The process's stop signal: SIGTERM or SIGINT (Ctrl-C).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signalled() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
