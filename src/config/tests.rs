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
fn duplicate_names_point_at_the_repeated_name() {
    let text = "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:1\n  - sni: [b.example.com, A.Example.com.]\n    to: 127.0.0.1:2\n";
    assert_eq!(
        parse_err(text),
        "test.yaml:5:26: routes[1].sni[1]: server name `a.example.com` is already used by routes[0]"
    );
    let single = "listen: 127.0.0.1:443\nroutes:\n  - sni: \"*.example.com\"\n    to: 127.0.0.1:1\n  - sni: b.example.com\n    to: 127.0.0.1:2\n  - sni: '*.Example.com'\n    to: 127.0.0.1:3\n";
    assert_eq!(
        parse_err(single),
        "test.yaml:7:10: routes[2].sni: server name `*.example.com` is already used by routes[0]"
    );
    let twice = "listen: 127.0.0.1:443\nroutes:\n  - sni: [a.example.com, a.example.com.]\n    to: 127.0.0.1:1\n";
    assert_eq!(
        parse_err(twice),
        "test.yaml:3:26: routes[0].sni[1]: server name `a.example.com` is already used by routes[0]"
    );
}

#[test]
fn fronting_loops_are_refused() {
    let err =
        parse_err("listen: 0.0.0.0:443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:443\n");
    assert_eq!(
        err,
        "test.yaml:4:9: routes[0].to: 127.0.0.1:443 is frontgate's own listen address 0.0.0.0:443: \
         connections would loop back into the gateway (fronting loop)"
    );
    let err = parse_err("listen: 127.0.0.1:443\ndefault: { to: [127.0.0.1:1, localhost:443] }\n");
    assert!(
        err.starts_with("test.yaml:2:30: default.to[1]: localhost:443 is frontgate's own"),
        "{err}"
    );
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
            "test.yaml:2:19: timeouts.idle: 0s is shorter than the minimum of 100ms",
        ),
        (
            "listen: 127.0.0.1:1\nlimits: { max_connections: 0 }\n",
            "test.yaml:2:28: limits.max_connections: 0 is less than the minimum of 1",
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

/// A file with `listen:` and `lines` after it.
fn with(lines: &str) -> String {
    format!("listen: 127.0.0.1:1\n{lines}")
}

const ALICE: &str = "0123456789abcdef0123456789abcdef";
const BOB: &str = "fedcba9876543210fedcba9876543210";

#[test]
fn the_shipped_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.example.yaml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.mtproto.is_some());
    assert!(!config.routes.routes().is_empty());
}

#[test]
fn every_duration_and_count_is_bounded_at_its_value() {
    let cases = [
        (
            "timeouts: {idle: 500000000000y}\n",
            "test.yaml:2:18: timeouts.idle: 500000000000y is longer than the maximum of 7d",
        ),
        (
            "timeouts:\n  client_hello: 18446744073709551615\n",
            "test.yaml:3:17: timeouts.client_hello: 18446744073709551615 is longer than the maximum of 5m",
        ),
        (
            "timeouts: {client_hello: 50ms}\n",
            "test.yaml:2:26: timeouts.client_hello: 50ms is shorter than the minimum of 100ms",
        ),
        (
            "timeouts: {connect: 6m}\n",
            "test.yaml:2:21: timeouts.connect: 6m is longer than the maximum of 5m",
        ),
        (
            "timeouts: {connect: 10ms}\n",
            "test.yaml:2:21: timeouts.connect: 10ms is shorter than the minimum of 100ms",
        ),
        (
            "timeouts: {idle: 8days}\n",
            "test.yaml:2:18: timeouts.idle: 8days is longer than the maximum of 7d",
        ),
        (
            "timeouts: {shutdown_grace: 2d}\n",
            "test.yaml:2:28: timeouts.shutdown_grace: 2d is longer than the maximum of 1d",
        ),
        (
            "timeouts: {shutdown_grace: 0}\n",
            "test.yaml:2:28: timeouts.shutdown_grace: 0 is shorter than the minimum of 1s",
        ),
        (
            "limits: {max_connections: 18446744073709551615}\n",
            "test.yaml:2:27: limits.max_connections: 18446744073709551615 is more than the maximum of 10000000",
        ),
        (
            "limits: {max_connections_per_ip: 0}\n",
            "test.yaml:2:34: limits.max_connections_per_ip: 0 is less than the minimum of 1",
        ),
        (
            "limits: {max_connections_per_ip: 10000001}\n",
            "test.yaml:2:34: limits.max_connections_per_ip: 10000001 is more than the maximum of 10000000",
        ),
        (
            &format!("mtproto:\n  users: {{alice: {ALICE}}}\n  max_clock_skew: 1y\n"),
            "test.yaml:4:19: mtproto.max_clock_skew: 1y is longer than the maximum of 1d",
        ),
        (
            &format!("mtproto:\n  users: {{alice: {ALICE}}}\n  max_clock_skew: 500ms\n"),
            "test.yaml:4:19: mtproto.max_clock_skew: 500ms is shorter than the minimum of 1s",
        ),
        (
            &format!("mtproto:\n  users: {{alice: {ALICE}}}\n  replay_cache: 100000000\n"),
            "test.yaml:4:17: mtproto.replay_cache: 100000000 is more than the maximum of 10000000",
        ),
        (
            &format!("mtproto:\n  users: {{alice: {ALICE}}}\n  replay_cache: 0\n"),
            "test.yaml:4:17: mtproto.replay_cache: 0 is less than the minimum of 1",
        ),
        (
            "routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    tls: {cert: /c, key: /k, handshake_timeout: 1h}\n",
            "test.yaml:5:49: routes[0].tls.handshake_timeout: 1h is longer than the maximum of 5m",
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(parse_err(&with(lines)), expected, "{lines}");
    }
}

#[test]
fn bounds_are_inclusive() {
    let config = parse_ok(&with(&format!(
        "timeouts: {{client_hello: 5m, connect: 100ms, idle: 7d, shutdown_grace: 1d}}\n\
         limits: {{max_connections: 10000000, max_connections_per_ip: 1}}\n\
         mtproto: {{users: {{alice: {ALICE}}}, max_clock_skew: 1d, replay_cache: 10000000, allow_plain: true}}\n\
         routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    tls: {{cert: /c, key: /k, handshake_timeout: 100ms}}\n"
    )));
    assert_eq!(config.timeouts.idle, bounds::IDLE.max);
    assert_eq!(config.timeouts.connect, bounds::CONNECT.min);
    assert_eq!(config.limits.max_connections, bounds::MAX_CONNECTIONS.max);
    let mtproto = config.mtproto.expect("mtproto");
    assert_eq!(mtproto.max_clock_skew, bounds::MAX_CLOCK_SKEW.max);
    assert_eq!(mtproto.replay_cache, bounds::REPLAY_CACHE.max);
    let Action::Terminate(terminate) = &config.routes.routes()[0].action else {
        panic!("a tls route")
    };
    assert_eq!(
        terminate.settings.handshake_timeout,
        bounds::TLS_HANDSHAKE.min
    );
}

#[test]
fn user_names_that_need_escaping_are_refused_at_the_key() {
    let cases = [
        (
            format!("mtproto:\n  users:\n    alice: {ALICE}\n    'b\"ob': {BOB}\n"),
            "test.yaml:5:5: mtproto.users.b\"ob: user name `b\\\"ob` is not allowed: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`",
        ),
        (
            format!("mtproto:\n  users:\n    \"a\\nb\": {ALICE}\n"),
            "test.yaml:4:5: mtproto.users.a\nb: user name `a\\nb` is not allowed: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`",
        ),
        (
            format!("mtproto:\n  users:\n    '': {ALICE}\n"),
            "test.yaml:4:5: mtproto.users.: user name `` is not allowed: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`",
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(parse_err(&with(&lines)), expected, "{lines}");
    }
    let long = "n".repeat(65);
    let err = parse_err(&with(&format!("mtproto:\n  users:\n    {long}: {ALICE}\n")));
    assert!(
        err.starts_with(&format!("test.yaml:4:5: mtproto.users.{long}: user name")),
        "{err}"
    );
    let config = parse_ok(&with(&format!(
        "mtproto:\n  allow_plain: true\n  users:\n    Alice_1.x-y: {ALICE}\n    {}: {BOB}\n",
        "n".repeat(64)
    )));
    assert_eq!(
        config.mtproto.expect("mtproto").users[0].name,
        "Alice_1.x-y"
    );
}

#[test]
fn every_mtproto_error_names_its_node() {
    let route = "routes:\n  - sni: a.example.com\n    mtproto: true\n    to: 127.0.0.1:2\n";
    let cases = [
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  ad_tag: 3c09c680b76ee91a\n"),
            "test.yaml:4:11: mtproto.ad_tag: an ad_tag is 32 hex digits (16 bytes, from @MTProxybot), not `3c09c680b76ee91a`".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  public_ip: somewhere\n"),
            "test.yaml:4:14: mtproto.public_ip: invalid IP address syntax".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  middle_proxy:\n    config_url: ftp://x/y\n"),
            "test.yaml:5:17: mtproto.middle_proxy.config_url: `ftp://x/y` is no http:// or https:// URL with a host".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  middle_proxy:\n    refresh: 10ms\n"),
            "test.yaml:5:14: mtproto.middle_proxy.refresh: 10ms is shorter than the minimum of 1s".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  middle_proxy:\n    fallback: true\n"),
            "test.yaml:5:5: mtproto.middle_proxy: unknown field `fallback`".to_string(),
        ),
        (
            "mtproto:\n  users: {}\n".to_string(),
            "test.yaml:3:10: mtproto.users: add at least one user (name: secret)".to_string(),
        ),
        (
            format!("mtproto:\n  users:\n    alice: {ALICE}\n    bob: {ALICE}\n"),
            "test.yaml:5:10: mtproto.users.bob: `alice` and `bob` have the same secret; give each user their own (`frontgate secret` makes one)".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  datacenters:\n    0: [127.0.0.1:4000]\n"),
            "test.yaml:5:5: mtproto.datacenters.0: datacenter id 0 is invalid: use a positive DC id such as 1..5".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  datacenters:\n    2: [127.0.0.1:4002, nope]\n"),
            "test.yaml:5:25: mtproto.datacenters.2[1]: datacenter 2: \"nope\" is not host:port (IPv6 as [addr]:port)".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  datacenters: {{2: '::1:443'}}\n"),
            "test.yaml:4:20: mtproto.datacenters.2: datacenter 2: \"::1:443\" is not host:port (IPv6 as [addr]:port)".to_string(),
        ),
        (
            route.to_string(),
            "test.yaml:4:14: routes[0].mtproto: `mtproto: true` needs an `mtproto:` section with users".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n{route}    tls: {{cert: /c, key: /k}}\n"),
            "test.yaml:8:5: routes[0].tls: a route is either `mtproto: true` or `tls:`, not both".to_string(),
        ),
        // Found while parsing: serde_yaml_ng's message, at the value.
        (
            "mtproto:\n  users:\n    alice: 0123\n".to_string(),
            "test.yaml:4:12: mtproto.users.alice: secret must be 32 hex characters".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  datacenters: {{2: []}}\n"),
            "test.yaml:4:20: mtproto.datacenters.2: the list is empty".to_string(),
        ),
        (
            "mtproto:\n  allow_plain: true\n".to_string(),
            "test.yaml:3:3: mtproto.users: add at least one user (name: secret), here or in `mtproto.users_file`".to_string(),
        ),
        (
            format!("mtproto:\n  users: {{alice: {ALICE}}}\n  replay: 5\n"),
            "test.yaml:4:3: mtproto: unknown field `replay`".to_string(),
        ),
    ];
    for (lines, expected) in cases {
        let err = parse_err(&with(&lines));
        assert!(err.starts_with(&expected), "{lines}\n{err}\n{expected}");
    }
}

#[test]
fn every_tls_error_names_its_node() {
    let route = |tls: &str| {
        format!("routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    tls:\n{tls}")
    };
    let cases = [
        (
            route("      cert: /c.pem\n"),
            "test.yaml:6:7: routes[0].tls.cert: `cert` and `key` go together: give both",
        ),
        (
            route("      key: /k.pem\n"),
            "test.yaml:6:7: routes[0].tls.key: `cert` and `key` go together: give both",
        ),
        (
            route("      alpn: [h2]\n"),
            "test.yaml:6:7: routes[0].tls: give either `acme:` or `cert:` + `key:`",
        ),
        (
            route("      cert: /c.pem\n      key: /k.pem\n      acme: {contact: a@example.com}\n"),
            "test.yaml:8:7: routes[0].tls.acme: `acme:` and `cert:`/`key:` exclude each other",
        ),
        (
            route("      acme: {contact: a@example.com}\n      alpn: [h2, '']\n"),
            "test.yaml:7:18: routes[0].tls.alpn[1]: ALPN protocol `` must be 1 to 255 bytes long",
        ),
        (
            route("      acme: {contact: a@example.com}\n      handshake_timeout: 10ms\n"),
            "test.yaml:7:26: routes[0].tls.handshake_timeout: 10ms is shorter than the minimum of 100ms",
        ),
        // Found while parsing: serde_yaml_ng's message.
        (
            route("      acme: {directory: https://acme.example/dir}\n"),
            "test.yaml:6:13: routes[0].tls.acme: missing field `contact`",
        ),
        (
            route("      cert: /c.pem\n      key: /k.pem\n      certs: /x\n"),
            "test.yaml:8:7: routes[0].tls: unknown field `certs`",
        ),
    ];
    for (lines, expected) in cases {
        let err = parse_err(&with(&lines));
        assert!(err.starts_with(expected), "{lines}\n{err}\n{expected}");
    }
    let long = "x".repeat(256);
    let err = parse_err(&with(&route(&format!(
        "      cert: /c\n      key: /k\n      alpn: [{long}]\n"
    ))));
    assert!(
        err.starts_with("test.yaml:8:14: routes[0].tls.alpn[0]: ALPN protocol `xxx"),
        "{err}"
    );
}

#[test]
fn a_key_given_twice_is_refused_where_it_repeats() {
    let err = parse_err(&with(&format!(
        "mtproto:\n  users:\n    alice: {ALICE}\n    alice: {BOB}\n"
    )));
    assert_eq!(
        err,
        "test.yaml:5:5: mtproto.users.alice: given twice (first at line 4, column 5); YAML keeps only one of them"
    );
    let err = parse_err("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n");
    assert!(
        err.starts_with("test.yaml:2:1: listen: given twice"),
        "{err}"
    );
}

#[test]
fn an_indentation_slip_is_reported_at_the_slipped_line() {
    // `to:` two columns short: the route's mapping ends at line 3, and the file is no longer
    // YAML at line 4. Reading the model lazily reported "routes[0]: missing field `to`" at
    // line 3 instead.
    let text = "listen: 127.0.0.1:1\nroutes:\n  - sni: a.example.com\n  to: 127.0.0.1:2\n";
    let err = parse(text, "test.yaml").expect_err("accepted");
    assert_eq!(
        err.position(),
        Some(Position { line: 4, column: 3 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "test.yaml:4:3: did not find expected '-' indicator, while parsing a block collection \
         at line 3 column 3"
    );
}

#[test]
fn errors_are_typed() {
    let err = parse(&with("mtproto: {users: {}}\n"), "test.yaml").expect_err("accepted");
    assert_eq!(err.problem(), Some(&Problem::NoUsers));
    let at = Position {
        line: 2,
        column: 18,
    };
    assert_eq!(err.position(), Some(at));
    assert!(matches!(parse("  \n", "e"), Err(ConfigError::Empty { .. })));
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
    // Off by default, and `false` is the same as absent (the users are then reached over a
    // route, or here as plain obfuscated2 clients).
    let users =
        "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef }, allow_plain: true }\n";
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
        "test.yaml:2:21: default.mtproto: `mtproto: true` needs an `mtproto:` section with users"
    );
    let users = "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }\n";
    let err = parse_err(&format!(
        "listen: 127.0.0.1:443\n{users}non_tls: {{ mtproto: true, to: 127.0.0.1:8080 }}\n"
    ));
    assert!(
        err.starts_with("test.yaml:3:21: non_tls.mtproto: `mtproto: true` does not apply here"),
        "{err}"
    );
    assert!(err.contains("mtproto.allow_plain"), "{err}");
}

#[test]
fn mimic_modes_parse_and_default_by_where_the_backend_is() {
    let users = "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }\n";
    let mode = |route: &str| {
        let config = parse_ok(&format!(
            "listen: 127.0.0.1:443\n{users}routes:\n  - {route}\n"
        ));
        match &config
            .routes
            .for_server_name(Some("p.example.com"))
            .unwrap()
            .action
        {
            Action::Mtproto(target) => target.mimic,
            other => panic!("{other:?}"),
        }
    };
    let route =
        |extra: &str, to: &str| format!("{{ sni: p.example.com, mtproto: true, {extra}to: {to} }}");
    assert_eq!(mode(&route("", "127.0.0.1:8443")), MimicMode::Live);
    assert_eq!(mode(&route("", "10.1.2.3:443")), MimicMode::Live);
    assert_eq!(mode(&route("", "localhost:8443")), MimicMode::Live);
    assert_eq!(mode(&route("", "203.0.113.9:443")), MimicMode::Learned);
    assert_eq!(mode(&route("", "site.example.net:443")), MimicMode::Learned);
    assert_eq!(
        mode(&route("mimic: off, ", "127.0.0.1:8443")),
        MimicMode::Off
    );
    assert_eq!(
        mode(&route("mimic: LEARNED, ", "127.0.0.1:8443")),
        MimicMode::Learned
    );
    assert_eq!(
        mode(&route("mimic: live, ", "203.0.113.9:443")),
        MimicMode::Live
    );
}

#[test]
fn mimic_needs_mtproto_and_a_known_mode() {
    let users = "mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }\n";
    let err = parse_err(&format!(
        "listen: 127.0.0.1:443\n{users}routes:\n  - sni: a.example.com\n    mimic: live\n    to: 127.0.0.1:1\n"
    ));
    assert_eq!(
        err,
        "test.yaml:5:5: routes[0].mimic: only `mtproto: true` routes have a mimic mode"
    );
    let err = parse_err(&format!(
        "listen: 127.0.0.1:443\n{users}routes:\n  - sni: a.example.com\n    mtproto: true\n    mimic: sometimes\n    to: 127.0.0.1:1\n"
    ));
    assert!(
        err.contains("invalid mimic `sometimes`: expected live, learned or off"),
        "{err}"
    );
}

#[test]
fn addresses_that_cannot_all_be_bound_are_refused_at_the_second() {
    let cases = [
        (
            "listen:\n  - 127.0.0.1:443\n  - \"[::]:443\"\n  - 127.0.0.1:443\ndefault: { to: 127.0.0.1:1 }\n",
            "test.yaml:4:5: listen[2]: 127.0.0.1:443 is also listen[0]; `run` could bind it only once",
        ),
        (
            "listen: [0.0.0.0:443, 10.0.0.1:443]\ndefault: { to: 127.0.0.1:1 }\n",
            "test.yaml:1:23: listen[1]: 10.0.0.1:443 overlaps listen[0] (0.0.0.0:443): a wildcard \
             address takes port 443 on every address of its family, so `run` could bind only one \
             of them",
        ),
        (
            "listen: 127.0.0.1:443\nmetrics: { listen: 127.0.0.1:443 }\ndefault: { to: 127.0.0.1:1 }\n",
            "test.yaml:2:20: metrics.listen: 127.0.0.1:443 is also listen[0]; `run` could bind it \
             only once",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_err(text), expected, "{text}");
    }
    parse_ok("listen: [0.0.0.0:443, \"[::]:443\"]\nmetrics: { listen: 127.0.0.1:9100 }\ndefault: { to: 127.0.0.1:1 }\n");
}

#[test]
fn users_no_connection_can_reach_are_refused() {
    let users = format!("mtproto:\n  users:\n    alice: {ALICE}\n");
    let forward = "routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n";
    let err = parse_err(&with(&format!("{users}{forward}")));
    assert!(
        err.starts_with("test.yaml:3:3: mtproto.users: no connection can reach these users"),
        "{err}"
    );
    // A route, `default:` or plain obfuscated2 reaches them.
    parse_ok(&with(&format!(
        "{users}routes:\n  - sni: a.example.com\n    mtproto: true\n    to: 127.0.0.1:2\n"
    )));
    parse_ok(&with(&format!(
        "{users}default: {{ mtproto: true, to: 127.0.0.1:2 }}\n"
    )));
    parse_ok(&with(&format!("{users}  allow_plain: true\n{forward}")));
}

#[test]
fn an_mtproto_route_needs_an_exact_name() {
    let users = format!("mtproto: {{ users: {{ alice: {ALICE} }} }}\n");
    let err = parse_err(&with(&format!(
        "{users}routes:\n  - sni: ['*.example.com', '*.example.org']\n    mtproto: true\n    to: 127.0.0.1:2\n"
    )));
    assert_eq!(
        err,
        "test.yaml:4:10: routes[0].sni: an `mtproto: true` route needs one exact server name: \
         each client's ee-secret carries one concrete domain, and `frontgate link` makes links \
         only for exact names; write the one clients will use beside the wildcard, e.g. \
         `sni: [www.example.com, \"*.example.com\"]`"
    );
    parse_ok(&with(&format!(
        "{users}routes:\n  - sni: ['*.example.com', www.example.com]\n    mtproto: true\n    to: 127.0.0.1:2\n"
    )));
}

#[test]
fn a_key_pushed_out_of_its_mapping_is_reported_where_it_is() {
    // `to:` at column 1 is still YAML: a top-level key, after the route that misses it.
    let text = "listen: 127.0.0.1:1\nroutes:\n  - sni: a.example.com\n    proxy_protocol: v1\nto: 127.0.0.1:2\n";
    assert_eq!(
        parse_err(text),
        "test.yaml:5:1: routes[0]: missing field `to`: this `to:` is indented less than the \
         keys of routes[0] (column 5), so YAML reads it as a key of the top level; indent it to \
         column 5"
    );
    let text = "listen: 127.0.0.1:1\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    tls:\n      acme:\n        directory: https://acme.example/dir\n      contact: a@example.com\n";
    assert_eq!(
        parse_err(text),
        "test.yaml:8:7: routes[0].tls.acme: missing field `contact`: this `contact:` is indented \
         less than the keys of routes[0].tls.acme (column 9), so YAML reads it as a key of \
         `routes[0].tls`; indent it to column 9"
    );
    // A field that is simply missing stays at the mapping, even with the same key later on.
    let text =
        "listen: 127.0.0.1:1\nroutes:\n  - sni: a.example.com\ndefault:\n  to: 127.0.0.1:2\n";
    assert_eq!(
        parse_err(text),
        "test.yaml:3:5: routes[0]: missing field `to`"
    );
}

#[test]
fn public_secrets_and_open_metrics_are_warned_about_at_their_node() {
    let config = parse_ok(&format!(
        "listen: 127.0.0.1:1\nmetrics: {{ listen: 0.0.0.0:9100 }}\nmtproto:\n  allow_plain: true\n  users:\n    carol: 00112233445566778899aabbccddeeff\n    alice: {ALICE}\n"
    ));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "test.yaml:7:12: mtproto.users.alice: this secret is the public example one: anyone \
             who read the example can use this proxy; replace it (`frontgate secret` makes one)",
            "test.yaml:2:20: metrics.listen: 0.0.0.0:9100 is reachable from other hosts, and the \
             metrics endpoint has no authentication: anyone who connects reads /metrics and \
             /stats (routes, MTProto user names, traffic); listen on 127.0.0.1 or firewall the \
             port",
        ]
    );
    for (addr, warned) in [
        ("127.0.0.1:9100", false),
        ("10.1.2.3:9100", false),
        ("\"[::1]:9100\"", false),
        ("\"[fd00::1]:9100\"", false),
        ("203.0.113.5:9100", true),
        ("\"[::]:9100\"", true),
        ("\"[2001:db8::1]:9100\"", true),
    ] {
        let config = parse_ok(&format!(
            "listen: 127.0.0.1:1\nmetrics: {{ listen: {addr} }}\ndefault: {{ to: 127.0.0.1:2 }}\n"
        ));
        assert_eq!(!config.warnings.is_empty(), warned, "{addr}");
    }
}

#[test]
fn later_faults_are_placed_at_the_node_they_are_about() {
    let config = parse_ok(&with(
        "routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    tls:\n      cert: /c.pem\n      key: /k.pem\n",
    ));
    assert_eq!(
        config
            .places
            .locate("routes[0].tls.key", "cannot read it")
            .to_string(),
        "test.yaml:7:12: routes[0].tls.key: cannot read it"
    );
    // A key left out (a default applies) is placed at its enclosing node.
    let located = config.places.locate("routes[0].tls.acme.cache", "x");
    assert_eq!(located.at, Some(Position { line: 6, column: 7 }));
}

#[test]
fn a_pool_compiles_with_its_defaults_and_the_short_forms_keep_first_in_order() {
    let config = parse_ok(
        r#"
listen: 127.0.0.1:443
routes:
  - sni: a.example.com
    to:
      balance: least_conn
      servers:
        - {addr: 127.0.0.1:8443, weight: 2}
        - {addr: 127.0.0.1:8444, backup: true}
      check: {interval: 3s, timeout: 1s, fall: 2, rise: 2}
  - sni: m.example.com
    mtproto: true
    to: {servers: [{addr: 127.0.0.1:8445}], check: {}}
default: { to: [127.0.0.1:1, 127.0.0.1:2] }
mtproto:
  users: { alice: 0123456789abcdef0123456789abcdef }
"#,
    );
    use crate::config::pool::{Balance, HealthCheck};
    let route = config
        .routes
        .for_server_name(Some("a.example.com"))
        .unwrap();
    let Action::Forward(forward) = &route.action else {
        panic!("a forward route")
    };
    let pool = &forward.pool;
    assert_eq!(pool.balance, Balance::LeastConn);
    assert_eq!(
        pool.servers
            .iter()
            .map(|s| (s.weight, s.backup))
            .collect::<Vec<_>>(),
        [(2, false), (1, true)]
    );
    assert_eq!(
        pool.check,
        Some(HealthCheck {
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 2,
            tls: false,
            proxy_protocol: ProxyProtocol::None,
        })
    );
    assert_eq!(forward.upstreams.len(), 2, "every server, backups included");
    let route = config
        .routes
        .for_server_name(Some("m.example.com"))
        .unwrap();
    let Action::Mtproto(mtproto) = &route.action else {
        panic!("an mtproto route")
    };
    let check = mtproto.forward.pool.check.unwrap();
    assert!(
        check.tls,
        "an mtproto route's site is checked with a TLS handshake"
    );
    assert_eq!((check.fall, check.rise), (3, 2), "HAProxy's defaults");
    assert_eq!(
        mtproto.forward.pool.check_name.as_deref(),
        Some("m.example.com")
    );
    let default = config.routes.for_server_name(None).unwrap();
    let Action::Forward(forward) = &default.action else {
        panic!("a forward route")
    };
    assert_eq!(forward.pool.balance, Balance::First);
    assert_eq!(forward.pool.check, None);
    assert_eq!(forward.pool.servers.len(), 2);
}

#[test]
fn bad_pools_are_refused_at_their_line_and_column() {
    let route = |to: &str| {
        format!("listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    to: {to}\n")
    };
    let cases = [
        (
            "{balance: fastest, servers: [{addr: 127.0.0.1:1}]}",
            "test.yaml:4:19: routes[0].to.balance: invalid balance `fastest`: expected first, round_robin, least_conn or client_hash",
        ),
        (
            "{servers: []}",
            "test.yaml:4:19: routes[0].to.servers: 0 is less than the minimum of 1",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1, weight: 0}]}",
            "test.yaml:4:48: routes[0].to.servers[0].weight: 0 is less than the minimum of 1",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1, backup: true}]}",
            "test.yaml:4:19: routes[0].to.servers: every server of the pool is a backup",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1}, {addr: 127.0.0.1:1}]}",
            "test.yaml:4:48: routes[0].to.servers[1].addr: server 127.0.0.1:1 is already listed at routes[0].to.servers[0]",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1}], check: {interval: 10ms}}",
            "test.yaml:4:60: routes[0].to.check.interval: 10ms is shorter than the minimum of 100ms",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1}], check: {fall: 0}}",
            "test.yaml:4:56: routes[0].to.check.fall: 0 is less than the minimum of 1",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1}], check: {every: 1s}}",
            "test.yaml:4:50: routes[0].to.check: unknown field `every`",
        ),
        (
            "{servers: [{addr: 127.0.0.1:1, wieght: 2}]}",
            "test.yaml:4:40: routes[0].to.servers[0]: unknown field `wieght`",
        ),
        (
            "{servers: [{addr: '127.0.0.1:443'}]}",
            "test.yaml:4:27: routes[0].to.servers[0].addr: 127.0.0.1:443 is frontgate's own listen address",
        ),
        (
            "{servers: [{addr: 127.0.0.1}]}",
            "test.yaml:4:27: routes[0].to.servers[0].addr: invalid address `127.0.0.1`",
        ),
    ];
    for (to, expected) in cases {
        let err = parse_err(&route(to));
        assert!(
            err.starts_with(expected),
            "{to}:\n  got      {err}\n  expected {expected}"
        );
    }
    let terminate = "listen: 127.0.0.1:443\nroutes:\n  - sni: a.example.com\n    tls: {cert: c.pem, key: k.pem}\n    to: {servers: [{addr: 127.0.0.1:1}], check: {tls: true}}\n";
    let err = parse_err(terminate);
    assert!(
        err.starts_with("test.yaml:5:55: routes[0].to.check.tls: the backend of a `tls:` route"),
        "{err}"
    );
}

#[test]
fn the_shared_redis_is_checked_at_its_line_and_column() {
    let config = parse_ok(&with(
        "state: {redis: \"redis://:pw@127.0.0.1:6379/0\", redis_timeout: 20ms}\ndefault: { to: 127.0.0.1:2 }\n",
    ));
    let redis = config.redis.expect("state.redis");
    assert_eq!(redis.shown(), "redis://:***@127.0.0.1:6379/0");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    let default = parse_ok(&with(
        "state: {redis: redis://127.0.0.1/0}\ndefault: { to: 127.0.0.1:2 }\n",
    ));
    assert_eq!(
        default.redis.map(|r| r.timeout),
        Some(crate::config::redis::DEFAULT_REDIS_TIMEOUT)
    );
    let cases = [
        (
            "state:\n  redis: \"http://:pw@127.0.0.1:6379\"\n",
            "test.yaml:3:10: state.redis: `http://:***@127.0.0.1:6379` is not a Redis URL this frontgate can use (the scheme must be redis:// or redis+unix://)",
        ),
        (
            "state: {redis: \"redis://127.0.0.1/0\", redis_timeout: 10s}\n",
            "test.yaml:2:54: state.redis_timeout: 10s is longer than the maximum of 5s",
        ),
        (
            "state:\n  dir: /tmp\n  redis_timeout: 10ms\n",
            "test.yaml:4:3: state.redis_timeout: `redis_timeout` bounds the wait for `state.redis`, which is not set",
        ),
    ];
    for (lines, want) in cases {
        let got = parse_err(&with(&format!("{lines}default: {{ to: 127.0.0.1:2 }}\n")));
        assert!(got.starts_with(want), "{got}\nwanted {want}");
        assert!(!got.contains("pw@"), "{got}");
    }
}
