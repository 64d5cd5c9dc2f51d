//! TLS termination over real loopback sockets: static certificates, ALPN, replayed
//! ClientHello bytes, certificate file renewal, pending ACME, hostile input.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontgate::config::{CertSource, TlsSettings};
use frontgate::forward::prefixed::PrefixedStream;
use frontgate::tls::{Accepted, CertRefresh, TlsError, TlsTerminator};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, ClientConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

mod common;

use common::test_ca::{write_leaf, Leaf, TestCa};

const NAME: &str = "panel.example.com";

fn files_route(cert: PathBuf, key: PathBuf) -> TlsSettings {
    TlsSettings::new(vec![NAME.to_owned()], CertSource::Files { cert, key })
}

/// A started file route serving `leaf`, its files written into `dir`.
fn files_terminator(dir: &Path, leaf: &Leaf) -> Arc<TlsTerminator> {
    let (cert, key) = write_leaf(dir, leaf);
    Arc::new(TlsTerminator::start(files_route(cert, key)).unwrap())
}

/// What the test server saw on its one connection.
#[derive(Debug)]
struct Served {
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// Accepts one connection, terminates it and answers `hello` over TLS. With `replay`, the
/// first TLS record is read off the socket first and replayed, as the router does.
async fn serve_one(
    terminator: Arc<TlsTerminator>,
    replay: bool,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<Served, TlsError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        if replay {
            let mut header = [0u8; 5];
            tcp.read_exact(&mut header).await.unwrap();
            assert_eq!(header[0], 0x16, "first record must be a handshake record");
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let mut prefix = header.to_vec();
            prefix.resize(5 + len, 0);
            tcp.read_exact(&mut prefix[5..]).await.unwrap();
            into_served(terminator.accept(PrefixedStream::new(prefix, tcp)).await).await
        } else {
            into_served(terminator.accept(tcp).await).await
        }
    });
    (addr, task)
}

async fn into_served<IO: AsyncRead + AsyncWrite + Unpin>(
    accepted: Result<Accepted<IO>, TlsError>,
) -> Result<Served, TlsError> {
    match accepted? {
        Accepted::Session(mut session) => {
            let (_, conn) = session.stream.get_ref();
            let served = Served {
                server_name: conn.server_name().map(str::to_owned),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            };
            session.stream.write_all(b"hello").await.unwrap();
            session.stream.shutdown().await.unwrap();
            Ok(served)
        }
        Accepted::AcmeChallenge => panic!("test clients never send acme-tls/1"),
    }
}

/// What the test client got: the body, the server's leaf certificate and the ALPN.
struct Fetched {
    body: Vec<u8>,
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

async fn fetch(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<Fetched> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(NAME).unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await?;
    Ok(Fetched { body, leaf, alpn })
}

/// The rustls error inside an io::Error from a client handshake.
fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

#[tokio::test]
async fn static_cert_is_served_and_verifies_against_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let leaf = ca.leaf(NAME);
    let terminator = files_terminator(dir.path(), &leaf);

    let (addr, server) = serve_one(terminator.clone(), false).await;
    let got = fetch(addr, ca.client(&[b"h2", b"http/1.1"])).await.unwrap();
    assert_eq!(got.body, b"hello");
    assert_eq!(got.leaf, leaf.der);
    let served = server.await.unwrap().unwrap();
    assert_eq!(served.server_name.as_deref(), Some(NAME));

    // A client trusting another CA must refuse the same server.
    let (addr, server) = serve_one(terminator, false).await;
    let err = fetch(addr, TestCa::new().client(&[])).await.err().unwrap();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{err}"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn alpn_follows_what_the_client_offers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let terminator = files_terminator(dir.path(), &ca.leaf(NAME));

    type Offer<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);
    let offers: [Offer; 3] = [
        (&[b"h2", b"http/1.1"], Some(b"h2")),
        (&[b"http/1.1"], Some(b"http/1.1")),
        (&[], None),
    ];
    for (offer, expected) in offers {
        let (addr, server) = serve_one(terminator.clone(), false).await;
        let got = fetch(addr, ca.client(offer)).await.unwrap();
        assert_eq!(got.alpn.as_deref(), expected, "client offered {offer:?}");
        let served = server.await.unwrap().unwrap();
        assert_eq!(served.alpn.as_deref(), expected);
    }
}

#[tokio::test]
async fn replayed_client_hello_bytes_complete_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let terminator = files_terminator(dir.path(), &ca.leaf(NAME));

    let (addr, server) = serve_one(terminator, true).await;
    let got = fetch(addr, ca.client(&[b"http/1.1"])).await.unwrap();
    assert_eq!(got.body, b"hello");
    let served = server.await.unwrap().unwrap();
    assert_eq!(served.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(served.server_name.as_deref(), Some(NAME));
}

#[tokio::test]
async fn replaced_cert_files_are_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let old = old_ca.leaf(NAME);
    let terminator = files_terminator(dir.path(), &old);

    let (addr, server) = serve_one(terminator.clone(), false).await;
    assert_eq!(fetch(addr, old_ca.client(&[])).await.unwrap().leaf, old.der);
    server.await.unwrap().unwrap();

    // The gateway's file watcher asks for this when it sees the files change.
    let refresh = |terminator: Arc<TlsTerminator>| async move {
        tokio::task::spawn_blocking(move || terminator.refresh_files())
            .await
            .unwrap()
    };
    let unchanged = refresh(terminator.clone()).await;
    assert!(matches!(unchanged, CertRefresh::Unchanged), "{unchanged:?}");

    let new = new_ca.leaf(NAME);
    write_leaf(dir.path(), &new);
    let reloaded = refresh(terminator.clone()).await;
    assert!(matches!(reloaded, CertRefresh::Reloaded), "{reloaded:?}");
    let (addr, server) = serve_one(terminator.clone(), false).await;
    assert_eq!(fetch(addr, new_ca.client(&[])).await.unwrap().leaf, new.der);
    server.await.unwrap().unwrap();

    // A key from another renewal is refused once; the new certificate stays in service.
    std::fs::write(dir.path().join("privkey.pem"), old.key_pem).unwrap();
    let refused = refresh(terminator.clone()).await;
    assert!(
        matches!(refused, CertRefresh::Refused(TlsError::KeyMismatch { .. })),
        "{refused:?}"
    );
    let again = refresh(terminator.clone()).await;
    assert!(matches!(again, CertRefresh::Unchanged), "{again:?}");
    let (addr, server) = serve_one(terminator, false).await;
    assert_eq!(fetch(addr, new_ca.client(&[])).await.unwrap().leaf, new.der);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn check_names_the_file_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = write_leaf(dir.path(), &ca.leaf(NAME));
    TlsTerminator::check(&files_route(cert.clone(), key.clone())).unwrap();

    let missing = dir.path().join("nope/fullchain.pem");
    let err = TlsTerminator::check(&files_route(missing.clone(), key.clone())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot read certificate {}: ", missing.display())),
        "{text}"
    );
    assert!(text.contains("No such file or directory"), "{text}");

    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.leaf(NAME).key_pem).unwrap();
    let err = TlsTerminator::check(&files_route(cert.clone(), other_key)).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let err = TlsTerminator::check(&files_route(not_pem.clone(), key.clone())).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = TlsTerminator::check(&files_route(cert.clone(), not_pem)).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");

    // A block cut short, as by a copy that stopped halfway.
    let truncated = dir.path().join("truncated.pem");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    for route in [
        files_route(truncated.clone(), key),
        files_route(cert, truncated.clone()),
    ] {
        let text = TlsTerminator::check(&route).unwrap_err().to_string();
        let expected = format!(
            "invalid PEM in {}: missing section end",
            truncated.display()
        );
        assert!(text.starts_with(&expected), "{text}");
    }
}

fn acme_route(
    names: &[&str],
    directory: String,
    cache: PathBuf,
    ca_roots: Option<PathBuf>,
) -> TlsSettings {
    TlsSettings::new(
        names.iter().map(|n| n.to_string()).collect(),
        CertSource::Acme {
            contact: vec!["admin@example.com".into()],
            directory,
            cache,
            ca_roots,
        },
    )
}

#[test]
fn check_validates_acme_settings_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acme/cache");
    let url = "https://127.0.0.1:9/dir".to_owned();
    TlsTerminator::check(&acme_route(&[NAME], url.clone(), cache.clone(), None)).unwrap();
    assert!(cache.is_dir(), "check creates the cache directory");

    let err = TlsTerminator::check(&acme_route(
        &["*.example.com"],
        url.clone(),
        cache.clone(),
        None,
    ));
    assert!(matches!(err, Err(TlsError::BadAcmeName { .. })), "{err:?}");
    let err = TlsTerminator::check(&acme_route(&[], url.clone(), cache.clone(), None));
    assert!(matches!(err, Err(TlsError::NoNames)), "{err:?}");
    let err = TlsTerminator::check(&acme_route(
        &[NAME],
        "http://x/dir".into(),
        cache.clone(),
        None,
    ));
    assert!(matches!(err, Err(TlsError::BadDirectory { .. })), "{err:?}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not PEM").unwrap();
    let err = TlsTerminator::check(&acme_route(&[NAME], url.clone(), file.clone(), None));
    assert!(matches!(err, Err(TlsError::CacheDir { .. })), "{err:?}");
    let err = TlsTerminator::check(&acme_route(&[NAME], url, cache, Some(file)));
    assert!(matches!(err, Err(TlsError::BadCaRoots { .. })), "{err:?}");
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    // An ACME route needs its driver task; a files route needs no runtime at all.
    let dir = tempfile::tempdir().unwrap();
    let url = "https://127.0.0.1:1/dir".to_owned();
    let err = TlsTerminator::start(acme_route(&[NAME], url, dir.path().join("cache"), None)).err();
    assert!(matches!(err, Some(TlsError::NoRuntime)), "{err:?}");
    let ca = TestCa::new();
    let (cert, key) = write_leaf(dir.path(), &ca.leaf(NAME));
    TlsTerminator::start(files_route(cert, key)).unwrap();
}

#[tokio::test]
async fn pending_acme_route_answers_with_an_alert_quickly() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the ACME directory refuses connections.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = acme_route(
        &[NAME],
        format!("https://{closed}/dir"),
        dir.path().join("cache"),
        None,
    );
    let terminator = Arc::new(TlsTerminator::start(settings).unwrap());

    let started = Instant::now();
    let (addr, server) = serve_one(terminator, false).await;
    let err = fetch(addr, TestCa::new().client(&[b"h2"]))
        .await
        .err()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // rustls answers "no certificate resolved" with a fatal access_denied alert.
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::AccessDenied
        )),
        "{err}"
    );
    let served = server.await.unwrap();
    assert!(
        matches!(served, Err(TlsError::NoCertificateYet { .. })),
        "{served:?}"
    );
}

#[tokio::test]
async fn non_tls_bytes_get_an_alert_and_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let terminator = files_terminator(dir.path(), &TestCa::new().leaf(NAME));

    let (addr, server) = serve_one(terminator, false).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.unwrap();
    assert_eq!(
        reply.first(),
        Some(&0x15),
        "expected a TLS alert record, got {reply:?}"
    );
    let served = server.await.unwrap();
    assert!(matches!(served, Err(TlsError::Handshake(_))), "{served:?}");
}

#[tokio::test]
async fn silent_client_hits_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_leaf(dir.path(), &TestCa::new().leaf(NAME));
    let mut settings = files_route(cert, key);
    settings.handshake_timeout = Duration::from_millis(200);
    let terminator = Arc::new(TlsTerminator::start(settings).unwrap());

    let (addr, server) = serve_one(terminator, false).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(served, Err(TlsError::HandshakeTimeout(_))),
        "{served:?}"
    );
}

/// A fake ACME directory that counts connection attempts and closes each at once.
async fn counting_directory() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/dir", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    (url, count)
}

#[tokio::test]
async fn dropping_the_terminator_stops_its_acme_driver() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (kept_url, kept_count) = counting_directory().await;
    let (dropped_url, dropped_count) = counting_directory().await;
    let kept =
        TlsTerminator::start(acme_route(&[NAME], kept_url, dir.path().join("a"), None)).unwrap();
    let dropped =
        TlsTerminator::start(acme_route(&[NAME], dropped_url, dir.path().join("b"), None)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped_count.load(SeqCst) == 0 || kept_count.load(SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the ACME drivers never reached the directory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_drop = dropped_count.load(SeqCst);
    let kept_at_drop = kept_count.load(SeqCst);

    // rustls-acme retries after 1 s, then 2 s: the kept route must try again meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        kept_count.load(SeqCst) > kept_at_drop,
        "control: the kept route never retried"
    );
    assert_eq!(
        dropped_count.load(SeqCst),
        at_drop,
        "the dropped route kept ordering"
    );
    drop(kept);
}
