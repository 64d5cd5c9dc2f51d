//! The human-readable route summary printed by `frontgate check`, like `nginx -T` but short.

use std::fmt::Write;

use crate::config::pool::PoolSettings;
use crate::config::CertSource;
use crate::config::Config;
use crate::config::ProxyProtocol;
use crate::config::{AccessLists, AddressSet};
use crate::config::{Action, Forward, Route};

/// Renders the listeners and every route of `config`, one line per route.
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "listen: {}", listen.join(", "));
    if !config.trusted_proxies.is_empty() {
        let nets: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "inbound PROXY protocol required from: {}",
            nets.join(", ")
        );
    }
    let t = &config.timeouts;
    let _ = writeln!(
        out,
        "timeouts: client_hello {}, connect {}, idle {}, shutdown_grace {}",
        humantime::format_duration(t.client_hello),
        humantime::format_duration(t.connect),
        humantime::format_duration(t.idle),
        humantime::format_duration(t.shutdown_grace)
    );
    let l = &config.limits;
    let _ = writeln!(
        out,
        "limits: max_connections {}, max_connections_per_ip {}",
        l.max_connections, l.max_connections_per_ip
    );
    if !config.access.is_open() || config.deny_file.is_some() {
        let mut policy = describe_access(&config.access);
        if let Some(file) = &config.deny_file {
            policy.push(format!("deny_file {}", file.display()));
        }
        let _ = writeln!(out, "network policy: {}", policy.join(", "));
    }
    if let Some(metrics) = config.metrics {
        let _ = writeln!(out, "metrics: http://{metrics}/metrics");
    }
    let _ = writeln!(out, "routes:");
    let table = &config.routes;
    let mut lines: Vec<(String, String)> = table
        .routes()
        .iter()
        .map(|route| {
            let names: Vec<String> = table
                .names_of(route)
                .iter()
                .map(ToString::to_string)
                .collect();
            (names.join(", "), describe(route))
        })
        .collect();
    let fallback = |route: Option<&std::sync::Arc<Route>>| {
        route.map_or_else(|| "closed".to_string(), |r| describe(r))
    };
    lines.push((
        "default (no SNI / no match)".into(),
        fallback(table.default_route()),
    ));
    lines.push(("non_tls".into(), fallback(table.for_non_tls())));
    let width = lines
        .iter()
        .map(|(names, _)| names.len())
        .max()
        .unwrap_or(0);
    for (names, target) in lines {
        let _ = writeln!(out, "  {names:width$}  -> {target}");
    }
    out
}

fn describe(route: &Route) -> String {
    let action = describe_action(route);
    if route.access.is_open() {
        return action;
    }
    format!("{action} [{}]", describe_access(&route.access).join(", "))
}

/// `allow N networks`, `deny M networks`: what the lists hold, for one line.
fn describe_access(lists: &AccessLists) -> Vec<String> {
    let count = |set: &AddressSet| match set.len() {
        1 => "1 network".to_string(),
        n => format!("{n} networks"),
    };
    let mut parts = Vec::new();
    if let Some(allow) = &lists.allow {
        parts.push(format!("allow {}", count(allow)));
    }
    if !lists.deny.is_empty() {
        parts.push(format!("deny {}", count(&lists.deny)));
    }
    parts
}

fn describe_action(route: &Route) -> String {
    match &route.action {
        Action::Forward(forward) => describe_forward(forward),
        Action::Mtproto(mtproto) => {
            format!(
                "MTProto fake-TLS users (flight shape: mimic {}), everything else -> {}",
                mtproto.mimic,
                describe_forward(&mtproto.forward)
            )
        }
        Action::Terminate(terminate) => {
            let source = match &terminate.settings.source {
                CertSource::Files { cert, .. } => format!("certificate {}", cert.display()),
                CertSource::Acme { directory, .. } => format!("ACME certificate from {directory}"),
            };
            format!(
                "terminate TLS ({source}), then {}",
                describe_forward(&terminate.forward)
            )
        }
    }
}

fn describe_forward(forward: &Forward) -> String {
    let mut text = describe_pool(&forward.pool);
    match forward.proxy_protocol {
        ProxyProtocol::None => {}
        ProxyProtocol::V1 => text.push_str(" (PROXY v1)"),
        ProxyProtocol::V2 => text.push_str(" (PROXY v2)"),
    }
    text
}

/// The short forms as before (`a, then b`); a pool with its balance, weights, backups and
/// check.
fn describe_pool(pool: &PoolSettings) -> String {
    let plain = PoolSettings::in_order(
        &pool
            .servers
            .iter()
            .map(|s| s.upstream.clone())
            .collect::<Vec<_>>(),
    );
    if *pool == plain {
        let to: Vec<String> = pool
            .servers
            .iter()
            .map(|s| s.upstream.to_string())
            .collect();
        return to.join(", then ");
    }
    let servers: Vec<String> = pool
        .servers
        .iter()
        .map(|s| {
            let mut text = s.upstream.to_string();
            if s.weight != 1 {
                text.push_str(&format!(" (weight {})", s.weight));
            }
            if s.backup {
                text.push_str(" (backup)");
            }
            text
        })
        .collect();
    let mut text = format!("{} over {}", pool.balance, servers.join(", "));
    if let Some(check) = pool.check {
        let how = if check.tls {
            "TLS handshake"
        } else {
            "TCP connect"
        };
        text.push_str(&format!(
            "; {how} check every {:?}, down after {} failures, up after {} passes",
            check.interval, check.fall, check.rise
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_described_with_its_rule_and_check_and_a_list_as_before() {
        let config = crate::config::parse(
            "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    to: {balance: round_robin, servers: [{addr: 127.0.0.1:1, weight: 2}, {addr: 127.0.0.1:2, backup: true}], check: {interval: 3s, fall: 2}}\ndefault: {to: [127.0.0.1:3, 127.0.0.1:4]}\n",
            "test.yaml",
        )
        .unwrap();
        let text = render(&config);
        assert!(
            text.contains(
                "-> round_robin over 127.0.0.1:1 (weight 2), 127.0.0.1:2 (backup); TCP connect \
                 check every 3s, down after 2 failures, up after 2 passes"
            ),
            "{text}"
        );
        assert!(text.contains("-> 127.0.0.1:3, then 127.0.0.1:4"), "{text}");
    }
}
