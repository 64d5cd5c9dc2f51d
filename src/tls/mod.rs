//! TLS termination for routes with a `tls:` block.
//!
//! The router has already peeked the ClientHello; it hands this module a stream that
//! replays those bytes, and gets back a decrypted stream to relay to the route's plain
//! backend. One [`TlsTerminator`] exists per `tls:` route and owns everything that route
//! needs: its rustls server configuration, and what keeps its certificate fresh (an ACME
//! driver task, or the certificate files it re-reads when the gateway's file watcher says
//! they changed).
//!
//! # Layout
//! - `error`: [`TlsError`], whose messages tell the operator what to fix.
//! - `pem_files`: reading PEM certificates, keys and trust roots from disk.
//! - `static_cert`: a certificate loaded from files, swapped when the files change.
//! - `acme`: a certificate obtained and renewed with rustls-acme (TLS-ALPN-01).
//! - `terminator`: [`TlsTerminator`], the handshake itself.
//!
//! Every rustls configuration here is built with [`rustls_provider`] (ring), so the module
//! never depends on, nor fights over, a process-wide default provider.

mod acme;
mod error;
mod pem_files;
mod static_cert;
mod terminator;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use error::TlsError;
pub use static_cert::CertRefresh;
pub use terminator::{Accepted, TlsSession, TlsTerminator};

/// The crypto provider (ring) used for every TLS configuration this module builds.
///
/// Passed explicitly to each rustls builder, so it works whether or not a process-wide
/// default provider was installed, and whichever one it is.
pub fn rustls_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
