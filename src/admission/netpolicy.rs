//! Network policy checks: whether a client address may go on, by the global lists (checked
//! at accept, or right after the inbound PROXY header of a trusted balancer) and by its
//! route's lists (checked once the route is decided). Deny wins: a denied address is refused
//! even when an `allow` list also names it; when an `allow` list is given, an address outside
//! it is refused.

use std::fmt;
use std::net::IpAddr;

use crate::config::{AccessLists, AddressSet, Route};

/// Which list refused a connection: the `rule` label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The address is in a `deny` list of the route file.
    Deny,
    /// The address is in the `deny_file`.
    DenyFile,
    /// An `allow` list is given and the address is not in it.
    NotAllowed,
}

impl Rule {
    /// The rule's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Deny => "deny",
            Rule::DenyFile => "deny_file",
            Rule::NotAllowed => "not_allowed",
        }
    }
}

/// Where the refusing list is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The top-level lists (and the deny file).
    Global,
    /// The lists of the route with this label.
    Route(String),
}

impl Scope {
    /// The `scope` label: `global`, or the route's label.
    pub fn label(&self) -> &str {
        match self {
            Scope::Global => "global",
            Scope::Route(label) => label,
        }
    }
}

/// A connection refused by a network policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The list that refused it.
    pub rule: Rule,
    /// Where that list is written.
    pub scope: Scope,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Global => write!(f, "{} (global)", self.rule.as_str()),
            Scope::Route(label) => write!(f, "{} (route {label})", self.rule.as_str()),
        }
    }
}

/// The global check: the top-level lists and the deny file, as loaded for the snapshot the
/// connection is served with.
pub fn check_global(
    lists: &AccessLists,
    deny_file: Option<&AddressSet>,
    client: IpAddr,
) -> Result<(), Refusal> {
    match verdict(lists, deny_file, client) {
        None => Ok(()),
        Some(rule) => Err(Refusal {
            rule,
            scope: Scope::Global,
        }),
    }
}

/// The check of the route a connection was routed to.
pub fn check_route(route: &Route, client: IpAddr) -> Result<(), Refusal> {
    match verdict(&route.access, None, client) {
        None => Ok(()),
        Some(rule) => Err(Refusal {
            rule,
            scope: Scope::Route(route.label.clone()),
        }),
    }
}

/// The rule that refuses `client`, if any: the deny lists first (deny wins), then `allow`.
fn verdict(lists: &AccessLists, deny_file: Option<&AddressSet>, client: IpAddr) -> Option<Rule> {
    if lists.is_open() && deny_file.is_none() {
        return None;
    }
    if lists.deny.contains(client) {
        return Some(Rule::Deny);
    }
    if deny_file.is_some_and(|set| set.contains(client)) {
        return Some(Rule::DenyFile);
    }
    match &lists.allow {
        Some(allow) if !allow.contains(client) => Some(Rule::NotAllowed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::netpolicy::parse_network;

    fn set(nets: &[&str]) -> AddressSet {
        AddressSet::new(nets.iter().map(|n| parse_network(n).unwrap()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn rule(lists: &AccessLists, file: Option<&AddressSet>, client: &str) -> Option<&'static str> {
        check_global(lists, file, ip(client))
            .err()
            .map(|r| r.rule.as_str())
    }

    #[test]
    fn deny_wins_then_allow_decides() {
        let lists = AccessLists {
            allow: Some(set(&["10.0.0.0/8", "::ffff:192.0.2.0/120"])),
            deny: set(&["10.9.0.0/16"]),
        };
        let file = set(&["10.8.0.0/16", "10.9.9.9"]);
        assert_eq!(rule(&lists, Some(&file), "10.1.2.3"), None);
        assert_eq!(rule(&lists, Some(&file), "::ffff:192.0.2.1"), None);
        assert_eq!(rule(&lists, Some(&file), "192.0.2.1"), None);
        assert_eq!(rule(&lists, Some(&file), "10.9.9.9"), Some("deny"));
        assert_eq!(rule(&lists, Some(&file), "10.8.0.1"), Some("deny_file"));
        assert_eq!(rule(&lists, Some(&file), "11.0.0.1"), Some("not_allowed"));
        assert_eq!(rule(&lists, Some(&file), "::1"), Some("not_allowed"));
        assert_eq!(rule(&lists, None, "10.8.0.1"), None);
    }

    #[test]
    fn no_lists_refuse_nobody() {
        let open = AccessLists::default();
        assert_eq!(rule(&open, None, "203.0.113.1"), None);
        assert_eq!(rule(&open, Some(&set(&[])), "203.0.113.1"), None);
        assert_eq!(
            rule(&open, Some(&set(&["203.0.113.0/24"])), "::ffff:203.0.113.1"),
            Some("deny_file")
        );
    }

    #[test]
    fn a_route_refusal_names_the_route() {
        let route = Route {
            label: "a.example.com".into(),
            action: crate::config::Action::Forward(crate::config::Forward::in_order(
                Vec::new(),
                crate::config::ProxyProtocol::None,
            )),
            access: AccessLists {
                allow: None,
                deny: set(&["127.0.0.3"]),
            },
        };
        let refusal = check_route(&route, ip("127.0.0.3")).unwrap_err();
        assert_eq!(refusal.scope.label(), "a.example.com");
        assert_eq!(refusal.to_string(), "deny (route a.example.com)");
        assert!(check_route(&route, ip("127.0.0.2")).is_ok());
    }
}
