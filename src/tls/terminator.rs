//! The TLS handshake of one `tls:` route.
//!
//! rustls itself parses the ClientHello (`LazyConfigAcceptor`), from the stream the router
//! hands over, which replays the bytes it peeked. A hello offering exactly `acme-tls/1` is
//! the CA validating a TLS-ALPN-01 challenge (RFC 8737) and gets the challenge certificate;
//! every other hello gets the route's certificate and ALPN list.

use std::sync::Arc;

use rustls::server::{Acceptor, ResolvesServerCert};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{CertSource, TlsSettings};
use crate::tls::acme::{AcmeCert, AcmeParams};
use crate::tls::pem_files::load_certified_key;
use crate::tls::static_cert::{CertRefresh, FileCert};
use crate::tls::{rustls_provider, TlsError};

/// Terminates TLS for one route. Dropping it stops the route's ACME driver.
pub struct TlsTerminator {
    /// The route's names, for log lines and errors.
    route: String,
    /// Configuration for ordinary clients: the route's certificate and ALPN list.
    config: Arc<ServerConfig>,
    /// Where the certificate comes from; owns the ACME driver.
    cert: RouteCert,
    /// Deadline for the whole handshake.
    handshake_timeout: std::time::Duration,
}

impl std::fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The certificate side of a route.
enum RouteCert {
    /// Loaded from files, re-read when the gateway's file watcher sees them change.
    Files(FileCert),
    /// Obtained over ACME.
    Acme(AcmeCert),
}

/// The outcome of a successful [`TlsTerminator::accept`].
pub enum Accepted<IO> {
    /// A client completed the handshake: relay the decrypted stream to the backend.
    /// (Boxed: the TLS state is large and this value is moved around.)
    Session(Box<TlsSession<IO>>),
    /// The ACME server completed a TLS-ALPN-01 validation handshake. The connection has been
    /// closed; there is nothing to relay.
    AcmeChallenge,
}

/// A terminated client connection.
pub struct TlsSession<IO> {
    /// The decrypted stream; reads and writes are plaintext.
    pub stream: TlsStream<IO>,
}

impl TlsTerminator {
    /// Validates a route's TLS settings without network access (for `frontgate check`):
    /// certificate and key files readable, parseable and matching; ACME names issuable,
    /// directory an https URL, `ca_roots` parseable, cache directory writable (it is created,
    /// owner-only, if missing: the only side effect).
    pub fn check(settings: &TlsSettings) -> Result<(), TlsError> {
        check_names(settings)?;
        match &settings.source {
            CertSource::Files { cert, key } => load_certified_key(cert, key).map(drop),
            CertSource::Acme {
                contact,
                directory,
                cache,
                ca_roots,
            } => AcmeCert::check(&AcmeParams {
                names: &settings.names,
                contact,
                directory,
                cache,
                ca_roots: ca_roots.as_deref(),
            }),
        }
    }

    /// Builds the route's terminator: loads its certificate files, or starts its ACME driver
    /// (which must happen inside the tokio runtime). Does not wait for ACME issuance.
    /// Blocking file I/O (PEM files, the ACME cache directory): call it off the async
    /// runtime, as the gateway does.
    pub fn start(settings: TlsSettings) -> Result<Self, TlsError> {
        check_names(&settings)?;
        let route = settings.names.join(",");
        let cert = match &settings.source {
            CertSource::Files { cert, key } => {
                RouteCert::Files(FileCert::start(cert, key, route.clone())?)
            }
            CertSource::Acme {
                contact,
                directory,
                cache,
                ca_roots,
            } => {
                let params = AcmeParams {
                    names: &settings.names,
                    contact,
                    directory,
                    cache,
                    ca_roots: ca_roots.as_deref(),
                };
                RouteCert::Acme(AcmeCert::start(&params, route.clone())?)
            }
        };
        let resolver: Arc<dyn ResolvesServerCert> = match &cert {
            RouteCert::Files(files) => files.resolver(),
            RouteCert::Acme(acme) => acme.resolver(),
        };
        let mut config = ServerConfig::builder_with_provider(rustls_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = settings.alpn;
        Ok(Self {
            route,
            config: Arc::new(config),
            cert,
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// Performs the server handshake on `io` within the route's handshake timeout.
    ///
    /// `io` must yield the connection from its first byte (the router replays the bytes it
    /// peeked). A client that cannot be served gets a TLS alert, never silence; before the
    /// route has a certificate, the error says why ([`TlsError::NoCertificateYet`]).
    pub async fn accept<IO>(&self, io: IO) -> Result<Accepted<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.handshake_timeout, self.handshake(io))
            .await
            .unwrap_or(Err(TlsError::HandshakeTimeout(self.handshake_timeout)))
    }

    async fn handshake<IO>(&self, io: IO) -> Result<Accepted<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(TlsError::Handshake)?;

        let challenge = match &self.cert {
            RouteCert::Acme(acme) => acme.challenge_config(&start.client_hello()),
            RouteCert::Files(_) => None,
        };
        if let Some(config) = challenge {
            let mut stream = start
                .into_stream(config)
                .await
                .map_err(TlsError::Handshake)?;
            // The validator only needed the handshake; a failed close_notify changes nothing.
            let _ = stream.shutdown().await;
            tracing::debug!(route = %self.route, "answered an ACME TLS-ALPN-01 validation");
            return Ok(Accepted::AcmeChallenge);
        }

        match start.into_stream(self.config.clone()).await {
            Ok(stream) => Ok(Accepted::Session(Box::new(TlsSession { stream }))),
            Err(error) => Err(match self.pending_reason() {
                Some(reason) => TlsError::NoCertificateYet {
                    names: self.route.clone(),
                    reason,
                },
                None => TlsError::Handshake(error),
            }),
        }
    }

    /// The certificate and key files the route serves from (none for ACME): what the
    /// gateway's file watcher watches for it.
    pub fn files(&self) -> Option<[&std::path::Path; 2]> {
        match &self.cert {
            RouteCert::Files(files) => Some(files.files()),
            RouteCert::Acme(_) => None,
        }
    }

    /// Re-reads the route's certificate files and serves them to new handshakes if their
    /// contents changed (logged either way). Blocking file I/O: call it off the async runtime.
    pub fn refresh_files(&self) -> CertRefresh {
        match &self.cert {
            RouteCert::Files(files) => files.refresh(),
            RouteCert::Acme(_) => CertRefresh::Unchanged,
        }
    }

    fn pending_reason(&self) -> Option<String> {
        match &self.cert {
            RouteCert::Acme(acme) => acme.pending_reason(),
            RouteCert::Files(_) => None,
        }
    }
}

fn check_names(settings: &TlsSettings) -> Result<(), TlsError> {
    if settings.names.is_empty() {
        return Err(TlsError::NoNames);
    }
    Ok(())
}
