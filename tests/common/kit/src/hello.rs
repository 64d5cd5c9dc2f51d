//! ClientHello bytes: a real one from rustls, and a one-record hello re-framed as several.

/// A real ClientHello from rustls for `sni` (no SNI extension when `sni` is an IP address).
#[cfg(feature = "tls")]
pub fn client_hello(sni: &str) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Re-frames a one-record hello as several records of at most `size` handshake bytes.
pub fn split_into_records(record: &[u8], size: usize) -> Vec<u8> {
    record[5..]
        .chunks(size)
        .flat_map(|chunk| {
            let mut r = vec![0x16, 0x03, 0x01];
            r.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            r.extend_from_slice(chunk);
            r
        })
        .collect()
}
