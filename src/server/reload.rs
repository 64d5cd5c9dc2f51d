//! Hot reload: on SIGHUP, and when the route file's contents change on disk (checked every
//! [`POLL_INTERVAL`], which also catches editors and configuration managers that replace the
//! file), the file is read and validated; a valid one is applied, an invalid one is refused
//! with its error logged while the running table keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config;
use crate::server::gateway::Gateway;

/// How often the file is compared with what was last loaded.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The new configuration could not be put in place (listen address, TLS route).
    #[error(transparent)]
    Apply(#[from] crate::server::gateway::ApplyError),
}

/// Loads `path` and applies it to `gateway`, logging the result either way.
pub async fn reload(path: &Path, gateway: &Gateway, trigger: &str) -> Result<(), ReloadError> {
    let result = match config::load(path) {
        Ok(config) => {
            let routes = config.routes.routes().len();
            gateway
                .apply(config)
                .await
                .map(|()| routes)
                .map_err(ReloadError::from)
        }
        Err(e) => Err(e.into()),
    };
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

/// Watches for SIGHUP and file changes until the task is dropped.
pub async fn watch(path: PathBuf, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut last_seen = std::fs::read(&path).ok();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = ticker.tick() => {
                // A file briefly missing while being replaced is not a change.
                let Ok(now) = std::fs::read(&path) else { continue };
                if last_seen.as_ref() == Some(&now) {
                    continue;
                }
                last_seen = Some(now);
                "file changed"
            }
        };
        if trigger == "SIGHUP" {
            last_seen = std::fs::read(&path).ok();
        }
        // The outcome is logged inside; the watcher goes on either way.
        let _ = reload(&path, &gateway, trigger).await;
    }
}
