//! Load tools for `integration/bench-mtproto` (loopback only). The fake DC, the echo server
//! and the fake-TLS handshake are frontgate's test kit (`tests/common/kit`), the same the
//! loopback tests use; this file adds the load loops and the measurements. Four modes:
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
//!     so on a shared 2-core box the proxy's own work is what is measured. Any other tag is
//!     reported and its connection closed.
//! bench-mtproto-client echo --listen 127.0.0.1:P
//!     Raw echo from the first byte (the passthrough ceiling's backend).
//! bench-mtproto-client load --connect 127.0.0.1:P --mode mtproto|plain --sni NAME
//!         [--secret HEX32] [--conns N] [--bytes N] [--verify [--framed]] [--pid PID] [--label TEXT]
//!     mtproto: per connection a fake-TLS ClientHello with a valid digest for --secret, the
//!     server flight read and its HMAC checked, CCS + the obfuscated2 init (padded
//!     intermediate tag) in a record, then --bytes/--conns bytes pushed in 16 KiB TLS records
//!     while a second thread reads the echo back (TLS records from the proxy; headers checked,
//!     payload counted). Bulk runs (tag `dd`) send fixed random payload with no client-side
//!     AES; --verify (tag `ee`) encrypts a position-keyed pattern and checks every echoed byte.
//!     Both ask for DC 2. --framed (with --verify) makes the stream whole intermediate-
//!     transport messages of 16380 bytes, for a proxy in middle-proxy mode (bench-middle).
//!     plain: a ClientHello for --sni (so an SNI router routes it), then the same records,
//!     raw; the echoed hello is skipped. Prints one `result key=value ...` line with MB/s
//!     (payload bytes echoed per second, 10^6) and, with --pid, that process's CPU seconds
//!     (utime+stime from /proc/PID/stat) for the timed part and per GiB echoed.
//! bench-mtproto-client aes            (built with `--features floor`)
//!     The crypto floor in GiB/s per core, two seconds each over a 16 KiB buffer: one relay
//!     direction's AES work done by frontgate's own `reencrypt` (the only part of this tool
//!     that runs frontgate's code), and one pass of the `aes` + `ctr` crates.
//! bench-mtproto-client middle [--secret HEX] [--forward DC_ADDR]
//!     The test kit's fake Telegram middle proxy and its config server (plain HTTP) on
//!     127.0.0.1 (integration/middle-crosscheck.sh, bench-middle, tdlib.sh); it echoes each
//!     message, or with --forward relays them to that DC. Prints `ready config=URL
//!     me=ADDR secret=HEX`, then one `req conn_id=.. ad_tag=HEX flags=0x.. client=..
//!     proxy=.. problems=[..]` line per new connection id (or failed check) it sees.
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use aes::cipher::StreamCipher;
use frontgate_testkit::mtproto_client::{
    self as client, record_header, Ctr, INTERMEDIATE, PADDED, TAGS,
};
use frontgate_testkit::{backend, fake_dc};
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

const RECORD: usize = 16384;
/// Largest record payload accepted from a proxy (mtprotoproxy sends up to 16408).
const MAX_RECORD_IN: usize = 16384 + 256;
const DC: i16 = 2;
/// Bulk runs: the DC echoes ciphertext.
const TAG_BULK: [u8; 4] = PADDED;
/// Verify runs: the DC decrypts and re-encrypts.
const TAG_VERIFY: [u8; 4] = INTERMEDIATE;
/// Offered in the ClientHello: TLS 1.3 suites with `13 01` first, the one suite
/// mtprotoproxy answers with, so every proxy answers the same.
const SUITES: [u16; 4] = [0x1301, 0x1302, 0x1303, 0xc02b];
const BATCH_RECORDS: usize = 4;

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench-mtproto-client: {msg}");
    std::process::exit(2)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(format!("tokio runtime: {e}")))
}

// ---------------------------------------------------------------------------------- servers

/// The test kit's fake DC (ciphertext echo for [`TAG_BULK`]) or raw echo server on `listen`,
/// until killed.
fn serve(listen: &str, dc: bool) -> ! {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| die(format!("bind {listen}: {e}")));
        if dc {
            let mut dc = fake_dc::serve(listener, Some(TAG_BULK));
            while let Some(seen) = dc.seen.recv().await {
                // Who connected: the proxy, or the tunnel it dials through.
                eprintln!(
                    "bench-mtproto-client dc: connection from {} (dc {})",
                    seen.peer, seen.dc
                );
                if !TAGS.contains(&seen.tag) {
                    eprintln!(
                        "bench-mtproto-client dc: bad protocol tag {:02x?} (dc {}); closed",
                        seen.tag, seen.dc
                    );
                }
            }
        } else {
            backend::raw_echo(listener).await;
        }
    });
    die("listener closed")
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
    rt: &Runtime,
    addr: &str,
    mode: Mode,
    secret: &[u8; 16],
    sni: &str,
    verify: bool,
) -> Result<Conn, String> {
    let (sock, ciphers, skip) = rt.block_on(async {
        let mut sock = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).ok();
        if mode == Mode::Plain {
            let hello = client::build_hello(secret, sni, &SUITES, client::now_unix() as u32);
            sock.write_all(&hello.record)
                .await
                .map_err(|e| e.to_string())?;
            return Ok((sock, None, hello.record.len()));
        }
        let tag = if verify { TAG_VERIFY } else { TAG_BULK };
        let (_, obf) = client::handshake(&mut sock, secret, sni, &SUITES, tag, DC, false)
            .await
            .map_err(|e| format!("fake-TLS handshake: {e}"))?;
        Ok::<_, String>((sock, verify.then_some((obf.encrypt, obf.decrypt)), 0))
    })?;
    let sock = sock
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(|e| e.to_string())?;
    let (encrypt, decrypt) = ciphers.unzip();
    Ok(Conn {
        sock,
        encrypt,
        decrypt,
        skip,
    })
}

/// Set by `--framed`: the verify pattern is a stream of MTProto intermediate-transport
/// messages, one per 16 KiB record (a 4-byte length of 16380, then 16380 pattern bytes), so
/// a proxy in middle-proxy mode can parse it; the fake ME echoes each message and the proxy
/// frames it back the same way, so the stream comes back unchanged as in direct mode.
static FRAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The verify pattern: byte `i` of the stream, independent of how it is chunked.
fn pattern(offset: u64, out: &mut [u8]) {
    let framed = FRAMED.load(std::sync::atomic::Ordering::Relaxed);
    let length = ((RECORD - 4) as u32).to_le_bytes();
    for (i, b) in out.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let in_message = (pos % RECORD as u64) as usize;
        if framed && in_message < 4 {
            *b = length[in_message];
            continue;
        }
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
    let mut per_conn = total / conns as u64;
    if FRAMED.load(std::sync::atomic::Ordering::Relaxed) {
        if !verify {
            die("--framed needs --verify (the intermediate tag)");
        }
        per_conn -= per_conn % RECORD as u64;
    }

    let rt = runtime();
    let mut opened = Vec::new();
    for _ in 0..conns {
        match open(&rt, &addr, mode, &secret, &sni, verify) {
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

/// The crypto floor, on this thread for about two seconds each over a 16 KiB buffer, in GiB/s
/// per core: one relay direction's AES work as the proxy does it
/// (`frontgate::mtproto::obfuscated2::reencrypt`: AWS-LC decrypts with one leg's key and
/// encrypts with the other's), and one pass of the `aes` + `ctr` crates (the kit's cipher) for
/// comparison.
#[cfg(feature = "floor")]
fn aes_speed() {
    use aes::cipher::KeyIvInit;
    use frontgate::mtproto::obfuscated2::{reencrypt, AesCtr};
    let mut buf = vec![0u8; 16384];
    let mut decrypt = AesCtr::new(&[7u8; 32].into(), &[8u8; 16].into());
    let mut encrypt = AesCtr::new(&[9u8; 32].into(), &[10u8; 16].into());
    let reencrypt_speed = gib_per_s(&mut buf, |b| reencrypt(&mut decrypt, &mut encrypt, b));
    let mut cipher = client::ctr(&[7u8; 48]);
    let ctr_speed = gib_per_s(&mut buf, |b| cipher.apply_keystream(b));
    println!(
        "result reencrypt_gib_per_s={reencrypt_speed:.2} aes256_ctr_gib_per_s={ctr_speed:.2} check={}",
        buf[0]
    );
}

/// How fast `pass` runs over `buf`, over about two seconds: GiB of `buf` per second.
#[cfg(feature = "floor")]
fn gib_per_s(buf: &mut [u8], mut pass: impl FnMut(&mut [u8])) -> f64 {
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..256 {
            pass(buf);
        }
        bytes += 256 * buf.len() as u64;
    }
    bytes as f64 / started.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

/// Runs the kit's fake middle proxy until killed, printing what it sees.
fn middle(opts: &HashMap<String, String>) {
    use frontgate_testkit::fake_middle::{self, ConfigServer, MiddleOptions};
    let secret = match opts.get("secret") {
        Some(text) => hex_bytes(text),
        None => {
            let mut s = vec![0u8; 128];
            rand::thread_rng().fill_bytes(&mut s);
            s
        }
    };
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let options = MiddleOptions {
            secret: secret.clone(),
            proxy_ip: None,
            forward: opts.get("forward").map(|a| {
                a.parse()
                    .unwrap_or_else(|_| die(format!("bad --forward {a}")))
            }),
        };
        let mut me = fake_middle::spawn([127, 0, 0, 1].into(), options).await;
        let config = ConfigServer::start(&secret, me.addr).await;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        println!(
            "ready config=http://{} me={} secret={hex}",
            config.addr, me.addr
        );
        io::stdout().flush().ok();
        while let Some(seen) = me.requests.recv().await {
            let tag: String = seen
                .ad_tag
                .map(|t| t.iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_else(|| "none".into());
            println!(
                "req conn_id={} ad_tag={tag} flags={:#x} client={} proxy={} problems={:?}",
                seen.conn_id, seen.flags, seen.client, seen.proxy, seen.problems
            );
            io::stdout().flush().ok();
        }
    });
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or_else(|_| die("bad hex")))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut opts = HashMap::new();
    let mut verify = false;
    while let Some(a) = args.next() {
        match a.strip_prefix("--") {
            Some("verify") => verify = true,
            Some("framed") => FRAMED.store(true, std::sync::atomic::Ordering::Relaxed),
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
        #[cfg(feature = "floor")]
        "aes" => aes_speed(),
        #[cfg(not(feature = "floor"))]
        "aes" => die("the aes mode needs the floor feature: cargo build --release --features floor"),
        "middle" => middle(&opts),
        _ => die("usage: bench-mtproto-client aes | dc|echo --listen ADDR | load --connect ADDR --mode mtproto|plain --sni NAME [--secret HEX] [--conns N] [--bytes N] [--verify [--framed]] [--pid PID] [--label TEXT] | middle [--secret HEX] [--forward DC_ADDR]"),
    }
}
