//! Users as a managed resource, through the whole gateway on loopback: quotas, expiry,
//! connection and address limits, per-user names and the shared rate limit. A refused user
//! is fronted to the site like any visitor (the site answers `site\n`); live sessions of a
//! user who may no longer be served are cut within a second.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::fake_dc;
use common::mtproto_client as client;
use common::sessions::{echo_paced_until_closed, echo_until_closed, session, LOCAL};
use common::*;

const ALICE: [u8; 16] = [0xa1; 16];
const BOB: [u8; 16] = [0xb0; 16];
const SNI: &str = "a.test";

/// A gateway with `users` (YAML lines under `mtproto.users`, indented by four) on two
/// `mtproto: true` routes, a.test and b.test, whose site is `site`.
async fn users_gateway(
    users: &str,
    site: SocketAddr,
    dc: SocketAddr,
) -> (frontgate::server::gateway::Gateway, SocketAddr) {
    gateway(&format!(
        "mtproto:\n  datacenters: {{ 2: [{dc}] }}\n  users:\n{users}routes:\n  - sni: [a.test, b.test]\n    mtproto: true\n    mimic: off\n    to: {site}\n"
    ))
    .await
}

fn hex(secret: &[u8; 16]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_quota_is_cut_within_a_second_and_then_fronted() {
    common::log_capture::start();
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let quota = 1 << 20;
    let users = format!(
        "    alice: {}\n    bob:\n      secret: {}\n      quota: {{bytes: {quota}, period: total}}\n",
        hex(&ALICE),
        hex(&BOB)
    );
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    let alice = session(addr, &ALICE, SNI, LOCAL)
        .await
        .expect("alice served");
    let bob = session(addr, &BOB, SNI, LOCAL).await.expect("bob served");
    // Paced (at most ~0.8 MB/s), so "cut late" means the check, not the relay's speed: the
    // policy check runs every 250 ms while a fast relay moves megabytes in that time.
    let pace = Duration::from_millis(10);
    let (moved, reached) = echo_paced_until_closed(bob, 4096, quota, pace).await;
    let reached = reached.expect("bob moved his quota's worth");
    assert!(moved <= quota + 2 * 1024 * 1024, "cut late: {moved} bytes");
    let late = reached.elapsed();
    assert!(
        late < Duration::from_secs(1),
        "cut {late:?} after the quota"
    );
    // His next hello is a visitor's; alice is untouched.
    assert!(
        session(addr, &BOB, SNI, LOCAL).await.is_none(),
        "bob fronted"
    );
    let (mut w, mut r) = alice;
    client::echo(&mut w, &mut r, 64 * 1024).await;
    let log = common::log_capture::text();
    assert!(
        log.contains("mtproto user refused: over_quota user=bob from 127.0.0.1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_user_is_cut_at_the_moment_and_then_fronted() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let users = format!(
        "    bob:\n      secret: {}\n      expires: {}\n",
        hex(&BOB),
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    let bob = session(addr, &BOB, SNI, LOCAL)
        .await
        .expect("served before");
    let (_, _) = echo_until_closed(bob, 1024, usize::MAX).await;
    // The expiry has whole seconds; the cut comes within a second of it.
    let expired = std::time::SystemTime::from(at);
    let late = std::time::SystemTime::now()
        .duration_since(expired)
        .unwrap_or_default();
    assert!(late < Duration::from_secs(1), "cut {late:?} after expiry");
    assert!(session(addr, &BOB, SNI, LOCAL).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_address_limits_front_the_extra_sessions() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let users = format!(
        "    alice:\n      secret: {}\n      max_connections: 2\n    bob:\n      secret: {}\n      max_ips: 1\n",
        hex(&ALICE),
        hex(&BOB)
    );
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    let a1 = session(addr, &ALICE, SNI, LOCAL).await.expect("first");
    let _a2 = session(addr, &ALICE, SNI, LOCAL).await.expect("second");
    assert!(session(addr, &ALICE, SNI, LOCAL).await.is_none(), "third");
    drop(a1);
    let freed = async {
        loop {
            if let Some(s) = session(addr, &ALICE, SNI, LOCAL).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _a3 = tokio::time::timeout(SOON, freed)
        .await
        .expect("a slot freed");

    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let _b1 = session(addr, &BOB, SNI, LOCAL)
        .await
        .expect("bob's first address");
    let _b2 = session(addr, &BOB, SNI, LOCAL)
        .await
        .expect("same address again");
    assert!(
        session(addr, &BOB, SNI, other).await.is_none(),
        "a second address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_use_only_their_own_names() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let users = format!(
        "    alice:\n      secret: {}\n      routes: [a.test]\n    bob:\n      secret: {}\n      routes: [B.test]\n",
        hex(&ALICE),
        hex(&BOB)
    );
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    assert!(session(addr, &ALICE, "a.test", LOCAL).await.is_some());
    assert!(
        session(addr, &ALICE, "b.test", LOCAL).await.is_none(),
        "alice on bob's name"
    );
    assert!(session(addr, &BOB, "b.test", LOCAL).await.is_some());
    assert!(
        session(addr, &BOB, "a.test", LOCAL).await.is_none(),
        "bob on alice's name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_user_set_is_checked_across_the_cores_and_the_right_user_is_served() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    // More users than one core checks alone (faketls::PARALLEL_FROM): the digest check
    // is split over threads while tokio moves the worker's other tasks away. Alice is last,
    // Bob in the middle, each with a name of their own so a wrong index would show.
    let many = 2 * frontgate::mtproto::faketls::PARALLEL_FROM;
    let mut users = String::new();
    for i in 0..many {
        let mut secret = [0x5au8; 16];
        secret[..4].copy_from_slice(&(i as u32).to_le_bytes());
        users.push_str(&format!("    u{i}: {}\n", hex(&secret)));
        if i == many / 2 {
            users.push_str(&format!(
                "    bob:\n      secret: {}\n      routes: [b.test]\n",
                hex(&BOB)
            ));
        }
    }
    users.push_str(&format!(
        "    alice:\n      secret: {}\n      routes: [a.test]\n",
        hex(&ALICE)
    ));
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    let (alice, bob) = tokio::join!(
        session(addr, &ALICE, "a.test", LOCAL),
        session(addr, &BOB, "b.test", LOCAL)
    );
    assert!(alice.is_some() && bob.is_some(), "both users are served");
    assert!(
        session(addr, &ALICE, "b.test", LOCAL).await.is_none(),
        "alice on bob's name: the check found alice, not a neighbour"
    );
}

/// Echoes `total` payload bytes (the sender in a task of its own, so both directions run
/// at once) and returns the payload bytes per second that came back.
async fn echo_rate((mut w, mut r): (client::Writer, client::Reader), total: usize) -> f64 {
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let chunk = vec![1u8; 16 * 1024];
        for _ in 0..total / chunk.len() {
            w.send(&chunk).await.unwrap();
        }
        w
    });
    let got = (total / (16 * 1024)) * 16 * 1024;
    tokio::time::timeout(Duration::from_secs(30), r.recv_exact(got))
        .await
        .expect("the echo came back")
        .unwrap();
    drop(sender.await.unwrap());
    got as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_for_one_and_for_four_sessions() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    // Well below what a debug build echoes on a loaded machine, so the limit is what shows.
    let rate = 200_000.0;
    let users = format!("    bob:\n      secret: {}\n      rate: 200kB\n", hex(&BOB));
    let (_gw, addr) = users_gateway(&users, site.addr, dc.addr).await;
    let one = session(addr, &BOB, SNI, LOCAL).await.unwrap();
    let measured = echo_rate(one, 1_000_000).await;
    assert!(
        (measured - rate).abs() <= 0.1 * rate,
        "one session: {measured:.0} B/s"
    );

    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(session(addr, &BOB, SNI, LOCAL).await.unwrap());
    }
    // Four sessions sharing the limit: 250 kB each, the rate over all of them.
    let started = Instant::now();
    let four: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(echo_rate(s, 250_000)))
        .collect();
    for s in four {
        s.await.unwrap();
    }
    let total =
        4.0 * ((250_000 / (16 * 1024)) * 16 * 1024) as f64 / started.elapsed().as_secs_f64();
    assert!(
        (total - rate).abs() <= 0.1 * rate,
        "four sessions: {total:.0} B/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_show_each_users_state_quota_and_refusals() {
    let site = Backend::start("site").await;
    let dc = fake_dc::spawn().await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_gw, addr) = gateway(&format!(
        "metrics: {{ listen: {metrics} }}\nmtproto:\n  datacenters: {{ 2: [{}] }}\n  users:\n    alice:\n      secret: {}\n      quota: {{ bytes: 10MB }}\n    bob:\n      secret: {}\n      enabled: false\nroutes:\n  - sni: {SNI}\n    mtproto: true\n    mimic: off\n    to: {}\n",
        dc.addr,
        hex(&ALICE),
        hex(&BOB),
        site.addr
    ))
    .await;
    assert!(
        session(addr, &BOB, SNI, LOCAL).await.is_none(),
        "bob is disabled"
    );
    let (mut w, mut r) = session(addr, &ALICE, SNI, LOCAL).await.unwrap();
    client::echo(&mut w, &mut r, 100_000).await;

    // The relay counts a chunk once its write has finished, which can be just after the
    // client has read it: wait (bounded) until the echo's 200 kB are all counted.
    let deadline = Instant::now() + SOON;
    let stats = loop {
        let stats: serde_json::Value =
            serde_json::from_str(&http_get(metrics, "/stats").await).unwrap();
        let left = stats["mtproto_users"]["alice"]["quota_left"]
            .as_u64()
            .unwrap();
        if left <= 10_000_000 - 200_000 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let users = &stats["mtproto_users"];
    assert_eq!(users["bob"]["state"], "disabled");
    assert_eq!(users["bob"]["refusals"]["disabled"], 1);
    assert_eq!(users["alice"]["state"], "active");
    assert_eq!(users["alice"]["active"], 1);
    assert_eq!(users["alice"]["ips"], 1);
    let left = users["alice"]["quota_left"].as_u64().unwrap();
    assert!(left <= 10_000_000 - 200_000, "{left}");

    let text = http_get(metrics, "/metrics").await;
    for line in [
        "frontgate_mtproto_user_refusals_total{user=\"bob\",reason=\"disabled\"} 1",
        "frontgate_mtproto_user_state{user=\"bob\",state=\"disabled\"} 1",
        "frontgate_mtproto_user_state{user=\"alice\",state=\"active\"} 1",
        "frontgate_mtproto_user_active{user=\"alice\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(text.contains("frontgate_mtproto_user_quota_left_bytes{user=\"alice\"}"));
    assert!(!text.contains("frontgate_mtproto_user_quota_left_bytes{user=\"bob\"}"));
}
