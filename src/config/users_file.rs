//! `mtproto.users_file`: users in a file of their own (`users:` and nothing else), so
//! `frontgate user` can manage them without touching the operator's commented route file.
//! Read with the route file, validated like its inline users, with `file:line:column`
//! errors of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::spans::Spans;
use super::users::{compile_users, MtprotoUser, UserValue};
use super::warning::{Concern, Warning};
use super::{read_text, yaml_error, ConfigError, Fault, Problem};

/// The key of a user in the users file.
pub const USERS_KEY: &str = "users";

/// The users file as serde sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFileModel {
    #[serde(default)]
    users: BTreeMap<String, UserValue>,
}

/// A read and validated users file.
#[derive(Debug)]
pub struct UsersFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its users, in name order.
    pub users: Vec<MtprotoUser>,
    spans: Spans,
}

impl UsersFile {
    /// Whether the file defines `name`.
    pub fn has(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
    }

    /// `file:line:column` of `name`'s entry, for messages about it.
    pub fn place_of(&self, name: &str) -> String {
        let key = format!("{USERS_KEY}.{name}");
        match self.spans.key(&key) {
            Some(at) => format!("{}:{}:{}", self.path.display(), at.line, at.column),
            None => self.path.display().to_string(),
        }
    }

    /// A warning about `name`'s entry (its secret), placed in this file.
    pub(super) fn warning(&self, name: &str, concern: Concern) -> Warning {
        let key = format!("{USERS_KEY}.{name}");
        let secret = format!("{key}.secret");
        Warning {
            origin: self.path.display().to_string(),
            // A short-form entry is its secret: then the entry's own value.
            at: self.spans.value(&secret),
            key,
            concern,
        }
    }

    /// `fault`, about a node of this file, as an error placed in it.
    pub(super) fn place(&self, fault: Fault) -> ConfigError {
        fault.place(&self.spans, &self.path.display().to_string())
    }
}

/// Reads and validates the users file at `path` (an empty file has no users).
pub fn read(path: &Path) -> Result<UsersFile, ConfigError> {
    let text = read_text(path)?;
    parse(&text, path)
}

/// Validates users-file text read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<UsersFile, ConfigError> {
    let origin = path.display().to_string();
    let spans = Spans::of(text);
    if let Some(dup) = spans.duplicate() {
        return Err(ConfigError::Rule {
            origin,
            at: Some(dup.again),
            key: dup.key.clone(),
            problem: Box::new(Problem::DuplicateKey { first: dup.first }),
        });
    }
    let model: UsersFileModel = if text.trim().is_empty() {
        UsersFileModel {
            users: BTreeMap::new(),
        }
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(e, &origin, &spans))?
    };
    let users = compile_users(USERS_KEY, model.users).map_err(|f| f.place(&spans, &origin))?;
    Ok(UsersFile {
        path: path.to_owned(),
        users,
        spans,
    })
}
