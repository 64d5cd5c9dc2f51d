//! `frontgate health`: asks the metrics endpoint's `/healthz` whether the gateway serves (its
//! configuration loaded, every listen address bound), for a container `HEALTHCHECK` or a
//! script: exit 0 on `200`, 1 on anything else, with the reason on stderr.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ConfigArg;
use crate::config;

/// How much of the answer's body is read for the message: `/healthz` says a line.
const HEALTHZ_LIMIT: usize = 1024;

/// `frontgate health` options.
#[derive(Args)]
pub(super) struct HealthArgs {
    /// The route file whose `metrics.listen` is asked (ignored with --url; a file that does
    /// not load is an error).
    #[command(flatten)]
    config: ConfigArg,
    /// Ask this http:// URL instead, e.g. http://127.0.0.1:9100/healthz.
    #[arg(long)]
    url: Option<Uri>,
    /// Give up after this long, connecting and answering together.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(super) fn main(args: HealthArgs) -> ExitCode {
    let url = match args.url {
        Some(url) => url,
        None => match url_from_config(&args.config) {
            Ok(url) => url,
            Err(e) => {
                eprintln!("frontgate: health: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("frontgate: health: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(args.timeout, get(&url, HEALTHZ_LIMIT))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(args.timeout)
                ))
            })
    });
    match answer {
        Ok((StatusCode::OK, body)) => {
            println!("healthy: {url} answered 200: {}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!(
                "frontgate: unhealthy: {url} answered {status}: {}",
                body.trim()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("frontgate: unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `http://ADDR/healthz` for the route file's `metrics.listen`.
fn url_from_config(config: &ConfigArg) -> Result<Uri, String> {
    let loaded = config::load(&config.path).map_err(|e| e.to_string())?;
    let Some(addr) = loaded.metrics else {
        return Err(format!(
            "{} has no metrics.listen, and the health check asks its /healthz: add \
             `metrics: {{ listen: 127.0.0.1:9100 }}` or give --url",
            config.path.display()
        ));
    };
    metrics_url(addr, "/healthz")
}

/// `http://ADDR{path}` for the metrics endpoint listening on `addr`; an unspecified address
/// (`0.0.0.0`, `[::]`) is asked on the loopback address of its family.
pub(super) fn metrics_url(addr: SocketAddr, path: &str) -> Result<Uri, String> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}{path}", SocketAddr::new(ip, addr.port()));
    url.parse().map_err(|e| format!("{url}: {e}"))
}

/// One `GET url` over HTTP/1.1: the status and the body's first `limit` bytes (a longer
/// body reads as empty).
pub(super) async fn get(url: &Uri, limit: usize) -> Result<(StatusCode, String), String> {
    if url.scheme_str() != Some("http") {
        return Err("only http:// URLs can be asked".to_string());
    }
    let authority = url.authority().ok_or("the URL has no host")?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e} (is frontgate running?)"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // Drives the connection until the answer is read; ends with this task.
    let connection = tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no HTTP answer: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
        .unwrap_or_default();
    connection.abort();
    Ok((status, body))
}
