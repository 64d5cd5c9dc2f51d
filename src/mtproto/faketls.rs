//! The fake-TLS handshake: checking a ClientHello's digest and signing the fake server flight
//! ([`crate::mtproto::mimic`] shapes it) (PROTOCOL.md §2 and §3).
//!
//! A Telegram client proves it knows a user secret by hiding an HMAC of its ClientHello in
//! the hello's `random` field; the proxy proves the same back in the ServerHello `random`.
//! Nothing here does I/O: the router hands in the hello bytes it already read, and the
//! session writes the flight this module builds.

use std::sync::OnceLock;
use std::time::Duration;

use hmac::Mac;
use rand::Rng;
use subtle::{Choice, ConstantTimeEq};

use crate::config::secret::Secret;

/// Offset of the 32-byte `random` (digest) in a handshake record: 5 record header bytes,
/// 4 handshake header bytes, 2 version bytes.
pub const DIGEST_OFFSET: usize = 11;
/// Length of the digest (`random`) field.
pub const DIGEST_LEN: usize = 32;

/// The TLS 1.3 cipher suites a ServerHello may echo (`13 01`, `13 02`, `13 03`).
const TLS13_SUITES: [u16; 3] = [0x1301, 0x1302, 0x1303];
/// Suite sent when the client offered none of [`TLS13_SUITES`].
const DEFAULT_SUITE: u16 = 0x1301;

/// A ClientHello that carries a valid digest for one configured user.
#[derive(Clone, PartialEq, Eq)]
pub struct FakeTlsClient {
    /// Index into the `users` slice given to [`verify_client_hello`].
    pub user: usize,
    /// That user's secret, which keys the server digest and the obfuscated2 init: carried
    /// here so the session never looks the index up again.
    pub secret: Secret,
    /// The hello's 32-byte `random` as received: the replay-cache key and the input of the
    /// server digest.
    pub random: [u8; 32],
    /// The unix time the client put in the digest.
    pub timestamp: u32,
}

/// Everything but the secret, which never reaches a log.
impl std::fmt::Debug for FakeTlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTlsClient")
            .field("user", &self.user)
            .field("random", &self.random)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Why a ClientHello is not an MTProto fake-TLS hello; the connection then goes to the route's
/// backend. The messages name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeTlsReject {
    /// Not one `16 03 0x` record holding exactly one ClientHello.
    #[error("not a single-record TLS ClientHello")]
    Malformed,
    /// No configured secret produced the digest.
    #[error("no configured MTProto user matches the ClientHello digest")]
    NoUserMatched,
    /// The digest matched a user, but its timestamp is too far from our clock.
    #[error("fake-TLS timestamp {client_ts} is too far from the proxy clock ({now})")]
    ClockSkew {
        /// Unix time the client claims.
        client_ts: u32,
        /// Our unix time at the check.
        now: u64,
    },
}

/// Checks the digest of a ClientHello record against every user (PROTOCOL.md §2).
///
/// `record` is the hello as ONE TLS record (`16 03 01` + u16 length + the handshake message);
/// when the hello came split over several records the caller rebuilds it first. Every user is
/// tried (one HMAC each) and the 28-byte comparison is constant-time, so the decision time
/// does not depend on which digest byte differs. The first matching user wins. From
/// [`PARALLEL_FROM`] users on, the users are split over the cores, and a multi-thread
/// runtime's worker first hands its other tasks to another thread (`block_in_place`). Replay
/// detection is the caller's job: put [`FakeTlsClient::random`] into the
/// [`crate::mtproto::replay::ReplayCache`] after success.
pub fn verify_client_hello<'a>(
    record: &[u8],
    users: impl IntoIterator<Item = &'a Secret>,
    now_unix: u64,
    max_skew: Duration,
) -> Result<FakeTlsClient, FakeTlsReject> {
    check_hello_shape(record)?;
    let mut random = [0u8; DIGEST_LEN];
    random.copy_from_slice(&record[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN]);

    // What every user's HMAC covers: the record with its `random` zeroed.
    let mut signed = record.to_vec();
    signed[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].fill(0);
    let users = users.into_iter();
    // A set that cannot reach the split is scanned as it comes, with no list of its own.
    let matched = if users.size_hint().1.is_some_and(|most| most < PARALLEL_FROM) {
        scan(users, 0, &signed, &random)
    } else {
        first_signer(&users.collect::<Vec<_>>(), &signed, &random)
    };
    let (user, secret, timestamp) = matched.ok_or(FakeTlsReject::NoUserMatched)?;
    let skew = now_unix.abs_diff(u64::from(timestamp));
    if Duration::from_secs(skew) > max_skew {
        return Err(FakeTlsReject::ClockSkew {
            client_ts: timestamp,
            now: now_unix,
        });
    }
    Ok(FakeTlsClient {
        user,
        secret: secret.clone(),
        random,
        timestamp,
    })
}

/// Candidates from which the digest check is spread over the machine's cores. Below it one
/// core decides in about half a millisecond or less (~530 ns per user on the project's
/// machine, BENCHMARKS.md), where starting threads would cost more than it saves.
pub const PARALLEL_FROM: usize = 1024;

/// The first of `users` whose HMAC of `signed` matches `random`'s first 28 bytes, with the
/// timestamp its last four bytes then carry. Every user is tried, whatever
/// matched; a large set, which keeps a thread busy for milliseconds, is checked off the
/// runtime's worker ([`off_the_worker`]) and split over the cores, each part scanned whole,
/// and the earliest match wins as in one pass.
fn first_signer<'a>(users: &[&'a Secret], signed: &[u8], random: &[u8; 32]) -> Option<Signer<'a>> {
    if users.len() < PARALLEL_FROM {
        return scan(users.iter().copied(), 0, signed, random);
    }
    off_the_worker(|| split_over_cores(users, signed, random))
}

/// Runs `work`, which holds its thread for a while: on a multi-thread runtime's worker
/// through `block_in_place`, so tokio hands the worker's other tasks to another thread;
/// in place anywhere else (a current-thread runtime, as in tests, cannot hand work over;
/// no runtime at all, as in benchmarks).
fn off_the_worker<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// [`first_signer`] over a large set: one part per core, on scoped threads.
fn split_over_cores<'a>(
    users: &[&'a Secret],
    signed: &[u8],
    random: &[u8; 32],
) -> Option<Signer<'a>> {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if cores == 1 {
        return scan(users.iter().copied(), 0, signed, random);
    }
    let part = users.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let mut parts = users.chunks(part).enumerate();
        let (_, first_part) = parts.next()?;
        let others: Vec<_> = parts
            .map(|(i, users)| {
                let scanning = move || scan(users.iter().copied(), i * part, signed, random);
                // A part whose thread cannot start is scanned here instead.
                std::thread::Builder::new()
                    .name("frontgate-digest".into())
                    .spawn_scoped(scope, scanning)
                    .map_err(|_| scanning())
            })
            .collect();
        let first = scan(first_part.iter().copied(), 0, signed, random);
        others.into_iter().fold(first, |earlier, other| {
            // A scan cannot panic; if one did, its part matched no one.
            earlier.or(match other {
                Ok(thread) => thread.join().unwrap_or(None),
                Err(scanned_here) => scanned_here,
            })
        })
    })
}

/// A user whose secret signed the hello: its index, its secret, and the timestamp the
/// digest's last four bytes carry.
type Signer<'a> = (usize, &'a Secret, u32);

/// [`first_signer`] over one part of the users, whose first index is `offset`.
fn scan<'a>(
    users: impl IntoIterator<Item = &'a Secret>,
    offset: usize,
    signed: &[u8],
    random: &[u8; 32],
) -> Option<Signer<'a>> {
    let mut matched = None;
    for (index, secret) in users.into_iter().enumerate() {
        let mut mac = secret.hmac();
        mac.update(signed);
        let computed = mac.finalize().into_bytes();
        let mut xored = [0u8; DIGEST_LEN];
        for (x, (c, r)) in xored.iter_mut().zip(computed.iter().zip(random.iter())) {
            *x = c ^ r;
        }
        let ok: Choice = xored[..28].ct_eq(&[0u8; 28]);
        // Branching on the per-user verdict is fine: it reveals which user matched (to a
        // client that already knows a secret), never which byte differed.
        if bool::from(ok) && matched.is_none() {
            let ts = u32::from_le_bytes([xored[28], xored[29], xored[30], xored[31]]);
            matched = Some((offset + index, secret, ts));
        }
    }
    matched
}

/// `16 03 0x LL LL 01 LLLLLL ...` with both lengths matching the slice.
fn check_hello_shape(record: &[u8]) -> Result<(), FakeTlsReject> {
    // header(5) + handshake header(4) + version(2) + random(32) + session id length(1)
    if record.len() < DIGEST_OFFSET + DIGEST_LEN + 1 {
        return Err(FakeTlsReject::Malformed);
    }
    let record_len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    let hs_len =
        (usize::from(record[6]) << 16) | (usize::from(record[7]) << 8) | usize::from(record[8]);
    let shape_ok = record[0] == 0x16
        && record[1] == 0x03
        && record[2] <= 0x03
        && record_len == record.len() - 5
        && record[5] == 0x01
        && hs_len == record.len() - 9;
    if shape_ok {
        Ok(())
    } else {
        Err(FakeTlsReject::Malformed)
    }
}

/// A plausible size for the fake certificate record (PROTOCOL.md §3: peers use a random size
/// in roughly 1024..4096 bytes).
pub fn random_cert_len() -> usize {
    rand::thread_rng().gen_range(1024..4096)
}

/// The cipher suite the fake ServerHello announces: the client's first TLS 1.3 suite that is
/// not GREASE, else `13 01` (PROTOCOL.md §3).
pub fn choose_cipher_suite(client_cipher_suites: &[u16]) -> u16 {
    client_cipher_suites
        .iter()
        .copied()
        .filter(|&suite| !is_grease(suite))
        .find(|suite| TLS13_SUITES.contains(suite))
        .unwrap_or(DEFAULT_SUITE)
}

/// GREASE values (RFC 8701) are `?a?a` with both bytes equal.
pub(crate) fn is_grease(value: u16) -> bool {
    let [hi, lo] = value.to_be_bytes();
    hi == lo && hi & 0x0f == 0x0a
}

/// Writes the server digest into a fake flight whose `random` (at [`DIGEST_OFFSET`]) is still
/// zero: HMAC-SHA256(secret, client random || flight) (PROTOCOL.md §3).
pub fn sign_flight(secret: &Secret, client_random: &[u8; 32], flight: &mut [u8]) {
    let Some(digest_field) = flight.get(DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN) else {
        return;
    };
    debug_assert!(digest_field.iter().all(|&b| b == 0));
    let mut mac = secret.hmac();
    mac.update(client_random);
    mac.update(flight);
    let digest = mac.finalize().into_bytes();
    flight[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].copy_from_slice(&digest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtproto::mimic::{FlightProfile, MAX_RECORD_PAYLOAD as MAX_FAKE_CERT_LEN};
    use hmac::Hmac;
    use sha2::Sha256;

    const CHANGE_CIPHER_SPEC: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    use crate::mtproto::test_vectors::{b64, testdata};

    /// The fixed-shape flight (what `mimic: off` sends) for a client hello.
    fn server_hello(
        secret: &Secret,
        client_random: &[u8; 32],
        session_id: &[u8],
        suites: &[u16],
        cert_len: usize,
    ) -> Vec<u8> {
        FlightProfile::fixed(suites, cert_len).build(secret, client_random, session_id)
    }

    const SKEW: Duration = Duration::from_secs(600);

    struct Hello {
        name: String,
        time: u64,
        random: Vec<u8>,
        session_id: Vec<u8>,
        full: Vec<u8>,
    }

    fn hellos(prefix: &str) -> Vec<Hello> {
        let dir = testdata("mtg/faketls");
        let mut out: Vec<Hello> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(prefix) && name.ends_with(".json")
            })
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                Hello {
                    name: p.file_name().unwrap().to_string_lossy().into_owned(),
                    time: v["time"].as_u64().unwrap(),
                    random: b64(&v["random"]),
                    session_id: b64(&v["sessionId"]),
                    full: b64(&v["full"]),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn vector_secret() -> Secret {
        "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d"
            .parse()
            .unwrap()
    }

    /// Minimal ClientHello walk for the tests: the cipher suite list.
    fn cipher_suites(record: &[u8]) -> Vec<u16> {
        let sid_len = usize::from(record[43]);
        let at = 44 + sid_len;
        let len = usize::from(u16::from_be_bytes([record[at], record[at + 1]]));
        record[at + 2..at + 2 + len]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn ok_vectors_validate_with_frozen_clock() {
        let ok = hellos("client-hello-ok-");
        assert_eq!(ok.len(), 6, "expected six ok vectors");
        let users = [vector_secret()];
        for h in &ok {
            let got = verify_client_hello(&h.full, &users, h.time, SKEW)
                .unwrap_or_else(|e| panic!("{}: {e}", h.name));
            assert_eq!(got.user, 0, "{}", h.name);
            assert_eq!(got.random.as_slice(), h.random.as_slice(), "{}", h.name);
            assert_eq!(u64::from(got.timestamp), h.time, "{}", h.name);
        }
    }

    #[test]
    fn bad_vector_fails() {
        let bad = hellos("client-hello-bad-");
        assert_eq!(bad.len(), 1);
        for h in &bad {
            assert_eq!(
                verify_client_hello(&h.full, &[vector_secret()], h.time, SKEW),
                Err(FakeTlsReject::NoUserMatched)
            );
        }
    }

    #[test]
    fn skew_bounds_are_inclusive() {
        let users = [vector_secret()];
        let skew_s = SKEW.as_secs();
        for h in &hellos("client-hello-ok-") {
            for now in [h.time - skew_s, h.time + skew_s] {
                assert!(verify_client_hello(&h.full, &users, now, SKEW).is_ok());
            }
            for now in [h.time - skew_s - 1, h.time + skew_s + 1] {
                assert_eq!(
                    verify_client_hello(&h.full, &users, now, SKEW),
                    Err(FakeTlsReject::ClockSkew {
                        client_ts: h.time as u32,
                        now
                    })
                );
            }
        }
    }

    #[test]
    fn other_users_do_not_break_the_match() {
        let other = Secret::from_bytes([7u8; 16]);
        for h in &hellos("client-hello-ok-") {
            let users = [other.clone(), vector_secret(), other.clone()];
            let got = verify_client_hello(&h.full, &users, h.time, SKEW).unwrap();
            assert_eq!(got.user, 1);
            let users = [vector_secret(), other.clone()];
            assert_eq!(
                verify_client_hello(&h.full, &users, h.time, SKEW)
                    .unwrap()
                    .user,
                0
            );
            assert_eq!(
                verify_client_hello(&h.full, std::slice::from_ref(&other), h.time, SKEW),
                Err(FakeTlsReject::NoUserMatched)
            );
            assert_eq!(
                verify_client_hello(&h.full, &[], h.time, SKEW),
                Err(FakeTlsReject::NoUserMatched)
            );
        }
    }

    #[test]
    fn a_large_set_split_over_the_cores_finds_the_first_signer() {
        let h = &hellos("client-hello-ok-")[0];
        let others: Vec<Secret> = (0..3 * PARALLEL_FROM as u32)
            .map(|i| {
                let mut bytes = [0x55u8; 16];
                bytes[..4].copy_from_slice(&i.to_le_bytes());
                Secret::from_bytes(bytes)
            })
            .collect();
        let n = others.len();
        // The signer first, last, at a part's edge on one to four cores, and twice (the
        // earlier one wins, as in one pass).
        for at in [
            vec![0],
            vec![n - 1],
            vec![n / 2, n / 2 + 1],
            vec![n / 4 + 1, n - 3],
        ] {
            let mut users = others.clone();
            for &i in &at {
                users[i] = vector_secret();
            }
            let got = verify_client_hello(&h.full, &users, h.time, SKEW).unwrap();
            assert_eq!(got.user, at[0], "signer at {at:?}");
            assert_eq!(got.timestamp as u64, h.time);
        }
        assert_eq!(
            verify_client_hello(&h.full, &others, h.time, SKEW),
            Err(FakeTlsReject::NoUserMatched)
        );
    }

    #[test]
    fn malformed_records_are_rejected() {
        let h = &hellos("client-hello-ok-")[0];
        let users = [vector_secret()];
        let mut wrong_type = h.full.clone();
        wrong_type[0] = 0x17;
        let truncated = &h.full[..h.full.len() - 1];
        let mut wrong_hs = h.full.clone();
        wrong_hs[5] = 0x02;
        for rec in [
            &wrong_type[..],
            truncated,
            &wrong_hs[..],
            &h.full[..20],
            &[][..],
        ] {
            assert_eq!(
                verify_client_hello(rec, &users, h.time, SKEW),
                Err(FakeTlsReject::Malformed)
            );
        }
    }

    #[test]
    fn reject_messages_hide_secrets() {
        let msg = FakeTlsReject::ClockSkew {
            client_ts: 5,
            now: 9,
        }
        .to_string();
        assert!(!msg.contains("367a189a"));
        assert!(msg.contains('5') && msg.contains('9'));
    }

    fn parse_flight(flight: &[u8]) -> (usize, usize) {
        assert_eq!(&flight[..3], &[0x16, 0x03, 0x03]);
        let hs_len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
        let ccs_at = 5 + hs_len;
        assert_eq!(&flight[ccs_at..ccs_at + 6], &CHANGE_CIPHER_SPEC);
        let app_at = ccs_at + 6;
        assert_eq!(&flight[app_at..app_at + 3], &[0x17, 0x03, 0x03]);
        let n = usize::from(u16::from_be_bytes([flight[app_at + 3], flight[app_at + 4]]));
        assert_eq!(flight.len(), app_at + 5 + n, "exactly one app-data record");
        (ccs_at, n)
    }

    #[test]
    fn server_hello_layout_digest_and_cipher_echo() {
        let secret = vector_secret();
        for h in hellos("client-hello-ok-") {
            let suites = cipher_suites(&h.full);
            let mut random = [0u8; 32];
            random.copy_from_slice(&h.random);
            let n = 2000;
            let flight = server_hello(&secret, &random, &h.session_id, &suites, n);
            assert_eq!(h.session_id.len(), 32);
            let (ccs_at, cert) = parse_flight(&flight);
            assert_eq!((ccs_at, cert), (127, n));
            assert_eq!(flight.len(), 127 + 6 + 5 + n);
            assert_eq!(&flight[5..7], &[0x02, 0x00]);
            assert_eq!(&flight[3..5], &[0x00, 122]);
            assert_eq!(
                u32::from_be_bytes([0, flight[6], flight[7], flight[8]]),
                118
            );
            assert_eq!(&flight[9..11], &[0x03, 0x03]);
            assert_eq!(flight[43], 32);
            assert_eq!(&flight[44..76], h.session_id.as_slice());
            // All vectors (incl. GREASE-first) offer 13 03 first among TLS 1.3 suites.
            assert_eq!(&flight[76..78], &[0x13, 0x03], "{}", h.name);
            assert_eq!(flight[78], 0x00);
            assert_eq!(&flight[79..81], &[0x00, 0x2e]);
            assert_eq!(
                &flight[81..89],
                &[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]
            );
            assert_eq!(&flight[121..127], &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);

            // Independent digest: HMAC(secret, client_random || flight with zeroed digest).
            let mut zeroed = flight.clone();
            zeroed[11..43].fill(0);
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&random);
            mac.update(&zeroed);
            mac.verify_slice(&flight[11..43]).expect("server digest");
        }
        let grease = hellos("client-hello-ok-grease-first");
        assert_eq!(cipher_suites(&grease[0].full)[0], 0x5a5a);
    }

    #[test]
    fn cipher_suite_choice() {
        assert_eq!(choose_cipher_suite(&[0x0a0a, 0x1302, 0x1301]), 0x1302);
        assert_eq!(choose_cipher_suite(&[0xc02b, 0x1303]), 0x1303);
        assert_eq!(choose_cipher_suite(&[0xc02b, 0xc02f, 0x009c]), 0x1301);
        assert_eq!(choose_cipher_suite(&[]), 0x1301);
        assert!(is_grease(0xfafa) && is_grease(0x0a0a) && !is_grease(0x0a1a));
        let flight = server_hello(
            &vector_secret(),
            &[1; 32],
            &[9; 32],
            &[0xdada, 0xc02b],
            1024,
        );
        assert_eq!(&flight[76..78], &[0x13, 0x01]);
    }

    #[test]
    fn server_hello_other_session_ids_and_sizes() {
        let secret = Secret::from_bytes([3; 16]);
        let flight = server_hello(&secret, &[0; 32], &[], &[0x1301], 1500);
        let (ccs_at, n) = parse_flight(&flight);
        assert_eq!((ccs_at, n), (95, 1500));
        let flight = server_hello(&secret, &[0; 32], &[1; 32], &[0x1301], 100_000);
        assert_eq!(parse_flight(&flight), (127, MAX_FAKE_CERT_LEN));
        // Fresh key share and certificate bytes each time.
        let a = server_hello(&secret, &[0; 32], &[1; 32], &[0x1301], 1024);
        let b = server_hello(&secret, &[0; 32], &[1; 32], &[0x1301], 1024);
        assert_ne!(a[89..121], b[89..121]);
        assert_ne!(a[138..], b[138..]);
        for _ in 0..1000 {
            assert!((1024..4096).contains(&random_cert_len()));
        }
    }
}
