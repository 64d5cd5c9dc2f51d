//! The route table: which [`Route`] a connection takes, decided from what the ClientHello said.
//!
//! Names match case-insensitively with one trailing dot ignored. An exact name beats any
//! wildcard; among wildcards the longest suffix wins; `*.example.com` matches any depth below
//! `example.com` but never `example.com` itself. Hellos with no SNI or no match take the
//! `default` route; connections whose first bytes are not TLS take `non_tls`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::netpolicy::AccessLists;
use super::pool::PoolSettings;
use super::tls::TlsSettings;
use super::upstream::Upstream;

/// Which PROXY protocol header, if any, a route writes to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProxyProtocol {
    /// No header: the backend sees the client's bytes only.
    #[default]
    None,
    /// The human-readable `PROXY TCP4 ...\r\n` line.
    V1,
    /// The binary v2 header.
    V2,
}

/// A server-name pattern as written in the route file, already normalised
/// (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// Matches this one name.
    Exact(String),
    /// Matches any name ending in `.` + this suffix (the suffix is stored without the dot).
    Wildcard(String),
}

impl NamePattern {
    /// Parses `name` or `*.suffix`; the error says what is wrong with the name.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.trim().strip_prefix('.') {
            // nginx's `.example.com` means the name and every name below it.
            return Err(format!(
                "invalid server name `{text}`: nginx's `.name` form is two names here: write \
                 [{name}, \"*.{name}\"]"
            ));
        }
        let lowered = text.trim().to_ascii_lowercase();
        let name = lowered.strip_suffix('.').unwrap_or(&lowered);
        let (wildcard, body) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        validate_host_name(body).map_err(|why| format!("invalid server name `{text}`: {why}"))?;
        Ok(if wildcard {
            NamePattern::Wildcard(body.to_string())
        } else {
            NamePattern::Exact(body.to_string())
        })
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(name) => f.write_str(name),
            NamePattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// Why `name` (no `*.`) cannot be a DNS host name, if it cannot: labels of letters, digits,
/// `-` and `_`, within DNS length limits.
pub(super) fn validate_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !name.is_ascii() {
        return Err("not ASCII; write internationalised names in punycode (xn--...)");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if label.contains('*') {
            return Err("`*` is only allowed as the whole first label, as in `*.example.com`");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, `-` and `_` are allowed in a label");
        }
    }
    Ok(())
}

/// Where a plain (not terminated here) connection goes.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Every server's address, in the order written (the pool's servers, backups included).
    pub upstreams: Vec<Upstream>,
    /// The servers with their weights, how one is picked, and the health check.
    pub pool: PoolSettings,
    /// Header written to the backend before the client's bytes.
    pub proxy_protocol: ProxyProtocol,
}

impl Forward {
    /// The short form's meaning: `upstreams` tried in order, no active check.
    pub fn in_order(upstreams: Vec<Upstream>, proxy_protocol: ProxyProtocol) -> Forward {
        Forward {
            pool: PoolSettings::in_order(&upstreams),
            upstreams,
            proxy_protocol,
        }
    }
}

/// A route that terminates TLS here (its terminator is a runtime resource the gateway keeps,
/// keyed by these settings) and relays the decrypted stream to its backend.
#[derive(Debug)]
pub struct Terminate {
    /// What the route file asked for; equal settings across a reload share one terminator.
    pub settings: TlsSettings,
    /// Where the decrypted stream goes.
    pub forward: Forward,
}

/// How the fake server flight of an `mtproto: true` route is shaped (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimicMode {
    /// Each client's hello goes to the backend first; the fake flight mirrors its answer.
    Live,
    /// The profile learned from the backend's last answer (refreshed in the background);
    /// for a `to` far away, where waiting for a live answer would add a round trip.
    Learned,
    /// The fixed shape (x25519, a random 1-4 KiB record): a known fingerprint.
    Off,
}

impl MimicMode {
    /// The mode when the route file names none: `live` when every backend is on this host or
    /// a private network (a live answer costs little there), `learned` otherwise.
    pub fn default_for(upstreams: &[Upstream]) -> MimicMode {
        let near = |u: &Upstream| match u.literal() {
            Some(addr) => match addr.ip().to_canonical() {
                std::net::IpAddr::V4(ip) => {
                    ip.is_loopback() || ip.is_private() || ip.is_link_local()
                }
                std::net::IpAddr::V6(ip) => {
                    ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
                }
            },
            None => u.host() == "localhost",
        };
        if upstreams.iter().all(near) {
            MimicMode::Live
        } else {
            MimicMode::Learned
        }
    }
}

impl fmt::Display for MimicMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MimicMode::Live => "live",
            MimicMode::Learned => "learned",
            MimicMode::Off => "off",
        })
    }
}

/// An `mtproto: true` route: the MTProto gate first, the backend for everything else.
#[derive(Debug, Clone)]
pub struct MtprotoRoute {
    /// Where everything that is not a valid MTProto client goes (and the mirror asks).
    pub forward: Forward,
    /// How the fake server flight is shaped.
    pub mimic: MimicMode,
}

/// What to do with a connection that matched a route.
#[derive(Debug)]
pub enum Action {
    /// Relay the bytes unchanged to a backend.
    Forward(Forward),
    /// Terminate TLS here, relay the plaintext.
    Terminate(Terminate),
    /// Check for a fake-TLS MTProto client first; everything else is forwarded like
    /// [`Action::Forward`] (domain fronting).
    Mtproto(MtprotoRoute),
}

/// One entry of the route table, shared by every name that points at it.
#[derive(Debug)]
pub struct Route {
    /// How the route is named in logs and metrics: its first server name, `default` or `non_tls`.
    /// Server names are validated ([`NamePattern::parse`]), so a label needs no escaping.
    pub label: String,
    /// What the route does.
    pub action: Action,
    /// The route's own `allow`/`deny` lists, checked once a connection is routed here.
    pub access: AccessLists,
}

/// A server name claimed by a route that is added while an earlier route (or the same route,
/// listing it twice) already has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server name `{name}` is already used by routes[{first}]")]
pub struct DuplicateName {
    /// The name.
    pub name: NamePattern,
    /// The index, in the order routes were added, of the route that has the name first.
    pub first: usize,
}

/// The immutable routing decision table; a reload builds a new one.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Arc<Route>>,
    wildcard: HashMap<String, Arc<Route>>,
    default: Option<Arc<Route>>,
    non_tls: Option<Arc<Route>>,
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// An empty table: every connection is closed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route under each of its names; a name already taken is an error, and then the
    /// table is left half-built (it is to be dropped).
    pub fn add(&mut self, names: &[NamePattern], route: Route) -> Result<(), DuplicateName> {
        let route = Arc::new(route);
        for name in names {
            let (map, key) = match name {
                NamePattern::Exact(n) => (&mut self.exact, n),
                NamePattern::Wildcard(s) => (&mut self.wildcard, s),
            };
            if let Some(taken) = map.insert(key.clone(), route.clone()) {
                let first = self
                    .routes
                    .iter()
                    .position(|r| Arc::ptr_eq(r, &taken))
                    .unwrap_or(self.routes.len());
                return Err(DuplicateName {
                    name: name.clone(),
                    first,
                });
            }
        }
        self.routes.push(route);
        Ok(())
    }

    /// Sets the route for hellos without SNI or without a matching name.
    pub fn set_default(&mut self, route: Route) {
        self.default = Some(Arc::new(route));
    }

    /// Sets the route for connections that do not start with a TLS handshake.
    pub fn set_non_tls(&mut self, route: Route) {
        self.non_tls = Some(Arc::new(route));
    }

    /// The route for a TLS ClientHello carrying `sni` (or none): exact, then the longest
    /// wildcard suffix, then `default`.
    pub fn for_server_name(&self, sni: Option<&str>) -> Option<&Arc<Route>> {
        sni.and_then(|name| self.lookup(name))
            .or(self.default.as_ref())
    }

    fn lookup(&self, name: &str) -> Option<&Arc<Route>> {
        let lowered = name.to_ascii_lowercase();
        let name = lowered.strip_suffix('.').unwrap_or(&lowered);
        if let Some(route) = self.exact.get(name) {
            return Some(route);
        }
        // Walk the suffixes from the longest: for a.b.example.com try b.example.com,
        // example.com, com.
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(route) = self.wildcard.get(suffix) {
                return Some(route);
            }
            rest = suffix;
        }
        None
    }

    /// The route for connections whose first bytes are not a TLS handshake.
    pub fn for_non_tls(&self) -> Option<&Arc<Route>> {
        self.non_tls.as_ref()
    }

    /// Every named route, in file order (for `frontgate check` and metrics).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The `default` route, if any.
    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.default.as_ref()
    }

    /// The names (exact and wildcard) that point at `route`, sorted.
    pub fn names_of(&self, route: &Arc<Route>) -> Vec<NamePattern> {
        let mut names: Vec<NamePattern> = self
            .exact
            .iter()
            .filter(|(_, r)| Arc::ptr_eq(r, route))
            .map(|(n, _)| NamePattern::Exact(n.clone()))
            .chain(
                self.wildcard
                    .iter()
                    .filter(|(_, r)| Arc::ptr_eq(r, route))
                    .map(|(n, _)| NamePattern::Wildcard(n.clone())),
            )
            .collect();
        names.sort_by_key(|n| n.to_string());
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(label: &str) -> Route {
        Route {
            label: label.to_string(),
            action: Action::Forward(Forward::in_order(Vec::new(), ProxyProtocol::None)),
            access: AccessLists::default(),
        }
    }

    fn names(list: &[&str]) -> Vec<NamePattern> {
        list.iter()
            .map(|n| NamePattern::parse(n).unwrap())
            .collect()
    }

    fn table() -> RouteTable {
        let mut t = RouteTable::new();
        t.add(&names(&["a.example.com"]), route("exact")).unwrap();
        t.add(&names(&["*.example.com", "example.com"]), route("short"))
            .unwrap();
        t.add(&names(&["*.deep.example.com"]), route("long"))
            .unwrap();
        t.set_default(route("default"));
        t
    }

    fn label(t: &RouteTable, sni: Option<&str>) -> Option<String> {
        t.for_server_name(sni).map(|r| r.label.clone())
    }

    #[test]
    fn exact_beats_wildcard_and_longer_suffix_wins() {
        let t = table();
        assert_eq!(label(&t, Some("a.example.com")).as_deref(), Some("exact"));
        assert_eq!(label(&t, Some("b.example.com")).as_deref(), Some("short"));
        assert_eq!(label(&t, Some("x.y.example.com")).as_deref(), Some("short"));
        assert_eq!(
            label(&t, Some("x.deep.example.com")).as_deref(),
            Some("long")
        );
        assert_eq!(
            label(&t, Some("deep.example.com")).as_deref(),
            Some("short")
        );
        assert_eq!(label(&t, Some("example.com")).as_deref(), Some("short"));
    }

    #[test]
    fn case_and_trailing_dot_are_ignored() {
        let t = table();
        assert_eq!(label(&t, Some("A.Example.COM.")).as_deref(), Some("exact"));
    }

    #[test]
    fn wildcard_never_matches_its_own_suffix() {
        let mut t = RouteTable::new();
        t.add(&names(&["*.example.com"]), route("w")).unwrap();
        assert_eq!(label(&t, Some("example.com")), None);
        assert_eq!(label(&t, Some("notexample.com")), None);
    }

    #[test]
    fn unknown_or_missing_name_takes_default() {
        let t = table();
        assert_eq!(label(&t, Some("other.org")).as_deref(), Some("default"));
        assert_eq!(label(&t, None).as_deref(), Some("default"));
        assert!(RouteTable::new().for_server_name(Some("x")).is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let mut t = table();
        let err = t
            .add(&names(&["A.example.com."]), route("dup"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "server name `a.example.com` is already used by routes[0]"
        );
        let twice = RouteTable::new()
            .add(&names(&["x.example.com", "X.example.com"]), route("twice"))
            .unwrap_err();
        assert_eq!(twice.first, 0, "the route being added is routes[0]");
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in [
            "",
            "a..b",
            "*",
            "a.*.b",
            "x y.com",
            "bücher.de",
            "*.",
            "a*.com",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            NamePattern::parse(".cdn.example.com").unwrap_err(),
            "invalid server name `.cdn.example.com`: nginx's `.name` form is two names here: \
             write [cdn.example.com, \"*.cdn.example.com\"]"
        );
        assert_eq!(
            NamePattern::parse("*.Example.com.").unwrap(),
            NamePattern::Wildcard("example.com".into())
        );
    }
}
