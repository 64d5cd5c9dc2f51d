//! `frontgate user`, the real binary, against a real running `frontgate run`: each change of
//! the users file applies by hot reload (a new user is served, a disabled, rotated-away or
//! removed secret is fronted to the site like any visitor) while other users' live sessions
//! keep relaying; concurrent `user add` processes all land; a change the route file would
//! refuse is refused with the file unchanged; `list` shows state, quota, expiry, note and
//! the gateway's live sessions.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::fake_dc;
use common::mtproto_client as client;
use common::sessions;
use common::*;
use tokio::net::TcpStream;

const ALICE: [u8; 16] = [0xa1; 16];
const SNI: &str = "a.test";

fn hex(secret: &[u8; 16]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// A route file with the inline user alice, `users_file: users.yaml`, one `mtproto: true`
/// route (a.test, and b.test) whose site is `site`, and the DC at `dc`.
fn route_file(port: u16, metrics: u16, site: SocketAddr, dc: SocketAddr) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nmetrics: {{ listen: 127.0.0.1:{metrics} }}\nmtproto:\n  datacenters: {{ 2: [{dc}] }}\n  users:\n    alice: {}\n  users_file: users.yaml\nroutes:\n  - sni: [a.test, b.test]\n    mtproto: true\n    mimic: off\n    to: {site}\n",
        hex(&ALICE)
    )
}

/// Runs `frontgate user ARGS --config ROUTE` to completion.
async fn user(route: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(route)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a `user` command that must succeed; returns its stdout.
async fn user_ok(route: &Path, args: &[&str]) -> String {
    let out = user(route, args).await;
    assert!(
        out.status.success(),
        "user {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The secret in the links `user add/rotate --json` printed (every link of one user carries
/// it: `ee` + 32 hex + the domain).
fn secret_of(json: &str) -> [u8; 16] {
    let links: serde_json::Value = serde_json::from_str(json).unwrap();
    let ee = links[0]["secret"].as_str().expect("a link");
    let bytes = ::hex::decode(&ee[2..34]).unwrap();
    for link in links.as_array().unwrap() {
        assert_eq!(&link["secret"].as_str().unwrap()[2..34], &ee[2..34]);
    }
    bytes.try_into().unwrap()
}

/// A fake-TLS session for `secret` on a.test, or `None` when the gateway fronted the hello.
async fn session(
    gateway: SocketAddr,
    secret: &[u8; 16],
) -> Option<(client::Writer, client::Reader)> {
    sessions::session(gateway, secret, SNI, sessions::LOCAL).await
}

/// Waits until `secret` is served (`true`) or fronted (`false`): the reload that makes it
/// so happens on its own after the file changes.
async fn until_served(gateway: SocketAddr, secret: &[u8; 16], served: bool, what: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        if session(gateway, secret).await.is_some() == served {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `frontgate run` (killed on drop), its directory and captured log.
struct Running {
    child: std::process::Child,
    dir: PathBuf,
}

impl Running {
    fn start(dir: &Path) -> Running {
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_frontgate"))
            .args(["run", "--config"])
            .arg(dir.join("routes.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Running {
            child,
            dir: dir.to_owned(),
        }
    }

    /// [`start`](Self::start), then waits until it accepts on 127.0.0.1:`port`.
    async fn listening(dir: &Path, port: u16) -> (Running, SocketAddr) {
        let gw = Running::start(dir);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + SOON;
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the gateway never listened:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (gw, addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a payload through a live session and checks the echo: the session still relays.
async fn still_relays(live: &mut (client::Writer, client::Reader)) {
    client::echo(&mut live.0, &mut live.1, 32 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_by_hot_reload_and_other_sessions_keep_relaying() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let (port, metrics) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let route = dir.path().join("routes.yaml");
    std::fs::write(&route, route_file(port, metrics, site.addr, dc.addr)).unwrap();
    // carol exists before the gateway starts: the CLI creates the users file.
    let carol = secret_of(&user_ok(&route, &["add", "carol", "--json"]).await);
    let (gw, addr) = Running::listening(dir.path(), port).await;
    let mut alice_live = session(addr, &ALICE).await.expect("alice (inline) served");
    let mut carol_live = session(addr, &carol).await.expect("carol (file) served");
    still_relays(&mut alice_live).await;

    // A user added while the gateway runs is served after the reload.
    let bob = secret_of(&user_ok(&route, &["add", "bob", "--json"]).await);
    until_served(addr, &bob, true, "bob served after `user add`").await;
    let (mut w, mut r) = session(addr, &bob).await.expect("bob served");
    client::echo(&mut w, &mut r, 64 * 1024).await;
    drop((w, r));
    assert!(gw.log().contains("configuration reloaded"), "{}", gw.log());
    still_relays(&mut alice_live).await;
    still_relays(&mut carol_live).await;

    // Disabled: bob's live session is closed and his hello is a visitor's; enabled
    // again: served.
    let (_bob_w, mut bob_live) = session(addr, &bob).await.expect("bob served");
    user_ok(&route, &["disable", "bob"]).await;
    until_served(addr, &bob, false, "bob fronted after `user disable`").await;
    let cut = tokio::time::timeout(SOON, bob_live.recv_exact(1)).await;
    assert!(matches!(cut, Ok(Err(_))), "bob's live session still open");
    still_relays(&mut alice_live).await;
    still_relays(&mut carol_live).await;
    user_ok(&route, &["enable", "bob"]).await;
    until_served(addr, &bob, true, "bob served after `user enable`").await;

    // Rotated: the old secret is fronted, the new one served.
    let rotated = secret_of(&user_ok(&route, &["rotate", "bob", "--json"]).await);
    assert_ne!(rotated, bob);
    until_served(
        addr,
        &bob,
        false,
        "bob's old secret fronted after `user rotate`",
    )
    .await;
    assert!(
        session(addr, &rotated).await.is_some(),
        "bob's new secret served"
    );
    still_relays(&mut alice_live).await;
    still_relays(&mut carol_live).await;

    // `list` while the gateway runs: alice and carol each have one live session.
    let list = user_ok(&route, &["list"]).await;
    assert!(
        list.contains(&format!(
            "gateway: live values from http://127.0.0.1:{metrics}/stats"
        )),
        "{list}"
    );
    let row = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{list}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("alice")[1..3], ["inline", "active"], "{list}");
    assert_eq!(row("carol")[1..3], ["file", "active"], "{list}");
    // USER FROM STATE QUOTA USED LEFT EXPIRES LIVE: LIVE is the eighth column.
    assert_eq!(row("alice")[7], "1", "{list}");
    assert_eq!(row("carol")[7], "1", "{list}");
    // USED (the period's bytes) and TRAFFIC come from the gateway too: alice moved some.
    for column in [4, 8] {
        assert!(
            !["-", "0B"].contains(&row("alice")[column].as_str()),
            "{list}"
        );
    }

    // Removed: bob's live session is closed, his (new) secret fronted; the others still
    // relay.
    let (_bob_w, mut bob_live) = session(addr, &rotated).await.expect("bob served");
    user_ok(&route, &["remove", "bob"]).await;
    until_served(addr, &rotated, false, "bob fronted after `user remove`").await;
    let cut = tokio::time::timeout(SOON, bob_live.recv_exact(1)).await;
    assert!(matches!(cut, Ok(Err(_))), "bob's live session still open");
    still_relays(&mut alice_live).await;
    still_relays(&mut carol_live).await;
    assert!(!user_ok(&route, &["list"]).await.contains("bob"));
    // No secret in the log.
    let log = gw.log();
    for secret in [&ALICE, &carol, &bob, &rotated] {
        assert!(!log.contains(&hex(secret)), "a secret in the log:\n{log}");
    }
}

/// A route file for the tests without a gateway; its metrics address refuses connections
/// while the returned port lives.
fn offline_route(dir: &Path) -> (PathBuf, RefusingPort) {
    let route = dir.join("routes.yaml");
    let metrics = RefusingPort::new();
    let text = format!(
        "listen: 127.0.0.1:9\nmetrics: {{ listen: 127.0.0.1:{} }}\nmtproto:\n  users:\n    alice: {}\n  users_file: users.yaml\nroutes:\n  - sni: [a.test, b.test]\n    mtproto: true\n    to: 127.0.0.1:10\n",
        metrics.addr().port(),
        hex(&ALICE)
    );
    std::fs::write(&route, text).unwrap();
    (route, metrics)
}

#[tokio::test]
async fn concurrent_adds_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (route, _metrics) = offline_route(dir.path());
    let names: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    // All started before any is waited for: the processes race for the file.
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_frontgate"))
                .args(["user", "add", name, "--config"])
                .arg(&route)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let file = frontgate::config::users_file::read(&dir.path().join("users.yaml")).unwrap();
    for name in &names {
        assert!(file.has(name), "{name} lost");
    }
    assert_eq!(file.users.len(), names.len());
    // And the whole configuration still loads as `run` would load it.
    let config = frontgate::config::load(&route).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.mtproto.unwrap().users.len(), names.len() + 1);
}

#[tokio::test]
async fn a_change_the_configuration_would_refuse_leaves_the_files_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (route, _metrics) = offline_route(dir.path());
    let users = dir.path().join("users.yaml");
    user_ok(&route, &["add", "bob"]).await;
    let (route_before, users_before) = (
        std::fs::read(&route).unwrap(),
        std::fs::read(&users).unwrap(),
    );
    let unchanged = || {
        assert_eq!(std::fs::read(&route).unwrap(), route_before);
        assert_eq!(std::fs::read(&users).unwrap(), users_before);
    };

    let out = user(&route, &["add", "carol", "--routes", "a.test,nope.test"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("is unchanged"),
        "{err}"
    );
    assert!(
        err.contains("users.carol.routes[1]") && err.contains("nope.test"),
        "{err}"
    );
    unchanged();

    let out = user(&route, &["add", "carol", "--quota", "5 parsecs"]).await;
    assert!(
        text(&out.stderr).contains("invalid size"),
        "{}",
        text(&out.stderr)
    );
    unchanged();

    // A name taken, inline or in the file; a user only the route file defines.
    for args in [["add", "bob"], ["add", "alice"]] {
        let out = user(&route, &args).await;
        assert!(
            text(&out.stderr).contains("already"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = user(&route, &["disable", "alice"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("inline in the route file"),
        "{}",
        text(&out.stderr)
    );
    let out = user(&route, &["remove", "nobody"]).await;
    assert!(
        text(&out.stderr).contains("there is no user `nobody`"),
        "{}",
        text(&out.stderr)
    );
    unchanged();

    // Without mtproto.users_file the CLI says what to add, and writes nothing.
    let plain = dir.path().join("plain.yaml");
    let text_before = std::fs::read_to_string(&route)
        .unwrap()
        .replace("  users_file: users.yaml\n", "");
    std::fs::write(&plain, &text_before).unwrap();
    let out = user(&plain, &["add", "dave"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("`users_file: users.yaml`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), text_before);
    unchanged();
}

#[tokio::test]
async fn list_shows_state_quota_expiry_and_note_without_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (route, _metrics) = offline_route(dir.path());
    let add = [
        "add",
        "bob",
        "--quota",
        "50GiB",
        "--period",
        "week",
        "--resets-on",
        "3",
        "--expires",
        "2027-01-01",
        "--routes",
        "b.test",
        "--note",
        "friend from work",
    ];
    let links = user_ok(&route, &add).await;
    // bob may use b.test only: no link for a.test.
    assert!(
        links.contains("bob (b.test)") && !links.contains("a.test"),
        "{links}"
    );
    user_ok(
        &route,
        &["add", "carol", "--expires", "2020-01-01T12:00:00Z"],
    )
    .await;
    user_ok(&route, &["add", "dave"]).await;
    user_ok(&route, &["disable", "dave"]).await;
    user_ok(&route, &["reset", "bob"]).await;
    let list = user_ok(&route, &["list"]).await;
    let lines: Vec<&str> = list.lines().collect();
    let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(words(0)[..3], ["USER", "FROM", "STATE"], "{list}");
    assert_eq!(
        words(1)[..4],
        ["alice", "inline", "active", "unlimited"],
        "{list}"
    );
    assert_eq!(
        words(2)[..4],
        ["bob", "file", "active", "50GiB/week"],
        "{list}"
    );
    assert!(
        lines[2].contains("2027-01-01") && lines[2].ends_with("friend from work"),
        "{list}"
    );
    assert_eq!(words(3)[..3], ["carol", "file", "expired"], "{list}");
    assert!(lines[3].contains("2020-01-01T12:00:00Z"), "{list}");
    assert_eq!(words(4)[..3], ["dave", "file", "disabled"], "{list}");
    assert!(
        lines[5].starts_with("gateway: not reachable at http://127.0.0.1:"),
        "{list}"
    );

    // The reset is recorded in bob's entry, and the file says it is machine-managed.
    let users = std::fs::read_to_string(dir.path().join("users.yaml")).unwrap();
    assert!(users.starts_with("# MTProto users of frontgate, managed by `frontgate user`"));
    let file = frontgate::config::users_file::read(&dir.path().join("users.yaml")).unwrap();
    let bob = file.users.iter().find(|u| u.name == "bob").unwrap();
    let reset = bob.policy.usage_reset.expect("usage_reset written");
    assert!(
        (chrono::Utc::now().timestamp() - reset).abs() < 600,
        "{reset}"
    );
    assert_eq!(
        bob.policy.routes.as_deref(),
        Some(&["b.test".to_string()][..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_gives_an_over_quota_user_their_quota_back_once() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let (port, metrics) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let route = dir.path().join("routes.yaml");
    std::fs::write(&route, route_file(port, metrics, site.addr, dc.addr)).unwrap();
    let args = [
        "add", "dave", "--quota", "256KiB", "--period", "total", "--json",
    ];
    let dave = secret_of(&user_ok(&route, &args).await);
    let (_gw, addr) = Running::listening(dir.path(), port).await;
    let live = session(addr, &dave).await.expect("dave served");
    sessions::echo_until_closed(live, 16 * 1024, usize::MAX).await;
    assert!(session(addr, &dave).await.is_none(), "over quota: fronted");

    user_ok(&route, &["reset", "dave"]).await;
    until_served(addr, &dave, true, "dave served after `user reset`").await;
    // The reset is acted on once: a reload for another reason does not reset him again.
    let live = session(addr, &dave).await.expect("dave served");
    sessions::echo_until_closed(live, 16 * 1024, usize::MAX).await;
    let erin = secret_of(&user_ok(&route, &["add", "erin", "--json"]).await);
    until_served(addr, &erin, true, "erin served: the reload happened").await;
    assert!(session(addr, &dave).await.is_none(), "over quota again");
}
