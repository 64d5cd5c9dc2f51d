//! `frontgate user`: manages the MTProto users of `mtproto.users_file` — add (with a new
//! random secret, printing the links), remove, enable, disable, rotate (a new secret, new
//! links), reset (the usage) and list. Only the users file is edited, never the operator's
//! route file; each edit is a read-modify-write under an exclusive lock, validated with the
//! route file exactly as `run` would load it, and written atomically, so the running gateway
//! hot-reloads either the old file or the new one and a refused change leaves the old file.

mod document;
mod list;
mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_yaml_ng::Value;

use super::link::{print_links, LinkOutput};
use super::ConfigArg;
use crate::config::mtproto::is_valid_user_name;
use crate::config::users_write::{self, UserSources};
use crate::config::{users_file, Config, Secret};
use document::{NewQuota, NewUser, UsersDocument};
use store::LockedUsersFile;

/// `frontgate user` options.
#[derive(Args)]
pub(super) struct UserArgs {
    #[command(subcommand)]
    action: UserAction,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user with a new random secret (OS RNG) and print their links.
    Add(AddArgs),
    /// Remove a user; their live sessions are closed.
    Remove(NameArgs),
    /// Serve a disabled user again.
    Enable(NameArgs),
    /// Stop serving a user (their hellos are fronted to the site); their live sessions are
    /// closed.
    Disable(NameArgs),
    /// Give a user a new random secret and print their new links; the old secret stops
    /// working.
    Rotate(RotateArgs),
    /// Start a user's usage count again from now (writes `usage_reset`).
    Reset(NameArgs),
    /// List the users: state, quota, expiry, note, and live sessions and traffic from the
    /// running gateway's /stats when metrics.listen is set.
    List(ListArgs),
}

/// A command about one user.
#[derive(Args)]
struct NameArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The user's name.
    name: String,
}

/// `user add` options.
#[derive(Args)]
struct AddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The new user's name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
    name: String,
    /// Traffic allowed per period, both ways summed (50GiB, 500MB, 1048576).
    #[arg(long)]
    quota: Option<String>,
    /// How often the quota starts again: day, week, month (the default) or total.
    #[arg(long, requires = "quota")]
    period: Option<String>,
    /// The day a period starts: 1 to 28 of the month, or 1 (Monday) to 7 of the week.
    #[arg(long, requires = "quota")]
    resets_on: Option<u8>,
    /// When the user stops being served: 2027-01-01 (00:00 UTC) or an RFC 3339 date-time.
    #[arg(long)]
    expires: Option<String>,
    /// The server names this user may use, comma-separated (each an `mtproto: true` route's
    /// name).
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Most sessions at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most distinct client addresses at once.
    #[arg(long)]
    max_ips: Option<usize>,
    /// Bytes per second, each direction, over all the user's sessions (2MiB, 500kB).
    #[arg(long)]
    rate: Option<String>,
    /// A free-text note.
    #[arg(long)]
    note: Option<String>,
    #[command(flatten)]
    output: LinkOutput,
}

/// `user rotate` options.
#[derive(Args)]
struct RotateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The user's name.
    name: String,
    #[command(flatten)]
    output: LinkOutput,
}

/// `user list` options.
#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn main(args: UserArgs) -> ExitCode {
    let outcome = match args.action {
        UserAction::Add(args) => add(args),
        UserAction::Remove(args) => {
            change(&args, "removed", |doc, name| doc.remove(name)).map(|_| ExitCode::SUCCESS)
        }
        UserAction::Enable(args) => {
            change(&args, "enabled", |doc, name| doc.set(name, "enabled", None))
                .map(|_| ExitCode::SUCCESS)
        }
        UserAction::Disable(args) => change(&args, "disabled", |doc, name| {
            doc.set(name, "enabled", Some(Value::Bool(false)))
        })
        .map(|_| ExitCode::SUCCESS),
        UserAction::Reset(args) => change(&args, "reset the usage of", |doc, name| {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            doc.set(name, "usage_reset", Some(Value::from(now)))
        })
        .map(|_| ExitCode::SUCCESS),
        UserAction::Rotate(args) => rotate(args),
        UserAction::List(args) => list(&args.config.path),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("frontgate: user: {e}");
        ExitCode::FAILURE
    })
}

/// `user add`: a new entry with a new secret; prints the user's links.
fn add(args: AddArgs) -> Result<ExitCode, String> {
    if !is_valid_user_name(&args.name) {
        return Err(format!(
            "`{}` cannot name a user: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`",
            args.name.escape_debug()
        ));
    }
    let entry = NewUser {
        secret: hex::encode(Secret::generate().as_bytes()),
        expires: args.expires,
        quota: args.quota.map(|bytes| NewQuota {
            bytes,
            period: args.period,
            resets_on: args.resets_on,
        }),
        max_connections: args.max_connections,
        max_ips: args.max_ips,
        rate: args.rate,
        routes: args.routes,
        note: args.note,
    };
    let name = args.name;
    let (config, path) = edit(&args.config.path, |doc, sources| {
        if doc.has(&name) {
            return Err(format!("there is a user `{name}` already"));
        }
        if sources.inline.contains(&name) {
            return Err(format!(
                "there is a user `{name}` already, inline in the route file's mtproto.users"
            ));
        }
        doc.insert(&name, &entry)
    })?;
    announce(
        &args.output,
        &format!("added user {name} to {}", path.display()),
    );
    Ok(print_links(&config, Some(&name), &args.output))
}

/// `user rotate`: a new secret; prints the user's new links.
fn rotate(args: RotateArgs) -> Result<ExitCode, String> {
    let secret = hex::encode(Secret::generate().as_bytes());
    let name = args.name;
    let (config, path) = edit(&args.config.path, |doc, sources| {
        if doc.set(&name, "secret", Some(Value::from(secret))) {
            Ok(())
        } else {
            Err(missing(sources, &name))
        }
    })?;
    announce(
        &args.output,
        &format!(
            "gave user {name} a new secret in {}; the old one no longer works",
            path.display()
        ),
    );
    Ok(print_links(&config, Some(&name), &args.output))
}

/// An edit of one existing user (`apply` returns whether the user was found), reported as
/// `done`.
fn change(
    args: &NameArgs,
    done: &str,
    apply: impl FnOnce(&mut UsersDocument, &str) -> bool,
) -> Result<(), String> {
    let name = &args.name;
    let (_, path) = edit(&args.config.path, |doc, sources| {
        if apply(doc, name) {
            Ok(())
        } else {
            Err(missing(sources, name))
        }
    })?;
    println!("{done} user {name} in {}", path.display());
    Ok(())
}

/// Says what changed: on stdout, or on stderr when stdout carries JSON.
fn announce(output: &LinkOutput, what: &str) {
    if output.is_json() {
        eprintln!("{what}");
    } else {
        println!("{what}");
    }
}

/// Why `name`, not in the users file, cannot be changed.
fn missing(sources: &UserSources, name: &str) -> String {
    if sources.inline.iter().any(|n| n == name) {
        return format!(
            "user `{name}` is defined inline in the route file's mtproto.users, which \
             `frontgate user` never rewrites: change it there by hand, or move the entry \
             into the users file to manage it here"
        );
    }
    format!("there is no user `{name}`")
}

/// The read-modify-write of the users file of the route file at `route`: under the lock,
/// reads it, lets `apply` change it, validates the result with the route file as `run`
/// would load it, and writes it atomically. Returns the new configuration and the file's
/// path; on any failure the file is left as it was.
fn edit(
    route: &Path,
    apply: impl FnOnce(&mut UsersDocument, &UserSources) -> Result<(), String>,
) -> Result<(Config, PathBuf), String> {
    let sources = users_write::user_sources(route).map_err(|e| e.to_string())?;
    let Some(path) = sources.users_file.clone() else {
        return Err(format!(
            "{} has no mtproto.users_file, and `frontgate user` edits only that file: add \
             `users_file: users.yaml` under `mtproto:` (the users already under \
             mtproto.users stay where they are)",
            route.display()
        ));
    };
    let file = LockedUsersFile::lock(&path)?;
    let old = file.read()?;
    users_file::parse(&old, &path)
        .map_err(|e| format!("the users file is invalid now; fix it first: {e}"))?;
    let mut doc =
        UsersDocument::parse(&old).map_err(|e| format!("cannot edit {}: {e}", path.display()))?;
    apply(&mut doc, &sources)?;
    let text = doc.to_text()?;
    let config = users_write::load_with_users(route, &text)
        .map_err(|e| format!("refused, {} is unchanged: {e}", path.display()))?;
    file.replace(&text)?;
    Ok((config, path))
}

/// `user list`: the table, whether or not the gateway answers.
fn list(route: &Path) -> Result<ExitCode, String> {
    let sources = users_write::user_sources(route).map_err(|e| e.to_string())?;
    let text = match &sources.users_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        },
        None => String::new(),
    };
    let config = users_write::load_with_users(route, &text).map_err(|e| e.to_string())?;
    let inline = |name: &str| sources.inline.iter().any(|n| n == name);
    let now = chrono::Utc::now().timestamp();
    print!("{}", list::render(&config, |name| !inline(name), now));
    Ok(ExitCode::SUCCESS)
}
