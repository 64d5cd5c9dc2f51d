//! A real `redis-server` (Debian's) on a free loopback port, started, killed and restarted by
//! the test, keeping its data in a temporary directory across restarts (append-only file,
//! fsync on every write) like a production Redis with persistence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `redis-server` process; killed on drop.
pub struct RedisServer {
    /// Where it listens (or listened).
    pub addr: SocketAddr,
    password: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` requiring `password`, and waits until it answers.
    pub async fn start(password: &str) -> RedisServer {
        let port = crate::common::free_port();
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            password: password.to_string(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// The URL gateways are given (with the password).
    pub fn url(&self) -> String {
        format!("redis://:{}@{}/0", self.password, self.addr)
    }

    /// Kills the server at once (SIGKILL: an outage, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data, and waits until it
    /// answers.
    pub async fn restart(&mut self) {
        self.kill();
        let dir: PathBuf = self.dir.path().into();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--requirepass", &self.password])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (apt install redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while self.ping().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `PING`; `Some` when it answered `PONG`.
    async fn ping(&self) -> Option<()> {
        let reply = self.command(&["PING"]).await?;
        reply.starts_with("+PONG").then_some(())
    }

    /// One command (after `AUTH`) in the inline protocol; the raw reply, `None` when the
    /// server is not there.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let auth = format!("AUTH {}\r\n", self.password);
        let line = format!("{auth}{}\r\nQUIT\r\n", args.join(" "));
        stream.write_all(line.as_bytes()).await.ok()?;
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
            .await
            .ok()?
            .ok()?;
        // Drop AUTH's `+OK` and QUIT's `+OK`.
        let reply = reply.strip_prefix("+OK\r\n")?;
        Some(reply.strip_suffix("+OK\r\n").unwrap_or(reply).to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
