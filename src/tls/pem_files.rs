//! Reading PEM certificates, private keys and trust roots from disk.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::tls::{rustls_provider, TlsError};

/// Loads a certificate chain and its private key, and checks that they belong together.
/// Blocking file I/O: call it off the async runtime.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    parse_certified_key(&read_key_pair(cert, key)?)
}

/// The contents of a certificate file and of its key file, read one right after the other.
pub(crate) struct KeyPairFiles<'a> {
    /// The `cert:` path.
    pub(crate) cert: &'a Path,
    /// The `key:` path.
    pub(crate) key: &'a Path,
    /// What the certificate file held.
    pub(crate) cert_pem: Vec<u8>,
    /// What the key file held.
    pub(crate) key_pem: Vec<u8>,
}

/// Reads both files (blocking file I/O: call it off the async runtime).
pub(crate) fn read_key_pair<'a>(
    cert: &'a Path,
    key: &'a Path,
) -> Result<KeyPairFiles<'a>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.to_owned(),
        source,
    })?;
    Ok(KeyPairFiles {
        cert,
        key,
        cert_pem,
        key_pem,
    })
}

/// Parses what [`read_key_pair`] read into a certificate chain and its signing key, and
/// checks that they belong together.
pub(crate) fn parse_certified_key(files: &KeyPairFiles<'_>) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (files.cert, files.key);
    let chain = parse_certs(&files.cert_pem).map_err(|source| TlsError::BadPem {
        path: cert.to_owned(),
        source,
    })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }

    let key_der = PrivateKeyDer::from_pem_slice(&files.key_pem).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key.to_owned(),
        },
        err => TlsError::BadPem {
            path: key.to_owned(),
            source: invalid_data(err),
        },
    })?;
    let signing_key = rustls_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadPrivateKey {
            path: key.to_owned(),
            source,
        })?;

    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(certified)
}

/// Loads PEM trust anchors, for talking to an ACME server signed by a private CA.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |reason: String| TlsError::BadCaRoots {
        path: path.to_owned(),
        reason,
    };
    let certs = read_certs(path).map_err(|err| match err {
        ReadError::Io(e) => bad(e.to_string()),
        ReadError::Pem(e) => bad(format!("invalid PEM: {e}")),
    })?;
    if certs.is_empty() {
        return Err(bad(
            "expected PEM blocks `-----BEGIN CERTIFICATE-----`".into()
        ));
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad(format!(
            "{ignored} certificate(s) found, none parses as a CA certificate"
        )));
    }
    Ok(roots)
}

/// Why a PEM certificate file could not be read.
enum ReadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not valid PEM.
    Pem(std::io::Error),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReadError> {
    let pem = std::fs::read(path).map_err(ReadError::Io)?;
    parse_certs(&pem).map_err(ReadError::Pem)
}

fn parse_certs(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid_data)
}

/// A PEM syntax error as the I/O error of reading data that is not what it should be.
fn invalid_data(err: pem::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err)
}
