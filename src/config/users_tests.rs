//! The user entries of `mtproto.users` and `mtproto.users_file`: both forms, every policy
//! key, and where each error points.

use super::users::{QuotaPeriod, UserPolicy};
use super::*;

const ALICE: &str = "0123456789abcdef0123456789abcdef";
const BOB: &str = "fedcba9876543210fedcba9876543210";

/// A route file with one `mtproto: true` route for b.example.com and `users` as the body of
/// `mtproto.users` (indented by four).
fn file(users: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:1\nmtproto:\n{extra}  users:\n{users}routes:\n  - sni: b.example.com\n    mtproto: true\n    to: 127.0.0.1:2\n"
    )
}

fn err(text: &str) -> String {
    parse(text, "test.yaml").expect_err("accepted").to_string()
}

#[test]
fn the_short_and_the_full_form_both_hold_a_user() {
    let config = parse(
        &file(
            &format!(
                "    alice: {ALICE}\n    bob:\n      secret: {BOB}\n      enabled: false\n      expires: 2027-01-01\n      quota: {{bytes: 50GiB, period: week, resets_on: 3}}\n      max_connections: 16\n      max_ips: 3\n      rate: 2MiB\n      routes: [B.Example.com.]\n      note: friend from work\n"
            ),
            "",
        ),
        "test.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let users = config.mtproto.unwrap().users;
    assert_eq!(users[0].name, "alice");
    assert_eq!(users[0].policy, UserPolicy::default());
    let bob = &users[1].policy;
    assert!(!bob.enabled);
    assert_eq!(bob.expires, Some(1_798_761_600));
    let quota = bob.quota.unwrap();
    assert_eq!(
        (quota.bytes, quota.period, quota.resets_on),
        (50 << 30, QuotaPeriod::Week, 3)
    );
    assert_eq!(bob.max_connections, Some(16));
    assert_eq!(bob.max_ips, Some(3));
    assert_eq!(bob.rate, Some(2 << 20));
    assert_eq!(
        bob.routes.as_deref(),
        Some(&["b.example.com".to_string()][..])
    );
    assert_eq!(bob.note.as_deref(), Some("friend from work"));
}

#[test]
fn every_user_error_names_its_node() {
    let cases = [
        (
            format!("    bob:\n      secret: {BOB}\n      quota: {{bytes: 1GiB, resets_on: 31}}\n"),
            "test.yaml:6:39: mtproto.users.bob.quota.resets_on: resets_on must be 1 to 28 for a month quota",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      quota: {{bytes: 0}}\n"),
            "test.yaml:6:22: mtproto.users.bob.quota.bytes: 0 is less than the minimum of 1",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      routes: [a.example.com]\n"),
            "test.yaml:6:16: mtproto.users.bob.routes[0]: no `mtproto: true` route serves `a.example.com`",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      routes: ['*.example.com']\n"),
            "test.yaml:6:16: mtproto.users.bob.routes[0]: `*.example.com` is not a server name",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      max_connections: 0\n"),
            "test.yaml:6:24: mtproto.users.bob.max_connections: 0 is less than the minimum of 1",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      rate: 10\n"),
            "test.yaml:6:13: mtproto.users.bob.rate: 10 is less than the minimum of 1024",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      expires: soon\n"),
            "test.yaml:6:16: mtproto.users.bob.expires: invalid expiry `soon`",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      colour: red\n"),
            "test.yaml:6:7: mtproto.users.bob: unknown field `colour`",
        ),
        (
            "    bob:\n      enabled: true\n".to_string(),
            "test.yaml:5:7: mtproto.users.bob: missing field `secret`",
        ),
        (
            format!("    bob:\n      secret: {BOB}\n      ad_tag: zz\n"),
            "test.yaml:6:15: mtproto.users.bob.ad_tag: an ad_tag is 32 hex digits",
        ),
    ];
    for (users, expected) in cases {
        let got = err(&file(&users, ""));
        assert!(got.starts_with(expected), "{users}\n{got}\n{expected}");
    }
}

#[test]
fn users_file_users_join_the_inline_ones() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(&users, format!("users:\n  bob: {BOB}\n")).unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        file(
            &format!("    alice: {ALICE}\n"),
            "  users_file: users.yaml\n",
        ),
    )
    .unwrap();
    let config = load(&routes).unwrap_or_else(|e| panic!("{e}"));
    let settings = config.mtproto.unwrap();
    let names: Vec<&str> = settings.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(settings.users_file.as_deref(), Some(users.as_path()));

    // The same name in both files.
    std::fs::write(&users, format!("users:\n  alice: {BOB}\n")).unwrap();
    let got = load(&routes).expect_err("accepted").to_string();
    let want = format!(
        "{}:5:5: mtproto.users.alice: user `alice` is also in {}:2:3",
        routes.display(),
        users.display()
    );
    assert!(got.starts_with(&want), "{got}\n{want}");

    // An error inside the users file is placed there.
    std::fs::write(&users, "users:\n  carol:\n    secret: 0123\n").unwrap();
    let got = load(&routes).expect_err("accepted").to_string();
    let want = format!(
        "{}:3:13: users.carol.secret: secret must be 32 hex",
        users.display()
    );
    assert!(got.starts_with(&want), "{got}\n{want}");

    // A user route the route file does not serve, in the users file.
    std::fs::write(
        &users,
        format!("users:\n  carol:\n    secret: {BOB}\n    routes: [c.example.com]\n"),
    )
    .unwrap();
    let got = load(&routes).expect_err("accepted").to_string();
    let want = format!(
        "{}:4:14: users.carol.routes[0]: no `mtproto: true` route",
        users.display()
    );
    assert!(got.starts_with(&want), "{got}\n{want}");

    // An empty users file and inline users: fine. No users anywhere: refused.
    std::fs::write(&users, "").unwrap();
    assert!(load(&routes).is_ok());
    std::fs::write(
        &routes,
        file("    {}\n", "  users_file: users.yaml\n").replace("  users:\n    {}\n", ""),
    )
    .unwrap();
    let got = load(&routes).expect_err("accepted").to_string();
    assert!(got.contains("add at least one user"), "{got}");

    // A missing users file is a read error naming it.
    std::fs::remove_file(&users).unwrap();
    let got = load(&routes).expect_err("accepted").to_string();
    assert!(got.contains("users.yaml"), "{got}");
}

#[test]
fn ad_tags_and_the_middle_proxy_block_parse_with_their_defaults() {
    let tag = "3c09c680b76ee91a4c25ad51f742267d";
    let config = parse(
        &file(
            &format!("    alice: {ALICE}\n    bob:\n      secret: {BOB}\n      ad_tag: {tag}\n"),
            "",
        ),
        "test.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = config.mtproto.unwrap();
    assert_eq!(settings.users[0].policy.ad_tag, None);
    assert_eq!(
        settings.users[1].policy.ad_tag.map(|t| hex::encode(t.0)),
        Some(tag.to_string())
    );
    let middle = &settings.middle;
    assert_eq!(middle.ad_tag, None);
    assert_eq!(middle.config_url.0, super::middle::DEFAULT_CONFIG_URL);
    assert_eq!(middle.refresh, std::time::Duration::from_secs(3600));
    assert!(middle.fallback_direct);

    let extra = format!(
        "  ad_tag: {tag}\n  public_ip: 203.0.113.7\n  middle_proxy:\n    secret_url: http://127.0.0.1:9/s\n    refresh: 10m\n    fallback_direct: false\n"
    );
    let text = format!(
        "state: {{ dir: /var/lib/fg }}\n{}",
        file(&format!("    alice: {ALICE}\n"), &extra)
    );
    let config = parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let middle = config.mtproto.unwrap().middle;
    assert_eq!(
        middle.ad_tag.map(|t| hex::encode(t.0)),
        Some(tag.to_string())
    );
    assert_eq!(middle.public_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(middle.secret_url.0, "http://127.0.0.1:9/s");
    assert_eq!(middle.config_v6_url.0, super::middle::DEFAULT_CONFIG_V6_URL);
    assert_eq!(middle.refresh, std::time::Duration::from_secs(600));
    assert!(!middle.fallback_direct);
    assert_eq!(
        middle.cache_dir,
        Some(std::path::PathBuf::from("/var/lib/fg"))
    );
}
