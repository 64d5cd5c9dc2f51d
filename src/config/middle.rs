//! Middle-proxy mode (CONFIG.md `mtproto.ad_tag`, `mtproto.public_ip`,
//! `mtproto.middle_proxy`): the promoted-channel tags and where the middle proxies'
//! configuration comes from. Pure data: the ME client lives in `mtproto::middle`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

use super::values::DurationValue;

/// Telegram's published middle-proxy secret (binary).
pub const DEFAULT_SECRET_URL: &str = "https://core.telegram.org/getProxySecret";
/// Telegram's IPv4 middle-proxy list.
pub const DEFAULT_CONFIG_URL: &str = "https://core.telegram.org/getProxyConfig";
/// Telegram's IPv6 middle-proxy list.
pub const DEFAULT_CONFIG_V6_URL: &str = "https://core.telegram.org/getProxyConfigV6";
/// `mtproto.middle_proxy.refresh` when not given.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// A promoted-channel tag from @MTProxybot: 16 bytes, written as 32 hex digits. Not a
/// secret, but logs name the user instead of printing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdTag(pub [u8; 16]);

impl fmt::Debug for AdTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdTag(..)")
    }
}

impl AdTag {
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Result<AdTag, String> {
        let mut tag = [0u8; 16];
        match hex::decode_to_slice(text, &mut tag) {
            Ok(()) => Ok(AdTag(tag)),
            Err(_) => Err(format!(
                "an ad_tag is 32 hex digits (16 bytes, from @MTProxybot), not `{text}`"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for AdTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The error is made inside the visitor, so the YAML reader places it at the value.
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = AdTag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ad_tag: 32 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AdTag, E> {
                AdTag::parse(v).map_err(E::custom)
            }
            // A tag of decimal digits only reads as a YAML number.
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<AdTag, E> {
                Err(E::custom(
                    "an ad_tag is 32 hex digits; quote one made of digits only (\"...\")",
                ))
            }
        }
        deserializer.deserialize_any(TagVisitor)
    }
}

/// A configuration URL: `http://` or `https://` with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUrl(pub String);

impl FetchUrl {
    /// Checks the scheme and the host.
    pub fn parse(text: &str) -> Result<FetchUrl, String> {
        let bad = || format!("`{text}` is no http:// or https:// URL with a host");
        let uri: hyper::Uri = text.parse().map_err(|_| bad())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none_or(str::is_empty) {
            return Err(bad());
        }
        Ok(FetchUrl(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for FetchUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlVisitor;
        impl Visitor<'_> for UrlVisitor {
            type Value = FetchUrl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an http:// or https:// URL")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FetchUrl, E> {
                FetchUrl::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(UrlVisitor)
    }
}

/// `mtproto.middle_proxy:` as the file writes it; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddleProxySection {
    pub(crate) secret_url: Option<FetchUrl>,
    pub(crate) config_url: Option<FetchUrl>,
    pub(crate) config_v6_url: Option<FetchUrl>,
    pub(crate) refresh: Option<DurationValue>,
    pub(crate) fallback_direct: Option<bool>,
}

/// Middle-proxy mode, resolved: used by the sessions whose user has an ad_tag (their own,
/// else `mtproto.ad_tag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddleProxySettings {
    /// `mtproto.ad_tag`: every user's tag unless the user has their own.
    pub ad_tag: Option<AdTag>,
    /// `mtproto.public_ip`: this host's address as the middle proxies see it (key
    /// derivation); `None`: the local address of each ME connection.
    pub public_ip: Option<IpAddr>,
    /// Where the middle-proxy secret is fetched.
    pub secret_url: FetchUrl,
    /// Where the IPv4 middle-proxy list is fetched.
    pub config_url: FetchUrl,
    /// Where the IPv6 middle-proxy list is fetched.
    pub config_v6_url: FetchUrl,
    /// How often the secret and the lists are fetched again.
    pub refresh: Duration,
    /// Middle proxies unreachable: serve the session in direct mode (without the tag).
    pub fallback_direct: bool,
    /// `state.dir`: where the last good secret and lists are kept for a restart without
    /// network.
    pub cache_dir: Option<PathBuf>,
}

impl Default for MiddleProxySettings {
    fn default() -> Self {
        MiddleProxySettings {
            ad_tag: None,
            public_ip: None,
            secret_url: FetchUrl(DEFAULT_SECRET_URL.to_string()),
            config_url: FetchUrl(DEFAULT_CONFIG_URL.to_string()),
            config_v6_url: FetchUrl(DEFAULT_CONFIG_V6_URL.to_string()),
            refresh: DEFAULT_REFRESH,
            fallback_direct: true,
            cache_dir: None,
        }
    }
}
