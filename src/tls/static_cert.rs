//! A certificate served from PEM files, swapped in place when the files change.
//!
//! certbot and similar tools renew by replacing the files (or the symlinks to them). The
//! gateway's one file watcher (`server::reload`) sees that happen and calls
//! [`FileCert::refresh`], which re-reads both files and swaps in the new certificate when
//! their contents changed; new handshakes get it, established ones are untouched. A change
//! that does not load (a half-written file, a key from another renewal) is logged once and
//! the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::tls::pem_files::{parse_certified_key, read_key_pair, KeyPairFiles};
use crate::tls::TlsError;

/// The certificate of a file-backed route.
pub(crate) struct FileCert {
    /// Shared with the rustls configuration (reads) and [`FileCert::refresh`] (writes).
    resolver: Arc<FileResolver>,
    /// The configured `cert:` path.
    cert: PathBuf,
    /// The configured `key:` path.
    key: PathBuf,
    /// The route's names, for log lines.
    names: String,
    /// A digest of the file contents last looked at, loaded or refused (`None`: they could
    /// not be read): an unchanged pair is not parsed again, and a bad one is logged once.
    seen: Mutex<Option<[u8; 32]>>,
}

/// What [`crate::tls::TlsTerminator::refresh_files`] found.
#[derive(Debug)]
pub enum CertRefresh {
    /// The files hold what is served already (or the route takes its certificate from ACME).
    Unchanged,
    /// New files loaded: new handshakes get the new certificate.
    Reloaded,
    /// The files changed but do not load; the previous certificate stays in service.
    Refused(TlsError),
}

impl FileCert {
    /// Loads the files. Fails if they do not load now. Blocking file I/O: call it off the
    /// async runtime.
    pub(crate) fn start(cert: &Path, key: &Path, names: String) -> Result<Self, TlsError> {
        let files = read_key_pair(cert, key)?;
        let resolver = Arc::new(FileResolver {
            current: ArcSwap::from_pointee(parse_certified_key(&files)?),
        });
        Ok(Self {
            resolver,
            cert: cert.to_owned(),
            key: key.to_owned(),
            names,
            seen: Mutex::new(Some(digest(&files))),
        })
    }

    /// The certificate resolver to put in the route's rustls configuration.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }

    /// The certificate and key files.
    pub(crate) fn files(&self) -> [&Path; 2] {
        [&self.cert, &self.key]
    }

    /// Re-reads both files and serves them if their contents changed; logs what it did.
    /// Blocking file I/O: call it off the async runtime.
    pub(crate) fn refresh(&self) -> CertRefresh {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let parsed = match read_key_pair(&self.cert, &self.key) {
            // Unreadable for the second time in a row: already reported.
            Err(_) if seen.is_none() => return CertRefresh::Unchanged,
            Err(error) => {
                *seen = None;
                Err(error)
            }
            Ok(files) => {
                let now = digest(&files);
                if *seen == Some(now) {
                    return CertRefresh::Unchanged;
                }
                *seen = Some(now);
                parse_certified_key(&files)
            }
        };
        match parsed {
            Ok(certified) => {
                self.resolver.current.store(Arc::new(certified));
                tracing::info!(route = %self.names, cert = %self.cert.display(), "reloaded certificate files");
                CertRefresh::Reloaded
            }
            Err(error) => {
                tracing::warn!(route = %self.names, %error, "certificate files changed but do not load; still serving the previous certificate");
                CertRefresh::Refused(error)
            }
        }
    }
}

/// Identifies one version of the pair of files.
fn digest(files: &KeyPairFiles<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for pem in [&files.cert_pem, &files.key_pem] {
        hasher.update((pem.len() as u64).to_be_bytes());
        hasher.update(pem);
    }
    hasher.finalize().into()
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
