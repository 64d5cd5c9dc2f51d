//! `frontgate check` refuses what `run` would fail on, each time at the `file:line:column` of
//! the offending node, and warns (exit 0) about what runs but should not; `run` prints a
//! fatal error once, with a hint that is true. Every case runs the real binary on a file in
//! a temporary directory.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use frontgate_testkit::test_ca::{write_leaf, TestCa};

const ALICE: &str = "00112233445566778899aabbccddeeff";

/// What one `frontgate` run printed and how it exited.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Outcome {
    fn from(out: Output) -> Self {
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn frontgate(args: &[&str], config: &Path) -> Outcome {
    Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("FRONTGATE_LOG")
        .output()
        .unwrap()
        .into()
}

/// `text` as `routes.yaml` in `dir`.
fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("routes.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `frontgate check` on `text`, which must fail: the error line after `frontgate: `.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    let out = frontgate(&["check"], &path);
    assert_eq!(out.code, Some(1), "accepted:\n{text}\n{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let origin = path.display().to_string();
    assert_eq!(
        lines.last().copied(),
        Some(format!("frontgate: configuration file {origin} test failed").as_str())
    );
    assert_eq!(lines.len(), 2, "one error line: {}", out.stderr);
    lines[0]
        .strip_prefix(&format!("frontgate: {origin}:"))
        .unwrap_or_else(|| panic!("not placed in the file: {}", lines[0]))
        .to_string()
}

#[test]
fn a_listen_address_listed_twice() {
    assert_eq!(
        refused("listen:\n  - 127.0.0.1:8443\n  - 127.0.0.1:8443\ndefault: { to: 127.0.0.1:9 }\n"),
        "3:5: listen[1]: 127.0.0.1:8443 is also listen[0]; `run` could bind it only once"
    );
}

#[test]
fn metrics_on_a_listen_port() {
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nmetrics:\n  listen: 127.0.0.1:8443\ndefault: { to: 127.0.0.1:9 }\n"),
        "3:11: metrics.listen: 127.0.0.1:8443 is also listen[0]; `run` could bind it only once"
    );
    assert_eq!(
        refused("listen: [\"[::]:8443\", 0.0.0.0:8443]\nmetrics: { listen: 127.0.0.1:8443 }\ndefault: { to: 127.0.0.1:9 }\n"),
        "2:20: metrics.listen: 127.0.0.1:8443 overlaps listen[1] (0.0.0.0:8443): a wildcard \
         address takes port 8443 on every address of its family, so `run` could bind only one \
         of them"
    );
}

#[test]
fn an_ipv4_address_out_of_range_is_not_a_host_name() {
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    to: 300.1.1.1:80\n"),
        "4:9: routes[0].to: invalid address `300.1.1.1:80`: `300.1.1.1` is not an IPv4 \
         address: write four numbers from 0 to 255, e.g. 192.0.2.10"
    );
}

#[test]
fn mtproto_users_no_route_reaches() {
    assert_eq!(
        refused(&format!(
            "listen: 127.0.0.1:8443\nmtproto:\n  users:\n    alice: {ALICE}\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:9\n"
        )),
        "3:3: mtproto.users: no connection can reach these users: no route (nor `default:`) has \
         `mtproto: true` and `allow_plain` is off; add `mtproto: true` to the route whose name \
         their links carry (the fronted domain)"
    );
}

#[test]
fn mtproto_on_a_wildcard_route_only() {
    assert_eq!(
        refused(&format!(
            "listen: 127.0.0.1:8443\nmtproto: {{ users: {{ alice: {ALICE} }} }}\nroutes:\n  - sni: \"*.example.com\"\n    mtproto: true\n    to: 127.0.0.1:9\n"
        )),
        "4:10: routes[0].sni: an `mtproto: true` route needs one exact server name: each \
         client's ee-secret carries one concrete domain, and `frontgate link` makes links only \
         for exact names; write the one clients will use beside the wildcard, e.g. \
         `sni: [www.example.com, \"*.example.com\"]`"
    );
}

#[test]
fn nginx_dot_names_get_the_two_names_to_write() {
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nroutes:\n  - sni: [a.example.com, .cdn.example.com]\n    to: 127.0.0.1:9\n"),
        "3:26: routes[0].sni[1]: invalid server name `.cdn.example.com`: nginx's `.name` form \
         is two names here: write [cdn.example.com, \"*.cdn.example.com\"]"
    );
}

#[test]
fn a_duplicate_server_name_is_placed_at_the_duplicate() {
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:9\n  - sni:\n      - b.example.com\n      - A.example.com\n    to: 127.0.0.1:10\n"),
        "7:9: routes[1].sni[1]: server name `a.example.com` is already used by routes[0]"
    );
}

#[test]
fn a_fronting_loop_is_placed_at_the_backend() {
    assert_eq!(
        refused("listen: 0.0.0.0:8443\nroutes:\n  - sni: a.example.com\n    to: [127.0.0.1:9, 127.0.0.1:8443]\n"),
        "4:23: routes[0].to[1]: 127.0.0.1:8443 is frontgate's own listen address 0.0.0.0:8443: \
         connections would loop back into the gateway (fronting loop)"
    );
}

/// A `tls:` route with `tls` as its block.
fn tls_route(tls: &str) -> String {
    format!("listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:9\n    tls:\n{tls}")
}

#[test]
fn tls_faults_on_disk_are_placed_at_the_key_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    assert_eq!(
        refused(&tls_route(&format!(
            "      cert: {}\n      key: {}\n",
            missing.display(),
            missing.display()
        ))),
        format!(
            "6:13: routes[0].tls.cert: cannot read certificate {}: No such file or directory \
             (os error 2)",
            missing.display()
        )
    );

    // A key from another certificate: the key is at fault.
    let ca = TestCa::new();
    let one = dir.path().join("one");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let (cert, _) = write_leaf(&one, &ca.leaf("a.example.com"));
    let (_, key) = write_leaf(&other, &ca.leaf("a.example.com"));
    let err = refused(&tls_route(&format!(
        "      cert: {}\n      key: {}\n",
        cert.display(),
        key.display()
    )));
    assert!(
        err.starts_with(&format!(
            "7:12: routes[0].tls.key: private key {} does not match certificate {}",
            key.display(),
            cert.display()
        )),
        "{err}"
    );

    // An ACME cache below a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let cache = file.join("acme");
    let err = refused(&tls_route(&format!(
        "      acme:\n        contact: admin@example.com\n        cache: {}\n",
        cache.display()
    )));
    assert!(
        err.starts_with(&format!(
            "8:16: routes[0].tls.acme.cache: cannot use ACME cache directory {}",
            cache.display()
        )),
        "{err}"
    );
}

#[test]
fn an_indentation_slip_is_reported_at_the_slipped_line() {
    // Two columns short: no longer YAML at the slipped line.
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n  to: 127.0.0.1:9\n"),
        "4:3: did not find expected '-' indicator, while parsing a block collection at line 3 \
         column 3"
    );
    // Back at column 1: still YAML, a top-level key; the route misses it.
    assert_eq!(
        refused("listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    proxy_protocol: v2\nto: 127.0.0.1:9\n"),
        "5:1: routes[0]: missing field `to`: this `to:` is indented less than the keys of \
         routes[0] (column 5), so YAML reads it as a key of the top level; indent it to column 5"
    );
}

/// `frontgate check` on `path`, which must pass: the `warning:` lines on stderr.
fn warnings(path: &Path) -> Vec<String> {
    let out = frontgate(&["check"], path);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("syntax is ok"), "{}", out.stdout);
    out.stderr
        .lines()
        .map(|line| {
            line.strip_prefix("frontgate: warning: ")
                .unwrap_or_else(|| panic!("not a warning: {line}"))
                .to_string()
        })
        .collect()
}

/// `needle`'s line and column (1-based) in `text`.
fn place(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("in the text");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line, column)
}

#[test]
fn the_shipped_example_passes_with_its_public_secrets_warned_about() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.example.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let found = warnings(&example);
    let expected: Vec<String> = [
        ("alice", "0123456789abcdef0123456789abcdef"),
        ("bob", "fedcba9876543210fedcba9876543210"),
    ]
    .iter()
    .map(|(user, secret)| {
        let (line, column) = place(&text, secret);
        format!(
            "{}:{line}:{column}: mtproto.users.{user}: this secret is the public example one: \
             anyone who read the example can use this proxy; replace it (`frontgate secret` \
             makes one)",
            example.display()
        )
    })
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn public_secrets_are_warned_about_in_the_file_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        "users:\n  carol: 00112233445566778899aabbccddeeff\n  dave:\n    secret: fedcba9876543210fedcba9876543210\n    note: from the example\n",
    )
    .unwrap();
    let path = write(
        dir.path(),
        "listen: 127.0.0.1:8443\nmtproto:\n  users_file: users.yaml\n  users:\n    alice:\n      secret: 0123456789abcdef0123456789abcdef\nroutes:\n  - sni: a.example.com\n    mtproto: true\n    to: 127.0.0.1:9\n",
    );
    let concern = "this secret is the public example one: anyone who read the example can use \
                   this proxy; replace it (`frontgate secret` makes one)";
    assert_eq!(
        warnings(&path),
        [
            format!("{}:6:15: mtproto.users.alice: {concern}", path.display()),
            format!("{}:4:13: users.dave: {concern}", users.display()),
        ]
    );
}

#[test]
fn metrics_open_to_other_hosts_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "listen: 127.0.0.1:8443\nmetrics:\n  listen: 0.0.0.0:9100\ndefault: { to: 127.0.0.1:9 }\n",
    );
    assert_eq!(
        warnings(&path),
        [format!(
            "{}:3:11: metrics.listen: 0.0.0.0:9100 is reachable from other hosts, and the \
             metrics endpoint has no authentication: anyone who connects reads /metrics and \
             /stats (routes, MTProto user names, traffic); listen on 127.0.0.1 or firewall the \
             port",
            path.display()
        )]
    );
    let path = write(
        dir.path(),
        "listen: 127.0.0.1:8443\nmetrics:\n  listen: 127.0.0.1:9100\ndefault: { to: 127.0.0.1:9 }\n",
    );
    assert!(warnings(&path).is_empty());
}

/// The lines of `stderr` that say `what`.
fn lines_with<'a>(stderr: &'a str, what: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(what)).collect()
}

#[test]
fn run_says_a_fatal_error_once_and_names_who_holds_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "listen: 127.0.0.1:8443\ndefault: { to: 127.0.0.1:9 }\n",
    );
    // This test process holds the port.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let out = frontgate(&["run", "--listen", &addr.to_string()], &path);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let said = lines_with(&out.stderr, "cannot listen");
    assert_eq!(said.len(), 1, "{}", out.stderr);
    let line = said[0];
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
    assert!(
        line.contains(&format!(
            "cannot listen on {addr}: Address already in use (os error 98) ("
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "(pid {}) already listens there; stop it or choose another address)",
            std::process::id()
        )),
        "{line}"
    );
    assert!(!line.contains("nginx"), "{line}");
}

#[test]
fn run_names_another_frontgate_holding_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "listen: 127.0.0.1:8443\ndefault: { to: 127.0.0.1:9 }\n",
    );
    let mut first = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The port the kernel gave it, from its `listening local=...` line.
    let log = BufReader::new(first.stderr.take().unwrap());
    let addr = log
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let local = line.split_once("listening local=")?.1;
            local.split_whitespace().next()?.parse::<SocketAddr>().ok()
        })
        .expect("the first frontgate listens");
    let out = frontgate(&["run", "--listen", &addr.to_string()], &path);
    first.kill().unwrap();
    first.wait().unwrap();
    let said = lines_with(&out.stderr, "cannot listen");
    assert_eq!(said.len(), 1, "{}", out.stderr);
    assert!(
        said[0].ends_with(&format!(
            "(frontgate (pid {}) already listens there; stop it or choose another address)",
            first.id()
        )),
        "{}",
        said[0]
    );
}

#[test]
fn run_refuses_a_config_error_once_at_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "listen: [127.0.0.1:8443, 127.0.0.1:8443]\ndefault: { to: 127.0.0.1:9 }\n",
    );
    let out = frontgate(&["run"], &path);
    assert_eq!(out.code, Some(1));
    let said = lines_with(&out.stderr, "listen[1]");
    assert_eq!(said.len(), 1, "{}", out.stderr);
    assert!(
        said[0].ends_with(&format!(
            "{}:1:26: listen[1]: 127.0.0.1:8443 is also listen[0]; `run` could bind it only once",
            path.display()
        )),
        "{}",
        said[0]
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}
