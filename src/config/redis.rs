//! `state.redis`: the Redis server a fleet of gateways shares its replay cache and user usage
//! through, and how long a hello's decision may wait for it (`state.redis_timeout`).

use std::fmt;
use std::time::Duration;

/// How long a hello's replay check waits for Redis when `state.redis_timeout` is not given:
/// a loopback or same-rack Redis answers in well under a millisecond, and a client's
/// handshake must not stall noticeably when Redis is slow.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// A validated `state.redis`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisSettings {
    /// The URL as written (it may hold a password: never log it, log [`Self::shown`]).
    url: String,
    /// The URL with any password replaced by `***`, for logs and messages.
    shown: String,
    /// The longest a hello's decision waits for Redis before using the local cache.
    pub timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.shown)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a `state.redis` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not a Redis URL this frontgate can use ({why}); expected e.g. redis://127.0.0.1:6379/0 or redis://:password@redis.internal:6379/0")]
pub struct RedisUrlError {
    /// The URL, password hidden.
    pub shown: String,
    /// What is wrong with it.
    pub why: String,
}

impl RedisSettings {
    /// Checks `url` (a `redis://` or `redis+unix://` URL, parsed by the Redis client crate).
    pub fn parse(url: &str, timeout: Duration) -> Result<RedisSettings, RedisUrlError> {
        let shown = hide_password(url);
        let refuse = |why: String| RedisUrlError {
            shown: shown.clone(),
            why,
        };
        if url.starts_with("rediss://") {
            return Err(refuse(
                "TLS to Redis is not built in: reach Redis over a private network or a local \
                 TLS tunnel"
                    .into(),
            ));
        }
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err(refuse(
                "the scheme must be redis:// or redis+unix://".into(),
            ));
        }
        redis::Client::open(url).map_err(|e| refuse(e.to_string()))?;
        Ok(RedisSettings {
            url: url.to_string(),
            shown,
            timeout,
        })
    }

    /// The URL to connect to (may hold a password: not for logs).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password hidden, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.len() == userinfo.len() && !userinfo.is_empty() {
        // `redis://secret@host`: the crate reads a lone userinfo as the user name; hide it
        // too, it is often a password.
        return format!("{scheme}://***@{host}{tail}");
    }
    format!("{scheme}://{user}:***@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:hunter2@10.0.0.5:6379/1",
                "redis://:***@10.0.0.5:6379/1",
            ),
            (
                "redis://fleet:hunter2@redis.internal/0",
                "redis://fleet:***@redis.internal/0",
            ),
            (
                "redis://hunter2@redis.internal",
                "redis://***@redis.internal",
            ),
        ];
        for (url, shown) in cases {
            let settings = RedisSettings::parse(url, DEFAULT_REDIS_TIMEOUT).unwrap();
            assert_eq!(settings.shown(), shown);
            assert_eq!(settings.url(), url);
            assert!(!format!("{settings:?}").contains("hunter2"));
        }
    }

    #[test]
    fn unusable_urls_are_refused_with_the_password_hidden() {
        for url in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "rediss://:hunter2@127.0.0.1:6379",
            "redis://:hunter2@127.0.0.1:notaport/0",
        ] {
            let err = RedisSettings::parse(url, DEFAULT_REDIS_TIMEOUT).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(err.to_string().contains("expected e.g."), "{err}");
        }
    }
}
