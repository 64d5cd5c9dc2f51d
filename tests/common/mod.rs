//! The loopback tests' kit: the peers from `frontgate-testkit` (tests/common/kit: fake
//! backend, fake DC, MTProto test client, test CA, client-side helpers), plus the one thing
//! that needs the crate under test: a gateway started in-process from route-file text.
#![allow(dead_code)] // each test binary uses a different subset

pub mod fuzz_harness;

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

/// A loopback port that was free a moment ago: racy, anyone may take it before it is used.
/// Only for a port that must be written into a route file before a `frontgate` process
/// starts (tests/reload.rs) or before the gateway that listens on it exists (the loop test
/// in tests/routing.rs). Elsewhere start on 127.0.0.1:0 and read the address back, or use
/// [`RefusingPort`] for an address where nothing listens.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
