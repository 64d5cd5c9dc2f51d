//! What users paste into Telegram: one `tg://` and one `t.me` link per MTProto user and
//! `mtproto: true` route name, optionally as a QR code for the terminal.

use std::net::Ipv6Addr;

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

use crate::config::{Action, Config, NamePattern, Secret};

/// The links of one user for one fronted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLink {
    /// The user's name in the route file.
    pub user: String,
    /// The domain their client puts in its SNI (a route's exact name).
    pub domain: String,
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
    let port = port
        .or_else(|| config.listen.first().map(|l| l.port()))
        .unwrap_or(443);
    let mut links = Vec::new();
    for user in users {
        let secret = &user.secret;
        for domain in &domains {
            let server = host.unwrap_or(domain);
            links.push(UserLink {
                user: user.name.clone(),
                domain: domain.clone(),
                tg: tg_link(server, port, secret, domain),
                tme: tme_link(server, port, secret, domain),
            });
        }
    }
    Ok(links)
}

/// `text` as a QR code drawn with Unicode half blocks (two rows per line).
pub fn qr(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::new(text.as_bytes())?;
    Ok(code.render::<Dense1x2>().quiet_zone(true).build())
}

/// The `server=` value: IPv6 literals go in bare (brackets stripped), as mtprotoproxy and
/// mtg emit them — Telegram clients hand the value to their resolver, which does not take
/// `[..]`; `:` is legal unescaped in a query (RFC 3986 §3.4).
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
        link_host(host),
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
    fn qr_codes_render_as_text_blocks() {
        let code = qr("tg://proxy?server=a&port=443&secret=ee00").unwrap();
        assert!(code.lines().count() > 10);
        assert!(code.contains('█') || code.contains('▀') || code.contains('▄'));
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
