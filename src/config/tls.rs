//! What a `tls:` route asks for, already parsed from the route file by `config`.

use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory: the ACME server used when a route names none.
pub const DEFAULT_ACME_DIRECTORY: &str = rustls_acme::acme::LETS_ENCRYPT_PRODUCTION_DIRECTORY;

/// How long a client gets to complete the whole handshake (ClientHello to Finished).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols offered to clients when a route lists none: `h2`, then `http/1.1`.
pub fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// The TLS part of one route: which names it serves and where its certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// The route's server names, lowercase. ACME routes cannot have wildcards (TLS-ALPN-01
    /// cannot validate them); file routes may, since the names are then only for logs.
    pub names: Vec<String>,
    /// Where the certificate comes from.
    pub source: CertSource,
    /// ALPN protocols offered to clients, most preferred first; empty means no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Deadline for the whole handshake, so a silent or slow client cannot hold a task.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// Settings with the default ALPN list and handshake timeout.
    pub fn new(names: Vec<String>, source: CertSource) -> Self {
        Self {
            names,
            source,
            alpn: default_alpn(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Where a route's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertSource {
    /// PEM files managed by someone else (certbot, an operator). They are re-read when their
    /// modification time or size changes, so renewals need no reload.
    Files {
        /// Certificate chain, leaf first (`fullchain.pem`).
        cert: PathBuf,
        /// Private key of the leaf (PKCS#8, PKCS#1 or SEC1 PEM).
        key: PathBuf,
    },
    /// A certificate obtained and renewed over ACME with the TLS-ALPN-01 challenge, which is
    /// answered on this same port.
    Acme {
        /// Account contacts; a bare address `a@b.c` is sent as `mailto:a@b.c`.
        contact: Vec<String>,
        /// The ACME directory URL (https); [`DEFAULT_ACME_DIRECTORY`] unless configured.
        directory: String,
        /// Directory keeping the account key and the certificate across restarts.
        cache: PathBuf,
        /// Extra trust roots (PEM) for the HTTPS connection to a private or test ACME
        /// server, added to the public Web PKI roots.
        ca_roots: Option<PathBuf>,
    },
}
