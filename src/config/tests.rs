use super::*;

fn parse_ok(text: &str) -> Config {
    parse(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    parse(text, "test.yaml").expect_err("accepted").to_string()
}

#[test]
fn full_example_compiles_with_every_key() {
    let config = parse_ok(
        r#"
listen: [0.0.0.0:443, "[::]:443"]
accept_proxy_protocol_from: [127.0.0.1/32, "::1"]
timeouts: { client_hello: 3s, connect: 2s, idle: 1h, shutdown_grace: 5 }
limits: { max_connections: 10, max_connections_per_ip: 2 }
metrics: { listen: 127.0.0.1:9100 }
routes:
  - sni: a.example.com
    to: 127.0.0.1:8443
  - sni: ["*.example.com", example.com]
    to: [127.0.0.1:8443, backend.internal:8444]
    proxy_protocol: v2
default: { to: 127.0.0.1:8443, proxy_protocol: v1 }
non_tls: { to: 127.0.0.1:8080 }
"#,
    );
    assert_eq!(config.listen.len(), 2);
    assert!(config.is_trusted_proxy("127.0.0.1".parse().unwrap()));
    assert!(config.is_trusted_proxy("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!config.is_trusted_proxy("127.0.0.2".parse().unwrap()));
    assert_eq!(config.timeouts.client_hello, Duration::from_secs(3));
    assert_eq!(config.timeouts.shutdown_grace, Duration::from_secs(5));
    assert_eq!(
        config.limits,
        Limits {
            max_connections: 10,
            max_connections_per_ip: 2
        }
    );
    assert_eq!(config.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    let route = config
        .routes
        .for_server_name(Some("x.example.com"))
        .unwrap();
    let Action::Forward(forward) = &route.action else {
        panic!("a forward route")
    };
    assert_eq!(forward.upstreams.len(), 2);
    assert_eq!(forward.proxy_protocol, crate::config::ProxyProtocol::V2);
    assert_eq!(
        config.routes.for_server_name(None).unwrap().label,
        "default"
    );
    assert_eq!(config.routes.for_non_tls().unwrap().label, "non_tls");
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let config = parse_ok("listen: 127.0.0.1:4443\ndefault: { to: 127.0.0.1:1 }\n");
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.limits, Limits::default());
    assert!(config.routes.routes().is_empty());
}

#[test]
fn errors_name_file_line_column_and_key() {
    let text = "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1\n";
    assert_eq!(
        parse_err(text),
        "test.yaml:4:9: routes[0].to: invalid address `127.0.0.1`: expected host:port, e.g. 127.0.0.1:8443 or [::1]:8443"
    );
    let typo = "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    too: 127.0.0.1:1\n";
    let err = parse_err(typo);
    assert!(
        err.starts_with("test.yaml:4:5: routes[0]: unknown field `too`, expected one of"),
        "{err}"
    );
}

#[test]
fn duplicate_names_are_refused_across_routes() {
    let text = "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:1\n  - sni: [b.example.com, A.Example.com.]\n    to: 127.0.0.1:2\n";
    let err = parse_err(text);
    assert!(
        err.contains("server name `a.example.com` of routes[1] is already used by routes[0]"),
        "{err}"
    );
    assert!(err.starts_with("test.yaml:"), "{err}");
}

#[test]
fn fronting_loops_are_refused() {
    let err =
        parse_err("listen: 0.0.0.0:443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:443\n");
    assert!(
        err.contains("routes[0].to: 127.0.0.1:443 is frontgate's own listen address 0.0.0.0:443"),
        "{err}"
    );
    let err = parse_err("listen: 127.0.0.1:443\ndefault: { to: localhost:443 }\n");
    assert!(err.contains("default.to"), "{err}");
    parse_ok("listen: 127.0.0.1:443\ndefault: { to: 127.0.0.2:443 }\n");
}

#[test]
fn bad_values_get_clear_messages() {
    let cases = [
        ("listen: 443\n", "invalid listen address `443`"),
        ("", "the file is empty"),
        (
            "listen: 127.0.0.1:1\ntimeouts: { idle: 10 minutes please }\n",
            "invalid duration `10 minutes please`",
        ),
        (
            "listen: 127.0.0.1:1\ntimeouts: { idle: 0s }\n",
            "longer than 0s",
        ),
        (
            "listen: 127.0.0.1:1\nlimits: { max_connections: 0 }\n",
            "a limit of 0",
        ),
        (
            "listen: 127.0.0.1:1\ndefault: { to: 127.0.0.1:2, proxy_protocol: v3 }\n",
            "expected none, v1 or v2",
        ),
        (
            "listen: 127.0.0.1:1\nroutes:\n  - sni: '*'\n    to: 127.0.0.1:2\n",
            "invalid server name `*`",
        ),
        (
            "listen: 127.0.0.1:1\naccept_proxy_protocol_from: [10.0.0.0/33]\n",
            "invalid network",
        ),
        ("listen: []\n", "the list is empty"),
        (
            "listen: 127.0.0.1:1\nroutes:\n  - sni: a\n",
            "missing field `to`",
        ),
        ("listen: [127.0.0.1:1\n", "test.yaml:"),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn default_may_check_hellos_against_the_mtproto_users() {
    let users = "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }\n";
    let config = parse_ok(&format!(
        "listen: 127.0.0.1:443\n{users}default: {{ mtproto: true, to: 127.0.0.1:8443 }}\n"
    ));
    let default = config.routes.for_server_name(None).unwrap();
    assert!(matches!(default.action, Action::Mtproto(_)), "{default:?}");
    let unmatched = config
        .routes
        .for_server_name(Some("x.example.org"))
        .unwrap();
    assert!(matches!(unmatched.action, Action::Mtproto(_)));
    // Off by default, and `false` is the same as absent.
    for text in [
        format!("listen: 127.0.0.1:443\n{users}default: {{ to: 127.0.0.1:8443 }}\n"),
        format!(
            "listen: 127.0.0.1:443\n{users}default: {{ to: 127.0.0.1:8443, mtproto: false }}\n"
        ),
    ] {
        let config = parse_ok(&text);
        let default = config.routes.for_server_name(None).unwrap();
        assert!(matches!(default.action, Action::Forward(_)), "{text}");
    }
}

#[test]
fn default_mtproto_needs_users_and_non_tls_refuses_it() {
    let err = parse_err("listen: 127.0.0.1:443\ndefault: { mtproto: true, to: 127.0.0.1:8443 }\n");
    assert_eq!(
        err,
        "test.yaml: default: `mtproto: true` needs an `mtproto:` section with users"
    );
    let users = "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }\n";
    let err = parse_err(&format!(
        "listen: 127.0.0.1:443\n{users}non_tls: {{ mtproto: true, to: 127.0.0.1:8080 }}\n"
    ));
    assert!(
        err.starts_with("test.yaml: non_tls: `mtproto: true` does not apply here"),
        "{err}"
    );
    assert!(err.contains("mtproto.allow_plain"), "{err}");
}
