//! `frontgate link`: each MTProto user's tg:// and t.me links, as text, JSON, terminal QR
//! codes or PNG files.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::ConfigArg;
use crate::config::{self, Config};
use crate::mtproto::links::{self, UserLink};
use crate::ops::qr;

/// `frontgate link` options.
#[derive(Args)]
pub(super) struct LinkArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    output: LinkOutput,
}

/// How links are printed: by `link`, and by `user add` and `user rotate` for the user they
/// change.
#[derive(Args)]
pub(super) struct LinkOutput {
    /// Host clients connect to (default: the route's domain, which must resolve here).
    #[arg(long)]
    host: Option<String>,
    /// Port clients connect to, 1 to 65535 (default: the first listen address's port).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Also draw each tg:// link as a QR code (black on white whatever the terminal's
    /// colours).
    #[arg(long, conflicts_with = "json")]
    qr: bool,
    /// Write each tg:// link as a QR code PNG into DIR (created if missing), one file per
    /// user and route name: USER@DOMAIN.png, mode 0600 (the code holds the secret).
    #[arg(long, value_name = "DIR")]
    qr_png: Option<PathBuf>,
    /// Print the links as a JSON array of {user, domain, host, port, secret, tg, tme}.
    #[arg(long)]
    json: bool,
}

impl LinkOutput {
    /// Whether the links go out as JSON (then nothing else may be printed on stdout).
    pub(super) fn is_json(&self) -> bool {
        self.json
    }
}

pub(super) fn main(args: LinkArgs) -> ExitCode {
    let config = match config::load(&args.config.path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("frontgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_links(&config, args.user.as_deref(), &args.output)
}

/// Prints the links of every user of `config` (or only `user`) as `output` says, each user
/// only with the names their `routes` allow.
pub(super) fn print_links(config: &Config, user: Option<&str>, output: &LinkOutput) -> ExitCode {
    let links = match links::user_links(config, output.host.as_deref(), output.port, user) {
        Ok(links) => links,
        Err(e) => {
            eprintln!("frontgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let links: Vec<UserLink> = links
        .into_iter()
        .filter(|link| allowed(config, link))
        .collect();
    let mut ok = true;
    if output.json {
        // Serialising strings and numbers cannot fail.
        let json = serde_json::to_string_pretty(&links).unwrap_or_default();
        println!("{json}");
    } else {
        for link in &links {
            println!(
                "{} ({})\n  {}\n  {}",
                link.user, link.domain, link.tg, link.tme
            );
            if output.qr {
                match qr::terminal(&link.tg) {
                    Ok(code) => print!("{code}"),
                    Err(e) => {
                        eprintln!("frontgate: cannot draw the QR code of {}: {e}", link.user);
                        ok = false;
                    }
                }
            }
        }
    }
    if let Some(dir) = &output.qr_png {
        ok &= write_pngs(dir, &links, !output.json);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether the link's user may use its domain (a link they cannot use is not handed out).
fn allowed(config: &Config, link: &UserLink) -> bool {
    config
        .mtproto
        .iter()
        .flat_map(|m| &m.users)
        .find(|u| u.name == link.user)
        .is_none_or(|u| u.policy.allows_name(Some(&link.domain)))
}

/// Writes one PNG per link into `dir`; says which files it wrote when `announce`. False if
/// any could not be drawn or written (each failure is reported).
fn write_pngs(dir: &Path, links: &[UserLink], announce: bool) -> bool {
    if let Err(e) = fs::create_dir_all(dir) {
        eprintln!("frontgate: cannot create {}: {e}", dir.display());
        return false;
    }
    let mut ok = true;
    for link in links {
        let path = dir.join(png_file_name(&link.user, &link.domain));
        let written = qr::png(&link.tg)
            .map_err(|e| e.to_string())
            .and_then(|image| write_private(&path, &image).map_err(|e| e.to_string()));
        match written {
            Ok(()) if announce => println!("wrote {}", path.display()),
            Ok(()) => {}
            Err(e) => {
                eprintln!("frontgate: cannot write {}: {e}", path.display());
                ok = false;
            }
        }
    }
    ok
}

/// Writes `bytes` to `path`, readable by its owner only (also when the file existed).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

/// `USER@DOMAIN.png`, with every character other than ASCII letters, digits, `-`, `_` and
/// `.` replaced by `_` and no leading `.`: always one plain file name inside the directory.
fn png_file_name(user: &str, domain: &str) -> String {
    let safe = |part: &str| -> String {
        let mut out: String = part
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if out.starts_with('.') {
            out.replace_range(..1, "_");
        }
        out
    };
    format!("{}@{}.png", safe(user), safe(domain))
}

#[cfg(test)]
mod tests {
    use super::png_file_name;

    #[test]
    fn png_file_names_are_plain_names_after_user_and_domain() {
        assert_eq!(
            png_file_name("alice", "proxy.example.com"),
            "alice@proxy.example.com.png"
        );
        assert_eq!(png_file_name("../x", "a/b"), "_._x@a_b.png");
        assert_eq!(png_file_name("..", "é"), "_.@_.png");
    }
}
