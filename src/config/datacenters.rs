//! Where each Telegram datacenter is: the built-in direct-mode table (PROTOCOL.md §6) plus
//! per-DC overrides from `mtproto.datacenters`, and the mapping from the DC index a client
//! puts in its init to the addresses to dial.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Telegram's DC port in direct mode.
pub const DC_PORT: u16 = 443;

/// The DC used for an index the table does not know (0, or an id with no entry), as mtg does
/// with `allow-fallback-on-unknown-dc`: the client then talks to DC 2, which redirects it to
/// its home DC on the MTProto level. (mtprotoproxy drops such connections instead; falling
/// back keeps odd clients working and costs nothing.)
pub const FALLBACK_DC: i16 = 2;

/// Test DC indices are the production index plus this (TDLib's convention).
const TEST_DC_OFFSET: i32 = 10_000;

const BUILTIN_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(149, 154, 175, 50),
    Ipv4Addr::new(149, 154, 167, 51),
    Ipv4Addr::new(149, 154, 175, 100),
    Ipv4Addr::new(149, 154, 167, 91),
    Ipv4Addr::new(149, 154, 171, 5),
];

const BUILTIN_V6: [Ipv6Addr; 5] = [
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa),
];

/// One address to dial for a DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcAddr {
    /// A literal socket address.
    Ip(SocketAddr),
    /// A host name, resolved at connect time.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for DcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DcAddr::Ip(addr) => write!(f, "{addr}"),
            DcAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A `mtproto.datacenters` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcTableError {
    /// DC ids are positive (media and test DCs map onto them).
    #[error("datacenter id {0} is invalid: use a positive DC id such as 1..5")]
    BadId(i16),
    /// An id with no addresses.
    #[error("datacenter {0} has no addresses")]
    Empty(i16),
    /// Not `host:port` / `ip:port` / `[ipv6]:port`.
    #[error("datacenter {dc}: {address:?} is not host:port (IPv6 as [addr]:port)")]
    BadAddress {
        /// The DC id.
        dc: i16,
        /// The offending entry.
        address: String,
    },
}

/// The DC address book used to dial Telegram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DcTable {
    overrides: HashMap<i16, Vec<DcAddr>>,
}

impl DcTable {
    /// The built-in table only.
    pub fn new() -> DcTable {
        DcTable::default()
    }

    /// The built-in table with some DC ids replaced by the given `host:port` lists (tried in
    /// order). Ids not listed keep the built-in addresses; new ids (e.g. 203) are added.
    pub fn with_overrides(overrides: HashMap<i16, Vec<String>>) -> Result<DcTable, DcTableError> {
        let mut table = HashMap::with_capacity(overrides.len());
        for (dc, list) in overrides {
            if dc <= 0 {
                return Err(DcTableError::BadId(dc));
            }
            if list.is_empty() {
                return Err(DcTableError::Empty(dc));
            }
            let parsed = list
                .iter()
                .map(|a| {
                    parse_addr(a).ok_or_else(|| DcTableError::BadAddress {
                        dc,
                        address: a.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            table.insert(dc, parsed);
        }
        Ok(DcTable { overrides: table })
    }

    /// The DC id whose addresses serve client index `idx`: media DCs (negative) use the same
    /// DC in direct mode, test DCs (|idx| >= 10000) map to `|idx| - 10000`, and an index with
    /// no entry falls back to [`FALLBACK_DC`].
    pub fn target_dc(&self, idx: i16) -> i16 {
        let mut id = i32::from(idx).abs();
        if id >= TEST_DC_OFFSET {
            id -= TEST_DC_OFFSET;
        }
        // |i16| - 10000 always fits i16.
        let id = i16::try_from(id).unwrap_or(FALLBACK_DC);
        let known = self.overrides.contains_key(&id) || (1..=BUILTIN_V4.len() as i16).contains(&id);
        if known {
            id
        } else {
            FALLBACK_DC
        }
    }

    /// The addresses to dial, in order, for client DC index `idx` (see
    /// [`target_dc`](Self::target_dc)). Built-in DCs list both address families, the
    /// preferred one first; an override list is used as given.
    pub fn addresses(&self, idx: i16, prefer_ipv6: bool) -> Vec<DcAddr> {
        let id = self.target_dc(idx);
        if let Some(list) = self.overrides.get(&id) {
            return list.clone();
        }
        let slot = usize::try_from(id - 1)
            .unwrap_or(0)
            .min(BUILTIN_V4.len() - 1);
        let v4 = DcAddr::Ip(SocketAddr::new(IpAddr::V4(BUILTIN_V4[slot]), DC_PORT));
        let v6 = DcAddr::Ip(SocketAddr::new(IpAddr::V6(BUILTIN_V6[slot]), DC_PORT));
        if prefer_ipv6 {
            vec![v6, v4]
        } else {
            vec![v4, v6]
        }
    }
}

fn parse_addr(text: &str) -> Option<DcAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(DcAddr::Ip(addr));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    // All digits and dots is a mistyped IPv4 address (`300.1.1.1`), never a host name.
    let host_ok = !host.is_empty()
        && !host.contains(':')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    host_ok.then(|| DcAddr::Host {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> DcAddr {
        DcAddr::Ip(s.parse().unwrap())
    }

    #[test]
    fn builtin_table_and_family_order() {
        let t = DcTable::new();
        assert_eq!(
            t.addresses(1, false),
            vec![ip("149.154.175.50:443"), ip("[2001:b28:f23d:f001::a]:443")]
        );
        assert_eq!(
            t.addresses(5, true),
            vec![ip("[2001:b28:f23f:f005::a]:443"), ip("149.154.171.5:443")]
        );
        let v4: Vec<_> = (1..=5)
            .map(|i| t.addresses(i, false)[0].to_string())
            .collect();
        assert_eq!(
            v4,
            [
                "149.154.175.50:443",
                "149.154.167.51:443",
                "149.154.175.100:443",
                "149.154.167.91:443",
                "149.154.171.5:443"
            ]
        );
        let v6: Vec<_> = (1..=5)
            .map(|i| t.addresses(i, true)[0].to_string())
            .collect();
        assert_eq!(
            v6,
            [
                "[2001:b28:f23d:f001::a]:443",
                "[2001:67c:4e8:f002::a]:443",
                "[2001:b28:f23d:f003::a]:443",
                "[2001:67c:4e8:f004::a]:443",
                "[2001:b28:f23f:f005::a]:443"
            ]
        );
    }

    #[test]
    fn index_mapping() {
        let t = DcTable::new();
        assert_eq!(t.target_dc(-4), 4, "media DC uses the same DC");
        assert_eq!(t.target_dc(10003), 3, "test DC");
        assert_eq!(t.target_dc(-10005), 5, "media test DC");
        assert_eq!(t.target_dc(0), FALLBACK_DC);
        assert_eq!(t.target_dc(6), FALLBACK_DC);
        assert_eq!(t.target_dc(203), FALLBACK_DC);
        assert_eq!(t.target_dc(i16::MIN), FALLBACK_DC);
        assert_eq!(t.target_dc(i16::MAX), FALLBACK_DC);
        assert_eq!(t.addresses(-4, false), t.addresses(4, false));
        assert_eq!(t.addresses(99, false), t.addresses(2, false));
    }

    #[test]
    fn overrides_replace_and_extend() {
        let t = DcTable::with_overrides(HashMap::from([
            (
                2,
                vec!["127.0.0.1:4002".to_owned(), "dc2.example:4443".to_owned()],
            ),
            (203, vec!["[::1]:4203".to_owned()]),
        ]))
        .unwrap();
        let dc2 = vec![
            ip("127.0.0.1:4002"),
            DcAddr::Host {
                host: "dc2.example".into(),
                port: 4443,
            },
        ];
        assert_eq!(t.addresses(2, true), dc2);
        assert_eq!(t.addresses(-2, false), dc2);
        assert_eq!(t.addresses(10002, false), dc2);
        assert_eq!(t.addresses(0, false), dc2, "fallback uses the override too");
        assert_eq!(t.addresses(-203, false), vec![ip("[::1]:4203")]);
        assert_eq!(t.target_dc(203), 203);
        assert_eq!(
            t.addresses(1, false)[0],
            ip("149.154.175.50:443"),
            "others untouched"
        );
    }

    #[test]
    fn override_errors() {
        let err = |dc: i16, a: &str| {
            DcTable::with_overrides(HashMap::from([(dc, vec![a.to_owned()])])).unwrap_err()
        };
        assert_eq!(err(0, "1.2.3.4:1"), DcTableError::BadId(0));
        assert_eq!(err(-2, "1.2.3.4:1"), DcTableError::BadId(-2));
        assert_eq!(
            DcTable::with_overrides(HashMap::from([(1, vec![])])).unwrap_err(),
            DcTableError::Empty(1)
        );
        for bad in [
            "1.2.3.4",
            "::1:443",
            "host:99999",
            ":443",
            "bad host:1",
            "h:",
            "300.1.1.1:443",
        ] {
            assert!(
                matches!(err(1, bad), DcTableError::BadAddress { dc: 1, .. }),
                "{bad}"
            );
        }
        assert!(err(3, "nope").to_string().contains("host:port"));
    }
}
