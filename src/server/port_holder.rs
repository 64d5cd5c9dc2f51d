//! Which process already listens where a bind failed with `EADDRINUSE`, so the error can name
//! it instead of guessing. Linux lists listening sockets with their inode in `/proc/net/tcp`
//! and `/proc/net/tcp6`, and each process's `/proc/PID/fd/*` links name the socket inodes it
//! holds. Another user's descriptors are readable only with privilege, so the answer may be
//! unknown; then the hint says how to find out instead.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
}

/// The state code of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The process listening on a socket that keeps `addr` from being bound, if it can be found.
pub fn holder_of(addr: SocketAddr) -> Option<Holder> {
    let inode = listening_inode(addr)?;
    let link = format!("socket:[{inode}]");
    for process in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == &*link));
        if holds {
            let name = fs::read_to_string(process.path().join("comm")).ok()?;
            return Some(Holder {
                pid,
                name: name.trim_end().to_string(),
            });
        }
    }
    None
}

/// The inode of a listening socket on `addr`'s port whose address is `addr`'s or a wildcard
/// (either way the bind of `addr` clashes with it); one of `addr`'s family first.
fn listening_inode(addr: SocketAddr) -> Option<u64> {
    let tables = if addr.is_ipv4() {
        ["/proc/net/tcp", "/proc/net/tcp6"]
    } else {
        ["/proc/net/tcp6", "/proc/net/tcp"]
    };
    tables.iter().find_map(|table| {
        let text = fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let (local, inode) = listening_socket(line)?;
            let clashes = local.port() == addr.port()
                && (local.ip() == addr.ip()
                    || local.ip().is_unspecified()
                    || addr.ip().is_unspecified());
            clashes.then_some(inode)
        })
    })
}

/// The local address and inode of one `/proc/net/tcp{,6}` line, if it is a listening socket.
fn listening_socket(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((SocketAddr::new(kernel_ip(ip)?, port), inode.parse().ok()?))
}

/// An address as the kernel prints it: the in-memory (network order) bytes read as
/// native-endian 32-bit words, each printed as 8 hex digits.
fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let words = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = holder_of(addr).expect("this test's own socket is found");
        assert_eq!(holder.pid, std::process::id());
        // The wildcard of the same port clashes with it too.
        let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        assert_eq!(holder_of(wildcard), Some(holder));
        drop(listener);
        assert_eq!(holder_of(addr), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn reads_the_kernels_address_format() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            listening_socket(v4),
            Some(("127.0.0.1:8080".parse().unwrap(), 4242))
        );
        let v6 = "   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            listening_socket(v6),
            Some(("[::1]:443".parse().unwrap(), 7))
        );
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(listening_socket(&established), None);
    }
}
