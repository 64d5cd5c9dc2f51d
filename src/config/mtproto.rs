//! The `mtproto:` block of the route file, resolved into values (CONFIG.md): users, clock
//! skew, DC table, timeouts. Pure data; the MTProto core's running state lives elsewhere.

use std::time::Duration;

use std::path::PathBuf;

use super::datacenters::DcTable;
use super::middle::MiddleProxySettings;
use super::secret::Secret;
use super::users::MtprotoUser;
use super::via::ViaUpstream;

/// The `mtproto:` block of the route file, resolved into values (CONFIG.md).
#[derive(Debug, Clone)]
pub struct MtprotoSettings {
    /// The users (the route file's, then the users file's); the index is the user id in
    /// counters and outcomes.
    pub users: Vec<MtprotoUser>,
    /// `mtproto.users_file`, resolved against the route file's directory: watched for
    /// changes like the route file.
    pub users_file: Option<PathBuf>,
    /// Accepted |client timestamp - now| of a fake-TLS digest.
    pub max_clock_skew: Duration,
    /// Capacity of the replay cache the router keeps (entries).
    pub replay_cache: usize,
    /// Whether non-TLS obfuscated2 clients are served (`mtproto::session::serve_plain`).
    pub allow_plain: bool,
    /// Where to dial each DC.
    pub datacenters: DcTable,
    /// mtprotoproxy's fast path: DC replies reach the client without re-encryption, at the
    /// cost of sending the client's download key to the DC in the clear (PROTOCOL.md §6).
    pub fast_mode: bool,
    /// Per-address DC connect timeout (`timeouts.connect`).
    pub connect_timeout: Duration,
    /// A relay with no byte in either direction for this long is closed (`timeouts.idle`).
    pub idle_timeout: Duration,
    /// Time allowed for the 64-byte obfuscated2 init to arrive (`timeouts.client_hello`).
    pub handshake_timeout: Duration,
    /// Dial a built-in DC's IPv6 address before its IPv4 one.
    pub prefer_ipv6: bool,
    /// `mtproto.via`: SOCKS5 upstreams that carry every DC connection, tried in order; empty
    /// dials DCs directly.
    pub via: Vec<ViaUpstream>,
    /// `mtproto.via_fallback_direct`: dial the DC directly when every upstream is down.
    pub via_fallback_direct: bool,
    /// Middle-proxy mode: the tags and the ME configuration's sources.
    pub middle: MiddleProxySettings,
}

/// The longest MTProto user name.
pub const USER_NAME_MAX: usize = 64;

/// Whether `name` may name an MTProto user: 1 to [`USER_NAME_MAX`] ASCII letters, digits,
/// `_`, `-` or `.`. User names go into log lines, Prometheus labels and `frontgate link`
/// output as they are, so nothing in them may need escaping.
pub fn is_valid_user_name(name: &str) -> bool {
    (1..=USER_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl MtprotoSettings {
    /// The secrets in user order, as `mtproto::faketls::verify_client_hello` takes
    /// them: borrowed, since every hello on an `mtproto: true` route asks for them.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.users.iter().map(|user| &user.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_ascii_words() {
        for good in ["alice", "Bob_2", "a-b.c", "x", &"n".repeat(USER_NAME_MAX)] {
            assert!(is_valid_user_name(good), "{good:?} refused");
        }
        for bad in [
            "",
            "a\"b",
            "a b",
            "a\nb",
            "a{b}",
            "a=b",
            "ålice",
            "a\\b",
            &"n".repeat(USER_NAME_MAX + 1),
        ] {
            assert!(!is_valid_user_name(bad), "{bad:?} accepted");
        }
    }
}
