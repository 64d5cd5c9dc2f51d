//! Properties of the parsers that read what clients and config files send, on stable: they
//! never panic on any input, writers and readers round-trip, and the ClientHello decision
//! does not depend on how the hello is cut into TCP segments or TLS records. The fuzz
//! targets (`fuzz/`) search the same ground for longer; these run in every `cargo test`.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::fuzz_harness::{self, ready, split_input, Segments};
use common::net::readv_from;
use frontgate::admission::proxy_in;
use frontgate::config::ProxyProtocol;
use frontgate::config::Secret;
use frontgate::conn::hello::{self, ClientHello, FirstFlight};
use frontgate::forward::proxy_out;
use frontgate::mtproto::faketls;
use frontgate::mtproto::records::{RecordEncoder, FULL_RECORD_LEN, RECORD_HEADER_LEN};
use proptest::prelude::*;

/// A real ClientHello record with the time its digest was made at and the user it names
/// (0: mtg's secret, 1: TDLib's).
struct Vector {
    record: Vec<u8>,
    now: u64,
    user: usize,
}

/// The fake-TLS seeds kept for the `faketls` target: now (u64 LE), skew, then the record.
fn vectors() -> Vec<Vector> {
    [
        ("client-hello-ok-19dfe38384b9884b.bin", 0),
        ("client-hello-ok-grease-first.bin", 0),
        ("tdlib-1.8.66.bin", 1),
    ]
    .into_iter()
    .map(|(name, user)| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz/faketls/");
        let data = std::fs::read(format!("{path}{name}")).unwrap();
        Vector {
            record: data[16..].to_vec(),
            now: u64::from_le_bytes(data[..8].try_into().unwrap()),
            user,
        }
    })
    .collect()
}

/// Re-frames the handshake message of a one-record hello into records cut at `cuts`, each
/// with the record version `03 minor`.
fn reframe(record: &[u8], cuts: &[usize], minors: &[u8]) -> Vec<u8> {
    let message = &record[5..];
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % message.len()).collect();
    bounds.extend([0, message.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::new();
    for (i, pair) in bounds.windows(2).enumerate() {
        let fragment = &message[pair[0]..pair[1]];
        out.extend_from_slice(&[0x16, 0x03, minors[i % minors.len()]]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

/// Peeks `wire` arriving in `sizes` segments, the first one already read when `preread`.
fn peek_segments(wire: &[u8], sizes: &[usize], preread: bool) -> FirstFlight {
    let already = if preread { sizes[0].min(wire.len()) } else { 0 };
    let mut reader = Segments::new(&wire[already..], sizes);
    let peeked = ready(hello::peek(&mut reader, wire[..already].to_vec())).unwrap();
    assert!(wire.starts_with(&peeked.bytes));
    peeked.flight
}

fn tls(flight: FirstFlight) -> ClientHello {
    match flight {
        FirstFlight::Tls(hello) => *hello,
        other => panic!("not a parsed hello: {other:?}"),
    }
}

/// `n` cases per property; failures are printed minimised, not persisted into the tree.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn segment_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..700, 1..6)
}

proptest! {
    #![proptest_config(cases(64))]

    /// A real hello gives the same decision however it is cut into TCP segments and TLS
    /// records, and its rebuilt one-record form still carries the client's valid digest.
    #[test]
    fn hello_decision_ignores_segments_and_records(
        which in 0usize..3,
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        minors in prop::collection::vec(0u8..5, 1..4),
        sizes in segment_sizes(),
        preread in any::<bool>(),
        early in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let vector = &vectors()[which];
        let whole = tls(hello::classify(&vector.record).unwrap());
        let mut wire = reframe(&vector.record, &cuts, &minors);
        wire.extend_from_slice(&early);
        let split = tls(peek_segments(&wire, &sizes, preread));
        prop_assert_eq!(split.raw_len, wire.len() - early.len());
        prop_assert_eq!(tls(hello::classify(&wire).unwrap()), split.clone());
        // One record is kept as received (its version too); several are rebuilt as `03 01`.
        if split.records == 1 {
            prop_assert_eq!(&split.single_record, &wire[..split.raw_len]);
        } else {
            prop_assert_eq!(&split.single_record, &vector.record);
        }
        prop_assert_eq!(
            ClientHello {
                records: 1,
                raw_len: vector.record.len(),
                single_record: vector.record.clone(),
                ..split.clone()
            },
            whole
        );
        if split.single_record == vector.record {
            let users = [
                Secret::from_bytes(fuzz_harness::MTG_SECRET),
                Secret::from_bytes(fuzz_harness::TDLIB_SECRET),
            ];
            let client = faketls::verify_client_hello(
                &split.single_record, &users, vector.now, Duration::from_secs(600),
            ).unwrap();
            prop_assert_eq!(client.user, vector.user);
        }
    }
}

/// A ClientHello record built from its parts (TLS 1.2 layout, RFC 5246 §7.4.1.2).
fn build_hello(
    random: [u8; 32],
    session_id: &[u8],
    suites: &[u16],
    server_name: &str,
    alpn: &[Vec<u8>],
) -> Vec<u8> {
    fn u16_len(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut extensions = Vec::new();
    let mut sni = vec![0u8];
    u16_len(&mut sni, server_name.as_bytes());
    let mut list = Vec::new();
    u16_len(&mut list, &sni);
    extensions.extend_from_slice(&[0, 0]);
    u16_len(&mut extensions, &list);
    if !alpn.is_empty() {
        let mut names = Vec::new();
        for protocol in alpn {
            names.push(protocol.len() as u8);
            names.extend_from_slice(protocol);
        }
        let mut list = Vec::new();
        u16_len(&mut list, &names);
        extensions.extend_from_slice(&[0, 16]);
        u16_len(&mut extensions, &list);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&random);
    body.push(session_id.len() as u8);
    body.extend_from_slice(session_id);
    let suite_bytes: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();
    u16_len(&mut body, &suite_bytes);
    body.extend_from_slice(&[1, 0]);
    u16_len(&mut body, &extensions);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(1);
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    record
}

proptest! {
    #![proptest_config(cases(64))]

    /// Generated hellos give back the parts they were built from, in any segmentation and
    /// record split (the ALPN list only varies the hello: the peek does not keep it).
    #[test]
    fn generated_hellos_parse_to_their_parts(
        random in any::<[u8; 32]>(),
        session_id in prop::collection::vec(any::<u8>(), 0..=32),
        suites in prop::collection::vec(any::<u16>(), 1..40),
        server_name in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,4}",
        alpn in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..12), 0..4),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        sizes in segment_sizes(),
    ) {
        let record = build_hello(random, &session_id, &suites, &server_name, &alpn);
        let wire = reframe(&record, &cuts, &[1]);
        let hello = tls(peek_segments(&wire, &sizes, false));
        prop_assert_eq!(hello.server_name.as_deref(), Some(server_name.as_str()));
        prop_assert_eq!(hello.random, random);
        prop_assert_eq!(hello.session_id, session_id);
        prop_assert_eq!(hello.cipher_suites, suites);
        prop_assert_eq!(hello.single_record, record);
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        any::<u32>().prop_map(|v| IpAddr::V6(Ipv4Addr::from(v).to_ipv6_mapped())),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

proptest! {
    #![proptest_config(cases(256))]

    /// What the outbound encoder writes, the inbound reader reads back: the client's address
    /// (IPv4-mapped ones as IPv4) and every byte after the header, in any segmentation.
    #[test]
    fn proxy_header_round_trips(
        client in socket_addr(),
        local in socket_addr(),
        v2 in any::<bool>(),
        after in prop::collection::vec(any::<u8>(), 0..64),
        sizes in prop::collection::vec(1usize..64, 1..4),
    ) {
        let version = if v2 { ProxyProtocol::V2 } else { ProxyProtocol::V1 };
        let mut wire = proxy_out::encode(version, client, local);
        let header_len = wire.len();
        wire.extend_from_slice(&after);
        let mut reader = Segments::new(&wire, &sizes);
        let inbound = ready(proxy_in::read_inbound(&mut reader)).unwrap();
        prop_assert_eq!(inbound.client, Some(proxy_out::canonical(client)));
        let mut rest = inbound.rest;
        rest.extend_from_slice(reader.remaining());
        prop_assert_eq!(rest, after);
        prop_assert_eq!(
            fuzz_harness::read_proxy_header(&wire, &sizes),
            Ok((Some(proxy_out::canonical(client)), header_len))
        );
    }
}

proptest! {
    #![proptest_config(cases(48))]

    /// The record encoder's output, behind an optional ChangeCipherSpec, decodes back to the
    /// payload whatever the encoder's buffer size, the reads that filled it and the chunks
    /// the decoder is fed.
    #[test]
    fn records_round_trip(
        payload in prop::collection::vec(any::<u8>(), 0..40_000),
        capacity in (RECORD_HEADER_LEN + 1)..(3 * FULL_RECORD_LEN),
        reads in prop::collection::vec(1usize..30_000, 1..5),
        chunks in prop::collection::vec(1usize..20_000, 1..5),
        ccs in any::<bool>(),
    ) {
        let mut wire = if ccs { vec![0x14, 3, 3, 0, 1, 1] } else { Vec::new() };
        let mut encoder = RecordEncoder::with_capacity(capacity);
        let mut fed = 0;
        for &limit in reads.iter().cycle() {
            if fed == payload.len() {
                break;
            }
            if encoder.is_full() {
                wire.extend_from_slice(encoder.as_bytes());
                encoder.clear();
            }
            encoder.fill_vectored(readv_from(&payload, &mut fed, limit), |_| {}).unwrap();
        }
        wire.extend_from_slice(encoder.as_bytes());
        prop_assert_eq!(fuzz_harness::decode_records(&wire, &chunks).unwrap(), payload);
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Every spelling of a secret that users paste parses to the same 16 bytes and domain.
    #[test]
    fn secret_spellings_round_trip(
        bytes in any::<[u8; 16]>(),
        domain in "\\PC{0,40}",
        pad in "[ \t\r\n]{0,3}",
    ) {
        let secret = Secret::from_bytes(bytes);
        let want = (secret.clone(), (!domain.is_empty()).then(|| domain.clone()));
        let hex = hex::encode(bytes);
        let parse = |text: String| Secret::parse_with_domain(&format!("{pad}{text}{pad}"));
        prop_assert_eq!(parse(secret.ee_hex(&domain)), Ok(want.clone()));
        prop_assert_eq!(parse(secret.ee_hex(&domain).to_uppercase()), Ok(want.clone()));
        prop_assert_eq!(parse(hex.clone()), Ok((secret.clone(), None)));
        prop_assert_eq!(parse(format!("dd{hex}")), Ok((secret.clone(), None)));
        let mut raw = vec![0xee];
        raw.extend_from_slice(&bytes);
        raw.extend_from_slice(domain.as_bytes());
        for engine in [&URL_SAFE, &URL_SAFE_NO_PAD, &STANDARD, &STANDARD_NO_PAD] {
            prop_assert_eq!(parse(engine.encode(&raw)), Ok(want.clone()));
        }
    }
}

/// Bytes that start like the format a parser expects, so the rest reaches past its first check.
fn starting_with(prefixes: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(prefixes),
        prop::collection::vec(any::<u8>(), 0..max),
    )
        .prop_map(|(prefix, rest)| [prefix, &rest].concat())
}

proptest! {
    #![proptest_config(cases(256))]

    /// No input makes a parser panic or break the invariants the fuzz targets check.
    #[test]
    fn hello_never_panics(
        sizes in prop::collection::vec(any::<u8>(), 0..7),
        flags in any::<bool>(),
        wire in starting_with(&[b"", b"\x16\x03\x01", b"\x16\x03\x03\x00\x40\x01\x00\x00"], 600),
    ) {
        let control = sizes.len() as u8 | if flags { 0x08 } else { 0 };
        fuzz_harness::hello(&[&[control], &sizes[..], &wire].concat());
    }

    #[test]
    fn records_never_panic(
        sizes in prop::collection::vec(any::<u8>(), 0..7),
        wire in starting_with(&[b"", b"\x17\x03\x03", b"\x14\x03\x03\x00\x01\x01\x17\x03\x03"], 600),
    ) {
        fuzz_harness::records(&[&[sizes.len() as u8], &sizes[..], &wire].concat());
    }

    #[test]
    fn proxy_reader_never_panics(
        sizes in prop::collection::vec(any::<u8>(), 0..7),
        wire in starting_with(
            &[b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"],
            120,
        ),
    ) {
        fuzz_harness::proxy_in(&[&[sizes.len() as u8], &sizes[..], &wire].concat());
    }

    #[test]
    fn secret_parser_never_panics(text in "\\PC{0,90}|[0-9a-fA-FdDeE+/=_-]{0,90}") {
        fuzz_harness::secret(text.as_bytes());
    }

    #[test]
    fn obfuscated2_never_panics(data in prop::collection::vec(any::<u8>(), 0..100)) {
        fuzz_harness::obfuscated2(&data);
    }

    #[test]
    fn digest_check_never_panics(
        which in 0usize..3,
        now in any::<u64>(),
        skew in any::<u64>(),
        flip in any::<(usize, u8)>(),
        cut in any::<usize>(),
    ) {
        let mut record = vectors()[which].record.clone();
        let at = flip.0 % record.len();
        record[at] ^= flip.1;
        record.truncate(cut % (record.len() + 1));
        let data = [&now.to_le_bytes()[..], &skew.to_le_bytes(), &record].concat();
        fuzz_harness::faketls(&data);
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Route-file text with any key, value or mangling is accepted or refused, never a panic.
    #[test]
    fn config_parser_never_panics(
        cut in any::<usize>(),
        insert in "\\PC{0,12}|[:\\-\\[\\]{}&*!|>'\"#%@` \n]{1,6}",
        text in "\\PC{0,200}",
    ) {
        let example = include_str!("data/fuzz/config/routes.example.yaml");
        let mut at = cut % (example.len() + 1);
        while !example.is_char_boundary(at) {
            at -= 1;
        }
        let mangled = format!("{}{insert}{}", &example[..at], &example[at..]);
        fuzz_harness::config(mangled.as_bytes());
        fuzz_harness::config(text.as_bytes());
    }
}

/// The harness's input layout, which the kept files depend on, stays as documented.
#[test]
fn split_input_layout() {
    assert_eq!(split_input(&[]), (vec![usize::MAX], &[][..]));
    assert_eq!(split_input(&[0, 1, 2]), (vec![usize::MAX], &[1, 2][..]));
    assert_eq!(split_input(&[0x0a, 0, 255, 9]), (vec![1, 256], &[9][..]));
    assert_eq!(split_input(&[7, 4]), (vec![5], &[][..]));
}
