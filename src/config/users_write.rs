//! What `frontgate user` needs from the route file to edit `mtproto.users_file` safely:
//! where the users file is and which users the route file defines inline (the CLI never
//! rewrites the route file, so those stay untouched), and a full validation of the route
//! file with new users-file text before that text is written, so a change can never leave a
//! file that `run` would refuse.

use std::path::{Path, PathBuf};

use super::model::RouteFile;
use super::spans::Spans;
use super::{parse_with, read_text, resolve, users_file, yaml_error, Config, ConfigError};

/// Where a route file's users come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSources {
    /// `mtproto.users_file`, resolved against the route file's directory, if configured.
    pub users_file: Option<PathBuf>,
    /// The names under the route file's own `mtproto.users`, in name order.
    pub inline: Vec<String>,
}

/// Reads the route file at `route` far enough to say where its users come from (the users
/// file need not exist yet). Errors are the YAML reader's, placed in the route file.
pub fn user_sources(route: &Path) -> Result<UserSources, ConfigError> {
    let text = read_text(route)?;
    let origin = route.display().to_string();
    let spans = Spans::of(&text);
    let file: RouteFile =
        serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(e, &origin, &spans))?;
    let Some(mtproto) = file.mtproto else {
        return Ok(UserSources {
            users_file: None,
            inline: Vec::new(),
        });
    };
    Ok(UserSources {
        users_file: mtproto
            .users_file
            .map(|path| resolve(route.parent(), &path)),
        inline: mtproto.users.into_keys().collect(),
    })
}

/// Loads the route file at `route` as [`super::load`] does, but with `users_text` as the
/// content of its `mtproto.users_file` (errors in it are placed at the users file's path and
/// at their line and column in `users_text`).
pub fn load_with_users(route: &Path, users_text: &str) -> Result<Config, ConfigError> {
    let text = read_text(route)?;
    let read_users = |path: &Path| users_file::parse(users_text, path);
    parse_with(
        &text,
        &route.display().to_string(),
        route.parent(),
        read_users,
    )
}
