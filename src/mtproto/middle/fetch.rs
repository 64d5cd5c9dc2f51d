//! One GET of a middle-proxy configuration URL: HTTP/1.1 with hyper, over rustls (Mozilla's
//! roots, the name checked) for `https://`, through `mtproto.via`'s SOCKS5 upstreams when
//! there are any. The answer must be `200` and at most [`ANSWER_MAX`] bytes.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::directory::ANSWER_MAX;
use super::net::MeNet;
use crate::config::datacenters::DcAddr;
use crate::config::middle::FetchUrl;
use crate::mtproto::upstreams;

/// The whole fetch (connect, TLS, request, body) must finish within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// GETs `url`; the error says what failed (never more than the URL and the reason).
pub async fn get(url: &FetchUrl, net: &MeNet) -> Result<Vec<u8>, String> {
    tokio::time::timeout(FETCH_TIMEOUT, get_inner(url, net))
        .await
        .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))?
}

async fn get_inner(url: &FetchUrl, net: &MeNet) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.0.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("URL without a host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = connect(&host, port, net).await?;
    if !https {
        return request(tcp, &uri).await;
    }
    let config = tls_config().map_err(|e| format!("TLS setup: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("bad TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    request(tls, &uri).await
}

/// TCP to `host:port`, directly or through the upstreams.
async fn connect(host: &str, port: u16, net: &MeNet) -> Result<TcpStream, String> {
    if !net.via.is_empty() {
        let target = [DcAddr::Host {
            host: host.to_string(),
            port,
        }];
        let (stream, _) = upstreams::connect_via(&net.via, &target, net.connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(stream);
    }
    let attempt = TcpStream::connect((host, port));
    match tokio::time::timeout(net.connect_timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn request<S>(stream: S, uri: &hyper::Uri) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or("", |a| a.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "frontgate")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("HTTP request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), ANSWER_MAX)
        .collect()
        .await
        .map_err(|e| format!("HTTP body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}
