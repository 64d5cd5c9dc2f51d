//! The users' usage on disk (`state.dir/usage.json`), so quotas and counters survive a
//! restart and a crash: written atomically (a temporary file, fsync, rename, fsync of the
//! directory) every [`SAVE_EVERY`] when something changed and at shutdown, read at start. A
//! crash loses at most one interval. A file that cannot be read as usage is reported and
//! set aside (renamed, never overwritten), and counting starts again from zero.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::MtprotoSettings;
use crate::mtproto::state::MtprotoState;

/// How often changed usage is written.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// The file's name in the state directory.
pub const FILE_NAME: &str = "usage.json";

/// The format version written; a file of another version is set aside.
const VERSION: u32 = 1;

/// One user's saved usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedUsage {
    /// Bytes read from the user's clients, ever.
    pub bytes_from_client: u64,
    /// Bytes written to them, ever.
    pub bytes_to_client: u64,
    /// When the current quota period began (Unix seconds).
    pub period_start: i64,
    /// Bytes both ways in that period.
    pub period_bytes: u64,
    /// The user's `usage_reset` last acted on (absent in older files: none).
    #[serde(default)]
    pub reset_applied: i64,
}

/// The file.
#[derive(Debug, Serialize, Deserialize)]
struct UsageFile {
    version: u32,
    users: BTreeMap<String, SavedUsage>,
}

/// Why the saved usage could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not usage this version can read; it was renamed to `set_aside`.
    #[error("{path} is not a usage file this frontgate can read ({why}); it was moved to {set_aside} and counting starts from zero")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// Where it is now.
        set_aside: PathBuf,
    },
}

/// The usage saved in `dir`: empty when there is no file yet.
pub fn load(dir: &Path) -> Result<BTreeMap<String, SavedUsage>, UsageError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(UsageError::Io { path, source }),
    };
    let why = match serde_json::from_slice::<UsageFile>(&bytes) {
        Ok(file) if file.version == VERSION => return Ok(file.users),
        Ok(file) => format!("version {}, expected {VERSION}", file.version),
        Err(e) => e.to_string(),
    };
    let set_aside = dir.join(format!(
        "{FILE_NAME}.corrupt-{}",
        crate::mtproto::users::unix_now()
    ));
    fs::rename(&path, &set_aside).map_err(|source| UsageError::Io {
        path: path.clone(),
        source,
    })?;
    Err(UsageError::Corrupt {
        path,
        why,
        set_aside,
    })
}

/// Writes `users` to `dir` atomically.
pub fn save(dir: &Path, users: &BTreeMap<String, SavedUsage>) -> Result<(), UsageError> {
    let path = dir.join(FILE_NAME);
    let io_error = |source| UsageError::Io {
        path: path.clone(),
        source,
    };
    let file = UsageFile {
        version: VERSION,
        users: users.clone(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| io_error(e.into()))?;
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let mut out = File::create(&temporary).map_err(io_error)?;
    out.write_all(&text).map_err(io_error)?;
    out.sync_all().map_err(io_error)?;
    drop(out);
    fs::rename(&temporary, &path).map_err(io_error)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)?;
    Ok(())
}

/// What the running state says each user has used, by name.
pub fn snapshot(settings: &MtprotoSettings, state: &MtprotoState) -> BTreeMap<String, SavedUsage> {
    state
        .users(settings)
        .map(|(name, counters)| {
            let usage = SavedUsage {
                bytes_from_client: counters.bytes_from_client.load(Ordering::Relaxed),
                bytes_to_client: counters.bytes_to_client.load(Ordering::Relaxed),
                period_start: counters.period_start.load(Ordering::Relaxed),
                period_bytes: counters.period_bytes.load(Ordering::Relaxed),
                reset_applied: counters.reset_applied.load(Ordering::Relaxed),
            };
            (name.to_string(), usage)
        })
        .collect()
}

/// Puts the saved usage of each configured user into the running state (before any session
/// of theirs), then acts on a `usage_reset` newer than the saved one (given while the
/// gateway was down). Saved users no longer configured are left out.
pub fn restore(
    settings: &MtprotoSettings,
    state: &MtprotoState,
    saved: &BTreeMap<String, SavedUsage>,
) {
    for (name, counters) in state.users(settings) {
        if let Some(usage) = saved.get(name) {
            counters
                .bytes_from_client
                .store(usage.bytes_from_client, Ordering::Relaxed);
            counters
                .bytes_to_client
                .store(usage.bytes_to_client, Ordering::Relaxed);
            counters
                .period_start
                .store(usage.period_start, Ordering::Relaxed);
            counters
                .period_bytes
                .store(usage.period_bytes, Ordering::Relaxed);
            counters
                .reset_applied
                .store(usage.reset_applied, Ordering::Relaxed);
        }
    }
    for (user, (_, counters)) in settings.users.iter().zip(state.users(settings)) {
        counters.apply_usage_reset(user.policy.usage_reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no file yet");
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_string(),
            SavedUsage {
                bytes_from_client: 1,
                bytes_to_client: 2,
                period_start: 3,
                period_bytes: 4,
                reset_applied: 5,
            },
        );
        save(dir.path(), &users).unwrap();
        assert_eq!(load(dir.path()).unwrap(), users);
        assert!(!dir.path().join("usage.json.tmp").exists());

        fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\": 1, \"users\": {\"alice\": 7",
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        let UsageError::Corrupt { set_aside, .. } = &err else {
            panic!("{err}");
        };
        assert!(set_aside.exists(), "kept for the operator");
        assert!(!dir.path().join(FILE_NAME).exists());
        assert!(
            err.to_string().contains("counting starts from zero"),
            "{err}"
        );
        // The next save starts a new file; the set-aside one stays.
        save(dir.path(), &users).unwrap();
        assert!(set_aside.exists());
    }
}
