//! What the middle proxies' configuration says: the proxy secret (getProxySecret, binary)
//! and each DC's middle-proxy addresses (getProxyConfig / getProxyConfigV6, lines of
//! `proxy_for <dc> <addr>:<port>;`). An answer that does not parse is refused whole, so the
//! previous good copy stays in use.

use std::collections::HashMap;
use std::net::SocketAddr;

/// The shortest secret accepted (Telegram's is 128 bytes; the key selector is its first 4).
const SECRET_MIN: usize = 32;
/// The longest secret accepted.
const SECRET_MAX: usize = 4096;
/// The longest configuration answer read.
pub const ANSWER_MAX: usize = 1 << 20;

/// A checked middle-proxy secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySecret(pub Vec<u8>);

impl std::fmt::Debug for ProxySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxySecret({} bytes)", self.0.len())
    }
}

impl ProxySecret {
    /// Checks a getProxySecret answer.
    pub fn parse(bytes: &[u8]) -> Result<ProxySecret, String> {
        if !(SECRET_MIN..=SECRET_MAX).contains(&bytes.len()) {
            return Err(format!(
                "a proxy secret is {SECRET_MIN} to {SECRET_MAX} bytes, this answer has {}",
                bytes.len()
            ));
        }
        Ok(ProxySecret(bytes.to_vec()))
    }
}

/// Each DC's middle proxies, from one getProxyConfig(V6) answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyList {
    /// DC index (negative: media) -> addresses, in the answer's order.
    pub by_dc: HashMap<i16, Vec<SocketAddr>>,
}

impl ProxyList {
    /// Parses an answer; it must name at least one middle proxy, and every `proxy_for` line
    /// must be well formed.
    pub fn parse(text: &[u8]) -> Result<ProxyList, String> {
        let text = std::str::from_utf8(text).map_err(|_| "the answer is not text".to_string())?;
        let mut list = ProxyList::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("proxy_for") else {
                continue;
            };
            let bad = || format!("line {}: `{line}` is no `proxy_for DC ADDR:PORT;`", n + 1);
            let rest = rest.trim().strip_suffix(';').ok_or_else(bad)?;
            let mut words = rest.split_whitespace();
            let (Some(dc), Some(addr), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad());
            };
            let dc: i16 = dc.parse().map_err(|_| bad())?;
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            list.by_dc.entry(dc).or_default().push(addr);
        }
        if list.by_dc.is_empty() {
            return Err("the answer names no middle proxy (no `proxy_for` line)".into());
        }
        Ok(list)
    }

    /// The middle proxies of DC `dc`; a DC missing from the list falls back to the same
    /// DC with the other sign (media <-> main), as clients expect.
    pub fn for_dc(&self, dc: i16) -> &[SocketAddr] {
        self.by_dc
            .get(&dc)
            .or_else(|| self.by_dc.get(&dc.saturating_neg()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The whole configuration in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// The proxy secret.
    pub secret: ProxySecret,
    /// The IPv4 middle proxies.
    pub v4: ProxyList,
    /// The IPv6 middle proxies (may be empty).
    pub v6: ProxyList,
}

impl Directory {
    /// The addresses to try for `dc`: IPv4 first unless `prefer_ipv6`.
    pub fn addresses(&self, dc: i16, prefer_ipv6: bool) -> Vec<SocketAddr> {
        let (first, second) = if prefer_ipv6 {
            (&self.v6, &self.v4)
        } else {
            (&self.v4, &self.v6)
        };
        let mut out = first.for_dc(dc).to_vec();
        out.extend_from_slice(second.for_dc(dc));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_for_lines_are_collected_per_dc() {
        let text = b"# force_probability 10 10\ndefault 2;\nproxy_for 1 149.154.175.50:8888;\nproxy_for -1 149.154.175.50:8888;\nproxy_for 2 149.154.161.144:8888;\nproxy_for 2 149.154.161.145:8888;\n";
        let list = ProxyList::parse(text).unwrap();
        assert_eq!(list.for_dc(2).len(), 2);
        assert_eq!(list.for_dc(-1), ["149.154.175.50:8888".parse().unwrap()]);
        assert_eq!(
            list.for_dc(-2).len(),
            2,
            "a media DC without lines uses the main one"
        );
        let v6 = ProxyList::parse(b"proxy_for 4 [2001:67c:4e8:f004::d]:8888;\n").unwrap();
        assert_eq!(
            v6.for_dc(4),
            ["[2001:67c:4e8:f004::d]:8888".parse().unwrap()]
        );
    }

    #[test]
    fn malformed_answers_are_refused_whole() {
        for bad in [
            &b"<html>maintenance</html>"[..],
            b"proxy_for 2 149.154.161.144:8888\n",
            b"proxy_for two 149.154.161.144:8888;\n",
            b"proxy_for 2 149.154.161.144;\n",
            b"proxy_for 2 1.2.3.4:1 extra;\n",
            b"\xff\xfe",
        ] {
            assert!(ProxyList::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ProxySecret::parse(&[7; 16]).is_err());
        assert!(ProxySecret::parse(&[7; 128]).is_ok());
    }
}
