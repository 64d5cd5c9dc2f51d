//! nginx's stream routing translated to frontgate's route file: which server of the stream
//! block is the front door, which names go where, which backends got a PROXY header, and a
//! comment for everything that has no equivalent.
//!
//! The rules follow what nginx does, so the import routes every connection the way nginx did:
//! - with `hostnames;`, `.example.com` is `example.com` and `*.example.com`; `*.example.com`
//!   matches any depth below, never the name itself (both exactly as frontgate's `*.`);
//! - the map's `default` takes unmatched names and hellos without SNI (`default:`), and, since
//!   `ssl_preread` leaves the variable empty on bytes that are not TLS, non-TLS connections
//!   too (`non_tls:`);
//! - `proxy_protocol on` (stream-wide or per server) is `proxy_protocol: v1` on the routes
//!   whose connections that server forwarded, and only on those;
//! - an upstream's servers become `to:` in order, highest weight first, `backup` last;
//! - a map value that is the `listen` of another stream server (a hop nginx configurations
//!   use to add a PROXY header for one backend only) is followed to where that server sends.

use std::collections::HashSet;

use crate::config::{NamePattern, Upstream};

use super::listeners::{
    accept_proxy_protocol, internal_servers, listen_addresses, listen_socket, reaches,
};
use super::plan::{Comment, Commented, Plan, Route, Target};
use super::stream::{MapEntry, Pool, Server, Settings, SniMap, Stream, Unmapped};
use super::timeouts::timeouts;

/// Hops through internal stream servers followed at most (a loop of servers ends here).
const MAX_HOPS: usize = 4;

/// Translates `stream`, read from `source`, into a route file; an error says why nothing
/// could be imported.
pub fn plan(stream: &Stream, source: &str) -> Result<Plan, String> {
    let mut plan = Plan {
        source: source.to_string(),
        comments: stream
            .unmapped
            .iter()
            .cloned()
            .map(Comment::NotMapped)
            .collect(),
        listen: Vec::new(),
        accept_proxy_protocol_from: None,
        timeouts: Vec::new(),
        routes: Vec::new(),
        default: None,
        non_tls: None,
    };
    let internal = internal_servers(stream);
    let front: Vec<&Server> = stream
        .servers
        .iter()
        .enumerate()
        .filter(|(i, _)| !internal.contains(i))
        .map(|(_, s)| s)
        .collect();
    let primary = choose_primary(stream, &front);
    let Some(first) = primary.first() else {
        return Err(format!(
            "{source}: no stream server with `listen` and `proxy_pass` to import"
        ));
    };
    for server in &front {
        if !primary.iter().any(|p| std::ptr::eq(*p, *server)) {
            plan.comments.push(Comment::NotMapped(other_server(server)));
        }
    }
    let settings = &first.settings;
    let mut mapper = Mapper {
        stream,
        internal: &internal,
        used_pools: HashSet::new(),
    };
    for server in &primary {
        plan.comments
            .extend(server.unmapped.iter().cloned().map(Comment::NotMapped));
    }
    plan.listen = listen_addresses(&primary, &mut plan.comments);
    plan.accept_proxy_protocol_from = accept_proxy_protocol(&primary, settings);
    if plan.accept_proxy_protocol_from.is_none() {
        for from in &settings.real_ip_from {
            plan.comments.push(Comment::NotMapped(Unmapped {
                at: from.at.clone(),
                text: from.text.clone(),
                why: "no `listen ... proxy_protocol` here, so no PROXY header to take a client address from".to_string(),
            }));
        }
    }
    plan.comments
        .extend(hop_comments(stream, &internal, settings));
    plan.timeouts = timeouts(settings);
    if let Some(setting) = &settings.ssl_preread {
        plan.comments.push(Comment::Note(format!(
            "{}: `{}`: frontgate always reads the ClientHello",
            setting.at, setting.text
        )));
    }
    let proxy_pass = first
        .proxy_pass
        .as_ref()
        .ok_or_else(|| format!("{}: this server has no proxy_pass", first.at))?;
    match stream.map(&proxy_pass.value) {
        Some(map) if settings.ssl_preread.as_ref().is_some_and(|s| s.value) => {
            mapper.routes_of_map(map, settings, &mut plan);
        }
        Some(map) => {
            plan.comments.push(Comment::NotMapped(Unmapped {
                at: map.at.clone(),
                text: format!("map $ssl_preread_server_name {} {{ ... }}", map.variable),
                why: "without `ssl_preread on` nginx never learned the server name, so every connection took the map's default; so does this import".to_string(),
            }));
            if let Some(default) = &map.default {
                let target = mapper.resolve_entry(default, settings);
                plan.non_tls = target.clone();
                plan.default = target;
            }
        }
        None => {
            let entry = MapEntry {
                key: String::new(),
                value: proxy_pass.value.clone(),
                at: proxy_pass.at.clone(),
            };
            let mut target = mapper.resolve_entry(&entry, settings);
            match &mut target {
                Some(t) => t.comments.insert(
                    0,
                    Comment::Note(format!(
                        "{}: `{}`: nginx forwarded every connection here without looking at its name",
                        proxy_pass.at, proxy_pass.text
                    )),
                ),
                None => plan.comments.push(Comment::NotMapped(Unmapped {
                    at: proxy_pass.at.clone(),
                    text: proxy_pass.text.clone(),
                    why: if proxy_pass.value.starts_with('$') {
                        "no map of $ssl_preread_server_name sets this variable: write the routes by hand".to_string()
                    } else {
                        "not an upstream of this stream block nor a host:port".to_string()
                    },
                })),
            }
            plan.non_tls = target.clone();
            plan.default = target;
        }
    }
    for pool in &stream.pools {
        if !mapper.used_pools.contains(&pool.name) {
            plan.comments.push(Comment::NotMapped(Unmapped {
                at: pool.at.clone(),
                text: format!("upstream {} {{ ... }}", pool.name),
                why: "no imported route uses this upstream".to_string(),
            }));
        }
    }
    for map in &stream.maps {
        if map.variable != proxy_pass.value {
            plan.comments.push(Comment::NotMapped(Unmapped {
                at: map.at.clone(),
                text: format!("map $ssl_preread_server_name {} {{ ... }}", map.variable),
                why: "the imported server does not proxy_pass this variable".to_string(),
            }));
        }
    }
    Ok(plan)
}

/// What the internal hop servers say that the routes through them do not carry: that they
/// exist, their directives without an equivalent, and timeouts of their own.
fn hop_comments(stream: &Stream, internal: &HashSet<usize>, front: &Settings) -> Vec<Comment> {
    let mut comments = Vec::new();
    for (i, hop) in stream.servers.iter().enumerate() {
        if !internal.contains(&i) {
            continue;
        }
        let listens: Vec<&str> = hop.listens.iter().map(|l| l.address.as_str()).collect();
        comments.push(Comment::Note(format!(
            "{}: the stream server listening on {} is an internal hop; the routes through it go straight to its backend",
            hop.at,
            listens.join(", ")
        )));
        comments.extend(hop.unmapped.iter().cloned().map(Comment::NotMapped));
        let own = [
            (&hop.settings.connect_timeout, &front.connect_timeout),
            (&hop.settings.timeout, &front.timeout),
        ];
        for (hop_value, front_value) in own {
            if let Some(setting) = hop_value.as_ref().filter(|_| hop_value != front_value) {
                comments.push(Comment::NotMapped(Unmapped {
                    at: setting.at.clone(),
                    text: setting.text.clone(),
                    why: "a timeout of an internal hop: frontgate has one set of timeouts (above)"
                        .to_string(),
                }));
            }
        }
    }
    comments
}

/// The front servers that become the route file: the first one that routes by server name
/// (with the others that route the same way), or else the first one with a `proxy_pass`.
fn choose_primary<'a>(stream: &Stream, front: &[&'a Server]) -> Vec<&'a Server> {
    let usable = |s: &&&Server| {
        s.proxy_pass.is_some()
            && s.listens
                .iter()
                .any(|l| !l.udp && !l.ssl && listen_socket(&l.address).is_some())
    };
    let routes_by_name = |s: &Server| {
        s.proxy_pass
            .as_ref()
            .is_some_and(|p| stream.map(&p.value).is_some())
    };
    let Some(first) = front
        .iter()
        .filter(usable)
        .find(|s| routes_by_name(s))
        .or_else(|| front.iter().find(usable))
    else {
        return Vec::new();
    };
    let same_way = |s: &Server| {
        s.proxy_pass.as_ref().map(|p| &p.value) == first.proxy_pass.as_ref().map(|p| &p.value)
            && s.settings.sends_proxy_protocol() == first.settings.sends_proxy_protocol()
            && s.settings.ssl_preread.as_ref().map(|x| x.value)
                == first.settings.ssl_preread.as_ref().map(|x| x.value)
    };
    front
        .iter()
        .filter(usable)
        .filter(|s| same_way(s))
        .copied()
        .collect()
}

fn other_server(server: &Server) -> Unmapped {
    let listens: Vec<&str> = server.listens.iter().map(|l| l.address.as_str()).collect();
    let how = match &server.proxy_pass {
        Some(p) => format!("proxy_pass {}", p.value),
        None => "no proxy_pass".to_string(),
    };
    Unmapped {
        at: server.at.clone(),
        text: format!("server {{ listen {}; {how}; ... }}", listens.join("; listen ")),
        why: "frontgate serves one route table on all its listeners and this server routes differently (or terminates TLS, or is UDP): keep nginx for it or write its routes by hand".to_string(),
    }
}

/// Resolves map values and proxy_pass targets against the stream block.
struct Mapper<'a> {
    stream: &'a Stream,
    internal: &'a HashSet<usize>,
    /// Pools some route uses (the others are reported unused).
    used_pools: HashSet<String>,
}

impl Mapper<'_> {
    /// `routes:`, `default:` and `non_tls:` from the entries of `map`.
    fn routes_of_map(&mut self, map: &SniMap, settings: &Settings, plan: &mut Plan) {
        let mut seen: HashSet<String> = HashSet::new();
        // Per map value: its route and how many entry notes open its comments.
        let mut by_value: Vec<(String, Commented<Route>, usize)> = Vec::new();
        let mut empty_key: Option<&MapEntry> = None;
        for entry in &map.entries {
            if entry.key.is_empty() {
                empty_key = Some(entry);
                continue;
            }
            let names = match names_of_key(&entry.key, map.hostnames) {
                Ok(names) => names,
                Err(why) => {
                    plan.comments
                        .push(Comment::NotMapped(entry_unmapped(entry, why)));
                    continue;
                }
            };
            let fresh: Vec<String> = names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .collect();
            if fresh.is_empty() {
                plan.comments.push(Comment::NotMapped(entry_unmapped(
                    entry,
                    "the name is already mapped above (nginx would refuse this map)".to_string(),
                )));
                continue;
            }
            if let Some((_, route, notes)) = by_value.iter_mut().find(|(v, _, _)| *v == entry.value)
            {
                route.value.sni.extend(fresh);
                route
                    .comments
                    .insert(*notes, Comment::Note(entry_note(entry)));
                *notes += 1;
                continue;
            }
            let Some(target) = self.resolve_entry(entry, settings) else {
                plan.comments.push(Comment::NotMapped(entry_unmapped(
                    entry,
                    format!(
                        "`{}` is not an upstream of this stream block nor a host:port",
                        entry.value
                    ),
                )));
                continue;
            };
            let mut route = Commented::new(Route {
                sni: fresh,
                target: target.value,
            });
            route.comments.push(Comment::Note(format!(
                "{} (map {} at {})",
                entry_note(entry),
                map.variable,
                map.at
            )));
            route.comments.extend(target.comments);
            by_value.push((entry.value.clone(), route, 1));
        }
        plan.routes = by_value.into_iter().map(|(_, r, _)| r).collect();
        if let Some(default) = &map.default {
            plan.default = self.resolve_entry(default, settings);
            if let Some(d) = &mut plan.default {
                d.comments.insert(
                    0,
                    Comment::Note(format!(
                        "{}: `default {};`: names no route has and hellos without a name",
                        default.at, default.value
                    )),
                );
            }
        }
        let non_tls_source = empty_key.or(map.default.as_ref());
        if let Some(entry) = non_tls_source {
            plan.non_tls = self.resolve_entry(entry, settings);
            if let Some(t) = &mut plan.non_tls {
                t.comments.insert(
                    0,
                    Comment::Note(format!(
                        "{}: nginx's ssl_preread leaves the name empty when the bytes are not TLS, so they took `{} {};`",
                        entry.at,
                        if entry.key.is_empty() { "\"\"" } else { &entry.key },
                        entry.value
                    )),
                );
            }
        }
        if let Some(entry) = empty_key {
            if map.default.as_ref().map(|d| &d.value) != Some(&entry.value) {
                plan.comments.push(Comment::NotMapped(entry_unmapped(
                    entry,
                    "TLS hellos without a name go to `default:` in frontgate (nginx sent them here); non-TLS connections still do (`non_tls:`)".to_string(),
                )));
            }
        }
    }

    /// Where a map value or a proxy_pass target sends, as a server with `settings` forwards.
    fn resolve_entry(
        &mut self,
        entry: &MapEntry,
        settings: &Settings,
    ) -> Option<Commented<Target>> {
        self.resolve(&entry.value, settings, 0)
    }

    fn resolve(
        &mut self,
        value: &str,
        settings: &Settings,
        hops: usize,
    ) -> Option<Commented<Target>> {
        let mut comments = Vec::new();
        let to = if let Some(pool) = self.stream.pool(value) {
            let (to, pool_comments) = pool_target(pool);
            if self.used_pools.insert(pool.name.clone()) {
                comments.extend(pool_comments);
            } else {
                comments.push(Comment::Note(format!(
                    "upstream {}: its comments are at the first route that uses it",
                    pool.name
                )));
            }
            if to.is_empty() {
                return None;
            }
            to
        } else {
            let upstream = Upstream::parse(value).ok()?;
            if let Some(followed) = self.follow_hop(&upstream, settings, hops) {
                return followed;
            }
            vec![upstream.to_string()]
        };
        if mtproto_like(value) {
            comments.push(Comment::Note(
                "a separate MTProto proxy? deploy/MIGRATING-FROM-NGINX.md shows how to move its users onto frontgate's built-in core (mtproto: true)".to_string(),
            ));
        }
        if let Some(setting) = settings.proxy_protocol.as_ref().filter(|s| s.value) {
            comments.push(Comment::Note(format!(
                "{}: `{}`: nginx sent this backend a PROXY v1 header (v2 also works if the backend accepts it)",
                setting.at, setting.text
            )));
        }
        Some(Commented {
            value: Target {
                to,
                proxy_protocol: settings.sends_proxy_protocol(),
            },
            comments,
        })
    }

    /// When `upstream` is the listen address of an internal stream server, where that server
    /// sends (with its own settings); `None` when it is an ordinary backend.
    fn follow_hop(
        &mut self,
        upstream: &Upstream,
        settings: &Settings,
        hops: usize,
    ) -> Option<Option<Commented<Target>>> {
        let target = upstream.literal()?;
        let (_, hop) = self.stream.servers.iter().enumerate().find(|(i, s)| {
            self.internal.contains(i)
                && s.listens
                    .iter()
                    .filter_map(|l| listen_socket(&l.address))
                    .any(|l| reaches(target, l))
        })?;
        if hops >= MAX_HOPS {
            return Some(None);
        }
        let proxy_pass = hop.proxy_pass.as_ref()?;
        if self.stream.map(&proxy_pass.value).is_some() {
            return Some(None);
        }
        let mut resolved = self.resolve(&proxy_pass.value, &hop.settings, hops + 1)?;
        resolved.comments.insert(
            0,
            Comment::Note(format!(
                "through {} (the stream server at {}, `{}`)",
                upstream, hop.at, proxy_pass.text
            )),
        );
        let hop_takes_header = hop.listens.iter().any(|l| l.proxy_protocol);
        if settings.sends_proxy_protocol() != hop_takes_header {
            resolved.comments.push(Comment::Note(format!(
                "nginx's hop at {} {} a PROXY header it {}",
                hop.at,
                if hop_takes_header { "wanted" } else { "got" },
                if hop_takes_header {
                    "was not sent"
                } else {
                    "did not expect"
                }
            )));
        }
        if resolved.value.proxy_protocol {
            resolved.comments.push(Comment::Note(
                "nginx's header named the hop's own connection (from nginx, on 127.0.0.1); frontgate's names the client".to_string(),
            ));
        }
        Some(Some(resolved))
    }
}

/// An upstream pool as `to:` (highest weight first, `backup` last, `down` left out), with
/// comments for what frontgate cannot reproduce.
fn pool_target(pool: &Pool) -> (Vec<String>, Vec<Comment>) {
    let mut comments: Vec<Comment> = pool
        .unmapped
        .iter()
        .cloned()
        .map(Comment::NotMapped)
        .collect();
    let mut servers: Vec<_> = pool.servers.iter().collect();
    for server in servers.iter().filter(|s| s.down) {
        comments.push(Comment::NotMapped(Unmapped {
            at: server.at.clone(),
            text: server.text.clone(),
            why: "`down`: left out".to_string(),
        }));
    }
    servers.retain(|s| !s.down);
    // Stable: equal weights keep nginx's order; nginx's weighted round robin picks
    // the heaviest server first.
    servers.sort_by_key(|s| (s.backup, std::cmp::Reverse(s.weight)));
    let mut to = Vec::new();
    for server in &servers {
        match Upstream::parse(&server.address) {
            Ok(upstream) => to.push(upstream.to_string()),
            Err(why) => comments.push(Comment::NotMapped(Unmapped {
                at: server.at.clone(),
                text: server.text.clone(),
                why,
            })),
        }
        if !server.unmapped_parameters.is_empty() {
            comments.push(Comment::NotMapped(Unmapped {
                at: server.at.clone(),
                text: server.text.clone(),
                why: format!(
                    "{}: frontgate has no equivalent yet; it tries the next address when a connect fails",
                    server.unmapped_parameters.join(" ")
                ),
            }));
        }
    }
    let primaries = servers.iter().filter(|s| !s.backup).count();
    if primaries > 1 {
        let weights: Vec<String> = servers
            .iter()
            .filter(|s| !s.backup)
            .map(|s| s.weight.to_string())
            .collect();
        comments.push(Comment::NotMapped(Unmapped {
            at: pool.at.clone(),
            text: format!("upstream {} {{ ... }}", pool.name),
            why: format!(
                "nginx spread connections over its {primaries} servers (weights {}); frontgate sends them to the first and tries the others in order when a connect fails",
                weights.join(", ")
            ),
        }));
    }
    if servers.iter().any(|s| s.backup) {
        comments.push(Comment::Note(format!(
            "upstream {} ({}): `backup` servers come last, tried when the ones before refuse",
            pool.name, pool.at
        )));
    }
    (to, comments)
}

/// Where a map entry is and what it says; `.name` keys say what they cover.
fn entry_note(entry: &MapEntry) -> String {
    let covers = if entry.key.starts_with('.') {
        " (the name and every name below it)"
    } else {
        ""
    };
    format!("{}: `{} {};`{covers}", entry.at, entry.key, entry.value)
}

fn entry_unmapped(entry: &MapEntry, why: String) -> Unmapped {
    Unmapped {
        at: entry.at.clone(),
        text: format!("{} {};", entry.key, entry.value),
        why,
    }
}

/// A map key as frontgate `sni:` patterns, or why it has none.
fn names_of_key(key: &str, hostnames: bool) -> Result<Vec<String>, String> {
    if key.starts_with('~') {
        return Err(
            "a regular expression: frontgate matches names and `*.suffix` only; list the names it should match".to_string(),
        );
    }
    let key = key.strip_prefix('\\').unwrap_or(key);
    let wildcard = key.starts_with('.') || key.starts_with("*.") || key.ends_with(".*");
    if wildcard && !hostnames {
        let hint = match key.strip_prefix('.') {
            Some(rest) => format!("sni: [{rest}, \"*.{rest}\"]"),
            None => format!("sni: \"{key}\""),
        };
        return Err(format!(
            "without `hostnames;` nginx compares this key literally and no server name ever matched it; if a pattern was meant: {hint}"
        ));
    }
    if key.ends_with(".*") {
        return Err(
            "a trailing wildcard: frontgate has `*.suffix` only; list the names it should match"
                .to_string(),
        );
    }
    let patterns: Vec<String> = match key.strip_prefix('.') {
        Some(rest) => vec![rest.to_string(), format!("*.{rest}")],
        None => vec![key.to_string()],
    };
    patterns
        .iter()
        .map(|p| NamePattern::parse(p).map(|n| n.to_string()))
        .collect()
}

/// Whether an upstream name or address says it is an MTProto proxy.
fn mtproto_like(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    ["mtproto", "mtg", "telegram", "mtproxy", "tg_"]
        .iter()
        .any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::super::{stream, syntax};
    use super::*;

    fn plan_of(text: &str) -> Plan {
        let tree = syntax::parse(text, "t.conf").unwrap();
        plan(&stream::read(&tree, "t.conf").unwrap(), "t.conf").unwrap()
    }

    fn route_of<'a>(plan: &'a Plan, name: &str) -> &'a Route {
        &plan
            .routes
            .iter()
            .find(|r| r.value.sni.iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("no route for {name}"))
            .value
    }

    #[test]
    fn names_follow_nginx_hostnames_rules() {
        assert_eq!(
            names_of_key(".cdn.example.com", true).unwrap(),
            ["cdn.example.com", "*.cdn.example.com"]
        );
        assert_eq!(
            names_of_key("*.Example.COM", true).unwrap(),
            ["*.example.com"]
        );
        assert_eq!(
            names_of_key("a.example.com.", false).unwrap(),
            ["a.example.com"]
        );
        assert!(names_of_key("~^a.*$", true)
            .unwrap_err()
            .contains("regular expression"));
        assert!(names_of_key("www.example.*", true)
            .unwrap_err()
            .contains("trailing wildcard"));
        let literal = names_of_key(".cdn.example.com", false).unwrap_err();
        assert!(
            literal.contains("sni: [cdn.example.com, \"*.cdn.example.com\"]"),
            "{literal}"
        );
        assert!(names_of_key("bad name!", true).is_err());
    }

    #[test]
    fn the_seed_stream_block_maps_route_by_route() {
        let plan = plan_of(include_str!("../../../tests/data/nginx/stream.conf"));
        let listen: Vec<&str> = plan.listen.iter().map(|l| l.value.as_str()).collect();
        assert_eq!(listen, ["0.0.0.0:443", "[::]:443"]);
        let proxy = route_of(&plan, "proxy.example.com");
        assert_eq!(proxy.target.to, ["127.0.0.1:10443"]);
        assert!(
            proxy.target.proxy_protocol,
            "stream-wide proxy_protocol on reaches every route"
        );
        let xray = route_of(&plan, "3.example.com");
        assert_eq!(xray.target.to, ["127.0.0.1:9443"]);
        assert!(xray.target.proxy_protocol);
        let site = route_of(&plan, "*.cdn.example.com");
        assert_eq!(
            site.sni,
            ["3-x.example.com", "cdn.example.com", "*.cdn.example.com"]
        );
        assert_eq!(site.target.to, ["127.0.0.1:8443", "127.0.0.1:8444"]);
        let default = &plan.default.as_ref().unwrap().value;
        assert_eq!(default.to, ["127.0.0.1:8443", "127.0.0.1:8444"]);
        assert_eq!(plan.non_tls.as_ref().unwrap().value, *default);
        let timeouts: Vec<(&str, &str)> = plan
            .timeouts
            .iter()
            .map(|t| (t.value.0, t.value.1.as_str()))
            .collect();
        assert_eq!(
            timeouts,
            [("client_hello", "10s"), ("connect", "5s"), ("idle", "1d")]
        );
        assert!(plan.accept_proxy_protocol_from.is_none());
    }

    #[test]
    fn per_server_proxy_protocol_reaches_only_that_servers_routes() {
        let plan = plan_of(
            "stream {\n map $ssl_preread_server_name $b {\n hostnames;\n site.example.com 127.0.0.1:10001;\n reality.example.com 127.0.0.1:9443;\n }\n server { listen 443; ssl_preread on; proxy_pass $b; }\n server { listen 127.0.0.1:10001; proxy_pass 127.0.0.1:8443; proxy_protocol on; }\n}\n",
        );
        let site = route_of(&plan, "site.example.com");
        assert_eq!(site.target.to, ["127.0.0.1:8443"]);
        assert!(site.target.proxy_protocol);
        let reality = route_of(&plan, "reality.example.com");
        assert!(!reality.target.proxy_protocol);
        assert_eq!(plan.listen.len(), 1, "the hop is not a listener of its own");
    }

    #[test]
    fn pools_order_by_weight_then_backup_and_report_what_has_no_equivalent() {
        let plan = plan_of(
            "stream {\n upstream p {\n hash $remote_addr consistent;\n server 127.0.0.1:1 max_fails=3;\n server 127.0.0.1:2 weight=5;\n server 127.0.0.1:3 backup;\n server 127.0.0.1:4 down;\n }\n server { listen 443; proxy_pass p; }\n}\n",
        );
        let default = plan.default.as_ref().unwrap();
        assert_eq!(
            default.value.to,
            ["127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"]
        );
        let unmapped: Vec<String> = plan.not_mapped().iter().map(|u| u.text.clone()).collect();
        for text in [
            "hash $remote_addr consistent;",
            "server 127.0.0.1:1 max_fails=3;",
            "server 127.0.0.1:4 down;",
            "upstream p { ... }",
        ] {
            assert!(
                unmapped.iter().any(|u| u == text),
                "{text} not reported: {unmapped:?}"
            );
        }
    }

    #[test]
    fn an_inbound_proxy_protocol_listen_takes_set_real_ip_from_or_a_todo() {
        let with = plan_of(
            "stream {\n server { listen 443 proxy_protocol; set_real_ip_from 10.0.0.0/8; proxy_pass 127.0.0.1:1; }\n}\n",
        );
        assert_eq!(
            with.accept_proxy_protocol_from.unwrap().value,
            ["10.0.0.0/8"]
        );
        let without = plan_of(
            "stream {\n server { listen 443 proxy_protocol; proxy_pass 127.0.0.1:1; }\n}\n",
        );
        let accept = without.accept_proxy_protocol_from.unwrap();
        assert!(accept
            .comments
            .iter()
            .any(|c| matches!(c, Comment::Note(n) if n.starts_with("TODO"))));
    }

    #[test]
    fn regex_entries_and_other_servers_are_reported_not_guessed() {
        let plan = plan_of(
            "stream {\n map $ssl_preread_server_name $b {\n ~^api\\d+\\.example\\.com$ 127.0.0.1:1;\n a.example.com 127.0.0.1:2;\n }\n server { listen 443; ssl_preread on; proxy_pass $b; }\n server { listen 80; proxy_pass 127.0.0.1:8080; }\n}\n",
        );
        assert_eq!(plan.routes.len(), 1);
        let unmapped = plan.not_mapped();
        assert!(unmapped
            .iter()
            .any(|u| u.text.starts_with("~^api") && u.why.contains("regular expression")));
        assert!(unmapped
            .iter()
            .any(|u| u.text.starts_with("server { listen 80;")));
    }

    #[test]
    fn a_proxy_pass_of_a_variable_no_name_map_sets_is_reported() {
        let plan = plan_of(
            "stream {\n map $ssl_preread_protocol $up {\n \"\" 127.0.0.1:22;\n default 127.0.0.1:443;\n }\n server { listen 443; ssl_preread on; proxy_pass $up; }\n}\n",
        );
        assert!(plan.default.is_none() && plan.routes.is_empty());
        let unmapped = plan.not_mapped();
        assert!(unmapped
            .iter()
            .any(|u| u.text == "proxy_pass $up;" && u.why.contains("no map")));
        assert!(unmapped
            .iter()
            .any(|u| u.text.starts_with("map $ssl_preread_protocol")));
    }

    #[test]
    fn without_ssl_preread_every_connection_takes_the_default() {
        let plan = plan_of(
            "stream {\n map $ssl_preread_server_name $b {\n a.example.com 127.0.0.1:2;\n default 127.0.0.1:3;\n }\n server { listen 443; proxy_pass $b; }\n}\n",
        );
        assert!(plan.routes.is_empty());
        assert_eq!(plan.default.unwrap().value.to, ["127.0.0.1:3"]);
    }

    #[test]
    fn a_stream_without_a_usable_server_is_an_error() {
        let tree = syntax::parse(
            "stream {\n upstream a { server 127.0.0.1:1; }\n}\n",
            "t.conf",
        )
        .unwrap();
        let err = plan(&stream::read(&tree, "t.conf").unwrap(), "t.conf").unwrap_err();
        assert!(err.contains("no stream server"), "{err}");
    }
}
