//! Where the imported gateway listens and whom it trusts: nginx `listen` addresses as socket
//! addresses, the stream servers that are only internal hops (another server sends to their
//! listen), `listen:` and `accept_proxy_protocol_from:` of the route file.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::plan::{Comment, Commented};
use super::stream::{Listen, Server, Settings, Stream, Unmapped};

/// An nginx `listen` address as a socket address: `443` and `*:443` are `0.0.0.0:443`, an
/// address without a port is port 80; `unix:` and names other than `localhost` are `None`.
pub fn listen_socket(address: &str) -> Option<SocketAddr> {
    if let Ok(port) = address.parse::<u16>() {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Some(socket);
    }
    if let Some(port) = address.strip_prefix("*:") {
        return port
            .parse()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
    }
    if let Some(port) = address.strip_prefix("localhost:") {
        return port
            .parse()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    let bare = address.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 80))
}

/// Whether a connection to `target` reaches a socket listening on `listen`.
pub fn reaches(target: SocketAddr, listen: SocketAddr) -> bool {
    target.port() == listen.port()
        && (target.ip() == listen.ip()
            || (listen.ip().is_unspecified()
                && (target.ip().is_loopback() || target.ip().is_unspecified())))
}

/// Addresses a server's proxy_pass can send to: every value of its map, every server of a
/// pool, or the address itself.
fn direct_targets(stream: &Stream, server: &Server) -> Vec<SocketAddr> {
    let Some(proxy_pass) = &server.proxy_pass else {
        return Vec::new();
    };
    let values: Vec<&str> = match stream.map(&proxy_pass.value) {
        Some(map) => map
            .entries
            .iter()
            .chain(&map.default)
            .map(|e| e.value.as_str())
            .collect(),
        None => vec![proxy_pass.value.as_str()],
    };
    values
        .into_iter()
        .flat_map(|v| match stream.pool(v) {
            Some(pool) => pool.servers.iter().map(|s| s.address.clone()).collect(),
            None => vec![v.to_string()],
        })
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .collect()
}

/// The indexes of servers that other servers send to (internal hops, not front doors).
pub fn internal_servers(stream: &Stream) -> HashSet<usize> {
    let mut internal = HashSet::new();
    for (i, server) in stream.servers.iter().enumerate() {
        let listens: Vec<SocketAddr> = server
            .listens
            .iter()
            .filter_map(|l| listen_socket(&l.address))
            .collect();
        let reached = stream.servers.iter().enumerate().any(|(j, other)| {
            j != i
                && direct_targets(stream, other)
                    .iter()
                    .any(|t| listens.iter().any(|l| reaches(*t, *l)))
        });
        if reached {
            internal.insert(i);
        }
    }
    internal
}

/// `listen:` from the primary servers' listens, each with its origin.
pub fn listen_addresses(
    primary: &[&Server],
    comments: &mut Vec<Comment>,
) -> Vec<Commented<String>> {
    let mut out: Vec<Commented<String>> = Vec::new();
    for listen in primary.iter().flat_map(|s| &s.listens) {
        let socket = match listen_socket(&listen.address) {
            Some(socket) if !listen.udp && !listen.ssl => socket,
            _ => {
                let why = if listen.udp {
                    "frontgate listens on TCP only"
                } else if listen.ssl {
                    "nginx terminated TLS on this listener; frontgate's `tls:` routes do that per name, by hand"
                } else {
                    "frontgate listens on IP addresses only"
                };
                comments.push(Comment::NotMapped(listen_unmapped(listen, why)));
                continue;
            }
        };
        let text = socket.to_string();
        if out.iter().any(|l| l.value == text) {
            continue;
        }
        let mut item = Commented::new(text);
        item.comments
            .push(Comment::Note(format!("{}: `{}`", listen.at, listen.text)));
        if !listen.socket_options.is_empty() {
            item.comments.push(Comment::NotMapped(listen_unmapped(
                listen,
                &format!(
                    "socket options {}: frontgate sets its own",
                    listen.socket_options.join(" ")
                ),
            )));
        }
        out.push(item);
    }
    out
}

/// A listen line that is not carried over, and why.
fn listen_unmapped(listen: &Listen, why: &str) -> Unmapped {
    Unmapped {
        at: listen.at.clone(),
        text: listen.text.clone(),
        why: why.to_string(),
    }
}

/// `accept_proxy_protocol_from:` when a primary listen has `proxy_protocol`.
pub fn accept_proxy_protocol(
    primary: &[&Server],
    settings: &Settings,
) -> Option<Commented<Vec<String>>> {
    let listens: Vec<&Listen> = primary.iter().flat_map(|s| &s.listens).collect();
    let with: Vec<&&Listen> = listens.iter().filter(|l| l.proxy_protocol).collect();
    let first = with.first()?;
    let mut networks = Vec::new();
    let mut comments = vec![Comment::Note(format!(
        "{}: `{}`: a balancer in front sends a PROXY header",
        first.at, first.text
    ))];
    if with.len() < listens.len() {
        comments.push(Comment::Note(
            "nginx wanted the header on some listeners only; frontgate wants it from these peers on every listener"
                .to_string(),
        ));
    }
    for from in &settings.real_ip_from {
        let net = from
            .value
            .parse::<ipnet::IpNet>()
            .or_else(|_| from.value.parse::<IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(net) => {
                comments.push(Comment::Note(format!(
                    "{}: `{}`: TODO: check that this is your balancer's address",
                    from.at, from.text
                )));
                networks.push(net.to_string());
            }
            Err(_) => comments.push(Comment::NotMapped(Unmapped {
                at: from.at.clone(),
                text: from.text.clone(),
                why: "not an address or network".to_string(),
            })),
        }
    }
    if networks.is_empty() {
        comments.push(Comment::Note(
            "TODO: put your balancer's address here. nginx took a PROXY header from any peer; frontgate takes it only from these networks (loopback until you change it) and treats everyone else as a plain client"
                .to_string(),
        ));
        comments.push(Comment::Note(
            "nginx had no set_real_ip_from: the PROXY header it sent on carried the balancer's address; frontgate's carries the client's".to_string(),
        ));
        networks = vec!["127.0.0.1/32".to_string(), "::1/128".to_string()];
    }
    Some(Commented {
        value: networks,
        comments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_read_as_nginx_reads_them() {
        for (text, want) in [
            ("443", Some("0.0.0.0:443")),
            ("*:443", Some("0.0.0.0:443")),
            ("[::]:443", Some("[::]:443")),
            ("127.0.0.1:10443", Some("127.0.0.1:10443")),
            ("10.0.0.1", Some("10.0.0.1:80")),
            ("localhost:8443", Some("127.0.0.1:8443")),
            ("unix:/run/nginx.sock", None),
            ("example.com:443", None),
        ] {
            assert_eq!(
                listen_socket(text).map(|s| s.to_string()).as_deref(),
                want,
                "{text}"
            );
        }
    }
}
