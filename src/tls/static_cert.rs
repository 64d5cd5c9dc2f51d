//! A certificate served from PEM files, swapped in place when the files change.
//!
//! certbot and similar tools renew by replacing the files (or the symlinks to them). A
//! watcher polls both files' modification time and size every [`POLL_INTERVAL`] and
//! reloads them on any change; new handshakes get the new certificate, established ones
//! are untouched. A change that does not load (a half-written file, a key from another
//! renewal) is logged once and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

use crate::tls::pem_files::load_certified_key;
use crate::tls::TlsError;

/// How often the certificate and key files are checked for changes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate of a file-backed route, kept fresh by a watcher task.
pub(crate) struct FileCert {
    /// Shared with the rustls configuration (reads) and the watcher (writes).
    resolver: Arc<FileResolver>,
    /// Polls the files; stops when the route is dropped.
    _watcher: AbortOnDropHandle<()>,
}

impl FileCert {
    /// Loads the files and starts watching them. Fails if they do not load now.
    pub(crate) fn start(cert: &Path, key: &Path, names: String) -> Result<Self, TlsError> {
        // Stamp before loading: a change racing with the load is then seen by the watcher.
        let seen = Stamps::read(cert, key);
        let resolver = Arc::new(FileResolver {
            current: ArcSwap::from_pointee(load_certified_key(cert, key)?),
        });
        let runtime = Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
        let watcher = AbortOnDropHandle::new(runtime.spawn(watch(
            resolver.clone(),
            cert.to_owned(),
            key.to_owned(),
            seen,
            names,
        )));
        Ok(Self {
            resolver,
            _watcher: watcher,
        })
    }

    /// The certificate resolver to put in the route's rustls configuration.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }
}

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
struct FileResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What identifies one version of a file: modification time and size (`None`: unreadable).
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The stamps of the certificate and key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    cert: Stamp,
    key: Stamp,
}

impl Stamps {
    fn read(cert: &Path, key: &Path) -> Self {
        let stamp = |path: &Path| -> Stamp {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok(), meta.len()))
        };
        Self {
            cert: stamp(cert),
            key: stamp(key),
        }
    }
}

async fn watch(
    resolver: Arc<FileResolver>,
    cert: PathBuf,
    key: PathBuf,
    mut seen: Stamps,
    names: String,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the files were just loaded
    loop {
        ticker.tick().await;
        let (cert_path, key_path) = (cert.clone(), key.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let now = Stamps::read(&cert_path, &key_path);
            if now == seen {
                return (now, None);
            }
            (now, Some(load_certified_key(&cert_path, &key_path)))
        })
        .await;
        match loaded {
            Ok((_, None)) => {}
            Ok((now, Some(Ok(certified)))) => {
                seen = now;
                resolver.current.store(Arc::new(certified));
                tracing::info!(route = %names, cert = %cert.display(), "reloaded certificate files");
            }
            Ok((now, Some(Err(error)))) => {
                seen = now;
                tracing::warn!(route = %names, %error, "certificate files changed but do not load; still serving the previous certificate");
            }
            Err(error) => {
                tracing::warn!(route = %names, %error, "certificate reload task failed");
            }
        }
    }
}
