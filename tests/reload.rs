//! Hot reload and shutdown of the real `frontgate` binary: SIGHUP, a change of the file on
//! disk, an invalid file (refused, old table keeps serving), a live connection kept across a
//! reload, certificate files renewed by a symlink swap, `listen` changed without a restart,
//! and shutdown: SIGTERM cuts what is idle at once, a busy relay keeps the process until it
//! ends, and a second signal stops at once. In process: a reload's file reads never stall
//! the runtime.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::test_ca::TestCa;
use common::*;
use frontgate::server::reload;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

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
            "routes.yaml:4:1: did not find expected ',' or ']', while parsing a flow sequence"
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

/// The leaf certificate served on `port` to a client trusting `ca`, if the handshake passes.
async fn served_leaf(port: u16, ca: &TestCa) -> Option<CertificateDer<'static>> {
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .ok()?;
    let name = ServerName::try_from("panel.example.com").unwrap();
    let tls = TlsConnector::from(ca.client(&[]))
        .connect(name, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].clone())
}

/// Points `link` at `target` the way certbot renews: a new link renamed over the old one.
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(tmp, link).unwrap();
}

#[tokio::test]
async fn renewed_certificate_files_are_served_without_a_reload() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let backend = Backend::start("panel").await;
    let port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let (archive, live) = (certs.path().join("archive"), certs.path().join("live"));
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let issue = |generation: u32, ca: &TestCa| {
        let leaf = ca.leaf("panel.example.com");
        for (file, pem) in [("fullchain", &leaf.cert_pem), ("privkey", &leaf.key_pem)] {
            let target = archive.join(format!("{file}{generation}.pem"));
            std::fs::write(&target, pem).unwrap();
            swap_link(&live.join(format!("{file}.pem")), &target);
        }
        leaf.der
    };
    let old = issue(1, &old_ca);
    let gw = Running::start(&format!(
        "listen: 127.0.0.1:{port}\nroutes:\n  - sni: panel.example.com\n    tls: {{ cert: {}, key: {} }}\n    to: {}\n",
        live.join("fullchain.pem").display(),
        live.join("privkey.pem").display(),
        backend.addr
    ));
    name_at(port).await;
    assert_eq!(served_leaf(port, &old_ca).await, Some(old));

    let new = issue(2, &new_ca);
    gw.wait_log("reloaded certificate files").await;
    assert_eq!(served_leaf(port, &new_ca).await, Some(new));
    assert!(
        !gw.log().contains("configuration reloaded"),
        "the route file did not change:\n{}",
        gw.log()
    );
}

/// A file whose reader blocks until the test lets its writer in, as on a slow disk or a
/// stuck network mount. Every wait of the writer is bounded, so a runtime blocked on the read
/// is set free and the test fails instead of hanging.
struct StuckFile {
    /// Fires once a reader has opened the file and waits for its contents.
    reading: tokio::sync::oneshot::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
    writer: std::thread::JoinHandle<bool>,
}

impl StuckFile {
    fn create(path: PathBuf, text: String) -> StuckFile {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY-free: mkfifo(3) through the libc crate, on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (reader_came, reading) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            // Without a reader, a non-blocking open for writing fails (ENXIO).
            let deadline = std::time::Instant::now() + SOON;
            let mut fifo = loop {
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path);
                match opened {
                    Ok(fifo) => break fifo,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("nobody read {}: {e}", path.display()),
                }
            };
            let _ = reader_came.send(());
            let in_time = released.recv_timeout(SOON).is_ok();
            // Far below the pipe's capacity: written at once.
            std::io::Write::write_all(&mut fifo, text.as_bytes()).unwrap();
            in_time
        });
        StuckFile {
            reading,
            release,
            writer,
        }
    }

    /// Lets the reader finish; returns whether that happened before the writer's bound.
    async fn release(self) -> bool {
        let _ = self.release.send(());
        tokio::task::spawn_blocking(move || self.writer.join().unwrap())
            .await
            .unwrap()
    }
}

/// Reloads `routes` while a file it needs is `stuck`, and checks that the one runtime thread
/// of the test keeps serving connections meanwhile, with the running table (whose default
/// backend is `serving`).
async fn reload_while_stuck(
    gw: &Arc<frontgate::server::gateway::Gateway>,
    addr: std::net::SocketAddr,
    routes: PathBuf,
    mut stuck: StuckFile,
    serving: &str,
    what: &str,
) {
    let reloading = tokio::spawn({
        let gw = gw.clone();
        async move { reload::reload(&routes, &gw, "test").await }
    });
    tokio::time::timeout(SOON, &mut stuck.reading)
        .await
        .expect("the reload reads the file")
        .unwrap();
    let (name, _) = send_and_identify(addr, &client_hello("a.test")).await;
    assert!(
        stuck.release().await,
        "the runtime's only thread was blocked while {what} was read"
    );
    assert_eq!(
        name, serving,
        "served by the running table during the reload"
    );
    tokio::time::timeout(SOON, reloading)
        .await
        .expect("reload finishes once the file can be read")
        .unwrap()
        .unwrap();
}

/// A current-thread runtime (`#[tokio::test]`'s default): a file read on it would stop
/// everything else until the read returns.
#[tokio::test]
async fn reload_reads_the_route_file_and_certificates_off_the_runtime() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let (gw, addr) = gateway(&format!("default: {{ to: {} }}\n", old.addr)).await;
    let gw = Arc::new(gw);
    let dir = tempfile::tempdir().unwrap();

    // The route file itself.
    let routes = dir.path().join("routes.yaml");
    let text = format!("listen: 127.0.0.1:0\ndefault: {{ to: {} }}\n", new.addr);
    let stuck = StuckFile::create(routes.clone(), text);
    reload_while_stuck(&gw, addr, routes, stuck, "old", "the route file").await;
    assert_eq!(
        send_and_identify(addr, &client_hello("a.test")).await.0,
        "new"
    );

    // A new `tls:` route's certificate file, read when the route starts.
    let leaf = TestCa::new().leaf("panel.example.com");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let routes = dir.path().join("tls.yaml");
    std::fs::write(
        &routes,
        format!(
            "listen: 127.0.0.1:0\nroutes:\n  - sni: panel.example.com\n    tls: {{ cert: {}, key: {} }}\n    to: {}\ndefault: {{ to: {} }}\n",
            cert.display(),
            key.display(),
            new.addr,
            old.addr
        ),
    )
    .unwrap();
    let stuck = StuckFile::create(cert, leaf.cert_pem);
    reload_while_stuck(&gw, addr, routes, stuck, "new", "a certificate file").await;
    assert_eq!(
        send_and_identify(addr, &client_hello("a.test")).await.0,
        "old"
    );
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
    // The line is logged just before the listeners stop: wait for them, bounded.
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still accepted:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
