//! The users file as `frontgate user` edits it: the `users:` mapping as YAML values, so an
//! entry the command does not touch is written back as it was read (its short or long form,
//! its sizes and dates as spelled), and the one entry a command changes is edited key by
//! key. Written back whole through serde, under a header saying the file is machine-managed.

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

/// The header of every users file the CLI writes.
const HEADER: &str = "\
# MTProto users of frontgate, managed by `frontgate user` (add, remove, enable, disable,
# rotate, reset), which rewrites this file whole: comments here are not kept. The running
# gateway reloads it when it changes. Keys: see routes.example.yaml (mtproto.users).
";

/// The users of a users file, in the file's order.
#[derive(Debug, Default)]
pub(super) struct UsersDocument {
    users: Mapping,
}

/// A new user's entry, as `user add` writes it; the values are checked by the route
/// file's own validation before the file is written.
#[derive(Debug, Serialize)]
pub(super) struct NewUser {
    /// 32 hex characters.
    pub(super) secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) quota: Option<NewQuota>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_ips: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) routes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<String>,
}

/// `quota:` of a new user.
#[derive(Debug, Serialize)]
pub(super) struct NewQuota {
    /// A size as given (`50GiB`).
    pub(super) bytes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) resets_on: Option<u8>,
}

/// The whole file as serde writes it.
#[derive(Serialize)]
struct FileOut<'a> {
    users: &'a Mapping,
}

impl UsersDocument {
    /// Reads users-file text (empty: no users). The text has passed the users file's own
    /// validation, so a failure here is unexpected; it is reported all the same.
    pub(super) fn parse(text: &str) -> Result<UsersDocument, String> {
        if text.trim().is_empty() {
            return Ok(UsersDocument::default());
        }
        let root: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let users = match root {
            Value::Null => Mapping::new(),
            Value::Mapping(mut top) => match top.remove("users") {
                None | Some(Value::Null) => Mapping::new(),
                Some(Value::Mapping(users)) => users,
                Some(_) => return Err("`users:` is not a mapping".to_string()),
            },
            _ => return Err("the file is not a mapping with `users:`".to_string()),
        };
        Ok(UsersDocument { users })
    }

    /// Whether the file has a user called `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Adds `name` with `entry` at the end.
    pub(super) fn insert(&mut self, name: &str, entry: &NewUser) -> Result<(), String> {
        let value = serde_yaml_ng::to_value(entry).map_err(|e| e.to_string())?;
        self.users.insert(Value::from(name), value);
        Ok(())
    }

    /// Removes `name`; false if the file has no such user.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        self.users.shift_remove(name).is_some()
    }

    /// Sets `key` of `name`'s entry to `value` (`None`: removes the key); a short-form entry
    /// (`name: <secret>`) becomes the mapping form first. False if there is no such user.
    pub(super) fn set(&mut self, name: &str, key: &str, value: Option<Value>) -> bool {
        let Some(entry) = self.users.get_mut(name) else {
            return false;
        };
        if !entry.is_mapping() {
            let secret = std::mem::take(entry);
            let mut long = Mapping::new();
            long.insert(Value::from("secret"), secret);
            *entry = Value::Mapping(long);
        }
        if let Value::Mapping(fields) = entry {
            match value {
                Some(value) => {
                    fields.insert(Value::from(key), value);
                }
                None => {
                    fields.shift_remove(key);
                }
            }
        }
        true
    }

    /// The file's new text: the header, then the users.
    pub(super) fn to_text(&self) -> Result<String, String> {
        let body =
            serde_yaml_ng::to_string(&FileOut { users: &self.users }).map_err(|e| e.to_string())?;
        Ok(format!("{HEADER}{body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

    #[test]
    fn untouched_entries_are_written_back_as_they_were() {
        let text = format!(
            "users:\n  alice: {ALICE}\n  bob:\n    secret: {ALICE}\n    quota: {{bytes: 50GiB, period: month}}\n    expires: 2027-01-01\n"
        );
        let mut doc = UsersDocument::parse(&text).unwrap();
        assert!(doc.set("bob", "enabled", Some(Value::Bool(false))));
        let again: Value = serde_yaml_ng::from_str(&doc.to_text().unwrap()).unwrap();
        assert_eq!(again["users"]["alice"], Value::from(ALICE));
        assert_eq!(
            again["users"]["bob"]["quota"]["bytes"],
            Value::from("50GiB")
        );
        assert_eq!(again["users"]["bob"]["expires"], Value::from("2027-01-01"));
        assert_eq!(again["users"]["bob"]["enabled"], Value::Bool(false));
    }

    #[test]
    fn a_short_entry_grows_into_a_mapping_when_a_key_is_set() {
        let mut doc = UsersDocument::parse(&format!("users:\n  alice: {ALICE}\n")).unwrap();
        assert!(doc.set("alice", "enabled", Some(Value::Bool(false))));
        assert!(!doc.set("carol", "enabled", Some(Value::Bool(false))));
        let text = doc.to_text().unwrap();
        assert!(text.starts_with("# MTProto users of frontgate"), "{text}");
        let again: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(again["users"]["alice"]["secret"], Value::from(ALICE));
        assert!(doc.set("alice", "enabled", None));
        assert!(doc.remove("alice") && !doc.remove("alice") && !doc.has("alice"));
    }

    #[test]
    fn an_empty_file_has_no_users_and_other_shapes_are_refused() {
        assert!(!UsersDocument::parse("").unwrap().has("alice"));
        assert!(!UsersDocument::parse("users:\n").unwrap().has("alice"));
        assert!(UsersDocument::parse("- a\n").is_err());
        assert!(UsersDocument::parse("users: [a]\n").is_err());
    }
}
