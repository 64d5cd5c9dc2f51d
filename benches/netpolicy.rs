//! Cost of the network-policy lookup against a FireHOL-sized deny file: 100 000 networks
//! (a mix of /32 hosts and /24 networks, scattered over the IPv4 space, as FireHOL's
//! aggregated lists are), and the cost of parsing such a file (done on each reload).
//!
//! - `lookup/100k/listed`, `lookup/100k/unlisted`: one `AddressSet::contains` for an address
//!   in the list and for one outside it (the common case: a client that is not denied).
//! - `parse/100k`: `parse_netset` over the file's text (read from memory, not disk).
//!
//! Run: `cargo bench --bench netpolicy` (needs `[[bench]] name = "netpolicy" harness = false`).

use std::net::{IpAddr, Ipv4Addr};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};

use frontgate::config::netpolicy::parse_netset;

const ENTRIES: usize = 100_000;

/// A deny file of [`ENTRIES`] networks and a few addresses it lists and does not list.
fn netset() -> (String, Vec<IpAddr>, Vec<IpAddr>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut text = String::from("# synthetic FireHOL-style list\n");
    let mut listed = Vec::new();
    for i in 0..ENTRIES {
        let addr = Ipv4Addr::from(rng.gen::<u32>() & 0xffff_ff00);
        if i % 2 == 0 {
            text.push_str(&format!("{addr}/24\n"));
        } else {
            text.push_str(&format!("{addr}\n"));
        }
        listed.push(IpAddr::V4(addr));
    }
    let set = parse_netset(text.as_bytes(), "bench").expect("valid");
    let unlisted = (0..1000)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>())))
        .filter(|ip| !set.contains(*ip))
        .collect();
    (text, listed, unlisted)
}

fn bench(c: &mut Criterion) {
    let (text, listed, unlisted) = netset();
    let set = parse_netset(text.as_bytes(), "bench").expect("valid");
    let mut group = c.benchmark_group("lookup/100k");
    for (name, addrs) in [("listed", &listed), ("unlisted", &unlisted)] {
        let mut next = addrs.iter().cycle();
        group.bench_function(name, |b| {
            b.iter(|| set.contains(black_box(*next.next().expect("cycles"))))
        });
    }
    group.finish();
    c.bench_function("parse/100k", |b| {
        b.iter(|| parse_netset(black_box(text.as_bytes()), "bench"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
