//! `timeouts:` of the imported route file from nginx's `preread_timeout`,
//! `proxy_connect_timeout` and `proxy_timeout`, inside frontgate's ranges.

use std::time::Duration;

use crate::config::bounds;

use super::plan::{Comment, Commented};
use super::stream::{Settings, Unmapped};

/// `timeouts:` from the primary server's settings, kept inside frontgate's ranges.
pub fn timeouts(settings: &Settings) -> Vec<Commented<(&'static str, String)>> {
    let mut out = Vec::new();
    let keys = [
        (
            "client_hello",
            &settings.preread_timeout,
            bounds::CLIENT_HELLO,
            "preread_timeout",
            "30s",
            "10s",
        ),
        (
            "connect",
            &settings.connect_timeout,
            bounds::CONNECT,
            "proxy_connect_timeout",
            "60s",
            "5s",
        ),
        (
            "idle",
            &settings.timeout,
            bounds::IDLE,
            "proxy_timeout",
            "10m",
            "10m",
        ),
    ];
    for (key, setting, range, directive, nginx_default, ours) in keys {
        let Some(setting) = setting else {
            if nginx_default != ours {
                let mut item = Commented::new((key, ours.to_string()));
                item.comments.push(Comment::Note(format!(
                    "no {directive} in nginx: its default is {nginx_default}, frontgate's {ours}"
                )));
                out.push(item);
            }
            continue;
        };
        let clamped = setting.value.clamp(range.min, range.max);
        let mut item = Commented::new((key, duration_text(clamped)));
        if clamped == setting.value {
            item.comments
                .push(Comment::Note(format!("{}: `{}`", setting.at, setting.text)));
        } else {
            item.comments.push(Comment::NotMapped(Unmapped {
                at: setting.at.clone(),
                text: setting.text.clone(),
                why: format!(
                    "outside frontgate's range for timeouts.{key} ({}..{}): set to {}",
                    duration_text(range.min),
                    duration_text(range.max),
                    duration_text(clamped)
                ),
            }));
        }
        if key == "idle" {
            item.comments.push(Comment::Note(
                "frontgate closes a relay idle in both directions for this long".to_string(),
            ));
        }
        out.push(item);
    }
    out
}

/// A duration in the largest unit that writes it exactly (`5s`, `24h` as `1d`, `500ms`).
fn duration_text(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_their_largest_exact_unit() {
        for (millis, text) in [
            (500, "500ms"),
            (5_000, "5s"),
            (90_000, "90s"),
            (86_400_000, "1d"),
            (7_200_000, "2h"),
        ] {
            assert_eq!(duration_text(Duration::from_millis(millis)), text);
        }
    }
}
