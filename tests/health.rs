//! `frontgate health` over real sockets: 0 for a gateway that serves, 1 with the reason for
//! one that is draining (503), stopped (nothing listens), silent, or has no metrics endpoint.

mod common;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use tokio::process::Command;

async fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .arg("health")
        .args(args)
        .output()
        .await
        .expect("frontgate runs")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/healthz")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_is_0_and_draining_is_1() {
    let (gw, _) = gateway("metrics: { listen: 127.0.0.1:0 }\nroutes: []\n").await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    let out = health(&["--url", &url(metrics)]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("healthy: {} answered 200: ok\n", url(metrics))
    );

    // Shut down: the listeners stop, the endpoint answers 503 while connections drain.
    gw.shutdown(Duration::ZERO).await;
    let out = health(&["--url", &url(metrics)]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("answered 503 Service Unavailable: unavailable: not every listen"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_stopped_gateway_is_1_and_the_address_comes_from_the_route_file() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let metrics_port = free_port();
    std::fs::write(
        &routes,
        format!(
            "listen: 127.0.0.1:{}\nmetrics: {{ listen: 127.0.0.1:{metrics_port} }}\nroutes: []\n",
            free_port()
        ),
    )
    .unwrap();
    let routes = routes.to_str().unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(["run", "--config", routes])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut healthy = None;
    for _ in 0..100 {
        let out = health(&["--config", routes]).await;
        if out.status.success() {
            healthy = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy = healthy.expect("the gateway became healthy");
    let expected = format!("http://127.0.0.1:{metrics_port}/healthz answered 200");
    assert!(
        String::from_utf8_lossy(&healthy.stdout).contains(&expected),
        "{healthy:?}"
    );

    gateway.kill().await.unwrap();
    gateway.wait().await.unwrap();
    let out = health(&["--config", routes]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains(&format!(
            "cannot connect to 127.0.0.1:{metrics_port}: Connection refused"
        )),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_silent_endpoint_is_1_after_the_timeout() {
    // Accepts and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let out = health(&["--url", &url(addr), "--timeout", "300ms"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("no answer within 300ms"), "{out:?}");
    holder.abort();
}

#[tokio::test]
async fn a_route_file_without_metrics_is_1_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, "listen: 127.0.0.1:8443\nroutes: []\n").unwrap();
    let out = health(&["--config", routes.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("has no metrics.listen") && stderr(&out).contains("--url"),
        "{out:?}"
    );
    let out = health(&["--url", "https://127.0.0.1:1/healthz"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("only http:// URLs"), "{out:?}");
}
