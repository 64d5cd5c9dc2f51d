//! The route file: reading, validating and compiling it into the typed [`Config`] the gateway
//! runs on. This is the only module that knows the file format (YAML, see `CONFIG.md` and
//! `routes.example.yaml`). Every error names the file, line, column and key path.

pub mod addresses;
pub mod bounds;
pub mod datacenters;
mod error;
pub mod middle;
mod model;
pub mod mtproto;
pub mod netpolicy;
mod places;
pub mod pool;
pub mod redis;
pub mod secret;
mod spans;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod users;
pub mod users_file;
pub mod users_write;
mod values;
pub mod via;
pub mod warning;

pub use datacenters::DcTable;
pub use error::{ConfigError, Problem};
pub use mtproto::MtprotoSettings;
pub use netpolicy::{AccessLists, AddressSet};
pub use places::{Located, Places};
pub use secret::Secret;
pub use spans::Position;
pub use table::{
    Action, DuplicateName, Forward, MimicMode, MtprotoRoute, NamePattern, ProxyProtocol, Route,
    RouteTable, Terminate,
};
pub use tls::{CertSource, TlsSettings};
pub use upstream::Upstream;
pub use warning::{Concern, Warning};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use bounds::{CountRange, DurationRange};
use datacenters::DcTableError;
use model::{MtprotoSection, RouteFile, TargetSection, TlsSection};
use pool::PoolSettings;
use spans::Spans;
use tls::DEFAULT_ACME_DIRECTORY;
use values::{DurationValue, NameValue, ToValue};

/// Time limits for each stage of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole ClientHello (and an inbound PROXY header) must arrive within this.
    pub client_hello: Duration,
    /// One backend connect attempt.
    pub connect: Duration,
    /// A relay with no byte in either direction for this long is closed.
    pub idle: Duration,
    /// On SIGTERM, live connections get this long to finish before the process exits.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            client_hello: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Connection limits; connections over a limit are closed at once and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_connections_per_ip: 512,
        }
    }
}

/// A validated route file, ready to serve.
#[derive(Debug)]
pub struct Config {
    /// Addresses to accept connections on.
    pub listen: Vec<SocketAddr>,
    /// Peers that must (and alone may) send an inbound PROXY header.
    pub trusted_proxies: Vec<IpNet>,
    /// Stage time limits.
    pub timeouts: Timeouts,
    /// Connection limits.
    pub limits: Limits,
    /// Where `/metrics` and `/stats` are served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The routing decision table.
    pub routes: RouteTable,
    /// The built-in MTProto proxy, when `mtproto:` is configured.
    pub mtproto: Option<MtprotoSettings>,
    /// What the file probably gets wrong without being invalid; `check` prints these and
    /// `run` logs them.
    pub warnings: Vec<Warning>,
    /// Where the file writes each node, for faults found after loading (a certificate file
    /// that cannot be read) to be reported at their node.
    pub places: Places,
    /// `state.dir`, resolved against the route file's directory: the users' usage is kept
    /// there across restarts. `None`: usage lives in memory only.
    pub state_dir: Option<PathBuf>,
    /// `state.redis`: the Redis server the fleet shares its replay cache and user usage
    /// through. `None`: both stay in this process.
    pub redis: Option<redis::RedisSettings>,
    /// The global `allow`/`deny` lists, checked at accept (after the inbound PROXY header
    /// for trusted balancers).
    pub access: AccessLists,
    /// The FireHOL-format file of further denied networks; the gateway reads it (and re-reads
    /// it when it changes).
    pub deny_file: Option<PathBuf>,
}

impl Config {
    /// The files besides the route file that this configuration was read from (a change of
    /// one reloads like a change of the route file).
    pub fn input_files(&self) -> Vec<PathBuf> {
        let users_file = self.mtproto.iter().filter_map(|m| m.users_file.clone());
        users_file.chain(self.deny_file.clone()).collect()
    }

    /// Whether `peer` is a balancer allowed to send an inbound PROXY header.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// Reads and validates the route file at `path` (and its `mtproto.users_file`, relative to
/// the route file's directory).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    parse_in(&text, &path.display().to_string(), path.parent())
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Validates route-file text; `origin` names it in errors. A `mtproto.users_file` is read
/// relative to the working directory.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_in(text, origin, None)
}

/// [`parse`], with relative paths of other files taken from `dir`.
fn parse_in(text: &str, origin: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
    parse_with(text, origin, dir, users_file::read)
}

/// [`parse_in`], with the users file (at its resolved path) read by `read_users`.
fn parse_with(
    text: &str,
    origin: &str,
    dir: Option<&Path>,
    read_users: impl FnOnce(&Path) -> Result<users_file::UsersFile, ConfigError>,
) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty {
            origin: origin.to_string(),
        });
    }
    let spans = Spans::of(text);
    if let Some(dup) = spans.duplicate() {
        return Err(ConfigError::Rule {
            origin: origin.to_string(),
            at: Some(dup.again),
            key: dup.key.clone(),
            problem: Box::new(Problem::DuplicateKey { first: dup.first }),
        });
    }
    // The whole text must be YAML before it is read as a route file: serde_yaml_ng reads
    // lazily, so an indentation slip that ends a route's mapping early was reported as that
    // route's missing field, at the line where the route starts, before the parser reached
    // the slipped line and its real error.
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        .map_err(|e| yaml_error(e, origin, &spans))?;
    let mut file: RouteFile =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(e, origin, &spans))?;
    if let Some(state_dir) = file.state.as_mut().and_then(|s| s.dir.as_mut()) {
        *state_dir = resolve(dir, state_dir);
    }
    let users_file = match file.mtproto.as_ref().and_then(|m| m.users_file.as_ref()) {
        Some(path) => Some(read_users(&resolve(dir, path))?),
        None => None,
    };
    let places = Places::new(origin, spans.clone());
    compile(file, users_file.as_ref(), places).map_err(|fault| match &users_file {
        Some(users) if fault.in_users_file => users.place(fault),
        _ => fault.place(&spans, origin),
    })
}

/// `path` as written in the route file, relative to `dir` (the route file's directory).
fn resolve(dir: Option<&Path>, path: &Path) -> PathBuf {
    match dir {
        Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

fn yaml_error(err: serde_yaml_ng::Error, origin: &str, spans: &Spans) -> ConfigError {
    let text = err.to_string();
    let (at, message) = match err.location() {
        Some(at) => {
            // The position goes in front; libyaml's messages give it mid-sentence too.
            let said = format!(" at line {} column {}", at.line(), at.column());
            let message = text.replacen(&said, "", 1);
            let at = Position {
                line: at.line(),
                column: at.column(),
            };
            (Some(at), message)
        }
        None => (None, text),
    };
    let (at, message) = match pushed_out(&message, spans) {
        Some((slipped, hint)) => (Some(slipped), format!("{message}: {hint}")),
        None => (at, message),
    };
    ConfigError::Syntax {
        origin: origin.to_string(),
        at,
        message,
    }
}

/// For serde's "`path`: missing field `name`", which it places at the start of the mapping
/// at `path`: the key `name` when an indentation slip pushed it out of that mapping (it is
/// then the first key after the mapping's last one, less indented), with a hint to indent it.
/// A slip outwards is still YAML, so this is the one slip the YAML parser cannot report.
fn pushed_out(message: &str, spans: &Spans) -> Option<(Position, String)> {
    let (path, rest) = match message.split_once(": missing field `") {
        Some((path, rest)) => (path, rest),
        None => ("", message.strip_prefix("missing field `")?),
    };
    let field = rest.strip_suffix('`')?;
    let (slipped, at) = spans.key_after(path)?;
    let reads_as = slipped.strip_suffix(field)?;
    let reads_as = match reads_as.strip_suffix('.') {
        Some(parent) => format!("`{parent}`"),
        None if reads_as.is_empty() => "the top level".to_string(),
        None => return None,
    };
    let column = spans.value(path)?.column;
    let hint = format!(
        "this `{field}:` is indented less than the keys of {path} (column {column}), so YAML \
         reads it as a key of {reads_as}; indent it to column {column}"
    );
    Some((at, hint))
}

/// A rule broken by a parsed file, with the key path of the node it is about; the node's
/// position is looked up when the fault becomes a [`ConfigError`].
#[derive(Debug)]
struct Fault {
    key: String,
    /// Whether the key itself is at fault (a bad name) rather than its value.
    at_key: bool,
    /// Whether the node is in `mtproto.users_file` rather than the route file.
    in_users_file: bool,
    problem: Problem,
}

impl Fault {
    /// The value at `key` breaks the rule.
    fn value(key: impl Into<String>, problem: impl Into<Problem>) -> Fault {
        Fault {
            key: key.into(),
            at_key: false,
            in_users_file: false,
            problem: problem.into(),
        }
    }

    /// The key naming `key` breaks the rule (or its presence does).
    fn key(key: impl Into<String>, problem: impl Into<Problem>) -> Fault {
        Fault {
            at_key: true,
            ..Fault::value(key, problem)
        }
    }

    fn place(self, spans: &Spans, origin: &str) -> ConfigError {
        let at = if self.at_key {
            spans.key(&self.key)
        } else {
            spans.value(&self.key)
        };
        ConfigError::Rule {
            origin: origin.to_string(),
            at,
            key: spans.spelled(&self.key).to_string(),
            problem: Box::new(self.problem),
        }
    }
}

/// The configured duration at `key`, in `range`, or `default` when the key is absent.
fn duration(
    value: &Option<DurationValue>,
    key: &str,
    range: DurationRange,
    default: Duration,
) -> Result<Duration, Fault> {
    match value {
        Some(v) => range
            .check(v.duration, &v.written)
            .map_err(|problem| Fault::value(key, problem)),
        None => Ok(default),
    }
}

/// The configured count at `key`, in `range`, or `default` when the key is absent.
fn count(
    value: Option<usize>,
    key: &str,
    range: CountRange,
    default: usize,
) -> Result<usize, Fault> {
    match value {
        Some(n) => range.check(n).map_err(|problem| Fault::value(key, problem)),
        None => Ok(default),
    }
}

/// Checks what spans several keys and builds the typed config, which keeps `places` (the
/// file's node positions) for its warnings and for faults found later.
fn compile(
    file: RouteFile,
    users_file: Option<&users_file::UsersFile>,
    places: Places,
) -> Result<Config, Fault> {
    let listen: Vec<SocketAddr> = file.listen.0.iter().map(|l| l.0).collect();
    let metrics = file.metrics.map(|m| m.listen.0);
    bindable(&listen, metrics)?;
    let defaults = Timeouts::default();
    let t = &file.timeouts;
    let timeouts = Timeouts {
        client_hello: duration(
            &t.client_hello,
            "timeouts.client_hello",
            bounds::CLIENT_HELLO,
            defaults.client_hello,
        )?,
        connect: duration(
            &t.connect,
            "timeouts.connect",
            bounds::CONNECT,
            defaults.connect,
        )?,
        idle: duration(&t.idle, "timeouts.idle", bounds::IDLE, defaults.idle)?,
        shutdown_grace: duration(
            &t.shutdown_grace,
            "timeouts.shutdown_grace",
            bounds::SHUTDOWN_GRACE,
            defaults.shutdown_grace,
        )?,
    };
    let default_limits = Limits::default();
    let limits = Limits {
        max_connections: count(
            file.limits.max_connections,
            "limits.max_connections",
            bounds::MAX_CONNECTIONS,
            default_limits.max_connections,
        )?,
        max_connections_per_ip: count(
            file.limits.max_connections_per_ip,
            "limits.max_connections_per_ip",
            bounds::MAX_CONNECTIONS_PER_IP,
            default_limits.max_connections_per_ip,
        )?,
    };

    let mtproto = file
        .mtproto
        .map(|section| mtproto_settings(section, users_file, &timeouts))
        .transpose()?;
    let mut routes = RouteTable::new();
    for (index, route) in file.routes.unwrap_or_default().into_iter().enumerate() {
        let key = format!("routes[{index}]");
        let names: Vec<NamePattern> = route.sni.0.into_iter().map(|NameValue(n)| n).collect();
        let label = names.first().map(ToString::to_string).unwrap_or_default();
        let exact = names
            .iter()
            .map(ToString::to_string)
            .find(|n| !n.starts_with('*'));
        let backend = match (&route.tls, route.mtproto) {
            (Some(_), _) => pool::Backend::Plaintext,
            (None, true) => pool::Backend::TlsSite(exact.as_deref()),
            (None, false) => pool::Backend::Passthrough,
        };
        let forward = forward(&key, &route.to, route.proxy_protocol.0, &listen, backend)?;
        if route.mtproto {
            exact_name(&key, &names)?;
        }
        let action = match (route.tls, route.mtproto) {
            (Some(_), true) => {
                return Err(Fault::key(format!("{key}.tls"), Problem::MtprotoAndTls))
            }
            (None, true) if mtproto.is_none() => {
                return Err(Fault::value(
                    format!("{key}.mtproto"),
                    Problem::MtprotoWithoutUsers,
                ))
            }
            (None, true) => Action::Mtproto(mtproto_route(forward, route.mimic)),
            (None, false) if route.mimic.is_some() => {
                return Err(Fault::key(
                    format!("{key}.mimic"),
                    Problem::MimicWithoutMtproto,
                ))
            }
            (None, false) => Action::Forward(forward),
            (Some(tls), false) => Action::Terminate(Terminate {
                settings: tls_settings(&key, &names, tls)?,
                forward,
            }),
        };
        let access = netpolicy::access_lists(&route.allow, &route.deny);
        let route = Route {
            label,
            action,
            access,
        };
        routes.add(&names, route).map_err(|dup| {
            // A name listed twice in one route is at fault where it repeats.
            let at = names.iter().rposition(|n| *n == dup.name).unwrap_or(0);
            Fault::value(format!("{key}.sni[{at}]"), dup)
        })?;
    }
    let has_mtproto = mtproto.is_some();
    if let Some(target) = &file.default {
        routes.set_default(target_route("default", target, has_mtproto, &listen)?);
    }
    if let Some(target) = &file.non_tls {
        if target.mtproto {
            return Err(Fault::value("non_tls.mtproto", Problem::MtprotoOnNonTls));
        }
        if let Some(key) = [("allow", &target.allow), ("deny", &target.deny)]
            .iter()
            .find_map(|(key, list)| list.is_some().then_some(*key))
        {
            return Err(Fault::key(
                format!("non_tls.{key}"),
                Problem::AccessListsOnNonTls,
            ));
        }
        routes.set_non_tls(target_route("non_tls", target, has_mtproto, &listen)?);
    }
    if let Some(settings) = &mtproto {
        let reached = |route: &Route| matches!(route.action, Action::Mtproto(_));
        let by_name = routes.routes().iter().any(|r| reached(r));
        let by_default = routes.default_route().is_some_and(|r| reached(r));
        if !(by_name || by_default || settings.allow_plain) {
            return Err(Fault::key("mtproto.users", Problem::UsersWithoutRoute));
        }
    }

    if let Some(settings) = &mtproto {
        check_user_routes(settings, &routes, users_file)?;
    }

    let warnings = warnings(mtproto.as_ref(), users_file, metrics, &places);
    let (state_dir, redis) = match file.state {
        Some(state) => {
            let redis = shared_state(&state)?;
            (state.dir, redis)
        }
        None => (None, None),
    };
    let mut mtproto = mtproto;
    if let Some(settings) = mtproto.as_mut() {
        settings.middle.cache_dir = state_dir.clone();
    }
    Ok(Config {
        listen,
        trusted_proxies: file
            .accept_proxy_protocol_from
            .iter()
            .map(|n| n.0)
            .collect(),
        timeouts,
        limits,
        metrics,
        routes,
        mtproto,
        warnings,
        places,
        state_dir,
        redis,
        access: netpolicy::access_lists(&file.allow, &file.deny),
        deny_file: file.deny_file,
    })
}

/// The validated `state.redis` and `state.redis_timeout`, if Redis is configured.
fn shared_state(state: &model::StateSection) -> Result<Option<redis::RedisSettings>, Fault> {
    let timeout = duration(
        &state.redis_timeout,
        "state.redis_timeout",
        bounds::REDIS_TIMEOUT,
        redis::DEFAULT_REDIS_TIMEOUT,
    )?;
    let Some(url) = &state.redis else {
        if state.redis_timeout.is_some() {
            return Err(Fault::key(
                "state.redis_timeout",
                Problem::RedisTimeoutWithoutRedis,
            ));
        }
        return Ok(None);
    };
    redis::RedisSettings::parse(url, timeout)
        .map(Some)
        .map_err(|e| Fault::value("state.redis", e))
}

/// Every listen address and the metrics address can be bound together: none given twice,
/// none on a port a wildcard of its family takes ([`addresses::clash`]).
fn bindable(listen: &[SocketAddr], metrics: Option<SocketAddr>) -> Result<(), Fault> {
    for (i, addr) in listen.iter().enumerate() {
        for (j, earlier) in listen[..i].iter().enumerate() {
            if let Some(problem) = addresses::clash(*addr, *earlier, &format!("listen[{j}]")) {
                return Err(Fault::value(format!("listen[{i}]"), problem));
            }
        }
    }
    let Some(metrics) = metrics else {
        return Ok(());
    };
    for (j, addr) in listen.iter().enumerate() {
        if let Some(problem) = addresses::clash(metrics, *addr, &format!("listen[{j}]")) {
            return Err(Fault::value("metrics.listen", problem));
        }
    }
    Ok(())
}

/// An `mtproto: true` route names at least one exact server name: a client's ee-secret
/// carries one concrete domain, which `frontgate link` takes from the route's exact names.
fn exact_name(key: &str, names: &[NamePattern]) -> Result<(), Fault> {
    match names {
        [NamePattern::Wildcard(suffix), rest @ ..]
            if rest.iter().all(|n| matches!(n, NamePattern::Wildcard(_))) =>
        {
            let problem = Problem::MtprotoWildcardOnly {
                example: format!("www.{suffix}"),
                suffix: suffix.clone(),
            };
            Err(Fault::value(format!("{key}.sni"), problem))
        }
        _ => Ok(()),
    }
}

/// The warnings about a valid file: public example secrets in use, an unauthenticated
/// metrics endpoint reachable from other hosts.
fn warnings(
    mtproto: Option<&MtprotoSettings>,
    users_file: Option<&users_file::UsersFile>,
    metrics: Option<SocketAddr>,
    places: &Places,
) -> Vec<Warning> {
    let mut found = Vec::new();
    for user in mtproto.iter().flat_map(|m| &m.users) {
        if warning::is_public(&user.secret) {
            let warning = match users_file.filter(|f| f.has(&user.name)) {
                Some(file) => file.warning(&user.name, Concern::PublicSecret),
                None => {
                    let key = format!("mtproto.users.{}", user.name);
                    places.warning(&key, &format!("{key}.secret"), Concern::PublicSecret)
                }
            };
            found.push(warning);
        }
    }
    if let Some(addr) = metrics.filter(|a| warning::is_public_address(*a)) {
        let key = "metrics.listen";
        found.push(places.warning(key, key, Concern::OpenMetrics { addr }));
    }
    found
}

/// Every name in a user's `routes` must be served by an `mtproto: true` route.
fn check_user_routes(
    settings: &MtprotoSettings,
    routes: &RouteTable,
    users_file: Option<&users_file::UsersFile>,
) -> Result<(), Fault> {
    for user in &settings.users {
        let in_file = users_file.is_some_and(|f| f.has(&user.name));
        let prefix = if in_file {
            users_file::USERS_KEY
        } else {
            "mtproto.users"
        };
        for (i, name) in user.policy.routes.iter().flatten().enumerate() {
            let served = routes
                .for_server_name(Some(name))
                .is_some_and(|route| matches!(route.action, Action::Mtproto(_)));
            if !served {
                let problem = Problem::UserRouteUnknown { name: name.clone() };
                let mut fault =
                    Fault::value(format!("{prefix}.{}.routes[{i}]", user.name), problem);
                fault.in_users_file = in_file;
                return Err(fault);
            }
        }
    }
    Ok(())
}

/// `mtproto.max_clock_skew` when not given.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

/// `mtproto.replay_cache` when not given.
pub const DEFAULT_REPLAY_CACHE: usize = 100_000;

fn mtproto_settings(
    section: MtprotoSection,
    users_file: Option<&users_file::UsersFile>,
    timeouts: &Timeouts,
) -> Result<MtprotoSettings, Fault> {
    let mut users = users::compile_users("mtproto.users", section.users)?;
    if let Some(file) = users_file {
        for user in &file.users {
            if users.iter().any(|u| u.name == user.name) {
                let problem = Problem::UserInBothFiles {
                    name: user.name.clone(),
                    other: file.place_of(&user.name),
                };
                return Err(Fault::key(format!("mtproto.users.{}", user.name), problem));
            }
        }
        users.extend(file.users.iter().cloned());
    }
    if users.is_empty() {
        return Err(Fault::value("mtproto.users", Problem::NoUsers));
    }
    for (i, user) in users.iter().enumerate() {
        if let Some(other) = users[..i].iter().find(|u| u.secret == user.secret) {
            let problem = Problem::SameSecret {
                first: other.name.clone(),
                second: user.name.clone(),
            };
            let key = match users_file {
                Some(file) if file.has(&user.name) => "mtproto.users_file".to_string(),
                _ => format!("mtproto.users.{}", user.name),
            };
            return Err(Fault::value(key, problem));
        }
    }
    let overrides: HashMap<i16, Vec<String>> = section
        .datacenters
        .into_iter()
        .map(|(dc, addrs)| (dc, addrs.0))
        .collect();
    let datacenters = DcTable::with_overrides(overrides.clone()).map_err(|e| {
        let key = match &e {
            DcTableError::BadId(dc) => return Fault::key(format!("mtproto.datacenters.{dc}"), e),
            DcTableError::Empty(dc) => format!("mtproto.datacenters.{dc}"),
            DcTableError::BadAddress { dc, address } => {
                let list = overrides.get(dc).map(Vec::as_slice).unwrap_or_default();
                let at = list.iter().position(|a| a == address).unwrap_or(0);
                format!("mtproto.datacenters.{dc}[{at}]")
            }
        };
        Fault::value(key, e)
    })?;
    Ok(MtprotoSettings {
        users,
        users_file: users_file.map(|f| f.path.clone()),
        max_clock_skew: duration(
            &section.max_clock_skew,
            "mtproto.max_clock_skew",
            bounds::MAX_CLOCK_SKEW,
            DEFAULT_MAX_CLOCK_SKEW,
        )?,
        replay_cache: count(
            section.replay_cache,
            "mtproto.replay_cache",
            bounds::REPLAY_CACHE,
            DEFAULT_REPLAY_CACHE,
        )?,
        allow_plain: section.allow_plain,
        datacenters,
        fast_mode: section.fast_mode,
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
        handshake_timeout: timeouts.client_hello,
        prefer_ipv6: section.prefer_ipv6,
        via: via_upstreams(&section.via)?,
        via_fallback_direct: section.via_fallback_direct,
        middle: middle_settings(section.ad_tag, section.public_ip, section.middle_proxy)?,
    })
}

/// `mtproto.ad_tag`, `mtproto.public_ip` and `mtproto.middle_proxy`, defaults filled in
/// (the cache directory is `state.dir`, set once that is known).
fn middle_settings(
    ad_tag: Option<middle::AdTag>,
    public_ip: Option<IpAddr>,
    section: Option<middle::MiddleProxySection>,
) -> Result<middle::MiddleProxySettings, Fault> {
    let section = section.unwrap_or_default();
    let defaults = middle::MiddleProxySettings::default();
    Ok(middle::MiddleProxySettings {
        ad_tag,
        public_ip,
        secret_url: section.secret_url.unwrap_or(defaults.secret_url),
        config_url: section.config_url.unwrap_or(defaults.config_url),
        config_v6_url: section.config_v6_url.unwrap_or(defaults.config_v6_url),
        refresh: duration(
            &section.refresh,
            "mtproto.middle_proxy.refresh",
            bounds::MIDDLE_REFRESH,
            middle::DEFAULT_REFRESH,
        )?,
        fallback_direct: section.fallback_direct.unwrap_or(defaults.fallback_direct),
        cache_dir: None,
    })
}

/// `mtproto.via`: each URL parsed, a bad one reported at its list item.
fn via_upstreams(list: &[String]) -> Result<Vec<via::ViaUpstream>, Fault> {
    let at = |i: usize, e: via::ViaError| Fault::value(format!("mtproto.via[{i}]"), e);
    let upstreams = list
        .iter()
        .enumerate()
        .map(|(i, text)| via::ViaUpstream::parse(text).map_err(|e| at(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    match via::find_duplicate(&upstreams) {
        Some((i, e)) => Err(at(i, e)),
        None => Ok(upstreams),
    }
}

/// Where ACME state lives when `tls.acme.cache` is not given.
pub const DEFAULT_ACME_CACHE: &str = "/var/lib/frontgate/acme";

fn tls_settings(key: &str, names: &[NamePattern], tls: TlsSection) -> Result<TlsSettings, Fault> {
    let key = format!("{key}.tls");
    let source = match (tls.acme, tls.cert, tls.key) {
        (Some(acme), None, None) => CertSource::Acme {
            contact: acme.contact.0,
            directory: acme
                .directory
                .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_string()),
            cache: acme.cache.unwrap_or_else(|| DEFAULT_ACME_CACHE.into()),
            ca_roots: acme.ca_roots,
        },
        (None, Some(cert), Some(key)) => CertSource::Files { cert, key },
        (None, Some(_), None) => {
            return Err(Fault::key(format!("{key}.cert"), Problem::CertWithoutKey))
        }
        (None, None, Some(_)) => {
            return Err(Fault::key(format!("{key}.key"), Problem::CertWithoutKey))
        }
        (None, None, None) => return Err(Fault::value(key, Problem::NoCertificate)),
        (Some(_), _, _) => return Err(Fault::key(format!("{key}.acme"), Problem::AcmeAndFiles)),
    };
    let mut settings = TlsSettings::new(names.iter().map(ToString::to_string).collect(), source);
    if let Some(alpn) = tls.alpn {
        if let Some(at) = alpn
            .iter()
            .position(|p| p.is_empty() || p.len() > bounds::ALPN_NAME_MAX)
        {
            let name = alpn[at].escape_debug().to_string();
            return Err(Fault::value(
                format!("{key}.alpn[{at}]"),
                Problem::AlpnName { name },
            ));
        }
        settings.alpn = alpn.into_iter().map(String::into_bytes).collect();
    }
    settings.handshake_timeout = duration(
        &tls.handshake_timeout,
        &format!("{key}.handshake_timeout"),
        bounds::TLS_HANDSHAKE,
        settings.handshake_timeout,
    )?;
    Ok(settings)
}

/// `default:` or `non_tls:`; `mtproto: true` (a hello without SNI or with an unmatched one may
/// be a fake-TLS client, as some iOS Telegram versions send) needs the `mtproto:` section.
fn target_route(
    key: &str,
    target: &TargetSection,
    has_mtproto: bool,
    listen: &[SocketAddr],
) -> Result<Route, Fault> {
    let backend = if target.mtproto {
        pool::Backend::TlsSite(None)
    } else {
        pool::Backend::Passthrough
    };
    let forward = forward(key, &target.to, target.proxy_protocol.0, listen, backend)?;
    let action = match (target.mtproto, has_mtproto) {
        (true, false) => {
            return Err(Fault::value(
                format!("{key}.mtproto"),
                Problem::MtprotoWithoutUsers,
            ))
        }
        (true, true) => Action::Mtproto(mtproto_route(forward, target.mimic)),
        (false, _) if target.mimic.is_some() => {
            return Err(Fault::key(
                format!("{key}.mimic"),
                Problem::MimicWithoutMtproto,
            ))
        }
        (false, _) => Action::Forward(forward),
    };
    Ok(Route {
        label: key.to_string(),
        action,
        access: netpolicy::access_lists(&target.allow, &target.deny),
    })
}

/// An `mtproto: true` route's action: `mimic` as written, or the default for its backends.
fn mtproto_route(forward: Forward, mimic: Option<values::MimicValue>) -> MtprotoRoute {
    let mimic = mimic.map_or_else(|| MimicMode::default_for(&forward.upstreams), |m| m.0);
    MtprotoRoute { forward, mimic }
}

/// A route's `to` (short forms or a pool) and `proxy_protocol`, at `key` (`routes[0]`).
fn forward(
    key: &str,
    to: &ToValue,
    proxy_protocol: ProxyProtocol,
    listen: &[SocketAddr],
    backend: pool::Backend<'_>,
) -> Result<Forward, Fault> {
    let (pool, at_key): (PoolSettings, fn(&str, usize) -> String) = match to {
        ToValue::List(list) => {
            let upstreams: Vec<Upstream> = list.0.iter().map(|u| u.0.clone()).collect();
            (PoolSettings::in_order(&upstreams), |key, at| {
                format!("{key}.to[{at}]")
            })
        }
        ToValue::Pool(section) => (
            pool::compile(&format!("{key}.to"), section, backend, proxy_protocol)?,
            |key, at| format!("{key}.to.servers[{at}].addr"),
        ),
    };
    for (at, server) in pool.servers.iter().enumerate() {
        if let Some(own) = listen.iter().find(|l| points_at(&server.upstream, **l)) {
            let problem = Problem::FrontingLoop {
                upstream: server.upstream.to_string(),
                listen: own.to_string(),
            };
            return Err(Fault::value(at_key(key, at), problem));
        }
    }
    Ok(Forward {
        upstreams: pool.servers.iter().map(|s| s.upstream.clone()).collect(),
        pool,
        proxy_protocol,
    })
}

/// Whether connecting to `upstream` would reach the listener on `listen`.
fn points_at(upstream: &Upstream, listen: SocketAddr) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    match upstream.literal() {
        Some(addr) => {
            let ip = addr.ip().to_canonical();
            ip == listen.ip().to_canonical()
                || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
        }
        None => {
            upstream.host() == "localhost"
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod users_tests;
