//! `frontgate secret`: a new random MTProto user secret.

use std::process::ExitCode;

use clap::Args;

use crate::config::Secret;

/// `frontgate secret` options.
#[derive(Args)]
pub(super) struct SecretArgs {
    /// Also print the ee-form a client needs for this fronted domain.
    #[arg(long)]
    domain: Option<String>,
}

pub(super) fn main(args: SecretArgs) -> ExitCode {
    let secret = Secret::generate();
    // Labelled lines: `secret: HEX` goes into mtproto.users, the ee-form into a client.
    println!("secret: {}", hex::encode(secret.as_bytes()));
    if let Some(domain) = args.domain {
        println!("ee secret for {domain}: {}", secret.ee_hex(&domain));
    }
    ExitCode::SUCCESS
}
