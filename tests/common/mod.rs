//! The loopback tests' kit: the peers from `frontgate-testkit` (tests/common/kit: fake
//! backend, fake DC, MTProto test client, test CA, client-side helpers), plus the one thing
//! that needs the crate under test: a gateway started in-process from route-file text.
#![allow(dead_code)] // each test binary uses a different subset

pub mod fuzz_harness;
pub mod log_capture;
pub mod redis_server;
pub mod sessions;

use std::net::SocketAddr;

use frontgate::config;
use frontgate::server::gateway::Gateway;
#[allow(unused_imports)] // each test binary uses a different subset
pub use frontgate_testkit::*;

/// Starts a gateway from route-file text whose `listen` is replaced by 127.0.0.1:0.
pub async fn gateway(yaml: &str) -> (Gateway, SocketAddr) {
    let text = format!("listen: 127.0.0.1:0\n{yaml}");
    let config = config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::start(config, None).await.expect("gateway starts");
    let addr = gateway.local_addrs().await[0];
    (gateway, addr)
}

/// A loopback port that is free now, for a port that must be written into a route file
/// before a `frontgate` process starts (tests/reload.rs) or before the gateway that listens
/// on it exists (the loop test in tests/routing.rs); elsewhere start on 127.0.0.1:0 and read
/// the address back, or use [`RefusingPort`] for an address where nothing listens.
///
/// It is picked below the kernel's ephemeral range (as `integration/lib.sh` does), which
/// neither outgoing connections nor `:0` binds are given, starting at a random place and
/// never handed out twice by this process; so only another process choosing the same port
/// in the same instant could take it before it is used.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000, ephemeral_start.max(10_100));
    let _ = NEXT.compare_exchange(
        0,
        rand::random::<u32>() % (high - low),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..(high - low) {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % (high - low);
        let port = u16::try_from(port).expect("ports are below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}
