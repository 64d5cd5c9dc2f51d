//! Asking an `mtproto: true` route's backend, before any client does, whether its answer to a
//! modern ClientHello can be mirrored (`frontgate check --probe` and the start-up log): a
//! backend that answers TLS 1.2, or no TLS at all, can never look like a Telegram client's
//! TLS 1.3 flight, and the operator must hear so with the fix.
//!
//! The probe hello is rustls's own ClientHello for the route's name (TLS 1.3 and 1.2, x25519
//! first). Its answer is only reported, never learned: a Telegram client's hello (which may
//! offer post-quantum key shares) can get a different answer, and learned profiles come
//! from those.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::admission::loop_guard::OutboundAddrs;
use crate::config::{Action, Config, MimicMode, MtprotoRoute, NamePattern};
use crate::forward::proxy_out;
use crate::mtproto::mimic::FlightProfile;
use crate::mtproto::mirror;

/// What one route's backend answered the probe.
#[derive(Debug)]
pub struct ProbeReport {
    /// The route's label.
    pub route: String,
    /// The route's mimic mode.
    pub mimic: MimicMode,
    /// The backend's profile, or why its answer cannot be mirrored.
    pub answer: Result<FlightProfile, String>,
}

impl ProbeReport {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        match &self.answer {
            Ok(profile) => {
                let (group, key_len) = profile.key_share().unwrap_or((0, 0));
                format!(
                    "route {}: the backend answers TLS 1.3 (cipher 0x{:04x}, key share 0x{group:04x}/{key_len} bytes, \
                     {} encrypted record(s) of {} bytes): fake flights can mirror it (mimic: {})",
                    self.route,
                    profile.cipher_suite,
                    profile.encrypted_records,
                    profile.encrypted_len,
                    self.mimic
                )
            }
            Err(why) => format!(
                "route {}: fake flights cannot mirror the backend: {why}",
                self.route
            ),
        }
    }
}

/// A ClientHello that rustls sends for `server_name` (a valid DNS name), as raw bytes.
pub fn probe_hello(server_name: &str) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// Probes the backend of every `mtproto: true` route of `config` whose mimic mode is not
/// `off` (and `default:` with `mtproto: true`), each within `budget`.
pub async fn probe_routes(config: &Config, budget: Duration) -> Vec<ProbeReport> {
    let outbound = Arc::new(OutboundAddrs::default());
    let mut reports = Vec::new();
    let routes = config
        .routes
        .routes()
        .iter()
        .chain(config.routes.default_route());
    for route in routes {
        let Action::Mtproto(target) = &route.action else {
            continue;
        };
        if target.mimic == MimicMode::Off {
            continue;
        }
        let answer = probe_one(&route.label, target, budget, &outbound).await;
        reports.push(ProbeReport {
            route: route.label.clone(),
            mimic: target.mimic,
            answer,
        });
    }
    reports
}

async fn probe_one(
    label: &str,
    target: &MtprotoRoute,
    budget: Duration,
    outbound: &Arc<OutboundAddrs>,
) -> Result<FlightProfile, String> {
    // The route's label is its first server name; `default` has none and probes as itself.
    let name = match NamePattern::parse(label) {
        Ok(NamePattern::Exact(name)) => name,
        _ => "localhost".to_string(),
    };
    let hello = probe_hello(&name).ok_or("cannot build a probe hello for the route's name")?;
    let sid_len = usize::from(hello.get(43).copied().unwrap_or(0));
    let session_id = hello.get(44..44 + sid_len).unwrap_or_default().to_vec();
    let forward = &target.forward;
    // A backend that expects a PROXY header gets one, naming loopback on both ends.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 443));
    let head = proxy_out::encode(forward.proxy_protocol, loopback, loopback);
    let answer = mirror::backend_flight(forward, &head, &hello, budget, outbound)
        .await
        .map_err(|e| e.to_string())?;
    FlightProfile::from_backend(&answer, &session_id).map_err(|e| e.to_string())
}
