//! The passthrough relay's pipes on Linux (`frontgate::forward::splice`), counted as the
//! process's open file descriptors: none before the first byte nor for light traffic, one
//! pipe (two descriptors) per direction in a burst, and none again once the relay has been
//! quiet for the buffer policy's quiet spell, with every byte delivered and counted. One test in its own
//! binary, so no other test opens descriptors meanwhile.
#![cfg(target_os = "linux")]

use std::time::Duration;

use frontgate::forward::buffer::QUIET;
use frontgate::forward::relay::{relay_tcp, RelayEnd};
use frontgate::forward::shutdown::ShutdownSwitch;
use frontgate_testkit::net::tcp_pair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Lets the relay task run until it waits.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn pipes_exist_only_while_bytes_flow() {
    let (client_side, mut client) = tcp_pair().await;
    let (mut backend, backend_side) = tcp_pair().await;
    let shutdown = ShutdownSwitch::new().subscribe();
    let before = open_fds();
    let relay = tokio::spawn(async move {
        relay_tcp(
            &client_side,
            &backend_side,
            Duration::from_secs(30),
            &shutdown,
        )
        .await
    });
    settle().await;
    assert_eq!(open_fds(), before, "no pipe before the first byte");

    let up: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    client.write_all(&up).await.unwrap();
    let mut got = vec![0u8; up.len()];
    backend.read_exact(&mut got).await.unwrap();
    assert!(got == up);
    settle().await;
    assert_eq!(open_fds(), before + 2, "one pipe for the direction in use");

    // Light traffic the other way is copied through the small buffer: no second pipe.
    backend.write_all(b"reply").await.unwrap();
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
    settle().await;
    assert_eq!(open_fds(), before + 2, "no pipe for a short message");

    // A burst the other way gets its own pipe.
    let down: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    backend.write_all(&down).await.unwrap();
    let mut got = vec![0u8; down.len()];
    client.read_exact(&mut got).await.unwrap();
    assert!(got == down);
    settle().await;
    assert_eq!(open_fds(), before + 4, "a pipe per bursting direction");

    tokio::time::sleep(QUIET + Duration::from_millis(300)).await;
    assert_eq!(open_fds(), before, "both pipes closed after a quiet spell");

    // The relay goes on after its pipes were closed, and half-closes as before.
    client.write_all(b"more").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    backend.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"more");
    backend.shutdown().await.unwrap();
    let stats = relay.await.unwrap();
    assert!(matches!(stats.end, RelayEnd::Finished), "{:?}", stats.end);
    assert_eq!(
        (stats.upstream_bytes, stats.downstream_bytes),
        (up.len() as u64 + 4, 5 + down.len() as u64)
    );
    drop(client);
    settle().await;
}
