//! Value types of the route file that validate themselves while being deserialised, so a bad
//! value is reported by serde_yaml_ng with its key path, line and column.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer, StrDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::model::PoolSection;
use crate::config::pool::Balance;
use crate::config::secret::Secret;
use crate::config::ProxyProtocol;
use crate::config::Upstream;
use crate::config::{MimicMode, NamePattern};

/// A key that takes one value or a list of them: `to: a:1` or `to: [a:1, b:2]`.
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                let one = T::deserialize(StrDeserializer::<E>::new(text))?;
                Ok(OneOrMany(vec![one]))
            }
            // A bare number (`listen: 443`) reaches the value's own parser, whose message
            // says what form is expected.
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element()? {
                    all.push(item);
                }
                if all.is_empty() {
                    return Err(de::Error::custom("the list is empty"));
                }
                Ok(OneOrMany(all))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// Implements `Deserialize` from a string through a parse function whose error is a message.
macro_rules! from_text {
    ($ty:ty, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl<'de> Visitor<'de> for TextVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        parse(text).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

/// A `listen` address: `0.0.0.0:443`, `[::]:443`.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub SocketAddr);

from_text!(
    ListenAddr,
    "an address like 0.0.0.0:443 or \"[::]:443\"",
    |text| {
        text.parse().map(ListenAddr).map_err(|_| {
        format!("invalid listen address `{text}`: expected IP:port, e.g. 0.0.0.0:443 or \"[::]:443\" (quote IPv6 in YAML)")
    })
    }
);

/// A network in `accept_proxy_protocol_from`, `allow` or `deny`: CIDR, or a bare address
/// meaning that one host.
#[derive(Debug, Clone, Copy)]
pub struct Network(pub IpNet);

from_text!(Network, "a network like 10.0.0.0/8 or an address", |text| {
    crate::config::netpolicy::parse_network(text)
        .map(Network)
        .ok_or_else(|| format!("invalid network `{text}`: expected CIDR like 10.0.0.0/8, \"::1/128\", or an address"))
});

/// A backend address in `to`.
#[derive(Debug, Clone)]
pub struct UpstreamValue(pub Upstream);

from_text!(UpstreamValue, "a host:port address", |text| {
    Upstream::parse(text).map(UpstreamValue)
});

/// A route's `to`: an address, a list of addresses (tried in order), or a pool mapping.
#[derive(Debug)]
pub enum ToValue {
    /// `to: addr` or `to: [a, b]`.
    List(OneOrMany<UpstreamValue>),
    /// `to: {balance: ..., servers: [...], check: {...}}`.
    Pool(PoolSection),
}

impl<'de> Deserialize<'de> for ToValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ToVisitor;
        impl<'de> Visitor<'de> for ToVisitor {
            type Value = ToValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a host:port address, a list of them, or a pool mapping with `servers:`",
                )
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ToValue, E> {
                OneOrMany::deserialize(StrDeserializer::<E>::new(text)).map(ToValue::List)
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<ToValue, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<ToValue, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ToValue, A::Error> {
                OneOrMany::deserialize(SeqAccessDeserializer::new(seq)).map(ToValue::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToValue, A::Error> {
                PoolSection::deserialize(MapAccessDeserializer::new(map)).map(ToValue::Pool)
            }
        }
        deserializer.deserialize_any(ToVisitor)
    }
}

/// `balance: first | round_robin | least_conn | client_hash`.
#[derive(Debug, Clone, Copy)]
pub struct BalanceValue(pub Balance);

from_text!(
    BalanceValue,
    "first, round_robin, least_conn or client_hash",
    |text| Balance::parse(text)
        .map(BalanceValue)
        .ok_or_else(|| format!(
            "invalid balance `{text}`: expected first, round_robin, least_conn or client_hash"
        ))
);

/// A server name or `*.suffix` pattern in `sni`.
#[derive(Debug, Clone)]
pub struct NameValue(pub NamePattern);

from_text!(
    NameValue,
    "a server name like example.com or *.example.com",
    |text| { NamePattern::parse(text).map(NameValue) }
);

/// `proxy_protocol: none | v1 | v2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyProtocolValue(pub ProxyProtocol);

from_text!(
    ProxyProtocolValue,
    "none, v1 or v2",
    |text| match text.to_ascii_lowercase().as_str() {
        "none" | "off" => Ok(ProxyProtocolValue(ProxyProtocol::None)),
        "v1" => Ok(ProxyProtocolValue(ProxyProtocol::V1)),
        "v2" => Ok(ProxyProtocolValue(ProxyProtocol::V2)),
        _ => Err(format!(
            "invalid proxy_protocol `{text}`: expected none, v1 or v2"
        )),
    }
);

/// `mimic: live | learned | off` of an `mtproto: true` route.
#[derive(Debug, Clone, Copy)]
pub struct MimicValue(pub MimicMode);

from_text!(
    MimicValue,
    "live, learned or off",
    |text| match text.to_ascii_lowercase().as_str() {
        "live" => Ok(MimicValue(MimicMode::Live)),
        "learned" => Ok(MimicValue(MimicMode::Learned)),
        "off" => Ok(MimicValue(MimicMode::Off)),
        _ => Err(format!(
            "invalid mimic `{text}`: expected live, learned or off"
        )),
    }
);

/// A duration: a humantime string (`10s`, `5m`, `1h 30m`) or a bare number of seconds. Its
/// range depends on the key, so it is checked after parsing (`config::bounds`).
#[derive(Debug, Clone)]
pub struct DurationValue {
    /// The value.
    pub duration: Duration,
    /// The value as the file writes it, for messages.
    pub written: String,
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 10s, 5m or 1h")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<DurationValue, E> {
                Ok(DurationValue {
                    duration: Duration::from_secs(secs),
                    written: secs.to_string(),
                })
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                let duration = humantime::parse_duration(text).map_err(|e| {
                    E::custom(format!(
                        "invalid duration `{text}` ({e}): expected e.g. 10s, 5m, 1h"
                    ))
                })?;
                Ok(DurationValue {
                    duration,
                    written: text.to_string(),
                })
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// An MTProto user secret in any form users paste (hex, dd.., ee..+domain, base64).
#[derive(Debug, Clone)]
pub struct SecretValue(pub Secret);

from_text!(
    SecretValue,
    "an MTProto secret (32 hex characters, dd/ee forms or base64)",
    |text| {
        text.parse::<Secret>()
            .map(SecretValue)
            .map_err(|e| e.to_string())
    }
);
