//! `tls:` routes through the whole gateway: the peeked hello reaches rustls, the client
//! verifies the certificate against the test CA, ALPN is negotiated, and the plaintext reaches
//! the backend behind a PROXY header carrying the client's address.

mod common;

use common::test_ca::{write_leaf, TestCa};
use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[tokio::test]
async fn terminated_route_serves_its_certificate_and_relays_plaintext_with_proxy_header() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_leaf(dir.path(), &ca.leaf("panel.example.com"));
    let mut backend = Backend::expecting_proxy_header("panel").await;
    let passthrough = Backend::start("passthrough").await;
    let (_gw, addr) = gateway(&format!(
        "routes:\n  - sni: panel.example.com\n    tls: {{ cert: {}, key: {}, alpn: [h2, http/1.1] }}\n    to: {}\n    proxy_protocol: v2\ndefault: {{ to: {} }}\n",
        cert.display(),
        key.display(),
        backend.addr,
        passthrough.addr
    ))
    .await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let name = ServerName::try_from("panel.example.com").unwrap();
    let connector = TlsConnector::from(ca.client(&[b"h2", b"http/1.1"]));
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("handshake verified by the test CA");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"GET / plaintext").await.unwrap();
    let mut line = [0u8; 6];
    tls.read_exact(&mut line).await.unwrap();
    assert_eq!(
        &line, b"panel\n",
        "the decrypted stream reached the plain backend"
    );
    tls.shutdown().await.unwrap();
    let seen = backend.next_seen().await;
    assert_eq!(seen.proxied_client, Some(client_addr));
    assert_eq!(seen.bytes, b"GET / plaintext");

    // Other names on the same listener still pass through untouched.
    let (name, _) = send_and_identify(addr, &client_hello("other.example.com")).await;
    assert_eq!(name, "passthrough");
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_certificate() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_leaf(dir.path(), &ca.leaf("panel.example.com"));
    let backend = Backend::start("panel").await;
    let (_gw, addr) = gateway(&format!(
        "routes:\n  - sni: panel.example.com\n    tls: {{ cert: {}, key: {} }}\n    to: {}\n",
        cert.display(),
        key.display(),
        backend.addr
    ))
    .await;
    let other = TestCa::new();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("panel.example.com").unwrap();
    let result = TlsConnector::from(other.client(&[]))
        .connect(name, tcp)
        .await;
    assert!(
        result.is_err(),
        "an untrusted certificate must fail verification"
    );
}

#[test]
fn check_reports_a_missing_certificate_with_its_path() {
    let text = "listen: 127.0.0.1:8443\nroutes:\n  - sni: panel.example.com\n    tls: { cert: /nonexistent/fullchain.pem, key: /nonexistent/privkey.pem }\n    to: 127.0.0.1:3000\n";
    // Parsing is pure; the disk probe is the separate step `check` and reloads run.
    let config = frontgate::config::parse(text, "routes.yaml").unwrap();
    let err = frontgate::server::registry::probe(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("route panel.example.com: cannot read certificate /nonexistent/fullchain.pem"),
        "{err}"
    );
    let both = "listen: 127.0.0.1:8443\nroutes:\n  - sni: p.example.com\n    tls: { cert: /a.pem }\n    to: 127.0.0.1:3000\n";
    let err = frontgate::config::parse(both, "routes.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`cert` and `key` go together"), "{err}");
}
