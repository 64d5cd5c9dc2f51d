//! `frontgate user list`: every user with their state, quota, expiry and note from the
//! configuration, and their live sessions and traffic from the running gateway's `/stats`
//! when `metrics.listen` is set and it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::super::health;
use crate::config::users::MtprotoUser;
use crate::config::Config;

/// How long `list` waits for the gateway's `/stats`.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of `/stats` read: a few hundred bytes per user.
const STATS_LIMIT: usize = 16 << 20;

/// What `/stats` says of the users (unknown keys ignored, later ones optional).
#[derive(Debug, Deserialize)]
struct Stats {
    #[serde(default)]
    mtproto_users: BTreeMap<String, UserStats>,
}

/// One user in `/stats`.
#[derive(Debug, Default, Deserialize)]
struct UserStats {
    /// Sessions relaying now.
    #[serde(default)]
    active: u64,
    #[serde(default)]
    bytes_from_client: u64,
    #[serde(default)]
    bytes_to_client: u64,
    /// Bytes counted against the quota in the current period, when the gateway says.
    period_bytes: Option<u64>,
    /// What is left of the quota, when the gateway says.
    quota_left: Option<u64>,
    /// `active`, `disabled`, `expired`, `over_quota`, when the gateway says.
    state: Option<String>,
}

/// The table of `config`'s users (`in_file` tells which come from the users file), then a
/// line saying where the live values came from.
pub(super) fn render(config: &Config, in_file: impl Fn(&str) -> bool, now: i64) -> String {
    let (stats, source) = live_stats(config);
    // A user the gateway does not know yet (a reload still settling) has nothing live.
    let none = UserStats::default();
    let mut rows = vec![[
        "USER", "FROM", "STATE", "QUOTA", "USED", "LEFT", "EXPIRES", "LIVE", "TRAFFIC", "NOTE",
    ]
    .map(String::from)];
    for user in config.mtproto.iter().flat_map(|m| &m.users) {
        let live = stats
            .as_ref()
            .map(|s| s.mtproto_users.get(&user.name).unwrap_or(&none));
        let from = if in_file(&user.name) {
            "file"
        } else {
            "inline"
        };
        rows.push(row(user, from, live, now));
    }
    let mut out = table(&rows);
    out.push_str(&source);
    out.push('\n');
    out
}

/// One user's row.
fn row(user: &MtprotoUser, from: &str, live: Option<&UserStats>, now: i64) -> [String; 10] {
    let policy = &user.policy;
    let unknown = || "-".to_string();
    let state = match live.and_then(|l| l.state.clone()) {
        Some(state) => state,
        None if !policy.enabled => "disabled".to_string(),
        None if policy.expires.is_some_and(|at| at <= now) => "expired".to_string(),
        None => "active".to_string(),
    };
    let quota = policy.quota.map_or_else(
        || "unlimited".to_string(),
        |q| format!("{}/{}", size(q.bytes), q.period),
    );
    let used = live.and_then(|l| {
        l.period_bytes
            .or_else(|| Some(policy.quota?.bytes.saturating_sub(l.quota_left?)))
    });
    let left = match (policy.quota, live) {
        (None, _) => "unlimited".to_string(),
        (Some(q), Some(l)) => l
            .quota_left
            .or_else(|| Some(q.bytes.saturating_sub(l.period_bytes?)))
            .map_or_else(unknown, size),
        (Some(_), None) => unknown(),
    };
    [
        user.name.clone(),
        from.to_string(),
        state,
        quota,
        used.map_or_else(unknown, size),
        left,
        policy.expires.map_or_else(|| "never".to_string(), moment),
        live.map_or_else(unknown, |l| l.active.to_string()),
        live.map_or_else(unknown, |l| {
            size(l.bytes_from_client.saturating_add(l.bytes_to_client))
        }),
        policy.note.clone().unwrap_or_default(),
    ]
}

/// The gateway's `/stats`, and a line saying where the live columns came from.
fn live_stats(config: &Config) -> (Option<Stats>, String) {
    let Some(addr) = config.metrics else {
        return (
            None,
            "gateway: no metrics.listen in the route file, so live values (LIVE, TRAFFIC, \
             USED) are not shown"
                .to_string(),
        );
    };
    let url = match health::metrics_url(addr, "/stats") {
        Ok(url) => url,
        Err(e) => return (None, format!("gateway: not reachable: {e}")),
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| {
            runtime.block_on(async {
                tokio::time::timeout(STATS_TIMEOUT, health::get(&url, STATS_LIMIT))
                    .await
                    .unwrap_or_else(|_| Err("no answer".to_string()))
            })
        });
    let stats = answer.and_then(|(status, body)| {
        if !status.is_success() {
            return Err(format!("it answered {status}"));
        }
        serde_json::from_str::<Stats>(&body).map_err(|e| format!("unreadable answer: {e}"))
    });
    match stats {
        Ok(stats) => (Some(stats), format!("gateway: live values from {url}")),
        Err(e) => (
            None,
            format!("gateway: not reachable at {url} ({e}); live values are not shown"),
        ),
    }
}

/// `rows` as left-aligned columns two spaces apart (the last column unpadded).
fn table(rows: &[[String; 10]]) -> String {
    let mut widths = [0usize; 10];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A byte count in binary units: `512B`, `50GiB`, `1.5MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A moment as a date when it is midnight UTC, else as an RFC 3339 date-time.
fn moment(at: i64) -> String {
    match DateTime::<Utc>::from_timestamp(at, 0) {
        Some(t) if at % 86_400 == 0 => t.format("%Y-%m-%d").to_string(),
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(50 << 30), "50GiB");
        assert_eq!(size(3 << 19), "1.5MiB");
    }

    #[test]
    fn moments_are_dates_at_midnight() {
        assert_eq!(moment(1_798_761_600), "2027-01-01");
        assert_eq!(moment(1_798_761_601), "2027-01-01T00:00:01Z");
    }
}
