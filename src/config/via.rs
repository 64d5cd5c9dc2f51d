//! `mtproto.via`: the SOCKS5 upstreams that carry DC connections in split mode
//! (`socks5://[user:pass@]host:port`). Pure data: parsing and validation of one URL; the
//! dialer and the upstreams' health live in `mtproto::upstreams`.

use std::fmt;

/// RFC 1929 caps the user name and the password at 255 bytes each.
const CREDENTIAL_MAX: usize = 255;

/// One SOCKS5 upstream of `mtproto.via`.
#[derive(Clone, PartialEq, Eq)]
pub struct ViaUpstream {
    /// The SOCKS server's host (a name is resolved by frontgate, IPv6 without brackets).
    pub host: String,
    /// The SOCKS server's port.
    pub port: u16,
    /// RFC 1929 username/password, when the URL has them.
    pub auth: Option<ViaAuth>,
}

/// RFC 1929 credentials of an upstream. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ViaAuth {
    /// The user name.
    pub user: String,
    /// The password (never logged).
    pub password: String,
}

/// Why a `mtproto.via` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    /// Another scheme than `socks5://` (`socks5h://` would let the upstream resolve names).
    #[error(
        "upstream must be a socks5://[user:pass@]host:port URL (DC addresses are sent as IPs, \
         so socks5h:// and other schemes are not used)"
    )]
    Scheme,
    /// The part after the credentials is not `host:port`.
    #[error("upstream address must be host:port (IPv6 as [addr]:port) with a port 1..65535")]
    Address,
    /// Credentials without `user:pass`, or longer than RFC 1929 allows.
    #[error("upstream credentials must be user:pass, each 1 to {CREDENTIAL_MAX} bytes")]
    Credentials,
    /// The same SOCKS server listed twice (its metrics would be one series).
    #[error("upstream {0} is listed twice")]
    Duplicate(String),
}

impl ViaUpstream {
    /// Parses `socks5://[user:pass@]host:port`; percent-escapes in the credentials are
    /// decoded (a `@` or `:` in a password is written `%40` / `%3A`).
    pub fn parse(text: &str) -> Result<ViaUpstream, ViaError> {
        let rest = text
            .get(..9)
            .filter(|scheme| scheme.eq_ignore_ascii_case("socks5://"))
            .map(|_| &text[9..])
            .ok_or(ViaError::Scheme)?;
        let (auth, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => (Some(parse_auth(userinfo)?), address),
            None => (None, rest),
        };
        let (host, port) = parse_address(address).ok_or(ViaError::Address)?;
        Ok(ViaUpstream { host, port, auth })
    }

    /// `host:port` (`[v6]:port`): the upstream's name in log lines and metric labels.
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Checks a list of upstreams for duplicates: the index of the second of a pair.
pub fn find_duplicate(list: &[ViaUpstream]) -> Option<(usize, ViaError)> {
    list.iter().enumerate().find_map(|(i, upstream)| {
        list[..i]
            .iter()
            .any(|earlier| earlier.label() == upstream.label())
            .then(|| (i, ViaError::Duplicate(upstream.label())))
    })
}

fn parse_auth(userinfo: &str) -> Result<ViaAuth, ViaError> {
    let (user, password) = userinfo.split_once(':').ok_or(ViaError::Credentials)?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
            .filter(|s| (1..=CREDENTIAL_MAX).contains(&s.len()))
            .ok_or(ViaError::Credentials)
    };
    Ok(ViaAuth {
        user: decode(user)?,
        password: decode(password)?,
    })
}

fn parse_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = address.strip_prefix('[') {
        let (host, port) = v6.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        address.rsplit_once(':')?
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    valid_host.then(|| (host.to_string(), port))
}

impl fmt::Debug for ViaUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Debug for ViaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViaAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `socks5://[user@]host:port`: never the password.
impl fmt::Display for ViaUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.auth {
            Some(auth) => write!(f, "socks5://{}@{}", auth.user, self.label()),
            None => write!(f, "socks5://{}", self.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_authenticated_urls() {
        let plain = ViaUpstream::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, &plain.auth),
            ("127.0.0.1", 1080, &None)
        );
        let auth = ViaUpstream::parse("SOCKS5://al%40ce:p%3Ass@[::1]:9050").unwrap();
        assert_eq!(auth.host, "::1");
        assert_eq!(auth.label(), "[::1]:9050");
        let creds = auth.auth.as_ref().unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("al@ce", "p:ss")
        );
        assert_eq!(auth.to_string(), "socks5://al@ce@[::1]:9050");
        assert!(!format!("{auth:?}").contains("p:ss"));
    }

    #[test]
    fn refuses_bad_urls() {
        for (text, error) in [
            ("socks5h://127.0.0.1:1080", ViaError::Scheme),
            ("http://127.0.0.1:1080", ViaError::Scheme),
            ("127.0.0.1:1080", ViaError::Scheme),
            ("socks5://127.0.0.1", ViaError::Address),
            ("socks5://127.0.0.1:0", ViaError::Address),
            ("socks5://127.0.0.1:99999", ViaError::Address),
            ("socks5://:1080", ViaError::Address),
            ("socks5://[::1:1080", ViaError::Address),
            ("socks5://host/x:1080", ViaError::Address),
            ("socks5://user@127.0.0.1:1080", ViaError::Credentials),
            ("socks5://:pw@127.0.0.1:1080", ViaError::Credentials),
            ("socks5://u:@127.0.0.1:1080", ViaError::Credentials),
        ] {
            assert_eq!(ViaUpstream::parse(text), Err(error), "{text}");
        }
        let long = format!("socks5://u:{}@h:1", "p".repeat(256));
        assert_eq!(ViaUpstream::parse(&long), Err(ViaError::Credentials));
    }

    #[test]
    fn finds_the_second_of_a_duplicate_pair() {
        let list: Vec<_> = ["socks5://a:1", "socks5://b:1", "socks5://u:p@a:1"]
            .iter()
            .map(|t| ViaUpstream::parse(t).unwrap())
            .collect();
        assert_eq!(
            find_duplicate(&list),
            Some((2, ViaError::Duplicate("a:1".into())))
        );
        assert_eq!(find_duplicate(&list[..2]), None);
    }
}
