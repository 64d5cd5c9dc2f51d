//! The hello decision at scale: the time from a complete ClientHello to "which user signed it"
//! (`mtproto::gate::check_hello`: the route's users filtered by name, one HMAC-SHA256 over
//! the hello per candidate, a constant-time comparison each, spread over the cores from
//! 1,024 candidates) for 1, 1,000 and 10,000 users, beside two peers on one core: HMAC keyed
//! afresh for every user, and AWS-LC's HMAC with prepared keys; and the floor on one core: a
//! plain SHA-256 of the hello once per user, which any per-user digest of the hello costs at
//! least (an HMAC with prepared states adds one block for its outer hash). Every user may use
//! the route, so every one is tried; the signing user is the last one. Prints the median and
//! the 99th percentile of single decisions, and the cost per user tried.
//!
//! Run: `cargo bench --bench hello` (`[[bench]] name = "hello" harness = false`). Set
//! `HELLO_BENCH_SECONDS` to change the time spent per size (default 2).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
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

/// Whether `computed` (an HMAC of the hello) is the digest in the hello's `random`: its first
/// 28 bytes, compared in constant time, as the proxy does.
fn signed_by(computed: &[u8], record: &[u8]) -> bool {
    let mut xored = [0u8; 28];
    for (x, (c, r)) in xored.iter_mut().zip(computed.iter().zip(&record[11..39])) {
        *x = c ^ r;
    }
    bool::from(xored.ct_eq(&[0u8; 28]))
}

/// The bytes every user's HMAC covers, as the proxy builds them once per hello: the record
/// with its 32-byte `random` zeroed.
fn signed_form(record: &[u8]) -> Vec<u8> {
    let mut signed = record.to_vec();
    signed[11..43].fill(0);
    signed
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
        if signed_by(&mac.finalize().into_bytes(), record) && matched.is_none() {
            matched = Some(candidates[index]);
        }
    }
    matched
}

/// The decision with AWS-LC's HMAC (`aws_lc_rs::hmac`, already the proxy's AES) in place of
/// the `hmac` + `sha2` crates, each user's key prepared once as the proxy prepares its states:
/// the peer that shows which SHA-256 the check should use.
fn check_hello_aws_lc(keys: &[aws_lc_rs::hmac::Key], record: &[u8]) -> Option<usize> {
    let signed = signed_form(record);
    let mut matched = None;
    for (index, key) in keys.iter().enumerate() {
        let computed = aws_lc_rs::hmac::sign(key, &signed);
        if signed_by(computed.as_ref(), record) && matched.is_none() {
            matched = Some(index);
        }
    }
    matched
}

/// The floor: `users` plain SHA-256 digests of the hello as the check signs it (its
/// `random` zeroed), one core. Not a decision: it finds nobody, and stands for the least
/// work a check of that many users can do.
fn hash_hello_per_user(users: usize, record: &[u8]) -> bool {
    let signed = signed_form(record);
    let mut folded = 0u8;
    for _ in 0..users {
        folded ^= Sha256::digest(std::hint::black_box(&signed))[0];
    }
    std::hint::black_box(folded);
    true
}

/// One way of deciding a hello, timed: true when it found the signer (the floor: always).
type Decision<'a> = Box<dyn FnMut() -> bool + 'a>;

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

        let keys: Vec<aws_lc_rs::hmac::Key> = users
            .iter()
            .map(|u| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, u.secret.as_bytes()))
            .collect();
        assert_eq!(check_hello_aws_lc(&keys, &hello.record), Some(n - 1));

        // The ways in turns, so all see the same background load.
        let mut ways: [(&str, Decision); 4] = [
            (
                "keyed states (now)",
                Box::new(|| check_hello(&users, &hello.record, Some(SNI), now, skew).is_ok()),
            ),
            (
                "re-keying per user, one core (before)",
                Box::new(|| check_hello_rekeying(&users, &hello.record, SNI).is_some()),
            ),
            (
                "AWS-LC HMAC, keys prepared, one core",
                Box::new(|| check_hello_aws_lc(&keys, &hello.record).is_some()),
            ),
            (
                "floor: SHA-256 of the hello per user, one core",
                Box::new(|| hash_hello_per_user(n, &hello.record)),
            ),
        ];
        // Two turns of every way share the time given to a size.
        let budget = Duration::from_secs_f64(seconds / (2 * ways.len()) as f64);
        let mut rows: Vec<(usize, Vec<Duration>, Vec<Duration>)> =
            vec![Default::default(); ways.len()];
        for _ in 0..2 {
            for ((_, decide), row) in ways.iter_mut().zip(rows.iter_mut()) {
                let (k, p50, p99) = measure(budget, decide);
                row.0 += k;
                row.1.push(p50);
                row.2.push(p99);
            }
        }
        for ((label, _), (k, p50s, p99s)) in ways.iter().zip(rows) {
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
