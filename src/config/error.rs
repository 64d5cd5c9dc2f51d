//! Why a route file was refused: [`ConfigError`], printed as `file:line:column: key.path:
//! message` (CONFIG.md), with the position of the node the error is about whether the
//! fault was found while parsing or after it.

use std::fmt;

use super::datacenters::DcTableError;
use super::spans::Position;
use super::table::DuplicateName;
use super::via::ViaError;

/// Why a route file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is empty (or only comments).
    #[error("{origin}: the file is empty: it needs at least `listen:` and a route or `default:`")]
    Empty {
        /// The file (or other origin) of the text.
        origin: String,
    },
    /// The text is not YAML, or a value does not have the form its key takes; found by the
    /// YAML parser, whose message starts with the key path.
    #[error("{origin}:{}{message}", At(*at))]
    Syntax {
        /// The file (or other origin) of the text.
        origin: String,
        /// Where the parser stopped, when it says.
        at: Option<Position>,
        /// The parser's message.
        message: String,
    },
    /// The file is YAML of the right shape but breaks a rule of the route file.
    #[error("{origin}:{}{key}: {problem}", At(*at))]
    Rule {
        /// The file (or other origin) of the text.
        origin: String,
        /// Where the node the rule is about is written.
        at: Option<Position>,
        /// The key path of that node: `routes[2].sni[1]`, `timeouts.idle`.
        key: String,
        /// What is wrong (boxed: it is large, and errors are rare).
        problem: Box<Problem>,
    },
}

impl ConfigError {
    /// Where in the file the error is, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            ConfigError::Syntax { at, .. } | ConfigError::Rule { at, .. } => *at,
            ConfigError::Read { .. } | ConfigError::Empty { .. } => None,
        }
    }

    /// The broken rule, for an error found after parsing.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Rule { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// `line:column: ` after the origin's colon, or a space when the position is unknown.
pub(super) struct At(pub(super) Option<Position>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(Position { line, column }) => write!(f, "{line}:{column}: "),
            None => f.write_str(" "),
        }
    }
}

/// A rule of the route file that a parsed file breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A mapping names the same key twice; YAML would keep only one of the two values.
    #[error("given twice (first at line {}, column {}); YAML keeps only one of them", .first.line, .first.column)]
    DuplicateKey {
        /// Where the key was first given.
        first: Position,
    },
    /// A duration below its range.
    #[error("{written} is shorter than the minimum of {min}")]
    TooShort {
        /// The value as the file writes it.
        written: String,
        /// The minimum, as a duration the file could write.
        min: String,
    },
    /// A duration above its range.
    #[error("{written} is longer than the maximum of {max}")]
    TooLong {
        /// The value as the file writes it.
        written: String,
        /// The maximum, as a duration the file could write.
        max: String,
    },
    /// A count below its range.
    #[error("{value} is less than the minimum of {min}")]
    TooFew {
        /// The value.
        value: usize,
        /// The minimum.
        min: usize,
    },
    /// A count above its range.
    #[error("{value} is more than the maximum of {max}")]
    TooMany {
        /// The value.
        value: usize,
        /// The maximum.
        max: usize,
    },
    /// Two routes (or one route twice) claim the same server name.
    #[error(transparent)]
    DuplicateName(#[from] DuplicateName),
    /// A listen address given twice, or `metrics.listen` equal to a listen address.
    #[error("{addr} is also {other}; `run` could bind it only once")]
    AddressTwice {
        /// The address, as at the node at fault.
        addr: String,
        /// The key path of the other node with it (`listen[0]`).
        other: String,
    },
    /// Two addresses on one port where one is the wildcard (`0.0.0.0`, `[::]`) of the
    /// other's family: the wildcard takes the port on every address, so the second bind
    /// fails.
    #[error(
        "{addr} overlaps {other} ({other_addr}): a wildcard address takes port {port} on every \
         address of its family, so `run` could bind only one of them"
    )]
    AddressOverlap {
        /// The address at the node at fault.
        addr: String,
        /// The key path of the other node.
        other: String,
        /// The other address.
        other_addr: String,
        /// The port they share.
        port: u16,
    },
    /// `mtproto.users` while no connection can reach the MTProto core.
    #[error(
        "no connection can reach these users: no route (nor `default:`) has `mtproto: true` \
         and `allow_plain` is off; add `mtproto: true` to the route whose name their links \
         carry (the fronted domain)"
    )]
    UsersWithoutRoute,
    /// `mtproto: true` on a route whose names are all wildcards.
    #[error(
        "an `mtproto: true` route needs one exact server name: each client's ee-secret carries \
         one concrete domain, and `frontgate link` makes links only for exact names; write \
         the one clients will use beside the wildcard, e.g. `sni: [{example}, \"*.{suffix}\"]`"
    )]
    MtprotoWildcardOnly {
        /// An exact name below the first wildcard (`www.` + its suffix), as an example.
        example: String,
        /// The first wildcard's suffix.
        suffix: String,
    },
    /// A pool whose servers are all `backup: true`.
    #[error("every server of the pool is a backup: at least one must take traffic normally")]
    OnlyBackups,
    /// The same server twice in one pool.
    #[error("server {addr} is already listed at {other}: list each server once (use `weight` for a larger share)")]
    DuplicateServer {
        /// The address.
        addr: String,
        /// The key path of the first one.
        other: String,
    },
    /// `check.tls: true` on a route that terminates TLS here (its backend speaks plaintext).
    #[error("the backend of a `tls:` route gets the decrypted stream, so a TLS handshake check cannot succeed: remove `check.tls`")]
    TlsCheckOnTerminate,
    /// A route's `to` is one of frontgate's own listen addresses.
    #[error(
        "{upstream} is frontgate's own listen address {listen}: connections would loop back \
         into the gateway (fronting loop)"
    )]
    FrontingLoop {
        /// The backend as written.
        upstream: String,
        /// The listen address it reaches.
        listen: String,
    },
    /// A route with both `mtproto: true` and `tls:`.
    #[error("a route is either `mtproto: true` or `tls:`, not both")]
    MtprotoAndTls,
    /// `mtproto: true` on a route while the file has no `mtproto:` section.
    #[error("`mtproto: true` needs an `mtproto:` section with users")]
    MtprotoWithoutUsers,
    /// `mimic:` on a route (or `default:`) without `mtproto: true`.
    #[error("only `mtproto: true` routes have a mimic mode")]
    MimicWithoutMtproto,
    /// `mtproto: true` on `non_tls:`.
    #[error(
        "`mtproto: true` does not apply here: these connections send no TLS ClientHello to \
         check; to serve plain obfuscated2 clients, set `mtproto.allow_plain: true` instead"
    )]
    MtprotoOnNonTls,
    /// `allow`/`deny` on `non_tls:`.
    #[error(
        "`non_tls:` has no lists of its own (plain MTProto clients never reach a route); \
         use the top-level `allow`/`deny`, which every connection passes"
    )]
    AccessListsOnNonTls,
    /// `mtproto.users` is empty.
    #[error("add at least one user (name: secret), here or in `mtproto.users_file`")]
    NoUsers,
    /// A user name with characters that cannot go into logs and metric labels as they are.
    #[error(
        "user name `{name}` is not allowed: use 1 to {max} ASCII letters, digits, `_`, `-` or `.`",
        max = super::mtproto::USER_NAME_MAX
    )]
    UserName {
        /// The name as written (Debug-escaped when it holds control characters).
        name: String,
    },
    /// Two users with one secret: the gate could not tell them apart.
    #[error(
        "`{first}` and `{second}` have the same secret; give each user their own \
         (`frontgate secret` makes one)"
    )]
    SameSecret {
        /// The user listed first.
        first: String,
        /// The user listed second.
        second: String,
    },
    /// A quota's `resets_on` outside its period.
    #[error("resets_on must be 1 to {days} for a {period} quota (the day a period starts)")]
    ResetsOn {
        /// The quota's period.
        period: super::users::QuotaPeriod,
        /// The last day allowed.
        days: u8,
    },
    /// A user's `routes` entry that is not one exact server name.
    #[error(
        "`{name}` is not a server name: a user's routes list exact names of `mtproto: true` routes"
    )]
    UserRouteName {
        /// The entry as written.
        name: String,
    },
    /// A user's `routes` entry no `mtproto: true` route serves.
    #[error("no `mtproto: true` route serves `{name}`; the user could never connect there")]
    UserRouteUnknown {
        /// The name.
        name: String,
    },
    /// A user defined in the route file and in `mtproto.users_file`.
    #[error("user `{name}` is also in {other}; a user lives in one place")]
    UserInBothFiles {
        /// The user.
        name: String,
        /// Where the other definition is (`file:line:column`).
        other: String,
    },
    /// A `state.redis` URL that cannot be used.
    #[error(transparent)]
    RedisUrl(#[from] super::redis::RedisUrlError),
    /// `state.redis_timeout` without `state.redis`.
    #[error("`redis_timeout` bounds the wait for `state.redis`, which is not set")]
    RedisTimeoutWithoutRedis,
    /// A `mtproto.datacenters` entry that cannot be used.
    #[error(transparent)]
    Datacenter(#[from] DcTableError),
    /// A `mtproto.via` entry that cannot be used.
    #[error(transparent)]
    Via(#[from] ViaError),
    /// `tls:` with only one of `cert` and `key`.
    #[error("`cert` and `key` go together: give both")]
    CertWithoutKey,
    /// `tls:` with neither an ACME nor a file certificate.
    #[error("give either `acme:` or `cert:` + `key:`")]
    NoCertificate,
    /// `tls:` with both an ACME and a file certificate.
    #[error("`acme:` and `cert:`/`key:` exclude each other")]
    AcmeAndFiles,
    /// An ALPN protocol name that cannot be sent (RFC 7301: 1 to 255 bytes).
    #[error("ALPN protocol `{name}` must be 1 to {max} bytes long", max = super::bounds::ALPN_NAME_MAX)]
    AlpnName {
        /// The name as written.
        name: String,
    },
}
