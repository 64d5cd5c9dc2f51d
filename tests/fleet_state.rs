//! A fleet of two gateways sharing their state through a real `redis-server` on loopback
//! (`state.redis`): a hello one instance accepted is a replay on the other, quotas count the
//! whole fleet's bytes, and when Redis dies both keep serving on their local state (the
//! metrics say so) and push what they saw once it is back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_dc;
use common::mtproto_client as client;
use common::redis_server::RedisServer;
use common::sessions::{echo_until_closed, session, LOCAL};
use common::*;
use frontgate::server::gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: [u8; 16] = [0xa1; 16];
const BOB: [u8; 16] = [0xb0; 16];
const SNI: &str = "a.test";
const PASSWORD: &str = "fleet-test-pw-7f3e";

fn hex(secret: &[u8; 16]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// One instance of the fleet (a generous `redis_timeout`: on a loaded machine a slow answer
/// would rightly be a local decision, which is not what these checks are about): alice (no quota) and bob (`bob_quota` bytes, total) on a.test,
/// fronted to `site`, sharing state through `redis`.
async fn instance(
    redis: &RedisServer,
    site: SocketAddr,
    dc: SocketAddr,
    bob_quota: u64,
) -> (Gateway, SocketAddr) {
    gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nstate: {{ redis: \"{}\", redis_timeout: 2s }}\nmtproto:\n  datacenters: {{ 2: [{dc}] }}\n  users:\n    alice: {}\n    bob:\n      secret: {}\n      quota: {{bytes: {bob_quota}, period: total}}\nroutes:\n  - sni: a.test\n    mtproto: true\n    mimic: off\n    to: {site}\n",
        redis.url(),
        hex(&ALICE),
        hex(&BOB),
    ))
    .await
}

/// `/metrics` of `gateway` as text.
async fn metrics(gateway: &Gateway) -> String {
    http_get(
        gateway.metrics_addr().expect("metrics endpoint runs"),
        "/metrics",
    )
    .await
}

/// `/stats` of `gateway`.
async fn stats(gateway: &Gateway) -> serde_json::Value {
    let body = http_get(
        gateway.metrics_addr().expect("metrics endpoint runs"),
        "/stats",
    )
    .await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the sample `series` (name and labels exactly as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Waits (up to ten seconds) until `series` reads `want` on `gateway`.
async fn metric_reaches(gateway: &Gateway, series: &str, want: f64) {
    let started = Instant::now();
    loop {
        let text = metrics(gateway).await;
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `hello` to `addr`; true when the MTProto core answered (its fake flight starts with
/// a TLS handshake record), false when the site did (`site\n`).
async fn served(addr: SocketAddr, hello: &[u8]) -> bool {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(hello).await.unwrap();
    let mut first = [0u8; 5];
    tokio::time::timeout(SOON, stream.read_exact(&mut first))
        .await
        .expect("an answer")
        .unwrap();
    match &first {
        b"site\n" => false,
        [0x16, 0x03, 0x03, ..] => true,
        other => panic!("neither the site nor a fake flight: {other:?}"),
    }
}

/// A fresh valid hello of alice's.
fn alice_hello() -> Vec<u8> {
    client::build_hello(&ALICE, SNI, &[0x1301], client::now_unix() as u32).record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_seen_by_one_instance_is_a_replay_on_the_other_through_an_outage() {
    common::log_capture::start();
    let mut redis = RedisServer::start(PASSWORD).await;
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let (a, a_addr) = instance(&redis, site.addr, dc.addr, 1 << 30).await;
    let (b, b_addr) = instance(&redis, site.addr, dc.addr, 1 << 30).await;
    for gw in [&a, &b] {
        metric_reaches(gw, "frontgate_state_redis_up", 1.0).await;
    }

    // Accepted by A, then replayed through the balancer to B: B fronts it to the site.
    let hello = alice_hello();
    assert!(served(a_addr, &hello).await, "A serves a fresh hello");
    assert!(
        !served(b_addr, &hello).await,
        "B fronts A's hello: {}",
        common::log_capture::text()
    );
    assert!(!served(a_addr, &hello).await, "and so does A");
    // B serves fresh hellos of its own, which A then fronts.
    let own = alice_hello();
    assert!(served(b_addr, &own).await, "B serves a fresh hello");
    assert!(!served(a_addr, &own).await, "A fronts B's hello");

    // Redis dies: both keep serving on their local caches, and say so.
    redis.kill();
    for gw in [&a, &b] {
        metric_reaches(gw, "frontgate_state_redis_up", 0.0).await;
    }
    let during = alice_hello();
    assert!(served(a_addr, &during).await, "A serves without Redis");
    assert!(
        !served(a_addr, &during).await,
        "A's own cache still fronts replays"
    );
    let text = metrics(&a).await;
    let fallbacks = sample(
        &text,
        "frontgate_state_redis_fallbacks_total{kind=\"replay\"}",
    );
    assert!(
        fallbacks >= Some(1.0),
        "the local decision is counted:\n{text}"
    );
    let stats = stats(&b).await;
    assert_eq!(stats["state_redis"]["up"], false, "{stats}");
    // B would accept `during` now (an outage leaves each instance on its own cache); it is
    // kept unseen by B to check the resync.

    // Redis is back: A pushes what it saw during the outage, so B fronts it.
    redis.restart().await;
    for gw in [&a, &b] {
        metric_reaches(gw, "frontgate_state_redis_up", 1.0).await;
        metric_reaches(gw, "frontgate_state_redis_resyncs_total", 2.0).await;
    }
    assert!(
        !served(b_addr, &during).await,
        "B fronts the hello A saw during the outage"
    );
    assert!(
        !served(b_addr, &hello).await,
        "and still the first one (Redis kept it)"
    );
    assert!(
        served(b_addr, &alice_hello()).await,
        "B serves fresh hellos again"
    );

    let log = common::log_capture::text();
    assert!(
        !log.contains(PASSWORD),
        "the Redis password was logged:\n{log}"
    );
    let shown = format!("redis://:***@{}/0", redis.addr);
    let down = log
        .lines()
        .filter(|l| l.contains("Redis does not answer") && l.contains(&shown))
        .count();
    assert_eq!(
        down, 2,
        "one warning per instance for the one outage:\n{log}"
    );
}

/// What Redis holds for bob's quota period (one key: a `total` quota, never reset); 0
/// before the first push.
async fn fleet_count(redis: &RedisServer) -> u64 {
    let keys = redis
        .command(&["KEYS", "frontgate:usage:bob:*"])
        .await
        .unwrap();
    let Some(key) = keys.lines().find(|l| l.starts_with("frontgate:")) else {
        assert_eq!(keys, "*0\r\n", "no key yet");
        return 0;
    };
    let value = redis.command(&["GET", key]).await.unwrap();
    value
        .lines()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{value:?}"))
}

/// Bob's own bytes this period on `gateway`.
async fn own_count(gateway: &Gateway) -> u64 {
    let text = metrics(gateway).await;
    sample(&text, "frontgate_mtproto_user_period_bytes{user=\"bob\"}")
        .unwrap_or_else(|| panic!("{text}")) as u64
}

/// Waits until Redis's count for bob is the sum of both instances' own counts.
async fn counts_agree(redis: &RedisServer, a: &Gateway, b: &Gateway) -> u64 {
    let started = Instant::now();
    loop {
        let (fleet, own_a, own_b) = (
            fleet_count(redis).await,
            own_count(a).await,
            own_count(b).await,
        );
        if fleet > 0 && fleet == own_a + own_b {
            return fleet;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis counts {fleet}, the instances {own_a} + {own_b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_the_whole_fleet_and_an_outage_is_pushed_once() {
    let mut redis = RedisServer::start(PASSWORD).await;
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let quota: u64 = 1 << 20;
    let (a, a_addr) = instance(&redis, site.addr, dc.addr, quota).await;
    let (b, b_addr) = instance(&redis, site.addr, dc.addr, quota).await;
    for gw in [&a, &b] {
        metric_reaches(gw, "frontgate_state_redis_up", 1.0).await;
    }

    // 200 KiB through A are counted in Redis.
    let bob = session(a_addr, &BOB, SNI, LOCAL)
        .await
        .expect("bob served by A");
    echo_until_closed_at(bob, 200 * 1024).await;
    let first = counts_agree(&redis, &a, &b).await;
    assert!(first >= 200 * 1024, "{first}");

    // During an outage B counts 200 KiB on its own; when Redis is back they are added
    // once (deltas, not totals: A's part is not counted again).
    redis.kill();
    metric_reaches(&b, "frontgate_state_redis_up", 0.0).await;
    let bob = session(b_addr, &BOB, SNI, LOCAL)
        .await
        .expect("bob served by B without Redis");
    echo_until_closed_at(bob, 200 * 1024).await;
    redis.restart().await;
    metric_reaches(&b, "frontgate_state_redis_up", 1.0).await;
    let second = counts_agree(&redis, &a, &b).await;
    assert!(second >= first + 200 * 1024, "{first} then {second}");
    // A sees the fleet's count: its quota left is the quota less both instances' bytes.
    let left = "frontgate_mtproto_user_quota_left_bytes{user=\"bob\"}";
    metric_reaches(&a, left, (quota - second) as f64).await;

    // Bob uses up the rest through B; A then fronts him too.
    let bob = session(b_addr, &BOB, SNI, LOCAL)
        .await
        .expect("bob served by B");
    let (_, reached) = echo_until_closed(bob, 16 * 1024, (quota - second) as usize).await;
    reached.expect("B cut bob at the quota");
    let started = Instant::now();
    while session(a_addr, &BOB, SNI, LOCAL).await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A kept serving bob over the fleet quota"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        session(b_addr, &BOB, SNI, LOCAL).await.is_none(),
        "B fronts bob"
    );
    assert!(
        session(a_addr, &ALICE, SNI, LOCAL).await.is_some(),
        "alice has no quota"
    );
}

/// Echoes `total` payload bytes both ways through `bob`'s session, then closes it.
async fn echo_until_closed_at((mut w, mut r): (client::Writer, client::Reader), total: usize) {
    client::echo(&mut w, &mut r, total / 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_leaves_the_instance_serving_on_its_own() {
    common::log_capture::start();
    let nothing = RefusingPort::new();
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let url = format!("redis://:{PASSWORD}@{}/0", nothing.addr());
    let (gw, addr) = gateway(&format!(
        "metrics: {{ listen: 127.0.0.1:0 }}\nstate: {{ redis: \"{url}\" }}\nmtproto:\n  datacenters: {{ 2: [{}] }}\n  users:\n    alice: {}\nroutes:\n  - sni: a.test\n    mtproto: true\n    mimic: off\n    to: {}\n",
        dc.addr,
        hex(&ALICE),
        site.addr,
    ))
    .await;
    let shown = format!("redis://:***@{}/0", nothing.addr());
    let warned = || {
        common::log_capture::text()
            .lines()
            .filter(|l| l.contains("Redis does not answer") && l.contains(&shown))
            .count()
    };
    let started = Instant::now();
    while warned() == 0 {
        assert!(
            started.elapsed() < SOON,
            "no warning for a Redis that never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hello = alice_hello();
    assert!(served(addr, &hello).await, "served on the local cache");
    assert!(!served(addr, &hello).await, "whose replays are fronted");
    // Pings keep failing every second: still one warning for the one outage.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(warned(), 1);
    let text = metrics(&gw).await;
    assert_eq!(
        sample(&text, "frontgate_state_redis_up"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "frontgate_state_redis_resyncs_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "frontgate_state_redis_fallbacks_total{kind=\"replay\"}"
        ) >= Some(1.0),
        "{text}"
    );
}
