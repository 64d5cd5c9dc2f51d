//! The users file on disk for `frontgate user`: an exclusive lock held across each
//! read-modify-write (two CLIs at once never lose an update), and the atomic replacement of
//! the file (a new file in the same directory, synced, renamed over the old one, the
//! directory synced), keeping the old file's mode and owner.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The mode of a users file the CLI creates: like the route file's, readable by the
/// gateway's group, not by others (it holds secrets).
const NEW_FILE_MODE: u32 = 0o640;

/// The users file, locked against other `frontgate user` processes until dropped.
pub(super) struct LockedUsersFile {
    /// The file as configured.
    path: PathBuf,
    /// Holds the lock on `PATH.lock`; released when closed.
    _lock: File,
}

impl LockedUsersFile {
    /// Takes the exclusive lock on `PATH.lock` beside the users file at `path` (creating
    /// the lock file if needed), waiting for another holder to finish.
    pub(super) fn lock(path: &Path) -> Result<LockedUsersFile, String> {
        let lock_path = sibling(path, "", ".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(NEW_FILE_MODE)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        Ok(LockedUsersFile {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The file's text; empty when it does not exist yet.
    pub(super) fn read(&self) -> Result<String, String> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Replaces the file's content with `text` atomically: a reader sees the old file or
    /// the new one, never a part; after a crash the file is one of the two. A symlinked
    /// file has its target replaced.
    pub(super) fn replace(&self, text: &str) -> Result<(), String> {
        let target = fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let (mode, owner) = match fs::metadata(&target) {
            Ok(old) => (old.mode() & 0o7777, Some((old.uid(), old.gid()))),
            Err(e) if e.kind() == ErrorKind::NotFound => (NEW_FILE_MODE, None),
            Err(e) => return Err(format!("cannot read {}: {e}", target.display())),
        };
        let temp = sibling(&target, ".", ".new");
        let written = write_synced(&temp, text, mode, owner)
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))
            .and_then(|()| {
                fs::rename(&temp, &target).map_err(|e| {
                    format!(
                        "cannot rename {} to {}: {e}",
                        temp.display(),
                        target.display()
                    )
                })
            });
        if written.is_err() {
            // Best effort: the old file is untouched either way.
            let _ = fs::remove_file(&temp);
        }
        written?;
        let dir = directory_of(&target);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync the directory {}: {e}", dir.display()))
    }
}

/// Writes `text` to a new file at `path` with `mode` and `owner` (uid, gid), synced to disk.
fn write_synced(
    path: &Path,
    text: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    // Left over by an interrupted run: we hold the lock, so nobody else is writing it.
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    if let Some((uid, gid)) = owner {
        let now = file.metadata()?;
        if (now.uid(), now.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
    }
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// `DIR/{prefix}NAME{suffix}` for the file `DIR/NAME`.
fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    directory_of(path).join(format!("{prefix}{name}{suffix}"))
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_new_one_is_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        let file = LockedUsersFile::lock(&path).unwrap();
        assert_eq!(file.read().unwrap(), "");
        file.replace("users: {}\n").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        file.replace("users:\n  a: x\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(file.read().unwrap(), "users:\n  a: x\n");
        // Only the file, its lock and nothing half-written are left.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["users.yaml", "users.yaml.lock"]);
    }

    #[test]
    fn a_symlinked_file_has_its_target_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.yaml");
        fs::write(&target, "users: {}\n").unwrap();
        let link = dir.path().join("users.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        LockedUsersFile::lock(&link)
            .unwrap()
            .replace("users:\n  b: y\n")
            .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "users:\n  b: y\n");
    }
}
