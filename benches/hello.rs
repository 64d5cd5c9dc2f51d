//! The hello decision at scale: the time from a complete ClientHello to "which user signed it"
//! (`mtproto::gate::check_hello`: the route's users filtered by name, one HMAC-SHA256 over
//! the hello per candidate, a constant-time comparison each), on one core, for 1, 1,000 and
//! 10,000 users. Every user may use the route, so every one is tried; the signing user is the
//! last one. Prints the median and the 99th percentile of single decisions, and the cost per
//! user tried.
//!
//! Run: `cargo bench --bench hello` (`[[bench]] name = "hello" harness = false`). Set
//! `HELLO_BENCH_SECONDS` to change the time spent per size (default 2).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use frontgate::config::users::MtprotoUser;
use frontgate::config::Secret;
use frontgate::mtproto::gate::check_hello;
use frontgate_testkit::mtproto_client::{build_hello, now_unix};

const SNI: &str = "bench.example.com";
const SIZES: [usize; 3] = [1, 1_000, 10_000];

fn users(n: usize) -> Vec<MtprotoUser> {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|i| {
            let mut secret = [0u8; 16];
            rng.fill_bytes(&mut secret);
            MtprotoUser::unlimited(&format!("user{i}"), Secret::from_bytes(secret))
        })
        .collect()
}

/// The decision as it was before the keyed states (the peer measured in the same run): a
/// list of candidates per hello, and HMAC keyed afresh for every user.
fn check_hello_rekeying(users: &[MtprotoUser], record: &[u8], name: &str) -> Option<usize> {
    let candidates: Vec<usize> = (0..users.len())
        .filter(|&i| users[i].policy.allows_name(Some(name)))
        .collect();
    let mut matched = None;
    for (index, &i) in candidates.iter().enumerate() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(users[i].secret.as_bytes()).ok()?;
        mac.update(&record[..11]);
        mac.update(&[0u8; 32]);
        mac.update(&record[43..]);
        let computed = mac.finalize().into_bytes();
        let mut xored = [0u8; 28];
        for (x, (c, r)) in xored.iter_mut().zip(computed.iter().zip(&record[11..39])) {
            *x = c ^ r;
        }
        if bool::from(xored.ct_eq(&[0u8; 28])) && matched.is_none() {
            matched = Some(candidates[index]);
        }
    }
    matched
}

/// Times `decide` until `budget` has passed: (decisions, p50, p99).
fn measure(budget: Duration, mut decide: impl FnMut() -> bool) -> (usize, Duration, Duration) {
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < budget || times.len() < 20 {
        let t = Instant::now();
        let ok = decide();
        times.push(t.elapsed());
        assert!(std::hint::black_box(ok));
    }
    times.sort();
    (
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
    )
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing that matters.
    let seconds: f64 = std::env::var("HELLO_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    println!("| users | decision | decisions | p50 | p99 | per user tried (p50) |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in SIZES {
        let users = users(n);
        let signer = users.last().expect("at least one user").secret.clone();
        let now = now_unix();
        let hello = build_hello(signer.as_bytes(), SNI, &[0x1301, 0x1302], now as u32);
        let skew = Duration::from_secs(600);
        // A check that the decision is the right one.
        let auth = check_hello(&users, &hello.record, Some(SNI), now, skew)
            .expect("the last user signed the hello");
        assert_eq!(auth.user, n - 1);
        assert_eq!(
            check_hello_rekeying(&users, &hello.record, SNI),
            Some(n - 1)
        );

        // The two ways in turns, so both see the same background load.
        let budget = Duration::from_secs_f64(seconds / 4.0);
        let mut rows = [(0, Vec::new(), Vec::new()), (0, Vec::new(), Vec::new())];
        for _ in 0..2 {
            let (k, p50, p99) = measure(budget, || {
                check_hello(&users, &hello.record, Some(SNI), now, skew).is_ok()
            });
            rows[0].0 += k;
            rows[0].1.push(p50);
            rows[0].2.push(p99);
            let (k, p50, p99) = measure(budget, || {
                check_hello_rekeying(&users, &hello.record, SNI).is_some()
            });
            rows[1].0 += k;
            rows[1].1.push(p50);
            rows[1].2.push(p99);
        }
        for (label, (k, p50s, p99s)) in ["keyed states (now)", "re-keying per user (before)"]
            .iter()
            .zip(rows)
        {
            // The better of the two turns: the box is shared, and load only adds time.
            let p50 = *p50s.iter().min().expect("two turns");
            let p99 = *p99s.iter().min().expect("two turns");
            println!(
                "| {n} | {label} | {k} | {:.1} µs | {:.1} µs | {:.0} ns |",
                micros(p50),
                micros(p99),
                p50.as_secs_f64() * 1e9 / n as f64,
            );
        }
    }
}
