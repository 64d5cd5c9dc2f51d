//! `frontgate link`: each MTProto user's tg:// and t.me links, and QR codes.

use std::process::ExitCode;

use clap::Args;

use super::ConfigArg;
use crate::config;
use crate::mtproto::links;

/// `frontgate link` options.
#[derive(Args)]
pub(super) struct LinkArgs {
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
}

pub(super) fn main(args: LinkArgs) -> ExitCode {
    let config = match config::load(&args.config.path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("frontgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let links = match links::user_links(
        &config,
        args.host.as_deref(),
        args.port,
        args.user.as_deref(),
    ) {
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
        if args.qr {
            match links::qr(&link.tg) {
                Ok(code) => println!("{code}"),
                Err(e) => eprintln!("frontgate: cannot draw a QR code: {e}"),
            }
        }
    }
    ExitCode::SUCCESS
}
