//! Errors of TLS termination, worded for the operator who has to act on them.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::CertSource;

/// Why a TLS route could not be set up, or why one handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read.
    #[error("cannot read certificate {}: {source}", path.display())]
    ReadCert {
        /// The configured `cert:` path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The private key file could not be read.
    #[error("cannot read private key {}: {source}", path.display())]
    ReadKey {
        /// The configured `key:` path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A file meant to hold PEM data is not valid PEM.
    #[error("invalid PEM in {}: {source}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: io::Error,
    },
    /// A file meant to hold certificates holds none.
    #[error("no certificate in {}: expected a PEM block `-----BEGIN CERTIFICATE-----`", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error(
        "no private key in {}: expected a PEM `PRIVATE KEY` block (PKCS#8, RSA or EC)",
        path.display()
    )]
    NoPrivateKey {
        /// The configured `key:` path.
        path: PathBuf,
    },
    /// The key is of a kind the TLS library cannot sign with.
    #[error("unusable private key in {}: {source}", path.display())]
    BadPrivateKey {
        /// The configured `key:` path.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The key does not belong to the certificate (often: files from two renewals mixed).
    #[error(
        "private key {} does not match certificate {}: {source}; use the key issued with this certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The configured `cert:` path.
        cert: PathBuf,
        /// The configured `key:` path.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// None of the certificates in `ca_roots` can serve as a trust anchor.
    #[error("no usable CA certificate in ca_roots {}: {reason}", path.display())]
    BadCaRoots {
        /// The configured `ca_roots:` path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `tls:` route without any server name.
    #[error("a tls route needs at least one server name in `sni`")]
    NoNames,
    /// A name ACME cannot issue a certificate for.
    #[error("ACME cannot issue a certificate for {name:?}: {reason}")]
    BadAcmeName {
        /// The offending name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The ACME directory is not an https URL.
    #[error("ACME directory {url:?} must be an https:// URL")]
    BadDirectory {
        /// The configured `directory:`.
        url: String,
    },
    /// The ACME cache directory cannot be created or written.
    #[error("cannot use ACME cache directory {}: {source}; create it writable for frontgate's user", path.display())]
    CacheDir {
        /// The configured `cache:` path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// rustls refused to build a configuration (not expected with the ring provider).
    #[error("cannot build TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// `start` was called outside a tokio runtime, so no background task can run.
    #[error("TLS routes must be started inside the tokio runtime")]
    NoRuntime,
    /// The client did not complete the handshake in time.
    #[error("TLS handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed: not TLS, no shared protocol or cipher, an alert, a reset.
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The route has no certificate yet; the client got a fatal alert (`access_denied`).
    #[error("no certificate yet for {names}: {reason}")]
    NoCertificateYet {
        /// The route's names, comma-separated.
        names: String,
        /// Issuance pending, or the last ACME error.
        reason: String,
    },
}

impl TlsError {
    /// The key of the route that names what this error is about, below the route
    /// (`tls.cert`, `tls.acme.cache`, `sni`), so that `check` reports it at that node; `tls`
    /// when no one key is at fault. `source` tells which file a PEM error is about.
    pub fn route_key(&self, source: &CertSource) -> &'static str {
        match self {
            TlsError::BadPem { path, .. } => match source {
                CertSource::Files { key, .. } if key == path => "tls.key",
                CertSource::Acme { ca_roots, .. } if ca_roots.as_ref() == Some(path) => {
                    "tls.acme.ca_roots"
                }
                _ => "tls.cert",
            },
            TlsError::ReadCert { .. } | TlsError::NoCertificate { .. } => "tls.cert",
            TlsError::ReadKey { .. }
            | TlsError::NoPrivateKey { .. }
            | TlsError::BadPrivateKey { .. }
            | TlsError::KeyMismatch { .. } => "tls.key",
            TlsError::BadCaRoots { .. } => "tls.acme.ca_roots",
            TlsError::BadDirectory { .. } => "tls.acme.directory",
            TlsError::CacheDir { .. } => "tls.acme.cache",
            TlsError::NoNames | TlsError::BadAcmeName { .. } => "sni",
            TlsError::Config(_)
            | TlsError::NoRuntime
            | TlsError::HandshakeTimeout(_)
            | TlsError::Handshake(_)
            | TlsError::NoCertificateYet { .. } => "tls",
        }
    }
}
