//! A certificate obtained and renewed over ACME (RFC 8555) with the TLS-ALPN-01 challenge.
//!
//! One rustls-acme `AcmeState` per route (it issues one certificate for all the route's
//! names), driven by a background task that logs every event. rustls-acme itself loads the
//! cached certificate first (`DirCache`: a restart orders nothing while it is valid),
//! schedules renewal at two thirds of the validity period, and after a failed order
//! retries with exponential backoff (1 s, doubling, capped at 2^16 s); this module adds
//! no retry loop of its own. Until a certificate exists, the resolver returns none, so
//! rustls answers normal handshakes with a fatal `access_denied` alert.

use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures_core::Stream;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_acme::caches::DirCache;
use rustls_acme::{AcmeConfig, AcmeState, EventError, EventOk, ResolvesServerCertAcme};
use tokio::runtime::Handle;
use tokio_util::task::AbortOnDropHandle;

use crate::tls::pem_files::load_roots;
use crate::tls::{rustls_provider, TlsError};

/// What one ACME route is configured with (borrowed from its `CertSource::Acme`).
pub(crate) struct AcmeParams<'a> {
    /// The route's names.
    pub(crate) names: &'a [String],
    /// Account contacts as configured.
    pub(crate) contact: &'a [String],
    /// Directory URL.
    pub(crate) directory: &'a str,
    /// Cache directory.
    pub(crate) cache: &'a Path,
    /// Extra trust roots for the ACME server.
    pub(crate) ca_roots: Option<&'a Path>,
}

/// The certificate of an ACME route and the task that obtains and renews it.
pub(crate) struct AcmeCert {
    /// Hands out the issued certificate, or the challenge certificate during validation.
    resolver: Arc<ResolvesServerCertAcme>,
    /// Configuration for hellos offering only `acme-tls/1` (the CA validating us).
    challenge_config: Arc<ServerConfig>,
    /// What the driver learned, for explaining a refused handshake.
    status: Arc<AcmeStatus>,
    /// Drives the `AcmeState`; dropping the route stops it.
    _driver: AbortOnDropHandle<()>,
}

impl AcmeCert {
    /// Validates the parameters without any network access, as `frontgate check` does.
    pub(crate) fn check(params: &AcmeParams<'_>) -> Result<(), TlsError> {
        prepare(params).map(drop)
    }

    /// Starts the driver task: cached certificate first, otherwise an order.
    pub(crate) fn start(params: &AcmeParams<'_>, route: String) -> Result<Self, TlsError> {
        let state = prepare(params)?.state();
        let resolver = state.resolver();
        let challenge_config = state.challenge_rustls_config_with_provider(rustls_provider());
        let status = Arc::new(AcmeStatus::default());
        tracing::info!(
            route = %route,
            directory = params.directory,
            cache = %params.cache.display(),
            "ACME: using the cached certificate if valid, ordering one otherwise"
        );
        let runtime = Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
        let driver = AbortOnDropHandle::new(runtime.spawn(drive(state, status.clone(), route)));
        Ok(Self {
            resolver,
            challenge_config,
            status,
            _driver: driver,
        })
    }

    /// The certificate resolver to put in the route's rustls configuration.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }

    /// The configuration for this hello if it is a TLS-ALPN-01 validation connection.
    pub(crate) fn challenge_config(&self, hello: &ClientHello<'_>) -> Option<Arc<ServerConfig>> {
        rustls_acme::is_tls_alpn_challenge(hello).then(|| self.challenge_config.clone())
    }

    /// Why normal handshakes are refused, or `None` once a certificate is deployed.
    pub(crate) fn pending_reason(&self) -> Option<String> {
        if self.status.has_cert.load(Ordering::Acquire) {
            return None;
        }
        Some(match self.status.last_error.load_full() {
            Some(error) => format!("ACME issuance failing, last error: {error}"),
            None => "ACME issuance pending".to_owned(),
        })
    }
}

/// What the driver task has seen so far.
#[derive(Debug, Default)]
struct AcmeStatus {
    /// A certificate (cached or new) has been deployed to the resolver.
    has_cert: AtomicBool,
    /// The last error event, as logged.
    last_error: ArcSwapOption<String>,
}

/// Validates everything that can be checked offline and builds the rustls-acme config.
fn prepare(params: &AcmeParams<'_>) -> Result<AcmeConfig<io::Error>, TlsError> {
    let mut names = params.names.to_vec();
    for name in &names {
        check_name(name)?;
    }
    // The cache file is keyed by the name list: keep it stable across config reorderings.
    names.sort();
    names.dedup();

    if !params.directory.starts_with("https://") {
        return Err(TlsError::BadDirectory {
            url: params.directory.to_owned(),
        });
    }
    ensure_cache_dir(params.cache).map_err(|source| TlsError::CacheDir {
        path: params.cache.to_owned(),
        source,
    })?;

    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = params.ca_roots {
        roots.roots.extend(load_roots(path)?.roots);
    }
    let client_config = ClientConfig::builder_with_provider(rustls_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let contact: Vec<String> = params.contact.iter().map(|c| contact_uri(c)).collect();
    Ok(
        AcmeConfig::new_with_client_config(names, Arc::new(client_config))
            .directory(params.directory)
            .contact(contact)
            .cache(DirCache::new(params.cache.to_owned())),
    )
}

fn check_name(name: &str) -> Result<(), TlsError> {
    let bad = |reason| TlsError::BadAcmeName {
        name: name.to_owned(),
        reason,
    };
    if name.contains('*') {
        return Err(bad(
            "wildcards need the DNS-01 challenge; use cert/key files for them",
        ));
    }
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(bad("an IP address; use a DNS name or cert/key files")),
        Err(_) => Err(bad("not a valid DNS name")),
    }
}

/// `admin@example.com` -> `mailto:admin@example.com`; URIs pass unchanged.
fn contact_uri(contact: &str) -> String {
    if contact.contains(':') {
        contact.to_owned()
    } else {
        format!("mailto:{contact}")
    }
}

/// Creates the cache directory (owner-only: it holds private keys) and proves it writable.
fn ensure_cache_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    static PROBES: AtomicU64 = AtomicU64::new(0);

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let probe: PathBuf = path.join(format!(
        ".write-test-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Polls the `AcmeState` forever (it is an endless stream), logging each event.
async fn drive(state: AcmeState<io::Error>, status: Arc<AcmeStatus>, route: String) {
    let mut state = Box::pin(state);
    while let Some(event) = poll_fn(|cx| state.as_mut().poll_next(cx)).await {
        match event {
            Ok(EventOk::DeployedCachedCert) => {
                status.has_cert.store(true, Ordering::Release);
                tracing::info!(route = %route, "ACME: certificate loaded from cache");
            }
            Ok(EventOk::DeployedNewCert) => {
                let renewed = status.has_cert.swap(true, Ordering::AcqRel);
                let what = if renewed { "renewed" } else { "issued" };
                tracing::info!(route = %route, "ACME: certificate {what}");
            }
            Ok(EventOk::CertCacheStore) => {
                tracing::debug!(route = %route, "ACME: certificate stored in cache");
            }
            Ok(EventOk::AccountCacheStore) => {
                tracing::debug!(route = %route, "ACME: account key stored in cache");
            }
            Err(error) => {
                let message = error.to_string();
                if matches!(error, EventError::Order(_)) {
                    tracing::warn!(route = %route, error = %message, "ACME: order failed; retrying with exponential backoff");
                } else {
                    tracing::warn!(route = %route, error = %message, "ACME: cache error");
                }
                status.last_error.store(Some(Arc::new(message)));
            }
        }
    }
}
