//! `frontgate run`: serve until a signal, reloading on SIGHUP or a file change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::logging::{self, LogFormat};
use super::ConfigArg;
use crate::config::{self, addresses, Config};
use crate::server::gateway::{ApplyError, Gateway};
use crate::server::registry::BuildError;
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
    let _log_writer = logging::init(args.log_format);
    match serve(args.config.path, args.listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, in the log format asked for; on stderr all the same when the log
            // filter hides errors, since a fatal one must be seen.
            let message = describe(&e);
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{message}");
            } else {
                eprintln!("frontgate: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes, each said once: our errors already end with their cause's text
/// (`cannot listen on ...: Address in use (os error 98)`), so a cause the message so far
/// contains is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// `--listen` replaces the file's `listen`: its addresses must be bindable together and
/// beside `metrics.listen`, as the file's are.
fn check_listen_override(listen: &[SocketAddr], config: &Config) -> anyhow::Result<()> {
    for (i, addr) in listen.iter().enumerate() {
        for earlier in &listen[..i] {
            if let Some(problem) = addresses::clash(*addr, *earlier, "an earlier --listen") {
                anyhow::bail!("--listen {problem}");
            }
        }
        if let Some(metrics) = config.metrics {
            if let Some(problem) = addresses::clash(metrics, *addr, "--listen") {
                return Err(config.places.locate("metrics.listen", problem).into());
            }
        }
    }
    Ok(())
}

fn serve(path: PathBuf, listen: Vec<SocketAddr>) -> anyhow::Result<()> {
    // Each relayed connection holds two descriptors; the default soft limit of 1024 is far
    // too low for a gateway.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let config = config::load(&path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    check_listen_override(&listen, &config)?;
    let places = config.places.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let mut signals = shutdown::Signals::install().context("installing signal handlers")?;
        let grace = config.timeouts.shutdown_grace;
        let listen_override = (!listen.is_empty()).then_some(listen);
        let gateway = Gateway::start(config, listen_override)
            .await
            .map_err(|e| match e {
                // A `tls:` route's fault is about a node of the file: say which, as `check`.
                ApplyError::Build(BuildError::Tls(e)) => {
                    anyhow::Error::new(places.locate(&e.key, e.source))
                }
                other => other.into(),
            })?;
        let gateway = Arc::new(gateway);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let said = io.to_string();
        let err = anyhow::Error::new(io).context(format!("cannot listen on x: {said}"));
        assert_eq!(describe(&err), format!("cannot listen on x: {said}"));
        let err = anyhow::Error::msg("inner").context("outer");
        assert_eq!(describe(&err), "outer: inner");
    }
}
