//! Hot reload, and the one watcher of the files the gateway serves from.
//!
//! The route file is read and validated on SIGHUP and when its contents change on disk; a
//! valid one is applied, an invalid one is refused with its error logged while the running
//! table keeps serving. The route file's `deny_file` is part of the configuration: a change
//! of it reloads the configuration the same way (a bad line refuses it, and the running list
//! keeps serving). The certificate files of the running `tls:` routes are re-read on SIGHUP
//! and when they change, and served to new handshakes when they load.
//!
//! One OS watch (inotify through `notify`) covers the directories that hold these files: the
//! file's own directory, so editors' write-and-rename and certbot's or Kubernetes' symlink
//! swaps are seen, and the directory the file resolves to, so an edit of a symlink's target
//! is seen too. Whatever happens there wakes one task, which waits for [`SETTLE`] of quiet
//! and then compares contents: an unrelated file in the same directory changes nothing.
//! Where inotify is unavailable, `notify`'s polling watcher (its own thread) stands in.
//!
//! Every file is read on the blocking pool, never on a runtime worker: a slow disk or a
//! stuck network mount must not stall the connections served on that worker.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::config;
use crate::server::gateway::Gateway;
use crate::server::registry;

/// How long the watched directories must stay quiet after a change before the files are
/// read: an editor's save, or certbot's swap of both links, is then acted on once, complete.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The longest wait after a change: a directory that never stays quiet (a log file written
/// beside the route file) must not hold a reload back.
pub const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// How often the polling watcher (used only where inotify is unavailable) scans.
const POLL_FALLBACK: Duration = Duration::from_secs(2);

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The new configuration could not be put in place (listen address, TLS route).
    #[error(transparent)]
    Apply(#[from] crate::server::gateway::ApplyError),
    /// The task reading the file did not finish (it panicked, or the runtime is stopping).
    #[error("reading the route file failed: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Loads `path` and applies it to `gateway`, logging the result either way.
pub async fn reload(path: &Path, gateway: &Gateway, trigger: &str) -> Result<(), ReloadError> {
    let result = load_and_apply(path, gateway).await;
    match &result {
        Ok(routes) => {
            tracing::info!(path = %path.display(), trigger, routes, "configuration reloaded")
        }
        Err(e) => tracing::error!(
            path = %path.display(),
            trigger,
            error = %e,
            "configuration reload refused; the previous configuration keeps serving"
        ),
    }
    result.map(|_| ())
}

/// Reads and validates the file on the blocking pool, then applies it; returns the number of
/// routes.
async fn load_and_apply(path: &Path, gateway: &Gateway) -> Result<usize, ReloadError> {
    let owned = path.to_owned();
    let config = tokio::task::spawn_blocking(move || config::load(&owned)).await??;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let routes = config.routes.routes().len();
    gateway.apply(config).await?;
    Ok(routes)
}

/// Watches for SIGHUP and for changes of the route file, its deny file and the running
/// certificate files, until the task is dropped.
pub async fn watch(path: PathBuf, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let changed = Arc::new(Notify::new());
    let dirs = Arc::new(Mutex::new(WatchedDirs::new(Changed(changed.clone()))));
    let mut last_seen = read_inputs(&path, &gateway).await;
    loop {
        follow(&dirs, &path, &gateway).await;
        // Also catches a change made before its directory was watched (a route just added).
        refresh_certificates(&gateway).await;
        let trigger = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            () = settled(&changed) => "file changed",
        };
        let now = read_inputs(&path, &gateway).await;
        // A route file briefly missing while being replaced is not a change.
        if trigger == "file changed" && (now[0].is_none() || now == last_seen) {
            continue;
        }
        last_seen = now;
        // The outcome is logged inside; the watcher goes on either way.
        let _ = reload(&path, &gateway, trigger).await;
    }
}

/// The contents of the route file and of the other files the running configuration was
/// read from (`mtproto.users_file`, `deny_file`), each read as loading reads it (bounded),
/// on the blocking pool; `None` for one that cannot be read.
async fn read_inputs(path: &Path, gateway: &Gateway) -> Vec<Option<Vec<u8>>> {
    let mut files = vec![path.to_owned()];
    files.extend(gateway.input_files());
    let read = move || {
        files
            .iter()
            .map(|f| registry::read_bounded(f).ok())
            .collect()
    };
    tokio::task::spawn_blocking(read).await.unwrap_or_default()
}

/// Resolves once a change has been signalled and [`SETTLE`] has then passed without another,
/// or [`SETTLE_AT_MOST`] after the first.
async fn settled(changed: &Notify) {
    changed.notified().await;
    let latest = tokio::time::Instant::now() + SETTLE_AT_MOST;
    loop {
        let quiet_until = latest.min(tokio::time::Instant::now() + SETTLE);
        if tokio::time::timeout_at(quiet_until, changed.notified())
            .await
            .is_err()
            || tokio::time::Instant::now() >= latest
        {
            return;
        }
    }
}

/// Re-reads the running routes' certificate files on the blocking pool (each logs what it
/// found).
async fn refresh_certificates(gateway: &Gateway) {
    let terminators = gateway.terminators();
    if terminators.iter().all(|t| t.files().is_none()) {
        return;
    }
    let refreshed = tokio::task::spawn_blocking(move || {
        for terminator in &terminators {
            terminator.refresh_files();
        }
    });
    if let Err(error) = refreshed.await {
        tracing::warn!(%error, "re-reading the certificate files failed");
    }
}

/// Points the watch at the directories of the route file, of its deny file and of the running
/// certificate files (they change with the configuration, and symlink targets with each
/// renewal).
async fn follow(dirs: &Arc<Mutex<WatchedDirs>>, path: &Path, gateway: &Gateway) {
    let mut files = vec![path.to_owned()];
    files.extend(gateway.input_files());
    for terminator in gateway.terminators() {
        files.extend(terminator.files().into_iter().flatten().map(Path::to_owned));
    }
    let dirs = dirs.clone();
    let followed = tokio::task::spawn_blocking(move || {
        dirs.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .follow(directories_of(&files));
    });
    if let Err(error) = followed.await {
        tracing::warn!(%error, "updating the watched directories failed");
    }
}

/// Where changes to `files` show: each one's directory, and the directory it resolves to.
fn directories_of(files: &[PathBuf]) -> HashSet<PathBuf> {
    let parent = |file: &Path| match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut dirs = HashSet::new();
    for file in files {
        dirs.insert(parent(file));
        if let Ok(resolved) = std::fs::canonicalize(file) {
            dirs.insert(parent(&resolved));
        }
    }
    dirs
}

/// Wakes the watcher task; called by `notify` on its own thread.
#[derive(Clone)]
struct Changed(Arc<Notify>);

impl notify::EventHandler for Changed {
    fn handle_event(&mut self, event: notify::Result<notify::Event>) {
        // Opening or reading a file (our own reads included) changes nothing; an error may
        // hide a change, so it is looked at.
        let reads = |kind: &EventKind| {
            matches!(kind, EventKind::Access(access)
                if *access != AccessKind::Close(AccessMode::Write))
        };
        if !event.is_ok_and(|event| reads(&event.kind)) {
            self.0.notify_one();
        }
    }
}

/// The OS watch and the directories it covers now.
struct WatchedDirs {
    /// `None` when no watcher could be made: then only SIGHUP reloads.
    watcher: Option<Box<dyn Watcher + Send>>,
    /// Directories watched successfully.
    watched: HashSet<PathBuf>,
    /// Directories that could not be watched, already reported.
    failed: HashSet<PathBuf>,
}

impl WatchedDirs {
    fn new(changed: Changed) -> Self {
        let watcher: Option<Box<dyn Watcher + Send>> = match notify::RecommendedWatcher::new(
            changed.clone(),
            notify::Config::default(),
        ) {
            Ok(watcher) => Some(Box::new(watcher)),
            Err(error) => {
                tracing::warn!(%error, "cannot use inotify; polling the watched files every {POLL_FALLBACK:?}");
                let config = notify::Config::default().with_poll_interval(POLL_FALLBACK);
                match notify::PollWatcher::new(changed, config) {
                    Ok(watcher) => Some(Box::new(watcher)),
                    Err(error) => {
                        tracing::warn!(%error, "cannot watch files; reload with SIGHUP");
                        None
                    }
                }
            }
        };
        Self {
            watcher,
            watched: HashSet::new(),
            failed: HashSet::new(),
        }
    }

    /// Watches exactly `wanted` (blocking: path lookups).
    fn follow(&mut self, wanted: HashSet<PathBuf>) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.watched.difference(&wanted) {
            // A directory that disappeared has lost its watch already.
            let _ = watcher.unwatch(gone);
        }
        self.watched.retain(|dir| wanted.contains(dir));
        self.failed.retain(|dir| wanted.contains(dir));
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.failed.remove(&dir);
                    self.watched.insert(dir);
                }
                Err(error) => {
                    if !self.failed.contains(&dir) {
                        tracing::warn!(dir = %dir.display(), %error, "cannot watch for file changes; reload with SIGHUP");
                        self.failed.insert(dir);
                    }
                }
            }
        }
    }
}
