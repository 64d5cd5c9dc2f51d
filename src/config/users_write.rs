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

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "listen: 127.0.0.1:8443\nmtproto:\n  users:\n    alice: a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1\n  users_file: users.yaml\nroutes:\n  - sni: a.test\n    mtproto: true\n    to: 127.0.0.1:8080\n";

    fn route_in(dir: &Path) -> PathBuf {
        let route = dir.join("routes.yaml");
        std::fs::write(&route, ROUTE).unwrap();
        route
    }

    #[test]
    fn the_sources_are_the_resolved_users_file_and_the_inline_names() {
        let dir = tempfile::tempdir().unwrap();
        let route = route_in(dir.path());
        // The users file need not exist.
        assert_eq!(
            user_sources(&route).unwrap(),
            UserSources {
                users_file: Some(dir.path().join("users.yaml")),
                inline: vec!["alice".to_string()],
            }
        );
    }

    #[test]
    fn the_given_users_text_is_validated_with_the_route_file() {
        let dir = tempfile::tempdir().unwrap();
        let route = route_in(dir.path());
        let users = "users:\n  bob:\n    secret: b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0\n    usage_reset: 2027-01-01T00:00:00Z\n";
        let config = load_with_users(&route, users).unwrap();
        let bob = &config.mtproto.unwrap().users[1];
        assert_eq!(bob.policy.usage_reset, Some(1_798_761_600));
        // Errors are placed in the users file, at the given text's line and column.
        let bad =
            "users:\n  bob:\n    secret: b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0\n    routes: [z.test]\n";
        let err = load_with_users(&route, bad).unwrap_err().to_string();
        let at = format!("{}:4:14:", dir.path().join("users.yaml").display());
        assert!(err.starts_with(&at), "{err}");
        assert!(err.contains("z.test"), "{err}");
        let clash = "users:\n  alice: b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0\n";
        assert!(load_with_users(&route, clash).is_err());
    }
}
