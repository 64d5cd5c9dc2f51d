//! `frontgate import-nginx`: an nginx `stream { }` configuration (`ssl_preread` with a map of
//! server names, upstreams, PROXY protocol, timeouts) translated into a commented route file,
//! which is then checked the way `frontgate check` reads it.
//!
//! The translation reads the nginx text ([`lexer`], [`syntax`], [`includes`]), keeps what the
//! stream block says as typed values ([`stream`]), decides the routes ([`mapping`], with
//! [`listeners`] and [`timeouts`]) into a [`plan`], and writes it with a comment for every
//! directive that has no equivalent ([`emit`]).

mod emit;
mod includes;
mod lexer;
mod listeners;
mod mapping;
mod plan;
mod stream;
mod syntax;
mod timeouts;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config;

/// `frontgate import-nginx` options.
#[derive(Args)]
pub(super) struct ImportNginxArgs {
    /// The nginx configuration: a whole nginx.conf, the file with the `stream { }` block, or
    /// a file of stream-block contents. `include`s are followed, relative to its directory.
    file: PathBuf,
    /// Write the route file here instead of to standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub(super) fn main(args: ImportNginxArgs) -> ExitCode {
    let source = args.file.display().to_string();
    let (text, plan) = match convert(&args.file) {
        Ok(converted) => converted,
        Err(e) => {
            eprintln!("frontgate: {e}");
            eprintln!("frontgate: nothing imported from {source}");
            return ExitCode::FAILURE;
        }
    };
    let origin = args.out.as_ref().map_or_else(
        || "the imported route file".to_string(),
        |p| p.display().to_string(),
    );
    let checked = config::parse(&text, &origin);
    match &args.out {
        Some(out) => {
            if let Err(e) = std::fs::write(out, &text) {
                eprintln!("frontgate: cannot write {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{text}"),
    }
    let not_mapped = plan.not_mapped().len();
    eprintln!(
        "frontgate: imported {} route(s){}{} from {source}; {not_mapped} directive(s) not mapped (the `# not mapped:` comments say why)",
        plan.routes.len(),
        if plan.default.is_some() { ", default" } else { "" },
        if plan.non_tls.is_some() { ", non_tls" } else { "" },
    );
    if plan.routes.is_empty() && plan.default.is_none() && plan.non_tls.is_none() {
        eprintln!(
            "frontgate: no route could be translated, so every connection would be closed: the `# not mapped:` comments say why"
        );
        return ExitCode::FAILURE;
    }
    match checked {
        Ok(_) => {
            eprintln!("frontgate: {origin} passes `frontgate check`");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("frontgate: {e}");
            eprintln!("frontgate: {origin} does not pass `frontgate check`: fix it by hand");
            ExitCode::FAILURE
        }
    }
}

/// The route file text for the nginx configuration at `path`, with the plan it writes.
fn convert(path: &Path) -> Result<(String, plan::Plan), String> {
    let source = path.display().to_string();
    let tree = includes::load(path).map_err(|e| e.to_string())?;
    let stream = stream::read(&tree, &source).map_err(|e| e.to_string())?;
    let plan = mapping::plan(&stream, &source)?;
    Ok((emit::route_file(&plan), plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, ProxyProtocol, RouteTable};

    /// Imports a configuration of tests/data/nginx and checks the result as `check` would.
    fn import(name: &str) -> (String, config::Config) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/nginx")
            .join(name);
        let (text, _) = convert(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = config::parse(&text, name).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        (text, config)
    }

    /// Where a hello for `name` goes: the backends and the PROXY header.
    fn goes(table: &RouteTable, name: Option<&str>) -> Option<(Vec<String>, ProxyProtocol)> {
        let route = table.for_server_name(name)?;
        match &route.action {
            Action::Forward(f) => Some((
                f.upstreams.iter().map(ToString::to_string).collect(),
                f.proxy_protocol,
            )),
            other => panic!("unexpected action {other:?}"),
        }
    }

    fn to(addrs: &[&str], pp: ProxyProtocol) -> Option<(Vec<String>, ProxyProtocol)> {
        Some((addrs.iter().map(ToString::to_string).collect(), pp))
    }

    #[test]
    fn every_shipped_configuration_is_tested_here() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nginx");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "3x-ui-reality.conf",
                "remnawave-node.conf",
                "site-xray.conf",
                "stream.conf"
            ]
        );
    }

    #[test]
    fn a_remnawave_node_keeps_reality_untouched_and_adds_the_header_for_the_panel_only() {
        let (_, config) = import("remnawave-node.conf");
        let t = &config.routes;
        let none = ProxyProtocol::None;
        assert_eq!(
            goes(t, Some("node1.example.com")),
            to(&["127.0.0.1:8443"], none)
        );
        assert_eq!(
            goes(t, Some("www.microsoft.com")),
            to(&["127.0.0.1:8443"], none)
        );
        assert_eq!(
            goes(t, Some("sub.example.com")),
            to(&["127.0.0.1:9443"], ProxyProtocol::V1),
            "through the hop that adds the header, straight to its backend"
        );
        assert_eq!(goes(t, None), to(&["127.0.0.1:8443"], none));
        assert_eq!(
            config.listen.len(),
            2,
            "the hop's 127.0.0.1:10443 is not a listener"
        );
    }

    #[test]
    fn a_3x_ui_reality_setup_sends_every_backend_the_header() {
        let (text, config) = import("3x-ui-reality.conf");
        let t = &config.routes;
        let v1 = ProxyProtocol::V1;
        assert_eq!(
            goes(t, Some("reality.example.com")),
            to(&["127.0.0.1:8443"], v1)
        );
        assert_eq!(
            goes(t, Some("www.example.com")),
            to(&["127.0.0.1:7443"], v1)
        );
        assert_eq!(
            goes(t, Some("panel.example.com")),
            to(&["127.0.0.1:2053"], v1)
        );
        assert_eq!(goes(t, Some("x.example.com")), to(&["127.0.0.1:8443"], v1));
        assert!(
            text.contains("# not mapped: "),
            "set_real_ip_from unix: is reported"
        );
        assert!(config.trusted_proxies.is_empty());
    }

    #[test]
    fn a_site_and_xray_map_without_hostnames_matches_exact_names_only() {
        let (text, config) = import("site-xray.conf");
        let t = &config.routes;
        let v1 = ProxyProtocol::V1;
        assert_eq!(goes(t, Some("example.com")), to(&["127.0.0.1:8001"], v1));
        assert_eq!(
            goes(t, Some("vless.example.com")),
            to(&["127.0.0.1:8002"], v1)
        );
        assert_eq!(
            goes(t, Some("other.example.com")),
            to(&["127.0.0.1:8001"], v1)
        );
        assert_eq!(
            config.timeouts.client_hello,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(config.timeouts.connect, std::time::Duration::from_secs(3));
        for directive in [
            "log_format basic",
            "access_log /var/log/nginx",
            "http { ... }",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains("# not mapped:") && l.contains(directive)),
                "{directive} not reported"
            );
        }
    }

    #[test]
    fn included_pools_behind_a_balancer_keep_order_backup_and_the_trusted_balancer() {
        let (text, config) = import("pools/nginx.conf");
        let t = &config.routes;
        let v1 = ProxyProtocol::V1;
        let web = to(&["127.0.0.1:8101", "127.0.0.1:8102", "127.0.0.1:8103"], v1);
        for name in [
            "example.net",
            "www.example.net",
            "a.b.example.org",
            "api1.example.com",
        ] {
            assert_eq!(goes(t, Some(name)), web, "{name}");
        }
        assert_eq!(
            goes(t, Some("example.org")),
            web,
            "default: *.example.org is not example.org"
        );
        assert_eq!(
            goes(t, Some("vpn.example.net")),
            to(&["127.0.0.1:8201", "127.0.0.1:8202"], v1)
        );
        assert_eq!(
            config.trusted_proxies,
            ["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]
        );
        for reported in [
            "regular expression",
            "least_conn",
            "max_fails=2 fail_timeout=10s",
            "weights 3, 1",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains("# not mapped:") && l.contains(reported)),
                "{reported} not reported"
            );
        }
    }

    #[test]
    fn the_seed_stream_block_routes_as_nginx_did() {
        let (text, config) = import("stream.conf");
        let t = &config.routes;
        let v1 = ProxyProtocol::V1;
        assert_eq!(
            goes(t, Some("proxy.example.com")),
            to(&["127.0.0.1:10443"], v1)
        );
        assert_eq!(goes(t, Some("3.example.com")), to(&["127.0.0.1:9443"], v1));
        let site = to(&["127.0.0.1:8443", "127.0.0.1:8444"], v1);
        for name in [
            "3-x.example.com",
            "cdn.example.com",
            "a.b.cdn.example.com",
            "other.example.com",
        ] {
            assert_eq!(goes(t, Some(name)), site, "{name}");
        }
        assert_eq!(goes(t, None), site);
        assert!(
            text.contains("MIGRATING-FROM-NGINX.md"),
            "the MTProto upstream gets the hint"
        );
        assert_eq!(config.timeouts.idle, std::time::Duration::from_secs(86_400));
    }

    #[test]
    fn unparsable_input_is_an_error_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.conf");
        std::fs::write(&path, "stream {\n  server {\n    listen 443\n  }\n}\n").unwrap();
        let err = convert(&path).unwrap_err();
        assert!(
            err.starts_with(&format!("{}:4: unexpected \"}}\"", path.display())),
            "{err}"
        );
    }
}
