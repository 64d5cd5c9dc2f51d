//! Load tools for `integration/bench-mtproto` (loopback only). Three modes:
//!
//! ```text
//! bench-mtproto-client dc   --listen 127.0.0.1:P
//!     A fake Telegram DC. Reads the proxy's 64-byte obfuscated2 init (DC side: key/iv =
//!     init[8..56], reply key/iv = the same 48 bytes reversed) and decrypts it. If the protocol
//!     tag is intermediate (`ee`, verify runs) it echoes every byte decrypted and re-encrypted
//!     like a real peer; with padded intermediate (`dd`, bulk runs) it echoes the ciphertext
//!     unchanged. (The tag, not the DC index, tells them apart: proxies must forward the tag,
//!     while mtprotoproxy does not copy the DC index into its DC init.) Raw echo is a valid DC
//!     for load: the proxy still decrypts the DC leg (or, in fast mode, forwards it) and
//!     re-encrypts for the client exactly as with a real DC, but the DC spends no CPU on AES,
//!     so on a shared 2-core box the proxy's own work is what is measured.
//! bench-mtproto-client echo --listen 127.0.0.1:P
//!     Raw echo from the first byte (the passthrough ceiling's backend).
//! bench-mtproto-client load --connect 127.0.0.1:P --mode mtproto|plain --sni NAME
//!         [--secret HEX32] [--conns N] [--bytes N] [--verify] [--pid PID] [--label TEXT]
//!     mtproto: per connection a fake-TLS ClientHello with a valid digest for --secret, the
//!     server flight read and its HMAC checked, CCS + the obfuscated2 init (padded
//!     intermediate tag) in a record, then --bytes/--conns bytes pushed in 16 KiB TLS records
//!     while a second thread reads the echo back (TLS records from the proxy; headers checked,
//!     payload counted). Bulk runs (tag `dd`) send fixed random payload with no client-side
//!     AES; --verify (tag `ee`) encrypts a position-keyed pattern and checks every echoed byte.
//!     Both ask for DC 2.
//!     plain: a ClientHello for --sni (so an SNI router routes it), then the same records,
//!     raw; the echoed hello is skipped. Prints one `result key=value ...` line with MB/s
//!     (payload bytes echoed per second, 10^6) and, with --pid, that process's CPU seconds
//!     (utime+stime from /proc/PID/stat) for the timed part and per GiB echoed.
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// AES-256-CTR, the 16-byte IV as a 128-bit big-endian counter.
type Ctr = ctr::Ctr128BE<aes::Aes256>;

const RECORD: usize = 16384;
/// Largest record payload accepted from a proxy (mtprotoproxy sends up to 16408).
const MAX_RECORD_IN: usize = 16384 + 256;
const DC: i16 = 2;
/// Bulk runs: the DC echoes ciphertext.
const TAG_BULK: [u8; 4] = [0xdd; 4];
/// Verify runs: the DC decrypts and re-encrypts.
const TAG_VERIFY: [u8; 4] = [0xee; 4];
const TAGS: [[u8; 4]; 3] = [[0xef; 4], [0xee; 4], [0xdd; 4]];
const BATCH_RECORDS: usize = 4;

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench-mtproto-client: {msg}");
    std::process::exit(2)
}

fn ctr(key_iv: &[u8]) -> Ctr {
    Ctr::new(key_iv[..32].into(), key_iv[32..48].into())
}

// ---------------------------------------------------------------------------------- servers

fn serve(listen: &str, dc: bool) -> ! {
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| die(format!("bind {listen}: {e}")));
    for sock in listener.incoming() {
        match sock {
            Ok(sock) => {
                thread::spawn(move || {
                    let _ = if dc {
                        dc_conn(sock)
                    } else {
                        echo_conn(sock, None)
                    };
                });
            }
            Err(e) => eprintln!("bench-mtproto-client: accept: {e}"),
        }
    }
    die("listener closed")
}

fn dc_conn(mut sock: TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut init = [0u8; 64];
    sock.read_exact(&mut init)?;
    let mut decrypt = ctr(&init[8..56]);
    let mut rev = init[8..56].to_vec();
    rev.reverse();
    let encrypt = ctr(&rev);
    let mut plain = init;
    decrypt.apply_keystream(&mut plain);
    let tag: [u8; 4] = plain[56..60].try_into().unwrap();
    let dc = i16::from_le_bytes([plain[60], plain[61]]);
    if !TAGS.contains(&tag) {
        eprintln!("bench-mtproto-client dc: bad protocol tag {tag:02x?} (dc {dc}); closing");
        return Ok(());
    }
    let _ = dc;
    let crypto = (tag == TAG_VERIFY).then_some((decrypt, encrypt));
    echo_conn(sock, crypto)
}

fn echo_conn(mut sock: TcpStream, mut crypto: Option<(Ctr, Ctr)>) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((dec, enc)) = crypto.as_mut() {
            dec.apply_keystream(&mut buf[..n]);
            enc.apply_keystream(&mut buf[..n]);
        }
        if sock.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
    Ok(())
}

// ------------------------------------------------------------------------- fake-TLS client

fn hmac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// A 517-byte ClientHello record for `sni` (the size Telegram clients send, which
/// mtprotoproxy requires) whose random is the fake-TLS digest of `secret` now.
fn client_hello(secret: &[u8; 16], sni: &str) -> (Vec<u8>, [u8; 32]) {
    let mut rng = rand::thread_rng();
    let mut session_id = [0u8; 32];
    rng.fill_bytes(&mut session_id);
    let mut exts = Vec::new();
    let mut sni_body = Vec::new();
    sni_body.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sni_body.push(0);
    sni_body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_body.extend_from_slice(sni.as_bytes());
    ext(&mut exts, 0x0000, &sni_body);
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x1d]);
    let mut key_share = vec![0, 36, 0, 0x1d, 0, 32];
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    key[31] &= 0x7f;
    key_share.extend_from_slice(&key);
    ext(&mut exts, 0x0033, &key_share);
    ext(&mut exts, 0x002b, &[4, 3, 4, 3, 3]);

    let suites: [u16; 4] = [0x1301, 0x1302, 0x1303, 0xc02b];
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0u8; 32]);
    body.push(32);
    body.extend_from_slice(&session_id);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let fixed = 5 + 4 + body.len() + 2 + exts.len() + 4;
    ext(&mut exts, 0x0015, &vec![0u8; 517 - fixed]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(1);
    record.extend_from_slice(&[0, (body.len() >> 8) as u8, body.len() as u8]);
    record.extend_from_slice(&body);
    assert_eq!(record.len(), 517);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    let mut random = hmac(secret, &[&record]);
    for (r, t) in random[28..].iter_mut().zip(now.to_le_bytes()) {
        *r ^= t;
    }
    record[11..43].copy_from_slice(&random);
    (record, random)
}

fn read_record(sock: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut rec = vec![0u8; 5];
    sock.read_exact(&mut rec)?;
    let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
    rec.resize(5 + len, 0);
    sock.read_exact(&mut rec[5..])?;
    Ok(rec)
}

/// Reads ServerHello, CCS and the fake certificate record; checks the server digest.
fn read_flight(
    sock: &mut TcpStream,
    secret: &[u8; 16],
    client_random: &[u8; 32],
) -> Result<(), String> {
    let io = |e: io::Error| format!("reading the server flight: {e}");
    let hello = read_record(sock).map_err(io)?;
    let ccs = read_record(sock).map_err(io)?;
    let cert = read_record(sock).map_err(io)?;
    if hello[..3] != [0x16, 3, 3] || hello.get(5) != Some(&2) {
        return Err(format!(
            "not a ServerHello: {:02x?}",
            &hello[..hello.len().min(8)]
        ));
    }
    if ccs != [0x14, 3, 3, 0, 1, 1] {
        return Err("no ChangeCipherSpec after the ServerHello".into());
    }
    if cert[..3] != [0x17, 3, 3] {
        return Err("no application-data record in the server flight".into());
    }
    let mut flight = [hello, ccs, cert].concat();
    let digest: [u8; 32] = flight[11..43].try_into().unwrap();
    flight[11..43].fill(0);
    if hmac(secret, &[client_random, &flight]) != digest {
        return Err("server digest mismatch".into());
    }
    Ok(())
}

/// A client obfuscated2 init for `dc` with `tag`: (wire init, client -> proxy cipher
/// positioned after the init, proxy -> client cipher).
fn obfuscated2(secret: &[u8; 16], tag: [u8; 4], dc: i16) -> ([u8; 64], Ctr, Ctr) {
    let mut rng = rand::thread_rng();
    let mut init = [0u8; 64];
    loop {
        rng.fill_bytes(&mut init);
        let bad = init[0] == 0xef
            || [
                &b"HEAD"[..],
                b"POST",
                b"GET ",
                b"OPTI",
                &[0x16, 3, 1, 2],
                &[0xdd; 4],
                &[0xee; 4],
            ]
            .contains(&&init[..4])
            || init[4..8] == [0; 4];
        if !bad {
            break;
        }
    }
    init[56..60].copy_from_slice(&tag);
    init[60..62].copy_from_slice(&dc.to_le_bytes());
    let salted = |key_iv: &[u8]| {
        let key = Sha256::new()
            .chain_update(&key_iv[..32])
            .chain_update(secret)
            .finalize();
        let mut out = [0u8; 48];
        out[..32].copy_from_slice(&key);
        out[32..].copy_from_slice(&key_iv[32..48]);
        out
    };
    let mut encrypt = ctr(&salted(&init[8..56]));
    let mut rev = init[8..56].to_vec();
    rev.reverse();
    let decrypt = ctr(&salted(&rev));
    let mut enc = init;
    encrypt.apply_keystream(&mut enc);
    let mut wire = init;
    wire[56..].copy_from_slice(&enc[56..]);
    (wire, encrypt, decrypt)
}

fn record_header(len: usize) -> [u8; 5] {
    let l = (len as u16).to_be_bytes();
    [0x17, 3, 3, l[0], l[1]]
}

// ------------------------------------------------------------------------------ load client

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Mtproto,
    Plain,
}

struct Conn {
    sock: TcpStream,
    /// Client -> proxy cipher (verify runs only).
    encrypt: Option<Ctr>,
    /// Proxy -> client cipher (verify runs only).
    decrypt: Option<Ctr>,
    /// Echoed bytes to skip before the records (plain mode: our ClientHello).
    skip: usize,
}

fn open(
    addr: &str,
    mode: Mode,
    secret: &[u8; 16],
    sni: &str,
    verify: bool,
) -> Result<Conn, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_nodelay(true).ok();
    let (hello, random) = client_hello(secret, sni);
    sock.write_all(&hello).map_err(|e| e.to_string())?;
    if mode == Mode::Plain {
        return Ok(Conn {
            sock,
            encrypt: None,
            decrypt: None,
            skip: hello.len(),
        });
    }
    read_flight(&mut sock, secret, &random)?;
    let (init, encrypt, decrypt) =
        obfuscated2(secret, if verify { TAG_VERIFY } else { TAG_BULK }, DC);
    let mut first = vec![0x14, 3, 3, 0, 1, 1];
    first.extend_from_slice(&record_header(64));
    first.extend_from_slice(&init);
    sock.write_all(&first).map_err(|e| e.to_string())?;
    let (encrypt, decrypt) = if verify {
        (Some(encrypt), Some(decrypt))
    } else {
        (None, None)
    };
    Ok(Conn {
        sock,
        encrypt,
        decrypt,
        skip: 0,
    })
}

/// The verify pattern: byte `i` of the stream, independent of how it is chunked.
fn pattern(offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let mut x = (pos >> 3).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        *b = (x >> ((pos & 7) * 8)) as u8;
    }
}

fn writer(mut sock: TcpStream, total: u64, mut encrypt: Option<Ctr>) -> io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH_RECORDS * (RECORD + 5));
    let mut payload = vec![0u8; RECORD];
    rand::thread_rng().fill_bytes(&mut payload);
    let mut sent = 0u64;
    while sent < total {
        batch.clear();
        for _ in 0..BATCH_RECORDS {
            let n = (total - sent).min(RECORD as u64) as usize;
            if n == 0 {
                break;
            }
            batch.extend_from_slice(&record_header(n));
            let start = batch.len();
            if let Some(enc) = encrypt.as_mut() {
                batch.resize(start + n, 0);
                pattern(sent, &mut batch[start..]);
                enc.apply_keystream(&mut batch[start..]);
            } else {
                batch.extend_from_slice(&payload[..n]);
            }
            sent += n as u64;
        }
        sock.write_all(&batch)?;
    }
    Ok(())
}

/// Reads until `total` payload bytes came back in well-formed records; returns the largest
/// record payload seen.
fn reader(
    mut sock: TcpStream,
    total: u64,
    mut skip: usize,
    mut decrypt: Option<Ctr>,
) -> Result<usize, String> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut expect = vec![0u8; 0];
    let mut hdr = [0u8; 5];
    let mut hdr_got = 0usize;
    let mut left = 0usize; // payload bytes left in the current record
    let mut got = 0u64;
    let mut max_record = 0usize;
    while got < total {
        let n = sock
            .read(&mut buf)
            .map_err(|e| format!("read after {got} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("EOF after {got} of {total} bytes"));
        }
        let mut at = 0;
        while at < n {
            if skip > 0 {
                let k = skip.min(n - at);
                skip -= k;
                at += k;
            } else if left == 0 {
                let k = (5 - hdr_got).min(n - at);
                hdr[hdr_got..hdr_got + k].copy_from_slice(&buf[at..at + k]);
                hdr_got += k;
                at += k;
                if hdr_got == 5 {
                    hdr_got = 0;
                    let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
                    if hdr[..3] != [0x17, 3, 3] || len == 0 || len > MAX_RECORD_IN {
                        return Err(format!("bad record header {hdr:02x?} after {got} bytes"));
                    }
                    max_record = max_record.max(len);
                    left = len;
                }
            } else {
                let k = left.min(n - at);
                let chunk = &mut buf[at..at + k];
                if let Some(dec) = decrypt.as_mut() {
                    dec.apply_keystream(chunk);
                    expect.resize(k, 0);
                    pattern(got, &mut expect);
                    if chunk != &expect[..] {
                        let bad = chunk.iter().zip(&expect).position(|(a, b)| a != b).unwrap();
                        return Err(format!("echo mismatch at byte {}", got + bad as u64));
                    }
                }
                left -= k;
                at += k;
                got += k as u64;
                if got > total {
                    return Err(format!("more bytes echoed than sent ({got} > {total})"));
                }
            }
        }
    }
    Ok(max_record)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn load(opts: &HashMap<String, String>, verify: bool) {
    let get = |k: &str| opts.get(k).cloned();
    let addr = get("connect").unwrap_or_else(|| die("--connect is required"));
    let mode = match get("mode").as_deref() {
        Some("mtproto") => Mode::Mtproto,
        Some("plain") => Mode::Plain,
        _ => die("--mode mtproto|plain is required"),
    };
    let sni = get("sni").unwrap_or_else(|| die("--sni is required"));
    let secret: [u8; 16] = match get("secret") {
        Some(hex) if hex.len() == 32 => {
            let mut s = [0u8; 16];
            for (i, b) in s.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .unwrap_or_else(|_| die("bad --secret"));
            }
            s
        }
        None if mode == Mode::Plain => [0u8; 16],
        _ => die("--secret must be 32 hex chars"),
    };
    let conns: usize = get("conns").map_or(1, |v| v.parse().unwrap_or_else(|_| die("bad --conns")));
    let total: u64 = get("bytes").map_or(1 << 31, |v| {
        v.parse().unwrap_or_else(|_| die("bad --bytes"))
    });
    let pid: Option<u32> = get("pid").map(|v| v.parse().unwrap_or_else(|_| die("bad --pid")));
    let label = get("label").unwrap_or_else(|| addr.clone());
    let per_conn = total / conns as u64;

    let mut opened = Vec::new();
    for _ in 0..conns {
        match open(&addr, mode, &secret, &sni, verify) {
            Ok(c) => opened.push(c),
            Err(e) => die(format!("{label}: handshake failed: {e}")),
        }
    }
    let barrier = Arc::new(Barrier::new(2 * conns + 1));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for c in opened {
        let rsock = c.sock.try_clone().unwrap_or_else(|e| die(e));
        let wsock = c.sock;
        let (b1, b2) = (barrier.clone(), barrier.clone());
        let (enc, dec, skip) = (c.encrypt, c.decrypt, c.skip);
        writers.push(thread::spawn(move || {
            b1.wait();
            writer(wsock, per_conn, enc)
        }));
        readers.push(thread::spawn(move || {
            b2.wait();
            let r = reader(rsock.try_clone().expect("clone"), per_conn, skip, dec);
            let _ = rsock.shutdown(Shutdown::Both);
            r
        }));
    }
    let cpu0 = pid.and_then(cpu_seconds);
    barrier.wait();
    let start = Instant::now();
    let mut max_record = 0;
    let mut errors = Vec::new();
    for r in readers {
        match r.join() {
            Ok(Ok(m)) => max_record = max_record.max(m),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("reader panicked".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(cpu_seconds);
    for w in writers {
        if let Ok(Err(e)) = w.join() {
            if errors.is_empty() {
                errors.push(format!("write: {e}"));
            }
        }
    }
    if !errors.is_empty() {
        die(format!("{label}: {}", errors.join("; ")));
    }
    let bytes = per_conn * conns as u64;
    let mbps = bytes as f64 / secs / 1e6;
    let (cpu, per_gib) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => {
            let c = b - a;
            (
                format!("{c:.2}"),
                format!("{:.3}", c / (bytes as f64 / (1u64 << 30) as f64)),
            )
        }
        _ => ("n/a".into(), "n/a".into()),
    };
    println!(
        "result label={label} conns={conns} bytes={bytes} seconds={secs:.3} mbps={mbps:.1} cpu_s={cpu} cpu_s_per_gib={per_gib} max_record={max_record} verified={verify}"
    );
}

/// One AES-256-CTR pass (the proxy's cipher, same crates) over a 16 KiB buffer for about
/// two seconds on this thread: GiB/s per core, so the report can state the crypto floor.
fn aes_speed() {
    let mut cipher = ctr(&[7u8; 48]);
    let mut buf = vec![0u8; 16384];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..256 {
            cipher.apply_keystream(&mut buf);
        }
        bytes += 256 * buf.len() as u64;
    }
    let gib_per_s = bytes as f64 / started.elapsed().as_secs_f64() / (1u64 << 30) as f64;
    println!(
        "result aes256_ctr_gib_per_s={gib_per_s:.2} check={}",
        buf[0]
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut opts = HashMap::new();
    let mut verify = false;
    while let Some(a) = args.next() {
        match a.strip_prefix("--") {
            Some("verify") => verify = true,
            Some(key) => {
                let v = args
                    .next()
                    .unwrap_or_else(|| die(format!("--{key} needs a value")));
                opts.insert(key.to_string(), v);
            }
            None => die(format!("unexpected argument {a}")),
        }
    }
    match cmd.as_str() {
        "dc" => serve(opts.get("listen").map_or("127.0.0.1:0", |s| s), true),
        "echo" => serve(opts.get("listen").map_or("127.0.0.1:0", |s| s), false),
        "load" => load(&opts, verify),
        "aes" => aes_speed(),
        _ => die("usage: bench-mtproto-client aes | dc|echo --listen ADDR | load --connect ADDR --mode mtproto|plain --sni NAME [--secret HEX] [--conns N] [--bytes N] [--verify] [--pid PID] [--label TEXT]"),
    }
}
