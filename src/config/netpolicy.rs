//! Network policies as data: the `allow`/`deny` lists of the route file (global, per route,
//! on `default:`) and the `deny_file` it names, each compiled into an [`AddressSet`] that
//! answers "is this address in the list" with a binary search, however long the list.
//!
//! The deny file is FireHOL's `.netset` format: one network (CIDR) or address per line, `#`
//! starts a comment, blank lines are skipped. Its contents are parsed here
//! ([`parse_netset`]); reading it from disk is the gateway's job, as for certificate files.
//!
//! Addresses are compared in canonical form: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
//! as a dual-stack socket reports an IPv4 client) is the IPv4 address, in a list as in a
//! client's address.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::values::{Network, OneOrMany};

/// A set of networks, merged into sorted disjoint address ranges per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    /// How many networks were written (before merging), for `frontgate check`.
    written: usize,
}

impl AddressSet {
    /// The set of `nets`; a network written with host bits set (`10.1.2.3/8`) means its whole
    /// network (`10.0.0.0/8`), a bare address is a network of one.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> AddressSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut written = 0;
        for net in nets {
            written += 1;
            match canonical_net(net) {
                IpNet::V4(net) => v4.push((u32::from(net.network()), u32::from(net.broadcast()))),
                IpNet::V6(net) => v6.push((u128::from(net.network()), u128::from(net.broadcast()))),
            }
        }
        AddressSet {
            v4: Ranges::merged(v4),
            v6: Ranges::merged(v6),
            written,
        }
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.contains(u32::from(ip)),
            IpAddr::V6(ip) => self.v6.contains(u128::from(ip)),
        }
    }

    /// Whether no network was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// How many networks were written.
    pub fn len(&self) -> usize {
        self.written
    }
}

/// `::ffff:a.b.c.d/n` with n >= 96 is the IPv4 network `a.b.c.d/(n-96)`; host bits cleared.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, |n| IpNet::V4(n.trunc()))
            }
            None => IpNet::V6(v6.trunc()),
        },
        other => other.trunc(),
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges<T>(Vec<(T, T)>);

/// What a range bound needs: order, and the next value (none after the last address).
trait Bound: Ord + Copy {
    fn next(self) -> Option<Self>;
}

impl Bound for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Bound for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<T: Bound> Ranges<T> {
    /// Sorts `ranges` and joins those that overlap or touch.
    fn merged(mut ranges: Vec<(T, T)>) -> Ranges<T> {
        ranges.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match out.last_mut() {
                Some(last) if last.1.next().is_none_or(|after| start <= after) => {
                    last.1 = last.1.max(end);
                }
                _ => out.push((start, end)),
            }
        }
        out.shrink_to_fit();
        Ranges(out)
    }

    /// Whether `value` is in one of the ranges: a binary search for the last range starting
    /// at or before it.
    fn contains(&self, value: T) -> bool {
        let after = self.0.partition_point(|(start, _)| *start <= value);
        after > 0 && self.0[after - 1].1 >= value
    }
}

/// The `allow` and `deny` lists of one scope (the whole gateway, or one route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLists {
    /// When given, an address outside it is refused.
    pub allow: Option<AddressSet>,
    /// Always refused, even when also allowed ("deny wins").
    pub deny: AddressSet,
}

impl AccessLists {
    /// Whether the lists refuse nobody (neither list given).
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// The lists of one scope as the route file writes them (each value already checked).
pub(super) fn access_lists(
    allow: &Option<OneOrMany<Network>>,
    deny: &Option<OneOrMany<Network>>,
) -> AccessLists {
    let set = |list: &OneOrMany<Network>| AddressSet::new(list.0.iter().map(|n| n.0));
    AccessLists {
        allow: allow.as_ref().map(set),
        deny: deny.as_ref().map(set).unwrap_or_default(),
    }
}

/// The largest deny file read: FireHOL's biggest lists are a few MiB; a file far larger is a
/// mistake (a log or a disk image named by accident), not a list.
pub const DENY_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How much of a bad line an error quotes.
const QUOTED_MAX: usize = 80;

/// Why a deny file was refused; the running list keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum DenyFileError {
    /// The file could not be read.
    #[error("cannot read deny_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is over [`DENY_FILE_MAX_BYTES`].
    #[error("deny_file {path} is larger than {max} bytes: not a list of networks", max = DENY_FILE_MAX_BYTES)]
    TooLarge {
        /// The file.
        path: String,
    },
    /// A line that is neither a network, an address, a comment nor blank.
    #[error(
        "{path}:{line}: `{text}` is not a network or an address (expected one per line, like \
         198.51.100.0/24, 2001:db8::/32 or 192.0.2.7; `#` starts a comment); the file is refused"
    )]
    BadLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The line as written (escaped, cut at 80 characters).
        text: String,
    },
}

/// Parses a FireHOL `.netset` file's `bytes`; `origin` names it in errors. Every line must be
/// valid: one bad line refuses the whole file.
pub fn parse_netset(bytes: &[u8], origin: &str) -> Result<AddressSet, DenyFileError> {
    let mut nets = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let bad = || DenyFileError::BadLine {
            path: origin.to_string(),
            line: index + 1,
            text: quoted(raw),
        };
        let line = std::str::from_utf8(raw).map_err(|_| bad())?;
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        nets.push(parse_network(entry).ok_or_else(bad)?);
    }
    Ok(AddressSet::new(nets))
}

/// A CIDR network, or a bare address meaning that one host (/32 or /128).
pub fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `raw` for an error message: lossy UTF-8, control characters escaped, at most
/// [`QUOTED_MAX`] characters.
fn quoted(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    let mut out: String = text.chars().take(QUOTED_MAX).collect::<String>();
    if text.chars().count() > QUOTED_MAX {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn set(nets: &[&str]) -> AddressSet {
        AddressSet::new(nets.iter().map(|n| parse_network(n).unwrap()))
    }

    #[test]
    fn networks_and_bare_addresses_match_what_they_cover() {
        let s = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]);
        for inside in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.7",
            "2001:db8:ffff::1",
            "::1",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.2.6",
            "192.0.2.8",
            "2001:db9::",
            "::2",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn mapped_addresses_are_ipv4_in_lists_and_clients() {
        let s = set(&["198.51.100.0/24", "::ffff:203.0.113.0/120"]);
        assert!(s.contains(ip("::ffff:198.51.100.9")));
        assert!(s.contains(ip("203.0.113.200")));
        assert!(!s.contains(ip("203.0.114.1")));
    }

    #[test]
    fn host_bits_are_cleared_and_overlaps_merge() {
        let s = set(&["10.1.2.3/8", "10.0.0.0/9", "11.0.0.0/8", "0.0.0.0/0"]);
        assert_eq!(
            s.v4.0,
            vec![(0, u32::MAX)],
            "everything, merged into one range"
        );
        let touching = set(&["192.0.2.0/25", "192.0.2.128/25", "192.0.3.1"]);
        assert_eq!(touching.v4.0.len(), 2);
        assert!(touching.contains(ip("192.0.2.200")));
        assert!(!touching.contains(ip("192.0.3.0")));
        let all6 = set(&["::/0", "::/1"]);
        assert!(all6.contains(ip("ffff::1")) && !all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn netset_comments_blanks_and_crlf_are_skipped() {
        let text =
            b"#\n# FireHOL list\n\n192.0.2.0/24\r\n  198.51.100.7  # one host\n2001:db8::/48\n";
        let s = parse_netset(text, "deny.netset").unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.contains(ip("192.0.2.9")) && s.contains(ip("198.51.100.7")));
        assert!(parse_netset(b"", "empty").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_refused_at_its_line() {
        let err = parse_netset(b"# ok\n192.0.2.0/24\n192.0.2.0/33\n", "deny.netset").unwrap_err();
        assert_eq!(
            err.to_string().split(" is not").next().unwrap(),
            "deny.netset:3: `192.0.2.0/33`"
        );
        let err = parse_netset(b"10.0.0.0/8\n\xff\x1b[31m\n", "d").unwrap_err();
        let DenyFileError::BadLine { line, text, .. } = err else {
            panic!("{err}")
        };
        assert_eq!((line, text.as_str()), (2, "\u{fffd}\\u{1b}[31m"));
        let long = "x".repeat(500);
        let err = parse_netset(long.as_bytes(), "d").unwrap_err().to_string();
        assert!(err.len() < 400, "{err}");
    }

    fn config(text: &str) -> Result<crate::config::Config, String> {
        crate::config::parse(text, "routes.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn the_route_file_lists_compile_per_scope() {
        let c = config(
            "listen: 127.0.0.1:1\nallow: [10.0.0.0/8, \"::1\"]\ndeny: 10.9.0.0/16\n\
             deny_file: /etc/frontgate/deny.netset\n\
             routes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    deny: [127.0.0.3]\n\
             default: { to: 127.0.0.1:2, allow: 127.0.0.0/8 }\n",
        )
        .unwrap();
        let allow = c.access.allow.as_ref().expect("a global allow list");
        assert!(allow.contains(ip("10.1.1.1")) && allow.contains(ip("::1")));
        assert!(c.access.deny.contains(ip("10.9.0.1")));
        assert_eq!(
            c.deny_file.as_deref(),
            Some(std::path::Path::new("/etc/frontgate/deny.netset"))
        );
        let route = c.routes.for_server_name(Some("a.example.com")).unwrap();
        assert!(route.access.allow.is_none() && route.access.deny.contains(ip("127.0.0.3")));
        let default = c.routes.for_server_name(None).unwrap();
        assert!(default
            .access
            .allow
            .as_ref()
            .unwrap()
            .contains(ip("127.1.2.3")));
        let plain = config("listen: 127.0.0.1:1\ndefault: { to: 127.0.0.1:2 }\n").unwrap();
        assert!(plain.access.is_open() && plain.deny_file.is_none());
    }

    #[test]
    fn a_bad_network_is_reported_at_its_line_and_column() {
        let err = config(
            "listen: 127.0.0.1:1\ndeny: [10.0.0.0/8, 10.0.0.0/40]\ndefault: { to: 127.0.0.1:2 }\n",
        )
        .unwrap_err();
        assert!(err.starts_with("routes.yaml:2:20: "), "{err}");
        assert!(err.contains("invalid network `10.0.0.0/40`"), "{err}");
        let err = config(
            "listen: 127.0.0.1:1\nroutes:\n  - sni: a.example.com\n    to: 127.0.0.1:2\n    allow:\n      - 192.0.2.0/24\n      - nonsense\n",
        )
        .unwrap_err();
        assert!(err.starts_with("routes.yaml:7:9: "), "{err}");
        assert!(err.contains("routes[0].allow"), "{err}");
        let err =
            config("listen: 127.0.0.1:1\nallow: []\ndefault: { to: 127.0.0.1:2 }\n").unwrap_err();
        assert!(err.contains("the list is empty"), "{err}");
    }

    #[test]
    fn non_tls_has_no_lists_of_its_own() {
        let err = config("listen: 127.0.0.1:1\nnon_tls:\n  to: 127.0.0.1:2\n  deny: [192.0.2.1]\n")
            .unwrap_err();
        assert!(err.starts_with("routes.yaml:4:3: non_tls.deny: "), "{err}");
    }

    /// A FireHOL-sized list (100k entries) answers a lookup in a binary search: measured
    /// here, not asserted (no timing assertions), printed with `--nocapture`.
    #[test]
    fn a_hundred_thousand_entries_build_and_answer() {
        let text: String = (0..100_000u32)
            .map(|i| format!("{}/32\n", std::net::Ipv4Addr::from(0x0a00_0000 + i * 3)))
            .collect();
        let started = std::time::Instant::now();
        let s = parse_netset(text.as_bytes(), "big.netset").unwrap();
        let parsed = started.elapsed();
        assert_eq!(s.len(), 100_000);
        let started = std::time::Instant::now();
        let mut hits = 0;
        for i in 0..300_000u32 {
            hits +=
                usize::from(s.contains(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
        }
        let looked = started.elapsed();
        assert_eq!(hits, 100_000, "every third address is listed");
        println!(
            "100k-entry netset: parsed in {parsed:?}, {:?} per lookup",
            looked / 300_000
        );
    }
}
