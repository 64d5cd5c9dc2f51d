//! The metrics endpoint: Prometheus text and JSON stats reflect real connections.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

#[tokio::test]
async fn counts_connections_bytes_and_users() {
    let backend = Backend::start("b").await;
    let (gw, addr) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nmtproto: {{ users: {{ alice: {} }} }}\nroutes:\n  - sni: a.example.com\n    to: {}\n",
        "ab".repeat(16),
        backend.addr
    ))
    .await;
    let metrics = gw.metrics_addr().expect("metrics endpoint runs");
    let hello = client_hello("a.example.com");
    let (name, mut stream) = send_and_identify(addr, &hello).await;
    assert_eq!(name, "b");
    read_exact(&mut stream, hello.len()).await;
    let (_, _open) = send_and_identify(addr, &client_hello("unknown.example.com")).await;
    stream.shutdown().await.unwrap();
    assert!(closed_within(&mut stream, SOON).await);
    // The connection's line is counted once its task ends.
    let mut text = String::new();
    for _ in 0..50 {
        text = get(metrics, "/metrics").await;
        if text.contains(r#"frontgate_connections_total{route="a.example.com",outcome="closed"} 1"#)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains(r#"frontgate_connections_total{route="a.example.com",outcome="closed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"frontgate_connections_total{route="-",outcome="no_route"} 1"#),
        "{text}"
    );
    let up = format!(
        r#"frontgate_bytes_total{{route="a.example.com",direction="up"}} {}"#,
        hello.len()
    );
    assert!(text.contains(&up), "{text}");
    assert!(text.contains("frontgate_connections_open 0"), "{text}");
    assert!(
        text.contains(r#"frontgate_mtproto_user_connections_total{user="alice"} 0"#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    let stats = get(metrics, "/stats").await;
    let body = stats.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["connections"]["a.example.com"]["closed"], 1);
    assert_eq!(json["mtproto_users"]["alice"]["connections"], 0);
    assert!(get(metrics, "/nope").await.starts_with("HTTP/1.1 404"));
}
