//! `frontgate check`: validate the route file like `nginx -t`, optionally probing backends.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::ConfigArg;
use crate::config;
use crate::forward::pool::Pools;
use crate::mtproto::probe;
use crate::ops::summary;
use crate::server::registry::{self, BuildError};

/// `frontgate check` options.
#[derive(Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also connect to each `mtproto: true` route's backend and say whether fake flights
    /// can mirror its answer (a TLS 1.2-only backend cannot be matched), and through each
    /// `mtproto.via` upstream to DC 2; exit 1 if either fails.
    #[arg(long)]
    probe: bool,
}

pub(super) fn main(args: CheckArgs) -> ExitCode {
    let path = args.config.path.as_path();
    match load_and_build(path) {
        Ok(config) => {
            print!("{}", summary::render(&config));
            for warning in &config.warnings {
                eprintln!("frontgate: warning: {warning}");
            }
            let warned = match config.warnings.len() {
                0 => String::new(),
                1 => " (1 warning above)".to_string(),
                n => format!(" ({n} warnings above)"),
            };
            println!(
                "frontgate: the configuration file {} syntax is ok and the routes are valid{warned}",
                path.display()
            );
            if args.probe && !probe_backends(&config) {
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

/// Parses the file and checks every runtime resource `run` would build (certificates, ACME
/// cache), so `check` fails on what `run` would fail on; a resource's fault is reported at
/// the node naming it.
fn load_and_build(path: &Path) -> Result<config::Config, String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    registry::probe(&config).map_err(|e| match e {
        BuildError::Tls(e) => config.places.locate(&e.key, e.source).to_string(),
        other => other.to_string(),
    })?;
    Ok(config)
}

/// `check --probe`: one line per `mtproto.via` upstream and per `mtproto: true` route's
/// backend; false if an upstream does not reach DC 2 or a backend cannot be mirrored.
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
    let (reports, upstreams) = runtime.block_on(async {
        let budget = config.timeouts.connect;
        let upstreams = probe::probe_upstreams(config, budget).await;
        let no_gateway = Pools::default();
        (
            probe::probe_routes(config, &no_gateway, budget).await,
            upstreams,
        )
    });
    let mut all_good = true;
    for report in &upstreams {
        if report.reached.is_ok() {
            println!("frontgate: probe: {}", report.describe());
        } else {
            all_good = false;
            eprintln!("frontgate: probe: {}", report.describe());
        }
    }
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
