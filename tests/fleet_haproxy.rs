//! Debian's HAProxy with the shipped `deploy/haproxy/haproxy.cfg` (only its addresses, ports
//! and paths templated) in front of two `frontgate run` processes: the backend behind
//! frontgate sees the client's own address (HAProxy -> frontgate in PROXY v2, frontgate ->
//! backend in PROXY v2), HAProxy's `/healthz` checks find both instances up, and when one
//! instance is killed HAProxy marks it down within the config's `inter × fall` while every
//! connection to the survivor carries on and new connections go to the survivor.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The client's own address: not HAProxy's (127.0.0.1), so the backend seeing it proves the
/// address went through both PROXY headers.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `frontgate run` trusting HAProxy on 127.0.0.1, sending non-TLS clients to `site` with a
/// PROXY v2 header.
struct Instance {
    process: Process,
    listen: SocketAddr,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
}

impl Instance {
    async fn start(site: SocketAddr) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let routes = format!(
            "listen: {listen}\naccept_proxy_protocol_from: [127.0.0.1/32]\nmetrics: {{ listen: {metrics} }}\nroutes: []\nnon_tls: {{ to: {site}, proxy_protocol: v2 }}\n"
        );
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, routes).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_frontgate"))
            .args(["run", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let instance = Instance {
            process: Process(child),
            listen,
            metrics,
            dir,
        };
        let started = Instant::now();
        while TcpStream::connect(metrics).await.is_err() {
            assert!(
                started.elapsed() < SOON,
                "frontgate did not start:\n{}",
                instance.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        instance
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// `text` with `from` replaced by `to`, which must occur exactly once (so the test breaks
/// when the shipped file changes under it instead of testing something else).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/haproxy/haproxy.cfg should have `{from}` once"
    );
    text.replacen(from, to, 1)
}

/// The shipped HAProxy config with the test's addresses: the frontend on `front`, the two
/// servers and their check ports, the stats socket in `dir`; the log target and the
/// privilege drop (a test runs HAProxy as whoever runs the tests) are left out.
fn templated_config(front: SocketAddr, a: &Instance, b: &Instance, dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
    let mut text = std::fs::read_to_string(shipped).unwrap();
    let socket = dir.join("admin.sock");
    for (from, to) in [
        ("    log /dev/log local0\n", String::new()),
        ("    user haproxy\n", String::new()),
        ("    group haproxy\n", String::new()),
        (
            "/run/haproxy/admin.sock mode",
            format!("{} mode", socket.display()),
        ),
        ("    bind :443\n", format!("    bind {front}\n")),
        (
            "10.0.0.11:443 check port 9100",
            format!("{} check port {}", a.listen, a.metrics.port()),
        ),
        (
            "10.0.0.12:443 check port 9100",
            format!("{} check port {}", b.listen, b.metrics.port()),
        ),
    ] {
        text = replace_once(&text, from, &to);
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    path
}

/// HAProxy's `show stat` status of server `name` of backend `frontgate` (UP, DOWN, ...).
async fn server_status(socket: &Path, name: &str) -> String {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return "no stats socket yet".into();
    };
    stream.write_all(b"show stat\n").await.unwrap();
    let mut csv = String::new();
    stream.read_to_string(&mut csv).await.unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let column = header.iter().position(|h| *h == "status").expect("status");
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|row| row.first() == Some(&"frontgate") && row.get(1) == Some(&name))
        .and_then(|row| row.get(column).map(|s| s.to_string()))
        .unwrap_or_else(|| format!("no row for {name} in {csv}"))
}

/// Waits until `name` is exactly `UP` or `DOWN` (not a transition like `UP 1/2`); returns
/// how long that took.
async fn status_becomes(socket: &Path, name: &str, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = server_status(socket, name).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{name} is {status:?}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client connection through HAProxy from [`CLIENT`]: sends `ping`, returns which site
/// answered and the stream.
async fn client(front: SocketAddr) -> (String, BufReader<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(CLIENT, 0)).unwrap();
    let mut stream = socket.connect(front).await.unwrap();
    stream.write_all(b"ping\n").await.unwrap();
    let mut stream = BufReader::new(stream);
    let site = line(&mut stream).await;
    assert_eq!(line(&mut stream).await, "ping", "echoed");
    (site, stream)
}

/// The next line, or "" at EOF or after [`SOON`].
async fn line(stream: &mut BufReader<TcpStream>) -> String {
    let mut text = String::new();
    match tokio::time::timeout(SOON, stream.read_line(&mut text)).await {
        Ok(Ok(_)) => text.trim_end().to_string(),
        _ => String::new(),
    }
}

/// Sends `word` and reads it back; true when it came back.
async fn still_echoes(stream: &mut BufReader<TcpStream>, word: &str) -> bool {
    if stream
        .get_mut()
        .write_all(format!("{word}\n").as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    line(stream).await == word
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_over_two_instances_and_fails_over_without_losing_the_survivors() {
    let mut site_a = Backend::expecting_proxy_header("site-a").await;
    let mut site_b = Backend::expecting_proxy_header("site-b").await;
    let a = Instance::start(site_a.addr).await;
    let mut b = Instance::start(site_b.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = templated_config(front, &a, &b, dir.path());
    let checked = Command::new(HAPROXY)
        .args(["-c", "-f"])
        .arg(&config)
        .output()
        .expect("haproxy runs (apt install haproxy)");
    assert!(
        checked.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let _haproxy = Process(
        Command::new(HAPROXY)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("admin.sock");
    let haproxy_log = || std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap();
    for server in ["fg1", "fg2"] {
        if server_status(&socket, server).await == "no stats socket yet" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_ne!(
            server_status(&socket, server).await,
            "no stats socket yet",
            "{}",
            haproxy_log()
        );
        status_becomes(&socket, server, "UP", SOON).await;
    }

    // The backend behind frontgate sees the client's own address, not HAProxy's.
    let (site, mut stream) = client(front).await;
    let source = stream.get_ref().local_addr().unwrap();
    stream.get_mut().shutdown().await.unwrap();
    while !line(&mut stream).await.is_empty() {}
    let seen = match site.as_str() {
        "site-a" => site_a.next_seen().await,
        "site-b" => site_b.next_seen().await,
        other => panic!("answered by {other:?}"),
    };
    assert_eq!(seen.proxied_client, Some(source), "the client's address");

    // Long connections are spread over both instances (leastconn).
    let mut long = Vec::new();
    for _ in 0..8 {
        long.push(client(front).await);
    }
    let on_a = long.iter().filter(|(site, _)| site == "site-a").count();
    assert_eq!(on_a, 4, "leastconn puts 4 of 8 on each instance");

    // Instance b dies; HAProxy marks it down within inter × fall (3 s × 2 in the file).
    drop(std::mem::replace(
        &mut b.process,
        Process(Command::new("true").spawn().unwrap()),
    ));
    let took = status_becomes(&socket, "fg2", "DOWN", Duration::from_secs(7)).await;
    assert!(took <= Duration::from_secs(7), "down after {took:?}");

    // Every connection to the survivor carries on; those to the dead one are gone.
    for (i, (site, stream)) in long.iter_mut().enumerate() {
        let alive = still_echoes(stream, &format!("again-{i}")).await;
        assert_eq!(alive, site == "site-a", "connection {i} to {site}");
    }
    // New connections all go to the survivor.
    for _ in 0..4 {
        let (site, _) = client(front).await;
        assert_eq!(site, "site-a");
    }
}
