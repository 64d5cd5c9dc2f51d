//! Usage that survives restarts: the real binary with `state.dir`, stopped by SIGTERM (every
//! byte kept) and by SIGKILL (at most the save interval lost), restarted on the same state.
//! A user whose quota was used up before the restart stays over quota after it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::fake_dc;
use common::sessions::{echo_paced_until_closed, session, LOCAL};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BOB: [u8; 16] = [0xb0; 16];
const SNI: &str = "a.test";
/// Bob's quota: both ways summed, for his whole life.
const QUOTA: usize = 1 << 20;

/// `frontgate run` on `config`, and the address it listens on (from its log).
async fn start(config: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(SOON, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(local) = line.split_once("listening local=") {
                if let Some(addr) = local.1.split_whitespace().next() {
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
        }
        panic!("frontgate exited before listening");
    })
    .await
    .expect("frontgate listens");
    // Keep reading its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Bob's `period_bytes` in the saved usage.
fn saved_period_bytes(state: &Path) -> u64 {
    let text = std::fs::read_to_string(state.join("usage.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["users"]["bob"]["period_bytes"].as_u64().unwrap()
}

/// Moves about `bytes` of payload (both ways) through one of bob's sessions, then closes
/// it; returns the payload bytes moved (the gateway counts them and their framing).
async fn use_bytes(addr: SocketAddr, bytes: usize) -> u64 {
    let (mut w, mut r) = session(addr, &BOB, SNI, LOCAL).await.expect("bob served");
    let chunk = vec![7u8; 16 * 1024];
    let rounds = bytes / (2 * chunk.len());
    for _ in 0..rounds {
        w.send(&chunk).await.unwrap();
        r.recv_exact(chunk.len()).await.unwrap();
    }
    (rounds * 2 * chunk.len()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_survives_sigterm_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let config = dir.path().join("routes.yaml");
    let bob: String = BOB.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:1\nstate: {{ dir: state }}\nmtproto:\n  datacenters: {{ 2: [{}] }}\n  users:\n    bob:\n      secret: {bob}\n      quota: {{ bytes: {QUOTA}, period: total }}\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
            dc.addr, site.addr
        ),
    )
    .unwrap();

    // SIGTERM: the last bytes are saved on the way out, however recent.
    let (mut gateway, addr) = start(&config).await;
    let first = use_bytes(addr, 300_000).await;
    let pid = gateway.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    gateway.wait().await.unwrap();
    let after_term = saved_period_bytes(&state);
    assert!(after_term >= first, "{after_term} < {first}");

    // SIGKILL: what was saved before the kill is there; at most one interval is lost.
    let (mut gateway, addr) = start(&config).await;
    let second = use_bytes(addr, 400_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // > the 2 s save interval
    gateway.kill().await.unwrap();
    let after_kill = saved_period_bytes(&state);
    assert!(after_kill >= after_term + second, "{after_kill}");

    // Restarted, bob has 700 kB of his 1 MiB left: the next 400 kB cross the quota, so his
    // session is cut, and his next hello is fronted. Counted from zero, it would not be.
    let (_gateway, addr) = start(&config).await;
    let bob_session = session(addr, &BOB, SNI, LOCAL).await.expect("bob served");
    // Paced (at most ~0.8 MB/s): the policy check every 250 ms then cuts him within about
    // 200 kB of his quota however fast the relay is, and a count from zero (1 MiB left)
    // would move more than the bound below.
    let pace = Duration::from_millis(10);
    let (moved, _) = echo_paced_until_closed(bob_session, 4096, QUOTA, pace).await;
    assert!(
        moved < QUOTA - after_kill as usize + 512 * 1024,
        "cut after {moved} more bytes"
    );
    assert!(
        session(addr, &BOB, SNI, LOCAL).await.is_none(),
        "over quota"
    );
}
