//! MTProto users as the route file (and `mtproto.users_file`) writes them: the short form
//! `alice: <secret>`, or a mapping with the secret and the user's policy (CONFIG.md): whether
//! they are enabled, when they expire, their traffic quota, connection and address limits,
//! their rate, and the server names they may use. Pure data; the MTProto core enforces
//! it.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use std::collections::BTreeMap;

use super::bounds;
use super::error::Problem;
use super::mtproto::is_valid_user_name;
use super::secret::Secret;
use super::table::NamePattern;
use super::values::SecretValue;
use super::Fault;

/// One user: a name (see `is_valid_user_name`), a secret and a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtprotoUser {
    /// The user's name, as logs, metrics and links show it.
    pub name: String,
    /// The user's 16-byte secret.
    pub secret: Secret,
    /// What the user may do.
    pub policy: UserPolicy,
}

impl MtprotoUser {
    /// A user of the short form (`name: secret`): no limits.
    pub fn unlimited(name: &str, secret: Secret) -> MtprotoUser {
        MtprotoUser {
            name: name.to_string(),
            secret,
            policy: UserPolicy::default(),
        }
    }
}

/// What one user may do; the default (the short form) is: everything, for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// `enabled: false` refuses the user (their hellos go to the site like any visitor's).
    pub enabled: bool,
    /// The moment the user stops being served (Unix seconds, UTC).
    pub expires: Option<i64>,
    /// The traffic the user may move per period.
    pub quota: Option<Quota>,
    /// Most sessions at once.
    pub max_connections: Option<usize>,
    /// Most distinct client addresses at once.
    pub max_ips: Option<usize>,
    /// Bytes per second, each direction, over all the user's sessions.
    pub rate: Option<u64>,
    /// The server names (lowercase, no trailing dot) the user may use; `None`: every
    /// `mtproto: true` route.
    pub routes: Option<Vec<String>>,
    /// The operator's note.
    pub note: Option<String>,
    /// When the operator last reset the user's usage (`frontgate user reset`; Unix seconds,
    /// UTC): traffic counted before this moment does not count against the quota.
    pub usage_reset: Option<i64>,
    /// The user's own promoted channel: their sessions go through the middle proxies with
    /// it (instead of `mtproto.ad_tag`).
    pub ad_tag: Option<super::middle::AdTag>,
}

impl Default for UserPolicy {
    fn default() -> UserPolicy {
        UserPolicy {
            enabled: true,
            expires: None,
            quota: None,
            max_connections: None,
            max_ips: None,
            rate: None,
            routes: None,
            note: None,
            usage_reset: None,
            ad_tag: None,
        }
    }
}

impl UserPolicy {
    /// Whether the user may use the server name `sni` (lowercase; `None`: a hello without
    /// SNI, which only users without a `routes` list may send).
    pub fn allows_name(&self, sni: Option<&str>) -> bool {
        match (&self.routes, sni) {
            (None, _) => true,
            (Some(names), Some(sni)) => names.iter().any(|n| n == sni),
            (Some(_), None) => false,
        }
    }
}

/// A traffic quota: bytes both ways summed, per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes per period.
    pub bytes: u64,
    /// How often the count starts again.
    pub period: QuotaPeriod,
    /// Which day starts a period: day of the month (1 to 28) for `month`, day of the week
    /// (1 = Monday to 7) for `week`; unused otherwise.
    pub resets_on: u8,
}

/// How often a quota's count starts again (at 00:00 UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// Every day.
    Day,
    /// Every week, on `resets_on` (1 = Monday).
    Week,
    /// Every month, on day `resets_on`.
    Month,
    /// Never: the quota is for the user's whole life.
    Total,
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Week => "week",
            QuotaPeriod::Month => "month",
            QuotaPeriod::Total => "total",
        })
    }
}

impl Quota {
    /// The start (Unix seconds, UTC) of the period that holds `now`.
    pub fn period_start(&self, now: i64) -> i64 {
        let Some(today) = DateTime::<Utc>::from_timestamp(now, 0).map(|t| t.date_naive()) else {
            return 0;
        };
        let start = match self.period {
            QuotaPeriod::Total => return 0,
            QuotaPeriod::Day => today,
            QuotaPeriod::Week => {
                use chrono::Datelike as _;
                let weekday = today.weekday().number_from_monday() as i64;
                let back = (weekday - i64::from(self.resets_on)).rem_euclid(7);
                today - chrono::Duration::days(back)
            }
            QuotaPeriod::Month => {
                use chrono::Datelike as _;
                let day = u32::from(self.resets_on);
                let this_month = today.with_day(day).unwrap_or(today);
                if this_month <= today {
                    this_month
                } else {
                    // resets_on <= 28 exists in every month.
                    let previous = today - chrono::Months::new(1);
                    previous.with_day(day).unwrap_or(previous)
                }
            }
        };
        start
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp())
    }
}

/// A user entry as written: the short form (a secret) or the mapping.
#[derive(Debug)]
pub enum UserValue {
    /// `alice: <secret>`.
    Short(SecretValue),
    /// `alice: {secret: ..., ...}`.
    Full(Box<UserSection>),
}

impl UserValue {
    /// The secret, whichever form.
    pub fn secret(&self) -> &Secret {
        match self {
            UserValue::Short(secret) => &secret.0,
            UserValue::Full(section) => &section.secret.0,
        }
    }
}

impl<'de> Deserialize<'de> for UserValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = UserValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret, or a mapping with `secret:` and the user's limits")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<UserValue, E> {
                SecretValue::deserialize(de::value::StrDeserializer::new(text))
                    .map(UserValue::Short)
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<UserValue, M::Error> {
                UserSection::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|section| UserValue::Full(Box::new(section)))
            }
        }
        deserializer.deserialize_any(UserVisitor)
    }
}

/// The mapping form of a user entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// The secret, in any form `SecretValue` takes.
    pub secret: SecretValue,
    /// Default true.
    pub enabled: Option<bool>,
    /// A date (`2027-01-01`, the start of that day, UTC) or an RFC 3339 date-time.
    pub expires: Option<ExpiresValue>,
    /// `{bytes: 50GiB, period: month, resets_on: 1}`.
    pub quota: Option<QuotaSection>,
    /// Most sessions at once.
    pub max_connections: Option<usize>,
    /// Most distinct client addresses at once.
    pub max_ips: Option<usize>,
    /// Bytes per second, each direction (`2MiB`, `500k`, or a number).
    pub rate: Option<ByteSize>,
    /// The server names this user may use.
    pub routes: Option<Vec<String>>,
    /// Free text.
    pub note: Option<String>,
    /// When the usage was last reset (`frontgate user reset` writes it): a date or an
    /// RFC 3339 date-time, like `expires`.
    pub usage_reset: Option<ExpiresValue>,
    /// Per-user promoted channel (middle-proxy mode).
    pub ad_tag: Option<super::middle::AdTag>,
}

/// `quota:` of a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// Bytes per period, both ways summed.
    pub bytes: ByteSize,
    /// Default `month`.
    pub period: Option<QuotaPeriod>,
    /// Default 1.
    pub resets_on: Option<u8>,
}

/// `expires:` (and `usage_reset:`) as Unix seconds, UTC.
#[derive(Debug, Clone, Copy)]
pub struct ExpiresValue(pub i64);

impl<'de> Deserialize<'de> for ExpiresValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The error is made inside the visitor, so the YAML reader places it at the value.
        struct ExpiresVisitor;
        impl Visitor<'_> for ExpiresVisitor {
            type Value = ExpiresValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a date like 2027-01-01 or a date-time like 2027-01-01T12:00:00Z")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ExpiresValue, E> {
                parse_expires(text).map(ExpiresValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(ExpiresVisitor)
    }
}

/// `2027-01-01` (00:00 UTC that day) or an RFC 3339 date-time (`2027-01-01T12:00:00Z`,
/// `2027-01-01T12:00:00+03:00`).
pub fn parse_expires(text: &str) -> Result<i64, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = date.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp());
        }
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| {
            format!(
                "invalid expiry `{text}`: expected a date like 2027-01-01 or a date-time like \
                 2027-01-01T12:00:00Z"
            )
        })
}

/// A byte count: `50GiB`, `2MiB`, `500kB`, `1.5G` or a bare number.
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 50GiB, 2MiB or 500kB")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_size(text).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses a byte count with an optional SI (`k`, `M`, `G`, `T`: powers of 1000) or binary
/// (`Ki`, `Mi`, `Gi`, `Ti`: powers of 1024) prefix and an optional `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{text}`: expected e.g. 50GiB, 2MiB, 500kB or 1048576");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" | "m" => 1e6,
        "G" | "g" => 1e9,
        "T" | "t" => 1e12,
        "Ki" | "ki" | "KI" => 1024.0,
        "Mi" | "mi" | "MI" => 1024.0 * 1024.0,
        "Gi" | "gi" | "GI" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "ti" | "TI" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// The users of one source (`mtproto.users` of the route file, or `users` of the users
/// file: `prefix` is that key), validated one by one. Secrets shared across all sources are
/// checked by the caller.
pub(super) fn compile_users(
    prefix: &str,
    entries: BTreeMap<String, UserValue>,
) -> Result<Vec<MtprotoUser>, Fault> {
    let mut users = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let key = format!("{prefix}.{name}");
        if !is_valid_user_name(&name) {
            let name = name.escape_debug().to_string();
            return Err(Fault::key(key, Problem::UserName { name }));
        }
        let (secret, policy) = match value {
            UserValue::Short(secret) => (secret.0, UserPolicy::default()),
            UserValue::Full(section) => {
                let secret = section.secret.0.clone();
                (secret, user_policy(&key, *section)?)
            }
        };
        users.push(MtprotoUser {
            name,
            secret,
            policy,
        });
    }
    Ok(users)
}

fn user_policy(key: &str, section: UserSection) -> Result<UserPolicy, Fault> {
    let quota = match section.quota {
        None => None,
        Some(q) => Some(quota(&format!("{key}.quota"), q)?),
    };
    let limit = |value: Option<usize>, name: &str, range: bounds::CountRange| {
        value
            .map(|n| range.check(n))
            .transpose()
            .map_err(|problem| Fault::value(format!("{key}.{name}"), problem))
    };
    let rate = section
        .rate
        .map(|r| usize::try_from(r.0).unwrap_or(usize::MAX));
    let routes = match section.routes {
        None => None,
        Some(names) => Some(route_names(key, names)?),
    };
    Ok(UserPolicy {
        enabled: section.enabled.unwrap_or(true),
        expires: section.expires.map(|e| e.0),
        quota,
        max_connections: limit(
            section.max_connections,
            "max_connections",
            bounds::USER_CONNECTIONS,
        )?,
        max_ips: limit(section.max_ips, "max_ips", bounds::USER_IPS)?,
        rate: limit(rate, "rate", bounds::USER_RATE)?.map(|r| r as u64),
        routes,
        note: section.note,
        usage_reset: section.usage_reset.map(|at| at.0),
        ad_tag: section.ad_tag,
    })
}

fn quota(key: &str, section: QuotaSection) -> Result<Quota, Fault> {
    if section.bytes.0 == 0 {
        return Err(Fault::value(
            format!("{key}.bytes"),
            Problem::TooFew { value: 0, min: 1 },
        ));
    }
    let period = section.period.unwrap_or(QuotaPeriod::Month);
    let days = match period {
        QuotaPeriod::Week => 7,
        QuotaPeriod::Month => 28,
        QuotaPeriod::Day | QuotaPeriod::Total => u8::MAX,
    };
    let resets_on = section.resets_on.unwrap_or(1);
    if !(1..=days).contains(&resets_on) {
        return Err(Fault::value(
            format!("{key}.resets_on"),
            Problem::ResetsOn { period, days },
        ));
    }
    Ok(Quota {
        bytes: section.bytes.0,
        period,
        resets_on,
    })
}

/// A user's `routes`: exact server names, normalized as routes match them.
fn route_names(key: &str, names: Vec<String>) -> Result<Vec<String>, Fault> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| match NamePattern::parse(&name) {
            Ok(NamePattern::Exact(exact)) => Ok(exact),
            _ => Err(Fault::value(
                format!("{key}.routes[{i}]"),
                Problem::UserRouteName { name },
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        parse_expires(text).unwrap()
    }

    #[test]
    fn sizes_take_si_and_binary_prefixes() {
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("500kB"), Ok(500_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "GiB", "5 parsecs", "1e400", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_is_a_date_or_a_date_time() {
        assert_eq!(at("2027-01-01"), 1_798_761_600);
        assert_eq!(at("2027-01-01T00:00:00Z"), 1_798_761_600);
        assert_eq!(at("2027-01-01T03:00:00+03:00"), 1_798_761_600);
        assert!(parse_expires("next tuesday").is_err());
        assert!(parse_expires("2027-02-30").is_err());
    }

    #[test]
    fn periods_start_at_midnight_utc_on_their_day() {
        let quota = |period, resets_on| Quota {
            bytes: 1,
            period,
            resets_on,
        };
        // 2027-03-17 is a Wednesday.
        let now = at("2027-03-17T15:30:00Z");
        assert_eq!(
            quota(QuotaPeriod::Day, 1).period_start(now),
            at("2027-03-17")
        );
        assert_eq!(
            quota(QuotaPeriod::Week, 1).period_start(now),
            at("2027-03-15")
        );
        assert_eq!(
            quota(QuotaPeriod::Week, 3).period_start(now),
            at("2027-03-17")
        );
        assert_eq!(
            quota(QuotaPeriod::Week, 4).period_start(now),
            at("2027-03-11")
        );
        assert_eq!(
            quota(QuotaPeriod::Month, 1).period_start(now),
            at("2027-03-01")
        );
        assert_eq!(
            quota(QuotaPeriod::Month, 17).period_start(now),
            at("2027-03-17")
        );
        assert_eq!(
            quota(QuotaPeriod::Month, 20).period_start(now),
            at("2027-02-20")
        );
        // Across a year boundary.
        let january = at("2027-01-05T00:00:00Z");
        assert_eq!(
            quota(QuotaPeriod::Month, 10).period_start(january),
            at("2026-12-10")
        );
        assert_eq!(quota(QuotaPeriod::Total, 1).period_start(now), 0);
    }

    #[test]
    fn a_user_with_routes_may_use_only_those_names() {
        let open = UserPolicy::default();
        assert!(open.allows_name(Some("a.example.com")) && open.allows_name(None));
        let bound = UserPolicy {
            routes: Some(vec!["b.example.com".into()]),
            ..UserPolicy::default()
        };
        assert!(bound.allows_name(Some("b.example.com")));
        assert!(!bound.allows_name(Some("a.example.com")));
        assert!(!bound.allows_name(None));
    }
}
