//! The part of an nginx configuration that frontgate replaces, as typed values: the `stream`
//! block's server-name maps, upstream pools and servers with their settings. Every directive
//! read here is either kept in one of these values or recorded as [`Unmapped`] with a reason;
//! none is dropped.

use std::time::Duration;

use super::lexer::{Place, SyntaxError};
use super::syntax::Directive;

/// A directive frontgate has no equivalent for; it becomes a `# not mapped:` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Where it was written.
    pub at: Place,
    /// The directive as one line of nginx text.
    pub text: String,
    /// Why it is not mapped, and what to do instead if anything.
    pub why: String,
}

impl Unmapped {
    /// `directive` is not mapped, because of `why`.
    pub fn of(directive: &Directive, why: impl Into<String>) -> Self {
        Unmapped {
            at: directive.at.clone(),
            text: directive.text(),
            why: why.into(),
        }
    }
}

/// A value set by a directive, with where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// The directive that set it.
    pub at: Place,
    /// The directive as written.
    pub text: String,
}

/// Directives a `stream` block and each of its servers may set; a server inherits what it
/// leaves unset from the block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `proxy_protocol on|off`: a PROXY v1 header to the backend.
    pub proxy_protocol: Option<Setting<bool>>,
    /// `ssl_preread on|off`: whether `$ssl_preread_server_name` is filled in.
    pub ssl_preread: Option<Setting<bool>>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Option<Setting<Duration>>,
    /// `proxy_timeout`: between two reads or writes.
    pub timeout: Option<Setting<Duration>>,
    /// `preread_timeout`: for the ClientHello.
    pub preread_timeout: Option<Setting<Duration>>,
    /// `set_real_ip_from`: the balancers whose PROXY header gives the client address.
    pub real_ip_from: Vec<Setting<String>>,
}

impl Settings {
    /// These settings with what they leave unset taken from `outer`.
    pub fn inherit(&self, outer: &Settings) -> Settings {
        Settings {
            proxy_protocol: self.proxy_protocol.clone().or(outer.proxy_protocol.clone()),
            ssl_preread: self.ssl_preread.clone().or(outer.ssl_preread.clone()),
            connect_timeout: self
                .connect_timeout
                .clone()
                .or(outer.connect_timeout.clone()),
            timeout: self.timeout.clone().or(outer.timeout.clone()),
            preread_timeout: self
                .preread_timeout
                .clone()
                .or(outer.preread_timeout.clone()),
            real_ip_from: if self.real_ip_from.is_empty() {
                outer.real_ip_from.clone()
            } else {
                self.real_ip_from.clone()
            },
        }
    }

    /// Whether a PROXY header is sent to the backend.
    pub fn sends_proxy_protocol(&self) -> bool {
        self.proxy_protocol.as_ref().is_some_and(|s| s.value)
    }

    /// Reads `directive` if it is one of these settings; `Ok(false)` if it is not.
    fn read(&mut self, directive: &Directive) -> Result<bool, Unmapped> {
        match directive.name.as_str() {
            "proxy_protocol" => self.proxy_protocol = Some(flag(directive)?),
            "ssl_preread" => self.ssl_preread = Some(flag(directive)?),
            "proxy_connect_timeout" => self.connect_timeout = Some(duration(directive)?),
            "proxy_timeout" => self.timeout = Some(duration(directive)?),
            "preread_timeout" => self.preread_timeout = Some(duration(directive)?),
            "set_real_ip_from" => match directive.args.as_slice() {
                [from] => self.real_ip_from.push(Setting {
                    value: from.clone(),
                    at: directive.at.clone(),
                    text: directive.text(),
                }),
                _ => return Err(Unmapped::of(directive, "expects one address or network")),
            },
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn flag(directive: &Directive) -> Result<Setting<bool>, Unmapped> {
    let value = match directive.args.as_slice() {
        [v] if v == "on" => true,
        [v] if v == "off" => false,
        _ => return Err(Unmapped::of(directive, "expects `on` or `off`")),
    };
    Ok(Setting {
        value,
        at: directive.at.clone(),
        text: directive.text(),
    })
}

fn duration(directive: &Directive) -> Result<Setting<Duration>, Unmapped> {
    let value = match directive.args.as_slice() {
        [v] => parse_nginx_time(v),
        _ => None,
    }
    .ok_or_else(|| Unmapped::of(directive, "not an nginx time (like 5s, 10m, 1h30m)"))?;
    Ok(Setting {
        value,
        at: directive.at.clone(),
        text: directive.text(),
    })
}

/// An nginx time value: numbers with units `ms s m h d w M y` (a bare number is seconds),
/// several in a row adding up (`1h30m`), as `ngx_parse_time` reads them.
pub fn parse_nginx_time(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (millis_per_unit, unit_len) = match rest.as_bytes() {
            [b'm', b's', ..] => (1, 2),
            [b's', ..] => (1_000, 1),
            [b'm', ..] => (60_000, 1),
            [b'h', ..] => (3_600_000, 1),
            [b'd', ..] => (86_400_000, 1),
            [b'w', ..] => (7 * 86_400_000, 1),
            [b'M', ..] => (30 * 86_400_000, 1),
            [b'y', ..] => (365 * 86_400_000, 1),
            [] => (1_000, 0),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(millis_per_unit)?)?;
    }
    Some(Duration::from_millis(total))
}

/// A `map $ssl_preread_server_name $variable { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniMap {
    /// The variable it sets, with `$`.
    pub variable: String,
    /// Where the map starts.
    pub at: Place,
    /// `hostnames;`: `.name` and `*.name` keys are patterns, not literal strings.
    pub hostnames: bool,
    /// `key value;` entries in order (`""` included), `default` not among them.
    pub entries: Vec<MapEntry>,
    /// `default value;`.
    pub default: Option<MapEntry>,
}

/// One `key value;` line of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// The key as written.
    pub key: String,
    /// The value: an upstream name or an address.
    pub value: String,
    /// Where the line is.
    pub at: Place,
}

/// An `upstream name { server ...; }` pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Its name, as `proxy_pass` and map values use it.
    pub name: String,
    /// Where it starts.
    pub at: Place,
    /// Its `server` lines in order.
    pub servers: Vec<PoolServer>,
    /// Pool-wide directives (`least_conn`, `hash`, ...), all without an equivalent yet.
    pub unmapped: Vec<Unmapped>,
}

/// One `server address [parameters];` of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolServer {
    /// The address as written.
    pub address: String,
    /// Where the line is.
    pub at: Place,
    /// The line as written.
    pub text: String,
    /// `weight=N` (1 when absent).
    pub weight: u32,
    /// `backup`: used only when every other server failed.
    pub backup: bool,
    /// `down`: never used.
    pub down: bool,
    /// The parameters frontgate has no equivalent for (`max_fails=3`, `fail_timeout=30s`,
    /// `max_conns=...`, `slow_start=...`), as written.
    pub unmapped_parameters: Vec<String>,
}

/// A `listen` of a stream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The address as written (`443`, `[::]:443`, `127.0.0.1:10001`, `unix:/...`).
    pub address: String,
    /// `proxy_protocol`: every client must send a PROXY header first.
    pub proxy_protocol: bool,
    /// `ssl`: nginx terminates TLS on this listener.
    pub ssl: bool,
    /// `udp`: a datagram listener.
    pub udp: bool,
    /// Socket options (`reuseport`, `backlog=...`, `so_keepalive=...`), as written.
    pub socket_options: Vec<String>,
    /// Where the line is.
    pub at: Place,
    /// The line as written.
    pub text: String,
}

/// A `server { ... }` of the stream block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where it starts.
    pub at: Place,
    /// Its `listen` lines.
    pub listens: Vec<Listen>,
    /// `proxy_pass`: a `$variable`, an upstream name or an address.
    pub proxy_pass: Option<Setting<String>>,
    /// Its own settings with the stream block's filled in.
    pub settings: Settings,
    /// Its directives frontgate has no equivalent for.
    pub unmapped: Vec<Unmapped>,
}

/// Everything read from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Maps keyed by the server name.
    pub maps: Vec<SniMap>,
    /// Upstream pools.
    pub pools: Vec<Pool>,
    /// Servers in order.
    pub servers: Vec<Server>,
    /// The stream block's own settings (already inherited by every server).
    pub settings: Settings,
    /// The directives outside any server or pool with no equivalent, main context included.
    pub unmapped: Vec<Unmapped>,
    /// Where the `stream` block starts, if the file has one (a bare fragment has none).
    pub at: Option<Place>,
}

impl Stream {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The server-name map that sets `variable` (with `$`).
    pub fn map(&self, variable: &str) -> Option<&SniMap> {
        self.maps.iter().find(|m| m.variable == variable)
    }
}

/// Why a top-level directive of the main context is not imported.
fn main_context_reason(name: &str) -> &'static str {
    match name {
        "http" => "not imported: frontgate routes TCP connections by server name; keep nginx's http servers running, they are the backends of the routes above",
        "mail" => "not imported: frontgate does not proxy mail protocols",
        "events" | "user" | "worker_processes" | "worker_rlimit_nofile" | "pid" | "error_log"
        | "load_module" | "worker_cpu_affinity" | "worker_priority" | "daemon" | "env"
        | "pcre_jit" | "thread_pool" | "worker_shutdown_timeout" | "timer_resolution" => {
            "an nginx process setting: frontgate has its own (see deploy/frontgate.service)"
        }
        _ => "no equivalent in frontgate",
    }
}

/// Why a directive of the `stream` block or one of its servers is not mapped.
fn stream_reason(name: &str) -> &'static str {
    match name {
        "access_log" | "log_format" | "error_log" | "open_log_file_cache" => {
            "frontgate writes one log line per connection itself (--log-format text|json)"
        }
        "resolver" | "resolver_timeout" => {
            "frontgate resolves host names in `to` at connect time with the system resolver"
        }
        "limit_conn" | "limit_conn_zone" | "limit_conn_log_level" => {
            "see `limits.max_connections_per_ip` and `limits.max_connections` in routes.example.yaml"
        }
        "allow" | "deny" => "frontgate has no address filter in the route file yet: keep it in the firewall",
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            "frontgate always tries the next address of `to` when a connect fails"
        }
        "proxy_buffer_size" | "preread_buffer_size" | "tcp_nodelay" | "proxy_socket_keepalive"
        | "variables_hash_max_size" | "variables_hash_bucket_size" | "map_hash_max_size"
        | "map_hash_bucket_size" | "server_names_hash_max_size" | "server_names_hash_bucket_size" => {
            "a buffer or socket tuning knob: frontgate sizes its own"
        }
        "ssl_certificate" | "ssl_certificate_key" | "ssl_protocols" | "ssl_ciphers" | "ssl_session_cache"
        | "ssl_session_timeout" | "ssl_prefer_server_ciphers" | "ssl_handshake_timeout" => {
            "TLS termination in the stream block: in frontgate that is a route's `tls:` section, by hand"
        }
        "proxy_download_rate" | "proxy_upload_rate" => "frontgate has no rate limit per route",
        "proxy_bind" => "frontgate connects from the address the system picks",
        "server_name" => "stream server names (nginx 1.25.5+) select a server block; frontgate has one route table",
        "js_import" | "js_preread" | "js_set" | "js_access" | "js_filter" | "perl_set" => {
            "scripted routing cannot be translated: write the routes by hand"
        }
        _ => "no equivalent in frontgate",
    }
}

/// Reads the directive tree of a whole file (with `stream { }`) or of a fragment that holds
/// the contents of a stream block (`include`d from one).
pub fn read(tree: &[Directive], file: &str) -> Result<Stream, SyntaxError> {
    let mut stream = Stream::default();
    let streams: Vec<&Directive> = tree
        .iter()
        .filter(|d| d.name == "stream" && d.block.is_some())
        .collect();
    let body: Vec<Directive> = if streams.is_empty() {
        let looks_like_stream = tree
            .iter()
            .any(|d| matches!(d.name.as_str(), "server" | "upstream" | "map"));
        if !looks_like_stream {
            return Err(SyntaxError {
                at: Place {
                    file: file.to_string(),
                    line: 1,
                },
                message:
                    "no `stream { }` block (nor its contents: map, upstream, server) to import"
                        .to_string(),
            });
        }
        tree.to_vec()
    } else {
        for directive in tree {
            if directive.name != "stream" {
                stream.unmapped.push(Unmapped::of(
                    directive,
                    main_context_reason(&directive.name),
                ));
            }
        }
        stream.at = Some(streams[0].at.clone());
        streams
            .iter()
            .flat_map(|s| s.block.clone().unwrap_or_default())
            .collect()
    };
    let mut server_blocks = Vec::new();
    for directive in &body {
        match (directive.name.as_str(), &directive.block) {
            ("map", Some(entries)) => read_map(directive, entries, &mut stream),
            ("upstream", Some(servers)) => match directive.args.as_slice() {
                [name] => stream.pools.push(read_pool(name, directive, servers)),
                _ => stream
                    .unmapped
                    .push(Unmapped::of(directive, "an upstream block takes one name")),
            },
            ("server", Some(block)) => server_blocks.push((directive, block)),
            _ => match stream.settings.read(directive) {
                Ok(true) => {}
                Ok(false) => stream
                    .unmapped
                    .push(Unmapped::of(directive, stream_reason(&directive.name))),
                Err(bad) => stream.unmapped.push(bad),
            },
        }
    }
    for (directive, block) in server_blocks {
        let server = read_server(directive, block, &stream.settings);
        stream.servers.push(server);
    }
    Ok(stream)
}

fn read_map(directive: &Directive, entries: &[Directive], stream: &mut Stream) {
    let [source, variable] = directive.args.as_slice() else {
        stream.unmapped.push(Unmapped::of(
            directive,
            "a map takes a source and a variable",
        ));
        return;
    };
    if source != "$ssl_preread_server_name" {
        stream.unmapped.push(Unmapped::of(
            directive,
            format!("frontgate routes by the server name only; a map of {source} cannot be translated (a proxy_pass of {variable} is reported too)"),
        ));
        return;
    }
    let mut map = SniMap {
        variable: variable.clone(),
        at: directive.at.clone(),
        hostnames: false,
        entries: Vec::new(),
        default: None,
    };
    for entry in entries {
        match (entry.name.as_str(), entry.args.as_slice(), &entry.block) {
            ("hostnames", [], None) => map.hostnames = true,
            ("volatile", [], None) => stream.unmapped.push(Unmapped::of(
                entry,
                "frontgate decides once per connection anyway",
            )),
            (key, [value], None) => {
                let line = MapEntry {
                    key: key.to_string(),
                    value: value.clone(),
                    at: entry.at.clone(),
                };
                if key == "default" {
                    map.default = Some(line);
                } else {
                    map.entries.push(line);
                }
            }
            _ => stream
                .unmapped
                .push(Unmapped::of(entry, "not a `key value;` line of a map")),
        }
    }
    stream.maps.push(map);
}

fn read_pool(name: &str, directive: &Directive, lines: &[Directive]) -> Pool {
    let mut pool = Pool {
        name: name.to_string(),
        at: directive.at.clone(),
        servers: Vec::new(),
        unmapped: Vec::new(),
    };
    for line in lines {
        let (true, Some((address, parameters))) = (
            line.name == "server" && line.block.is_none(),
            line.args.split_first(),
        ) else {
            let why = match line.name.as_str() {
                "least_conn" | "hash" | "random" => {
                    "frontgate tries `to` in order (first that accepts); balancing comes later"
                }
                "zone" => "frontgate keeps no shared upstream state",
                _ => "no equivalent in frontgate",
            };
            pool.unmapped.push(Unmapped::of(line, why));
            continue;
        };
        let mut server = PoolServer {
            address: address.clone(),
            at: line.at.clone(),
            text: line.text(),
            weight: 1,
            backup: false,
            down: false,
            unmapped_parameters: Vec::new(),
        };
        for parameter in parameters {
            match parameter.as_str() {
                "backup" => server.backup = true,
                "down" => server.down = true,
                p => match p.strip_prefix("weight=").map(str::parse::<u32>) {
                    Some(Ok(weight)) if weight > 0 => server.weight = weight,
                    _ => server.unmapped_parameters.push(p.to_string()),
                },
            }
        }
        pool.servers.push(server);
    }
    pool
}

fn read_listen(directive: &Directive) -> Result<Listen, Unmapped> {
    let Some((address, parameters)) = directive.args.split_first() else {
        return Err(Unmapped::of(directive, "listen without an address"));
    };
    let mut listen = Listen {
        address: address.clone(),
        proxy_protocol: false,
        ssl: false,
        udp: false,
        socket_options: Vec::new(),
        at: directive.at.clone(),
        text: directive.text(),
    };
    for parameter in parameters {
        match parameter.as_str() {
            "proxy_protocol" => listen.proxy_protocol = true,
            "ssl" => listen.ssl = true,
            "udp" => listen.udp = true,
            other => listen.socket_options.push(other.to_string()),
        }
    }
    Ok(listen)
}

fn read_server(directive: &Directive, block: &[Directive], outer: &Settings) -> Server {
    let mut own = Settings::default();
    let mut server = Server {
        at: directive.at.clone(),
        listens: Vec::new(),
        proxy_pass: None,
        settings: Settings::default(),
        unmapped: Vec::new(),
    };
    for line in block {
        match line.name.as_str() {
            "listen" => match read_listen(line) {
                Ok(listen) => server.listens.push(listen),
                Err(bad) => server.unmapped.push(bad),
            },
            "proxy_pass" => match line.args.as_slice() {
                [target] => {
                    server.proxy_pass = Some(Setting {
                        value: target.clone(),
                        at: line.at.clone(),
                        text: line.text(),
                    })
                }
                _ => server
                    .unmapped
                    .push(Unmapped::of(line, "proxy_pass takes one target")),
            },
            _ => match own.read(line) {
                Ok(true) => {}
                Ok(false) => server
                    .unmapped
                    .push(Unmapped::of(line, stream_reason(&line.name))),
                Err(bad) => server.unmapped.push(bad),
            },
        }
    }
    server.settings = own.inherit(outer);
    server
}

#[cfg(test)]
mod tests {
    use super::super::syntax::parse;
    use super::*;

    fn read_text(text: &str) -> Stream {
        read(&parse(text, "t.conf").unwrap(), "t.conf").unwrap()
    }

    #[test]
    fn nginx_times_read_like_ngx_parse_time() {
        for (text, millis) in [
            ("5s", 5_000),
            ("60", 60_000),
            ("24h", 86_400_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1d", 86_400_000),
            ("2w", 14 * 86_400_000),
        ] {
            assert_eq!(
                parse_nginx_time(text),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in ["", "s", "5x", "1.5s", "99999999999999999999y"] {
            assert_eq!(parse_nginx_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn servers_inherit_stream_settings_and_may_override_them() {
        let stream = read_text(
            "stream {\n proxy_protocol on;\n proxy_timeout 24h;\n server { listen 443; proxy_pass a; }\n server { listen 444; proxy_pass b; proxy_protocol off; }\n}\n",
        );
        assert!(stream.servers[0].settings.sends_proxy_protocol());
        assert!(!stream.servers[1].settings.sends_proxy_protocol());
        assert_eq!(
            stream.servers[1].settings.timeout.as_ref().unwrap().value,
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn maps_pools_and_listens_keep_what_they_say() {
        let stream = read_text(
            "stream {\n map $ssl_preread_server_name $b {\n hostnames;\n .cdn.example.com pool;\n default 127.0.0.1:1;\n }\n upstream pool {\n least_conn;\n server 127.0.0.1:2 weight=3 max_fails=2 fail_timeout=10s;\n server 127.0.0.1:3 backup;\n }\n server { listen 443 proxy_protocol reuseport; proxy_pass $b; }\n}\n",
        );
        let map = stream.map("$b").unwrap();
        assert!(map.hostnames);
        assert_eq!(map.entries[0].key, ".cdn.example.com");
        assert_eq!(map.default.as_ref().unwrap().value, "127.0.0.1:1");
        let pool = stream.pool("pool").unwrap();
        assert_eq!(pool.servers[0].weight, 3);
        assert_eq!(
            pool.servers[0].unmapped_parameters,
            ["max_fails=2", "fail_timeout=10s"]
        );
        assert!(pool.servers[1].backup);
        assert_eq!(pool.unmapped[0].text, "least_conn;");
        let listen = &stream.servers[0].listens[0];
        assert!(listen.proxy_protocol);
        assert_eq!(listen.socket_options, ["reuseport"]);
    }

    #[test]
    fn everything_outside_stream_and_unknown_inside_is_recorded() {
        let stream = read_text(
            "user nginx;\nevents { }\nhttp { server { listen 80; } }\nstream {\n map $ssl_preread_protocol $p { default x; }\n access_log off;\n server { listen 1; proxy_pass x; allow 10.0.0.0/8; }\n}\n",
        );
        let texts: Vec<&str> = stream.unmapped.iter().map(|u| u.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "user nginx;",
                "events { ... }",
                "http { ... }",
                "map $ssl_preread_protocol $p { ... }",
                "access_log off;"
            ]
        );
        assert_eq!(stream.servers[0].unmapped[0].text, "allow 10.0.0.0/8;");
    }

    #[test]
    fn a_fragment_of_stream_contents_is_read_as_a_stream_block() {
        let stream =
            read_text("upstream a { server 127.0.0.1:1; }\nserver { listen 443; proxy_pass a; }\n");
        assert_eq!(stream.servers.len(), 1);
        assert!(stream.at.is_none());
    }

    #[test]
    fn a_file_without_stream_is_an_error() {
        let tree = parse("http { }\n", "t.conf").unwrap();
        assert!(read(&tree, "t.conf")
            .unwrap_err()
            .message
            .contains("no `stream { }` block"));
    }
}
