//! The `frontgate` command line: `run` serves, `check` validates like `nginx -t`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use frontgate::{config, gateway::Gateway, reload, shutdown, summary};

/// frontgate: one process on :443 for SNI routing, MTProto fake-TLS and TLS termination.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: route connections as the route file says; reload on SIGHUP or file change.
    Run {
        /// The route file (see routes.example.yaml).
        #[arg(
            short,
            long,
            env = "FRONTGATE_CONFIG",
            default_value = "/etc/frontgate/routes.yaml"
        )]
        config: PathBuf,
        /// Listen here instead of the file's `listen` (repeatable), e.g. 127.0.0.1:8443 for a
        /// try-out without root. Reloads keep these addresses.
        #[arg(long, value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate the route file and print the route summary; exit code 0 if valid, 1 if not.
    Check {
        /// The route file.
        #[arg(
            short,
            long,
            env = "FRONTGATE_CONFIG",
            default_value = "/etc/frontgate/routes.yaml"
        )]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// `key=value` lines for people and fail2ban.
    Text,
    /// One JSON object per line for log pipelines.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            listen,
            log_format,
        } => {
            init_logging(log_format);
            match run(config, listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("frontgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            print!("{}", summary::render(&config));
            println!(
                "frontgate: the configuration file {} syntax is ok and the routes are valid",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("frontgate: {e}");
            eprintln!(
                "frontgate: configuration file {} test failed",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
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

fn run(path: PathBuf, listen: Vec<SocketAddr>) -> anyhow::Result<()> {
    // Each relayed connection holds two descriptors; the default soft limit of 1024 is far
    // too low for a gateway.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let config = config::load(&path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let grace = config.timeouts.shutdown_grace;
        let listen_override = (!listen.is_empty()).then_some(listen);
        let gateway = Arc::new(Gateway::start(config, listen_override).await?);
        let watcher = tokio::spawn(reload::watch(path, gateway.clone()));
        let signal = shutdown::signalled().await.context("installing signal handlers")?;
        watcher.abort();
        let open = gateway.open_connections();
        tracing::info!(signal, open, grace = %humantime::format_duration(grace), "shutting down: no new connections, waiting for live ones");
        let cut = gateway.shutdown(grace).await;
        tracing::info!(cut, "stopped");
        Ok(())
    })
}
