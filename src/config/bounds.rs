//! The range every duration and count of the route file must fall in. A value outside its
//! range is refused by `check` and on reload, never clamped: `idle: 500000000000y` is a typo
//! or a misunderstanding, and running with it would hide that (before these ranges, such a
//! value made every connection panic). The ranges are wide enough for a demanding nginx or
//! HAProxy setup; `routes.example.yaml` and the README list them.

use std::fmt;
use std::time::Duration;

use super::error::Problem;

/// The inclusive range of a configured duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest value accepted.
    pub min: Duration,
    /// The longest value accepted.
    pub max: Duration,
}

/// The inclusive range of a configured count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    /// The smallest value accepted.
    pub min: usize,
    /// The largest value accepted.
    pub max: usize,
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `timeouts.client_hello`: nginx's `preread_timeout` is 30s by default; minutes are
/// already generous for a handshake's first flight.
pub const CLIENT_HELLO: DurationRange = DurationRange {
    min: millis(100),
    max: secs(5 * 60),
};

/// `timeouts.connect`: nginx caps `proxy_connect_timeout` near 75s; a connect that takes
/// minutes has failed.
pub const CONNECT: DurationRange = DurationRange {
    min: millis(100),
    max: secs(5 * 60),
};

/// `timeouts.idle`: from sub-second (tests, aggressive reaping) to a week for long-lived
/// quiet connections (Telegram clients, websockets).
pub const IDLE: DurationRange = DurationRange {
    min: millis(100),
    max: secs(7 * 86_400),
};

/// `mtproto.middle_proxy.refresh`: Telegram changes the list rarely; a second is for tests,
/// a week is the longest a stale list should be trusted.
pub const MIDDLE_REFRESH: DurationRange = DurationRange {
    min: secs(1),
    max: secs(7 * 86_400),
};

/// `timeouts.shutdown_grace`: how long SIGTERM waits for live connections (HAProxy's
/// `hard-stop-after`); a day covers the longest deliberate drain.
pub const SHUTDOWN_GRACE: DurationRange = DurationRange {
    min: secs(1),
    max: secs(86_400),
};

/// `tls.handshake_timeout` of a route: the whole TLS handshake, ClientHello to Finished.
pub const TLS_HANDSHAKE: DurationRange = DurationRange {
    min: millis(100),
    max: secs(5 * 60),
};

/// `mtproto.max_clock_skew`: clients' clocks are off by seconds to minutes; a day already
/// lets old handshakes count as fresh for a long time.
pub const MAX_CLOCK_SKEW: DurationRange = DurationRange {
    min: secs(1),
    max: secs(86_400),
};

/// A pool's `check.interval`: from sub-second (tests, fast failover) to an hour.
pub const CHECK_INTERVAL: DurationRange = DurationRange {
    min: millis(100),
    max: secs(3600),
};

/// A pool's `check.timeout`: one connect or TLS handshake.
pub const CHECK_TIMEOUT: DurationRange = DurationRange {
    min: millis(50),
    max: secs(60),
};

/// A pool's `check.fall` and `check.rise`: consecutive results that flip a server's state.
pub const CHECK_STREAK: CountRange = CountRange { min: 1, max: 100 };

/// A pool server's `weight` (HAProxy's range is 0-256; 0 would be a server never used).
pub const WEIGHT: CountRange = CountRange { min: 1, max: 1000 };

/// The servers of one pool: each has a health checker and metric series.
pub const POOL_SERVERS: CountRange = CountRange { min: 1, max: 256 };

/// `limits.max_connections`: ten million open sockets is beyond what one process gets file
/// descriptors and memory for.
pub const MAX_CONNECTIONS: CountRange = CountRange {
    min: 1,
    max: 10_000_000,
};

/// `limits.max_connections_per_ip`: same ceiling as all connections together.
pub const MAX_CONNECTIONS_PER_IP: CountRange = CountRange {
    min: 1,
    max: 10_000_000,
};

/// `state.redis_timeout`: a hello waits at most this for the fleet-wide replay check; past
/// seconds, a client notices the stall.
pub const REDIS_TIMEOUT: DurationRange = DurationRange {
    min: millis(1),
    max: secs(5),
};

/// `mtproto.replay_cache`: entries are held in memory (about a hundred bytes each), so ten
/// million is about a gigabyte.
pub const REPLAY_CACHE: CountRange = CountRange {
    min: 1,
    max: 10_000_000,
};

/// Longest ALPN protocol name (RFC 7301: one length byte, no empty names).
pub const ALPN_NAME_MAX: usize = 255;

impl DurationRange {
    /// `value` (written as `written` in the file) if it is in range.
    pub(crate) fn check(&self, value: Duration, written: &str) -> Result<Duration, Problem> {
        if value < self.min {
            return Err(Problem::TooShort {
                written: written.to_string(),
                min: Short(self.min).to_string(),
            });
        }
        if value > self.max {
            return Err(Problem::TooLong {
                written: written.to_string(),
                max: Short(self.max).to_string(),
            });
        }
        Ok(value)
    }
}

impl CountRange {
    /// `value` if it is in range.
    pub(crate) fn check(&self, value: usize) -> Result<usize, Problem> {
        if value < self.min {
            return Err(Problem::TooFew {
                value,
                min: self.min,
            });
        }
        if value > self.max {
            return Err(Problem::TooMany {
                value,
                max: self.max,
            });
        }
        Ok(value)
    }
}

/// A bound written the way the file would write it: `7d`, `5m`, `100ms`.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// A user's `max_connections`: one at least; a million is far beyond one person.
pub const USER_CONNECTIONS: CountRange = CountRange {
    min: 1,
    max: 1_000_000,
};

/// A user's `max_ips`.
pub const USER_IPS: CountRange = CountRange {
    min: 1,
    max: 100_000,
};

/// A user's `rate`, bytes per second: 1 KiB/s (below that a Telegram client times out) to
/// 100 GB/s (no limit in practice).
pub const USER_RATE: CountRange = CountRange {
    min: 1024,
    max: 100_000_000_000,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_print_as_the_file_writes_them() {
        let short = |d| Short(d).to_string();
        assert_eq!(short(secs(7 * 86_400)), "7d");
        assert_eq!(short(secs(5 * 60)), "5m");
        assert_eq!(short(secs(3600)), "1h");
        assert_eq!(short(secs(90)), "90s");
        assert_eq!(short(millis(100)), "100ms");
        for range in [
            CLIENT_HELLO,
            CONNECT,
            IDLE,
            SHUTDOWN_GRACE,
            TLS_HANDSHAKE,
            MAX_CLOCK_SKEW,
        ] {
            for bound in [range.min, range.max] {
                assert_eq!(humantime::parse_duration(&short(bound)).ok(), Some(bound));
            }
        }
    }

    #[test]
    fn ranges_are_inclusive() {
        assert_eq!(IDLE.check(secs(7 * 86_400), "7d"), Ok(secs(7 * 86_400)));
        assert_eq!(IDLE.check(millis(100), "100ms"), Ok(millis(100)));
        assert_eq!(
            IDLE.check(Duration::MAX, "forever")
                .map_err(|e| e.to_string()),
            Err("forever is longer than the maximum of 7d".to_string())
        );
        assert_eq!(
            CLIENT_HELLO
                .check(millis(99), "99ms")
                .map_err(|e| e.to_string()),
            Err("99ms is shorter than the minimum of 100ms".to_string())
        );
        assert_eq!(REPLAY_CACHE.check(10_000_000), Ok(10_000_000));
        assert_eq!(
            REPLAY_CACHE.check(10_000_001).map_err(|e| e.to_string()),
            Err("10000001 is more than the maximum of 10000000".to_string())
        );
        assert_eq!(
            MAX_CONNECTIONS.check(0).map_err(|e| e.to_string()),
            Err("0 is less than the minimum of 1".to_string())
        );
    }
}
