//! `frontgate run`: serve until a signal, reloading on SIGHUP or a file change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::logging::{self, LogFormat};
use super::ConfigArg;
use crate::config;
use crate::server::gateway::Gateway;
use crate::server::{reload, shutdown};

/// `frontgate run` options.
#[derive(Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Listen here instead of the file's `listen` (repeatable), e.g. 127.0.0.1:8443 for a
    /// try-out without root. Reloads keep these addresses.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub(super) fn main(args: RunArgs) -> ExitCode {
    logging::init(args.log_format);
    match serve(args.config.path, args.listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("frontgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, listen: Vec<SocketAddr>) -> anyhow::Result<()> {
    // Each relayed connection holds two descriptors; the default soft limit of 1024 is far
    // too low for a gateway.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let config = config::load(&path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let mut signals = shutdown::Signals::install().context("installing signal handlers")?;
        let grace = config.timeouts.shutdown_grace;
        let listen_override = (!listen.is_empty()).then_some(listen);
        let gateway = Arc::new(Gateway::start(config, listen_override).await?);
        let watcher = tokio::spawn(reload::watch(path, gateway.clone()));
        let signal = signals.next().await;
        watcher.abort();
        let open = gateway.open_connections();
        tracing::info!(
            signal,
            open,
            grace = %humantime::format_duration(grace),
            "shutting down: no new connections; idle ones close now, busy ones get the grace \
             period; a second signal closes everything at once"
        );
        let stopping = gateway.shutdown(grace);
        tokio::pin!(stopping);
        let report = tokio::select! {
            report = &mut stopping => report,
            second = signals.next() => {
                tracing::warn!(signal = second, "second signal: closing every connection now");
                gateway.stop_now();
                stopping.await
            }
        };
        tracing::info!(
            cut = report.cut,
            finished = report.finished,
            left = report.left,
            "stopped"
        );
        Ok(())
    });
    // Nothing left is worth waiting for (a DNS lookup in the blocking pool, say).
    runtime.shutdown_background();
    served
}
