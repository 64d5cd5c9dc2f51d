//! Hot reload and shutdown of the real `frontgate` binary: SIGHUP, a change of the file on
//! disk, an invalid file (refused, old table keeps serving), a live connection kept across a
//! reload, `listen` changed without a restart, and shutdown: SIGTERM cuts what is idle at
//! once, a busy relay keeps the process until it ends, and a second signal stops at once.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// A running `frontgate run` with its route file and captured log.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
}

impl Running {
    fn start(routes: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_frontgate"))
            .args(["run", "--config"])
            .arg(dir.path().join("routes.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Running { child, dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("routes.yaml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY-free: kill(2) through the libc crate is a plain syscall wrapper.
        let pid = self.child.id() as i32;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn wait_log(&self, needle: &str) {
        for _ in 0..200 {
            if self.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("log never said {needle:?}:\n{}", self.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn routes(port: u16, backend: std::net::SocketAddr) -> String {
    format!("listen: 127.0.0.1:{port}\ndefault: {{ to: {backend} }}\n")
}

/// Writes the file the way editors do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

async fn name_at(port: u16) -> String {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            drop(stream);
            return send_and_identify(addr, &client_hello("a.test")).await.0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::test]
async fn sighup_and_file_changes_reload_and_bad_files_are_refused() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let newer = Backend::start("newer").await;
    let port = free_port();
    let gw = Running::start(&routes(port, old.addr));
    assert_eq!(name_at(port).await, "old");

    // A connection opened before the reload keeps its backend.
    let (name, mut live) = send_and_identify(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &client_hello("a.test"),
    )
    .await;
    assert_eq!(name, "old");

    // SIGHUP after an in-place edit.
    std::fs::write(gw.path(), routes(port, new.addr)).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_log("configuration reloaded").await;
    assert_eq!(name_at(port).await, "new");

    // The live relay still talks to the old backend.
    live.write_all(b"still here").await.unwrap();
    let hello_len = client_hello("a.test").len();
    assert_eq!(
        read_exact(&mut live, hello_len + 10).await[hello_len..],
        *b"still here"
    );

    // An invalid file is refused with file:line:col, and the running table stays.
    replace(
        &gw.path(),
        &format!(
            "listen: 127.0.0.1:{port}\ndefault: {{ to: {} }}\nroutes: [oops\n",
            newer.addr
        ),
    );
    gw.wait_log("configuration reload refused").await;
    assert!(
        gw.log().contains(
            "routes.yaml:3:10: routes[0]: invalid type: string \"oops\", expected a route"
        ),
        "{}",
        gw.log()
    );
    assert_eq!(name_at(port).await, "new");

    // A change on disk alone (no signal) is picked up.
    replace(&gw.path(), &routes(port, newer.addr));
    for _ in 0..100 {
        if name_at(port).await == "newer" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(name_at(port).await, "newer");
}

#[tokio::test]
async fn listen_addresses_change_without_a_restart() {
    let backend = Backend::start("b").await;
    let (first, second) = (free_port(), free_port());
    let gw = Running::start(&routes(first, backend.addr));
    assert_eq!(name_at(first).await, "b");
    replace(
        &gw.path(),
        &format!(
            "listen: [127.0.0.1:{second}]\ndefault: {{ to: {} }}\n",
            backend.addr
        ),
    );
    gw.signal(libc::SIGHUP);
    gw.wait_log("stopped listening").await;
    assert_eq!(name_at(second).await, "b");
    let refused = tokio::net::TcpStream::connect(format!("127.0.0.1:{first}")).await;
    assert!(refused.is_err(), "the removed address is closed");
}

/// Waits up to `within` for the process to exit and returns its status.
async fn exited_within(gw: &mut Running, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = gw.child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The binary relaying to an echo backend with a 30 s grace period, its port, and one relayed
/// connection that got its first answer.
async fn relaying_with_a_long_grace() -> (Running, u16, tokio::net::TcpStream) {
    let backend = Backend::start("b").await;
    let port = free_port();
    let gw = Running::start(&format!(
        "listen: 127.0.0.1:{port}\ntimeouts: {{ shutdown_grace: 30s }}\ndefault: {{ to: {} }}\n",
        backend.addr
    ));
    assert_eq!(name_at(port).await, "b");
    let (_, relayed) = send_and_identify(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &client_hello("a.test"),
    )
    .await;
    (gw, port, relayed)
}

#[tokio::test]
async fn sigterm_cuts_an_idle_relay_and_exits_at_once() {
    let (mut gw, _, mut idle) = relaying_with_a_long_grace().await;
    gw.signal(libc::SIGTERM);
    let status = exited_within(&mut gw, Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("still running 3 s after SIGTERM:\n{}", gw.log()));
    assert!(status.success());
    assert!(closed_within(&mut idle, SOON).await);
    let log = gw.log();
    assert!(log.contains("stopped") && log.contains("cut=1"), "{log}");
}

#[tokio::test]
async fn a_busy_relay_keeps_the_process_until_a_second_signal_stops_it_at_once() {
    let (mut gw, port, live) = relaying_with_a_long_grace().await;
    // Keep the relay busy: write without pause and count what comes back.
    let echoed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (mut rd, mut wr) = live.into_split();
    tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let counter = echoed.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    gw.signal(libc::SIGTERM);
    gw.wait_log("shutting down").await;
    assert!(
        tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err(),
        "no new connections"
    );
    // Another MiB through the relay after the shutdown began: it is still served.
    let seen = echoed.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(SOON, async {
        while echoed.load(std::sync::atomic::Ordering::Relaxed) < seen + (1 << 20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the busy relay goes on during the grace period");
    assert!(gw.child.try_wait().unwrap().is_none(), "still serving");
    gw.signal(libc::SIGINT);
    let status = exited_within(&mut gw, Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("still running 3 s after the second signal:\n{}", gw.log()));
    assert!(status.success());
    tokio::time::timeout(SOON, reader)
        .await
        .expect("the relay was cut")
        .unwrap();
    let log = gw.log();
    assert!(log.contains("left=1"), "{log}");
}

#[test]
fn check_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:9000\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a.example.com") && stdout.contains("-> 127.0.0.1:9000"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: 127.0.0.1:8443\nroutes:\n  - sni: a.example.com\n    to: nowhere\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:4:9: routes[0].to: invalid address `nowhere`"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["check", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
