//! The `frontgate` command line: `run` serves, `check` validates like `nginx -t`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use frontgate::config;
use frontgate::config::Secret;
use frontgate::mtproto::{links, probe};
use frontgate::ops::summary;
use frontgate::server::gateway::Gateway;
use frontgate::server::{registry, reload, shutdown};

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
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
        /// Also connect to each `mtproto: true` route's backend and say whether fake flights
        /// can mirror its answer (a TLS 1.2-only backend cannot be matched); exit 1 if not.
        #[arg(long)]
        probe: bool,
    },
    /// Print each MTProto user's tg:// and t.me links (and QR codes) for the route file.
    Link {
        #[command(flatten)]
        config: ConfigArg,
        /// Host clients connect to (default: the route's domain, which must resolve here).
        #[arg(long)]
        host: Option<String>,
        /// Port clients connect to (default: the first listen address's port).
        #[arg(long)]
        port: Option<u16>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Also draw each tg:// link as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Generate a new random MTProto user secret (OS RNG) to paste into mtproto.users.
    Secret {
        /// Also print the ee-form a client needs for this fronted domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

/// The route file argument every command that reads it shares.
#[derive(Args)]
struct ConfigArg {
    /// The route file (see routes.example.yaml).
    #[arg(
        short = 'c',
        long = "config",
        env = "FRONTGATE_CONFIG",
        default_value = "/etc/frontgate/routes.yaml"
    )]
    path: PathBuf,
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
        Command::Check { config, probe } => check(&config.path, probe),
        Command::Link {
            config,
            host,
            port,
            user,
            qr,
        } => link(&config.path, host.as_deref(), port, user.as_deref(), qr),
        Command::Secret { domain } => {
            let secret = Secret::generate();
            println!("{}", hex::encode(secret.as_bytes()));
            if let Some(domain) = domain {
                println!("{}", secret.ee_hex(&domain));
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            listen,
            log_format,
        } => {
            init_logging(log_format);
            match run(config.path, listen) {
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

fn check(path: &std::path::Path, probe: bool) -> ExitCode {
    let checked = config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            registry::probe(&config)
                .map(|()| config)
                .map_err(|e| format!("{}: {e}", path.display()))
        });
    match checked {
        Ok(config) => {
            print!("{}", summary::render(&config));
            println!(
                "frontgate: the configuration file {} syntax is ok and the routes are valid",
                path.display()
            );
            if probe && !probe_backends(&config) {
                return ExitCode::FAILURE;
            }
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

/// `check --probe`: one line per `mtproto: true` route's backend; false if any cannot be
/// mirrored.
fn probe_backends(config: &config::Config) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("frontgate: cannot start the probe: {e}");
            return false;
        }
    };
    let reports = runtime.block_on(probe::probe_routes(config, config.timeouts.connect));
    let mut all_good = true;
    for report in &reports {
        if report.answer.is_ok() {
            println!("frontgate: probe: {}", report.describe());
        } else {
            all_good = false;
            eprintln!("frontgate: probe: {}", report.describe());
        }
    }
    if reports.is_empty() {
        println!(
            "frontgate: probe: no `mtproto: true` route mirrors its backend (none, or mimic: off)"
        );
    }
    all_good
}

fn link(
    path: &std::path::Path,
    host: Option<&str>,
    port: Option<u16>,
    user: Option<&str>,
    qr: bool,
) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("frontgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let links = match links::user_links(&config, host, port, user) {
        Ok(links) => links,
        Err(e) => {
            eprintln!("frontgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    for link in links {
        println!(
            "{} ({})\n  {}\n  {}",
            link.user, link.domain, link.tg, link.tme
        );
        if qr {
            match links::qr(&link.tg) {
                Ok(code) => println!("{code}"),
                Err(e) => eprintln!("frontgate: cannot draw a QR code: {e}"),
            }
        }
    }
    ExitCode::SUCCESS
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
