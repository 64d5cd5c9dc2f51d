//! The `frontgate` command line: `run` serves, `check` validates like `nginx -t`, `health`
//! asks a running gateway whether it serves, `link` and `secret` hand out MTProto access,
//! `user` manages the users file, `import-nginx` translates an nginx stream block. One file
//! per subcommand; this one parses and dispatches.

mod check;
mod health;
mod import_nginx;
mod link;
mod logging;
mod run;
mod secret;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// frontgate: one process on :443 for SNI routing, MTProto fake-TLS and TLS termination.
#[derive(Parser)]
#[command(name = "frontgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: route connections as the route file says; reload on SIGHUP or file change.
    Run(run::RunArgs),
    /// Validate the route file and print the route summary; exit code 0 if valid, 1 if not.
    Check(check::CheckArgs),
    /// Ask the running gateway's metrics endpoint (/healthz) whether it serves every listen
    /// address; exit code 0 if it answers 200, 1 otherwise (for a container HEALTHCHECK).
    Health(health::HealthArgs),
    /// Print each MTProto user's tg:// and t.me links (and QR codes) for the route file.
    Link(link::LinkArgs),
    /// Translate an nginx `stream { }` configuration (ssl_preread map, upstreams, PROXY
    /// protocol) into a commented route file, then check it.
    ImportNginx(import_nginx::ImportNginxArgs),
    /// Generate a new random MTProto user secret (OS RNG) to paste into mtproto.users.
    Secret(secret::SecretArgs),
    /// Manage the MTProto users of mtproto.users_file: add, remove, enable, disable,
    /// rotate, reset, list; a running gateway picks each change up by itself.
    User(user::UserArgs),
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

/// Parses the command line and runs the subcommand; the process exit code is its outcome.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
        Command::Check(args) => check::main(args),
        Command::Health(args) => health::main(args),
        Command::Link(args) => link::main(args),
        Command::Secret(args) => secret::main(args),
        Command::User(args) => user::main(args),
        Command::ImportNginx(args) => import_nginx::main(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
