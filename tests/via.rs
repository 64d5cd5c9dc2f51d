//! Split mode over real sockets: `mtproto.via` sends every DC connection through SOCKS5
//! servers from Debian (`microsocks`, and `danted` with username auth) started on loopback.
//! The fake DC listens on 127.0.0.7 and each SOCKS server sends from 127.0.0.8, so the DC's
//! peer address tells whether a session went through the upstream or direct.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_dc::{self, FakeDc};
use common::mtproto_client as client;
use common::*;
use frontgate::config::via::ViaUpstream;
use frontgate::mtproto::upstreams;
use tokio::net::TcpListener;

const ALICE: [u8; 16] = [0xa1; 16];
const SNI: &str = "proxy.example.com";
/// Where the fake DC listens.
const DC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// The address the SOCKS servers send from.
const SOCKS_OUT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);

/// A SOCKS5 server process, killed when dropped.
struct SocksServer {
    child: Child,
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl SocksServer {
    /// `socks5://[user:pass@]addr`.
    fn url(&self, auth: Option<(&str, &str)>) -> String {
        match auth {
            Some((user, pass)) => format!("socks5://{user}:{pass}@{}", self.addr),
            None => format!("socks5://{}", self.addr),
        }
    }

    /// Stops the server; its port refuses from now on.
    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `addr` accepts connections (the process has started).
async fn listening(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < until, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `microsocks` on a free loopback port, sending from [`SOCKS_OUT`].
async fn microsocks(auth: Option<(&str, &str)>) -> SocksServer {
    let port = free_port();
    let mut command = Command::new("microsocks");
    command.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-b",
        "127.0.0.8",
    ]);
    if let Some((user, pass)) = auth {
        command.args(["-u", user, "-P", pass]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("microsocks is installed (apt-get install microsocks)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    listening(addr).await;
    SocksServer {
        child,
        addr,
        _dir: None,
    }
}

/// The system user `danted` checks the password of (username auth uses the system's).
const DANTE_USER: &str = "fgsockstest";
const DANTE_PASSWORD: &str = "split-mode-pw";

/// Creates [`DANTE_USER`] with [`DANTE_PASSWORD`] (idempotent). Dante's username method
/// checks passwords against the shadow file, so this and danted itself need root.
fn dante_user() {
    assert!(
        is_root(),
        "the danted test needs root: dante checks username auth against /etc/shadow"
    );
    let exists = Command::new("id")
        .arg(DANTE_USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let made = Command::new("useradd")
            .args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                DANTE_USER,
            ])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {DANTE_USER}");
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{DANTE_USER}:{DANTE_PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd");
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// `danted` on a free loopback port with username auth, sending from [`SOCKS_OUT`].
async fn danted() -> SocksServer {
    dante_user();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("danted.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: {SOCKS_OUT}\n\
             socksmethod: username\nclientmethod: none\nuser.privileged: root\n\
             user.unprivileged: nobody\nclient pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }}\n"
        ),
    )
    .unwrap();
    let child = Command::new("danted")
        .arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path().join("danted.pid"))
        .args(["-N", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("danted is installed (apt-get install dante-server)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    listening(addr).await;
    SocksServer {
        child,
        addr,
        _dir: Some(dir),
    }
}

/// A fake DC on [`DC_IP`].
async fn dc_on_its_own_address() -> FakeDc {
    fake_dc::serve(TcpListener::bind((DC_IP, 0)).await.unwrap(), None)
}

/// A gateway whose DC 2 is `dc` and whose `mtproto:` block ends with `via_lines`.
async fn gateway_via(
    dc: &FakeDc,
    via_lines: &str,
    top: &str,
) -> (frontgate::server::gateway::Gateway, SocketAddr, Backend) {
    let site = Backend::start("site").await;
    let (gateway, addr) = gateway(&format!(
        "{top}timeouts: {{ connect: 5s }}\nmtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: [{}] }}\n{via_lines}routes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
        hex::encode(ALICE),
        dc.addr,
        site.addr
    ))
    .await;
    (gateway, addr, site)
}

/// `  via: [urls]\n`.
fn via(urls: &[String]) -> String {
    format!("  via: [{}]\n", urls.join(", "))
}

/// One fake-TLS session that echoes `bytes` through the gateway; the DC's view of it.
async fn echo_session(addr: SocketAddr, dc: &mut FakeDc, bytes: usize) -> fake_dc::DcSeen {
    let (mut w, mut r, _) =
        client::connect_faketls(addr, &ALICE, SNI, client::INTERMEDIATE, 2, false).await;
    client::echo(&mut w, &mut r, bytes).await;
    dc.seen.recv().await.expect("the DC saw the session")
}

fn health(url: &str) -> std::sync::Arc<upstreams::UpstreamHealth> {
    upstreams::health(&ViaUpstream::parse(url).unwrap())
}

fn count(n: &std::sync::atomic::AtomicU64) -> u64 {
    n.load(std::sync::atomic::Ordering::Relaxed)
}

async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_through_microsocks_echoes_and_the_dc_sees_the_socks_server() {
    bounded(async {
        common::log_capture::start();
        let socks = microsocks(None).await;
        let mut dc = dc_on_its_own_address().await;
        let url = socks.url(None);
        let (_gw, addr, _site) = gateway_via(&dc, &via(std::slice::from_ref(&url)), "").await;
        for _ in 0..2 {
            let seen = echo_session(addr, &mut dc, 1024 * 1024).await;
            assert_eq!(
                seen.peer.ip(),
                IpAddr::V4(SOCKS_OUT),
                "the DC's peer is microsocks"
            );
            assert_eq!(seen.dc, 2);
        }
        // The sessions' lines name the DC they reached, not the upstream they went through.
        let dc_named = format!("backend={} ", dc.addr);
        eventually("the sessions' lines", || {
            common::log_capture::text()
                .lines()
                .filter(|l| l.contains("connection closed") && l.contains(&dc_named))
                .count()
                == 2
        })
        .await;
        let socks_named = format!("backend={} ", socks.addr);
        assert!(!common::log_capture::text().contains(&socks_named));
        let health = health(&url);
        assert_eq!(count(&health.connections), 2);
        assert_eq!(count(&health.failures), 0);
        assert!(health.is_up());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danted_with_username_auth_carries_the_session() {
    bounded(async {
        let socks = danted().await;
        let mut dc = dc_on_its_own_address().await;
        let url = socks.url(Some((DANTE_USER, DANTE_PASSWORD)));
        let (_gw, addr, _site) = gateway_via(&dc, &via(std::slice::from_ref(&url)), "").await;
        let seen = echo_session(addr, &mut dc, 1024 * 1024).await;
        assert_eq!(
            seen.peer.ip(),
            IpAddr::V4(SOCKS_OUT),
            "the DC's peer is danted"
        );
        assert_eq!(count(&health(&url).connections), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_upstream_is_killed_new_sessions_use_the_second() {
    bounded(async {
        let mut first = microsocks(None).await;
        let second = microsocks(None).await;
        let mut dc = dc_on_its_own_address().await;
        let urls = [first.url(None), second.url(None)];
        let (_gw, addr, _site) = gateway_via(&dc, &via(&urls), "").await;
        echo_session(addr, &mut dc, 100_000).await;
        assert_eq!(count(&health(&urls[0]).connections), 1);

        first.kill();
        for _ in 0..3 {
            let seen = echo_session(addr, &mut dc, 100_000).await;
            assert_eq!(seen.peer.ip(), IpAddr::V4(SOCKS_OUT));
        }
        assert_eq!(count(&health(&urls[1]).connections), 3);
        assert_eq!(
            count(&health(&urls[0]).failures),
            1,
            "the dead upstream was tried once, then skipped"
        );
        assert!(!health(&urls[0]).is_up());
    })
    .await;
}

/// An upstream that takes the TCP connection and never answers the SOCKS greeting costs the
/// first session one connect timeout (5 s); the next sessions skip it and start at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_costs_one_timeout_then_is_skipped() {
    bounded(async {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second = microsocks(None).await;
        let mut dc = dc_on_its_own_address().await;
        let urls = [
            format!("socks5://{}", silent.local_addr().unwrap()),
            second.url(None),
        ];
        let (_gw, addr, _site) = gateway_via(&dc, &via(&urls), "").await;

        let started = Instant::now();
        echo_session(addr, &mut dc, 10_000).await;
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "the first session waited on the silent upstream"
        );
        for _ in 0..3 {
            let started = Instant::now();
            let seen = echo_session(addr, &mut dc, 10_000).await;
            assert_eq!(seen.peer.ip(), IpAddr::V4(SOCKS_OUT));
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a later session waited a connect timeout: {:?}",
                started.elapsed()
            );
        }
        assert_eq!(count(&health(&urls[0]).failures), 1);
        assert_eq!(count(&health(&urls[1]).connections), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_upstream_down_the_session_ends_and_nothing_goes_direct() {
    bounded(async {
        common::log_capture::start();
        let (dead_a, dead_b) = (RefusingPort::new(), RefusingPort::new());
        let mut dc = dc_on_its_own_address().await;
        let urls = [
            format!("socks5://{}", dead_a.addr()),
            format!("socks5://{}", dead_b.addr()),
        ];
        let (_gw, addr, _site) = gateway_via(&dc, &via(&urls), "").await;
        for _ in 0..2 {
            let (mut w, mut r, _) =
                client::connect_faketls(addr, &ALICE, SNI, client::INTERMEDIATE, 2, false).await;
            w.send(b"ping").await.ok();
            assert!(r.recv_exact(1).await.is_err(), "the session was closed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(dc.seen.try_recv().is_err(), "nothing reached the DC");
        let log = common::log_capture::text();
        let line = log
            .lines()
            .find(|l| l.contains("mtproto_dc_unreachable") && l.contains(&urls[1]))
            .unwrap_or_else(|| panic!("no outcome line names the upstreams:\n{log}"));
        assert!(line.contains("no SOCKS5 upstream reached the DC"), "{line}");
        assert!(line.contains(&urls[0]), "{line}");
        assert!(
            log.contains(&format!(
                "{}: skipped, down after a recent failure",
                urls[0]
            )),
            "the second session skipped the dead upstreams:\n{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_via_fallback_direct_the_dc_is_dialled_directly() {
    bounded(async {
        common::log_capture::start();
        let dead = RefusingPort::new();
        let mut dc = dc_on_its_own_address().await;
        let url = format!("socks5://{}", dead.addr());
        let lines = format!(
            "{}  via_fallback_direct: true\n",
            via(std::slice::from_ref(&url))
        );
        let (_gw, addr, _site) = gateway_via(&dc, &lines, "").await;
        let seen = echo_session(addr, &mut dc, 100_000).await;
        assert_ne!(seen.peer.ip(), IpAddr::V4(SOCKS_OUT), "went direct");
        let log = common::log_capture::text();
        assert!(
            log.lines()
                .any(|l| l.contains("mtproto.via_fallback_direct") && l.contains(&url)),
            "no line says the DC was dialled directly:\n{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_that_upstream_with_a_line_naming_it_and_is_counted() {
    bounded(async {
        common::log_capture::start();
        let guarded = microsocks(Some(("frontgate", "right-pass"))).await;
        let open = microsocks(None).await;
        let mut dc = dc_on_its_own_address().await;
        let wrong = guarded.url(Some(("frontgate", "wrong-pass")));
        let urls = [wrong.clone(), open.url(None)];
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let top = format!("metrics: {{ listen: {metrics} }}\n");
        let (_gw, addr, _site) = gateway_via(&dc, &via(&urls), &top).await;
        let seen = echo_session(addr, &mut dc, 100_000).await;
        assert_eq!(seen.peer.ip(), IpAddr::V4(SOCKS_OUT));

        let log = common::log_capture::text();
        let named = format!("socks5://frontgate@{}", guarded.addr);
        let line = log
            .lines()
            .find(|l| l.contains("refused the credentials") && l.contains(&named))
            .unwrap_or_else(|| panic!("no line names the upstream that refused:\n{log}"));
        assert!(line.contains("SOCKS5 upstream failed"), "{line}");
        assert!(!log.contains("wrong-pass"), "a password was logged");

        let text = http_get(metrics, "/metrics").await;
        let (bad, good) = (guarded.addr, open.addr);
        for sample in [
            format!("frontgate_mtproto_upstream_up{{upstream=\"{bad}\"}} 0"),
            format!("frontgate_mtproto_upstream_failures_total{{upstream=\"{bad}\"}} 1"),
            format!("frontgate_mtproto_upstream_connections_total{{upstream=\"{bad}\"}} 0"),
            format!("frontgate_mtproto_upstream_up{{upstream=\"{good}\"}} 1"),
            format!("frontgate_mtproto_upstream_connections_total{{upstream=\"{good}\"}} 1"),
            format!("frontgate_mtproto_upstream_failures_total{{upstream=\"{good}\"}} 0"),
        ] {
            assert!(text.contains(&sample), "{sample} missing:\n{text}");
        }
        assert!(text.contains(&format!(
            "frontgate_mtproto_upstream_connect_seconds_total{{upstream=\"{good}\"}}"
        )));
        assert!(!text.contains("wrong-pass"));
    })
    .await;
}

/// `frontgate check [--probe]` on route-file `text` in a temporary directory: exit code,
/// stdout, stderr.
fn check(args: &[&str], text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("FRONTGATE_LOG")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn route_file(via_lines: &str, dc: SocketAddr) -> String {
    format!(
        "listen: 127.0.0.1:8443\nmtproto:\n  users: {{ alice: {} }}\n  datacenters: {{ 2: [{dc}] }}\n{via_lines}routes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: 127.0.0.1:9\n",
        hex::encode(ALICE)
    )
}

#[test]
fn check_refuses_a_bad_upstream_url_at_its_list_item() {
    let dc = SocketAddr::from((DC_IP, 443));
    for (lines, at, message) in [
        (
            "  via:\n    - socks5://127.0.0.1:1080\n    - socks5h://127.0.0.1:1080\n",
            "7:7: mtproto.via[1]",
            "upstream must be a socks5://[user:pass@]host:port URL",
        ),
        (
            "  via: [socks5://127.0.0.1]\n",
            "5:9: mtproto.via[0]",
            "upstream address must be host:port",
        ),
        (
            "  via:\n    - socks5://u:p@127.0.0.1:1080\n    - socks5://127.0.0.1:1080\n",
            "7:7: mtproto.via[1]",
            "upstream 127.0.0.1:1080 is listed twice",
        ),
    ] {
        let (code, _, stderr) = check(&["check"], &route_file(lines, dc));
        assert_eq!(code, Some(1), "{lines}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!("routes.yaml:{at}: {message}")),
            "{lines}\n{stderr}"
        );
    }
    let (code, stdout, stderr) = check(
        &["check"],
        &route_file("  via: [\"socks5://u:p%40ss@127.0.0.1:1080\"]\n", dc),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("p@ss") && !stderr.contains("p@ss"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_says_which_upstream_reaches_dc_2() {
    bounded(async {
        let socks = microsocks(None).await;
        let dead = RefusingPort::new();
        let dc = dc_on_its_own_address().await;
        let (good, bad) = (socks.url(None), format!("socks5://{}", dead.addr()));
        let text = route_file(&via(&[good.clone(), bad.clone()]), dc.addr);
        let (code, stdout, stderr) =
            tokio::task::spawn_blocking(move || check(&["check", "--probe"], &text))
                .await
                .unwrap();
        assert_eq!(
            code,
            Some(1),
            "an upstream cannot reach DC 2:\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains(&format!("frontgate: probe: upstream {good}: reaches DC 2")),
            "{stdout}"
        );
        assert!(
            stderr.contains(&format!(
                "frontgate: probe: upstream {bad}: cannot reach DC 2"
            )),
            "{stderr}"
        );
    })
    .await;
}

/// Middle-proxy mode with `via`: the configuration fetch and every ME connection go through
/// danted (which reports the address it connects from, so the keys are derived with the
/// address the ME sees); the fake ME on [`DC_IP`] sees danted's outgoing address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middle_proxy_mode_fetches_and_connects_through_the_upstream() {
    use common::fake_middle::{self, ConfigServer, MiddleOptions};
    bounded(async {
        let socks = danted().await;
        let secret: Vec<u8> = (0..128).map(|_| rand::random::<u8>()).collect();
        let options = MiddleOptions {
            secret: secret.clone(),
            proxy_ip: None,
            forward: None,
        };
        let mut me = fake_middle::spawn(IpAddr::V4(DC_IP), options).await;
        let config = ConfigServer::start(&secret, me.addr).await;
        let dc = dc_on_its_own_address().await;
        let lines = format!(
            "{}  ad_tag: 3c09c680b76ee91a4c25ad51f742267d\n  middle_proxy:\n    secret_url: {}\n    config_url: {}\n    config_v6_url: {}\n    fallback_direct: false\n",
            via(&[socks.url(Some((DANTE_USER, DANTE_PASSWORD)))]),
            config.url("/getProxySecret"),
            config.url("/getProxyConfig"),
            config.url("/getProxyConfigV6"),
        );
        let (_gw, addr, _site) = gateway_via(&dc, &lines, "").await;
        let (mut w, mut r, _) =
            client::connect_faketls(addr, &ALICE, SNI, client::INTERMEDIATE, 2, false).await;
        let mut framed = 8u32.to_le_bytes().to_vec();
        framed.extend_from_slice(b"abcdefgh");
        w.send(&framed).await.unwrap();
        assert_eq!(r.recv_exact(12).await.unwrap(), framed, "echoed through the ME");
        let seen = tokio::time::timeout(SOON, me.requests.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.peer.ip(), IpAddr::V4(SOCKS_OUT), "the ME's peer is danted");
        assert_eq!(seen.proxy.ip(), IpAddr::V4(SOCKS_OUT), "the keys used danted's address");
        let peers = config.peers.lock().unwrap().clone();
        assert!(!peers.is_empty(), "the configuration was fetched");
        assert!(
            peers.iter().all(|p| p.ip() == IpAddr::V4(SOCKS_OUT)),
            "every fetch came through danted: {peers:?}"
        );
    })
    .await;
}
