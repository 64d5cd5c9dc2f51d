//! What users paste into Telegram: one `tg://` and one `t.me` link per MTProto user and
//! `mtproto: true` route name.

use std::net::Ipv6Addr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::{Action, Config, NamePattern, Secret};

/// What stays as it is in a link's query value: RFC 3986's unreserved characters, and `:`
/// for IPv6 literals (legal in a query, §3.4). Everything else (` `, `&`, `=`, `#`, `%`,
/// non-ASCII, ...) is percent-encoded, so a value can never end early or add a parameter.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// The links of one user for one fronted domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserLink {
    /// The user's name in the route file.
    pub user: String,
    /// The domain their client puts in its SNI (a route's exact name).
    pub domain: String,
    /// The host clients connect to, as given (the `server=` value before escaping).
    pub host: String,
    /// The port clients connect to.
    pub port: u16,
    /// The ee-secret their client needs: `ee` + the user's secret + hex(domain).
    pub secret: String,
    /// `tg://proxy?server=...&port=...&secret=ee...`
    pub tg: String,
    /// `https://t.me/proxy?...` (opens Telegram from a browser).
    pub tme: String,
}

/// Why no links could be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No `mtproto:` section.
    #[error("the configuration has no `mtproto:` section with users")]
    NoMtproto,
    /// No route with `mtproto: true` and an exact name.
    #[error("no route has `mtproto: true` with an exact server name (the ee-secret needs one)")]
    NoRoute,
    /// `--user` named nobody.
    #[error("no user named `{0}` in mtproto.users")]
    NoSuchUser(String),
    /// The host is empty.
    #[error("the host clients connect to is empty")]
    EmptyHost,
    /// Port 0 cannot be dialled (the route file listens on port 0 and no port was given).
    #[error("port 0 cannot be connected to: give the public port (--port)")]
    PortZero,
}

/// Links for every user (or only `only_user`) and every exact name of every `mtproto: true`
/// route. `host` is what clients connect to (default: the domain itself, which must then
/// resolve to this server); `port` defaults to the first listen address's port.
pub fn user_links(
    config: &Config,
    host: Option<&str>,
    port: Option<u16>,
    only_user: Option<&str>,
) -> Result<Vec<UserLink>, LinkError> {
    let mtproto = config.mtproto.as_ref().ok_or(LinkError::NoMtproto)?;
    let domains: Vec<String> = config
        .routes
        .routes()
        .iter()
        .filter(|route| matches!(route.action, Action::Mtproto(_)))
        .flat_map(|route| config.routes.names_of(route))
        .filter_map(|name| match name {
            NamePattern::Exact(domain) => Some(domain),
            NamePattern::Wildcard(_) => None,
        })
        .collect();
    if domains.is_empty() {
        return Err(LinkError::NoRoute);
    }
    let users: Vec<_> = mtproto
        .users
        .iter()
        .filter(|user| only_user.is_none_or(|only| only == user.name))
        .collect();
    if let (Some(only), true) = (only_user, users.is_empty()) {
        return Err(LinkError::NoSuchUser(only.to_string()));
    }
    if host.is_some_and(str::is_empty) {
        return Err(LinkError::EmptyHost);
    }
    let port = port
        .or_else(|| config.listen.first().map(|l| l.port()))
        .unwrap_or(443);
    if port == 0 {
        return Err(LinkError::PortZero);
    }
    let mut links = Vec::new();
    for user in users {
        let secret = &user.secret;
        for domain in &domains {
            let server = host.unwrap_or(domain);
            links.push(UserLink {
                user: user.name.clone(),
                domain: domain.clone(),
                host: server.to_string(),
                port,
                secret: secret.ee_hex(domain),
                tg: tg_link(server, port, secret, domain),
                tme: tme_link(server, port, secret, domain),
            });
        }
    }
    Ok(links)
}

/// The `server=` value before escaping: IPv6 literals go in bare (brackets stripped), as
/// mtprotoproxy and mtg emit them — Telegram clients hand the value to their resolver, which
/// does not take `[..]`; `:` is legal unescaped in a query (RFC 3986 §3.4).
fn link_host(host: &str) -> &str {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if inner.parse::<Ipv6Addr>().is_ok() {
        inner
    } else {
        host
    }
}

fn link_query(host: &str, port: u16, secret: &Secret, domain: &str) -> String {
    format!(
        "server={}&port={}&secret={}",
        utf8_percent_encode(link_host(host), QUERY_VALUE),
        port,
        secret.ee_hex(domain)
    )
}

/// The `tg://proxy?...` link that opens the proxy settings in an installed Telegram app.
pub fn tg_link(host: &str, port: u16, secret: &Secret, domain: &str) -> String {
    format!("tg://proxy?{}", link_query(host, port, secret, domain))
}

/// The `https://t.me/proxy?...` link, for places where `tg://` links are not clickable.
pub fn tme_link(host: &str, port: u16, secret: &Secret, domain: &str) -> String {
    format!(
        "https://t.me/proxy?{}",
        link_query(host, port, secret, domain)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::vectors::{DOMAIN, EE, HEX};

    fn config() -> Config {
        crate::config::parse(
            "listen: 0.0.0.0:443\nmtproto: { users: { alice: 00112233445566778899aabbccddeeff, bob: ffeeddccbbaa99887766554433221100 } }\nroutes:\n  - sni: [proxy.example.com, '*.example.com']\n    mtproto: true\n    to: 127.0.0.1:8443\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn one_link_per_user_and_exact_name() {
        let links = user_links(&config(), None, None, None).unwrap();
        assert_eq!(links.len(), 2);
        let alice = &links[0];
        assert_eq!(
            (alice.user.as_str(), alice.domain.as_str()),
            ("alice", "proxy.example.com")
        );
        let ee = format!(
            "ee00112233445566778899aabbccddeeff{}",
            hex::encode("proxy.example.com")
        );
        assert_eq!(
            alice.tg,
            format!("tg://proxy?server=proxy.example.com&port=443&secret={ee}")
        );
        assert_eq!(
            alice.tme,
            format!("https://t.me/proxy?server=proxy.example.com&port=443&secret={ee}")
        );
    }

    #[test]
    fn host_port_and_user_selection() {
        let links = user_links(&config(), Some("203.0.113.5"), Some(8443), Some("bob")).unwrap();
        assert_eq!(links.len(), 1);
        assert!(links[0]
            .tg
            .starts_with("tg://proxy?server=203.0.113.5&port=8443&secret=eeffeedd"));
        assert!(matches!(
            user_links(&config(), None, None, Some("carol")),
            Err(LinkError::NoSuchUser(_))
        ));
        let plain =
            crate::config::parse("listen: 127.0.0.1:1\ndefault: { to: 127.0.0.1:2 }\n", "t")
                .unwrap();
        assert!(matches!(
            user_links(&plain, None, None, None),
            Err(LinkError::NoMtproto)
        ));
    }

    #[test]
    fn query_values_are_escaped_and_bad_hosts_and_ports_refused() {
        let links = user_links(&config(), Some("a b&c=d#e%"), Some(443), Some("alice")).unwrap();
        assert!(
            links[0]
                .tg
                .starts_with("tg://proxy?server=a%20b%26c%3Dd%23e%25&port=443&secret=ee"),
            "{}",
            links[0].tg
        );
        assert_eq!(links[0].host, "a b&c=d#e%");
        assert!(matches!(
            user_links(&config(), Some(""), None, None),
            Err(LinkError::EmptyHost)
        ));
        assert!(matches!(
            user_links(&config(), None, Some(0), None),
            Err(LinkError::PortZero)
        ));
    }

    #[test]
    fn each_link_carries_its_host_port_and_ee_secret() {
        let links = user_links(&config(), Some("203.0.113.5"), Some(8443), Some("alice")).unwrap();
        let ee = format!(
            "ee00112233445566778899aabbccddeeff{}",
            hex::encode("proxy.example.com")
        );
        assert_eq!(
            (
                links[0].host.as_str(),
                links[0].port,
                links[0].secret.as_str()
            ),
            ("203.0.113.5", 8443, ee.as_str())
        );
    }

    #[test]
    fn links() {
        let s: Secret = HEX.parse().unwrap();
        assert_eq!(
            tg_link("proxy.example.com", 443, &s, DOMAIN),
            format!("tg://proxy?server=proxy.example.com&port=443&secret={EE}")
        );
        assert_eq!(
            tme_link("203.0.113.7", 8443, &s, DOMAIN),
            format!("https://t.me/proxy?server=203.0.113.7&port=8443&secret={EE}")
        );
        for host in ["2001:db8::1", "[2001:db8::1]"] {
            assert_eq!(
                tg_link(host, 443, &s, DOMAIN),
                format!("tg://proxy?server=2001:db8::1&port=443&secret={EE}")
            );
        }
    }
}
