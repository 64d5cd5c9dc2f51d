//! Per-byte cost of the MTProto relay, on one core, without sockets: the work
//! `mtproto::session` does for every 16 KiB TLS record in each direction.
//!
//! - `aes256_ctr/16KiB`: one AES-256-CTR pass of `mtproto::aes_ctr` (AWS-LC; the unit
//!   everything below is made of); also at a 5-byte offset (where an outgoing record's
//!   payload sits), two ciphers over the same bytes as `reencrypt` does them (one relay
//!   direction in normal mode) and as two passes, and the `aes` + `ctr` crates (one pass,
//!   two passes): the keystream the relay used before.
//! - `uplink/...`: client -> DC: strip the record headers in place (`RecordDecoder`), decrypt
//!   with the client key, encrypt with the DC key. The input is a copy of 4 records as one
//!   64 KiB socket read would hold them (the copy is batch setup, not timed).
//! - `downlink/reencrypt`: DC -> client in normal mode: copy a DC read into the bodies of the
//!   `RecordEncoder`'s records (standing in for the `readv`), decrypt with the DC key,
//!   encrypt with the client key, commit (writes the record headers).
//! - `downlink/fast_mode`: the same without any AES (`Downlink::PassThrough`).
//!
//! Throughput is payload bytes, so GB/s per core is what criterion prints; a relayed echo
//! costs one uplink plus one downlink per byte.
//!
//! Run: `cargo bench --bench crypto` (needs `[[bench]] name = "crypto" harness = false`).

use aes::cipher::{KeyIvInit, StreamCipher};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::RngCore;
use sha2::{Digest, Sha256};

use frontgate::config::Secret;

/// The `ctr` crate's AES-256-CTR, the reference the relay's own keystream is compared with.
type CtrCrate = ctr::Ctr128BE<aes::Aes256>;
use frontgate::mtproto::obfuscated2::{
    dc_init, parse_client_init, reencrypt, AesCtr, ClientObfuscation, Downlink, ProtocolTag,
    INIT_LEN,
};
use frontgate::mtproto::records::{
    RecordDecoder, RecordEncoder, FULL_RECORD_LEN, MAX_OUTGOING_PAYLOAD, RECORD_HEADER_LEN,
};

/// Records per iteration: what one 64 KiB read carries.
const RECORDS: usize = 4;
const PAYLOAD: usize = MAX_OUTGOING_PAYLOAD;

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A client's obfuscated2 init for `secret` (padded intermediate, DC 2), built with the
/// crypto crates directly as a Telegram client would.
fn client_init(secret: &[u8; 16]) -> [u8; INIT_LEN] {
    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&random(INIT_LEN));
    init[0] = 0x42; // not 0xef, not a reserved beginning
    init[4..8].copy_from_slice(&[1, 2, 3, 4]);
    init[56..60].copy_from_slice(&[0xdd; 4]);
    init[60..62].copy_from_slice(&2i16.to_le_bytes());
    let key = Sha256::new()
        .chain_update(&init[8..40])
        .chain_update(secret)
        .finalize();
    let mut cipher = AesCtr::new(key.as_slice().into(), init[40..56].into());
    let mut encrypted = init;
    cipher.apply_keystream(&mut encrypted);
    init[56..].copy_from_slice(&encrypted[56..]);
    init
}

/// The client leg as the proxy holds it after a valid init.
fn client_leg() -> ClientObfuscation {
    let secret = [0x5a; 16];
    let obf = parse_client_init(&client_init(&secret), &Secret::from_bytes(secret))
        .expect("the bench's init is valid");
    assert_eq!(obf.tag, ProtocolTag::PaddedIntermediate);
    obf
}

/// `RECORDS` full application-data records, as the client sends them.
fn client_wire() -> Vec<u8> {
    let payload = random(RECORDS * PAYLOAD);
    let mut wire = Vec::with_capacity(RECORDS * FULL_RECORD_LEN);
    for chunk in payload.chunks(PAYLOAD) {
        wire.extend_from_slice(&[0x17, 3, 3]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    wire
}

fn aes_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("aes256_ctr");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    let mut cipher = client_leg().decrypt;
    let mut buf = random(PAYLOAD);
    group.bench_function("16KiB", |b| {
        b.iter(|| {
            cipher.apply_keystream(&mut buf);
            black_box(&buf);
        })
    });
    // The payload of an outgoing record starts 5 bytes into the encoder's buffer.
    let mut buf = random(PAYLOAD + RECORD_HEADER_LEN);
    group.bench_function("16KiB_at_offset_5", |b| {
        b.iter(|| {
            cipher.apply_keystream(&mut buf[RECORD_HEADER_LEN..]);
            black_box(&buf);
        })
    });
    // Two ciphers over the same bytes: either relay direction in normal mode, as
    // `reencrypt` does it (batch by batch) and as two passes.
    let mut second = client_leg().encrypt;
    let mut buf = random(PAYLOAD);
    group.bench_function("16KiB_reencrypt_one_pass", |b| {
        b.iter(|| {
            reencrypt(&mut cipher, &mut second, &mut buf);
            black_box(&buf);
        })
    });
    group.bench_function("16KiB_two_ciphers", |b| {
        b.iter(|| {
            cipher.apply_keystream(&mut buf);
            second.apply_keystream(&mut buf);
            black_box(&buf);
        })
    });
    // The `aes` + `ctr` crates: what the relay used before.
    let mut reference = CtrCrate::new(&[7; 32].into(), &[9; 16].into());
    let mut reference_second = CtrCrate::new(&[8; 32].into(), &[10; 16].into());
    group.bench_function("16KiB_ctr_crate", |b| {
        b.iter(|| {
            reference.apply_keystream(&mut buf);
            black_box(&buf);
        })
    });
    group.bench_function("16KiB_two_ciphers_ctr_crate", |b| {
        b.iter(|| {
            reference.apply_keystream(&mut buf);
            reference_second.apply_keystream(&mut buf);
            black_box(&buf);
        })
    });
    group.finish();
}

fn uplink(c: &mut Criterion) {
    let mut group = c.benchmark_group("uplink");
    group.throughput(Throughput::Bytes((RECORDS * PAYLOAD) as u64));
    let wire = client_wire();

    let mut client = client_leg();
    let mut dc = dc_init(client.tag, client.dc, None);
    let mut decoder = RecordDecoder::new();
    group.bench_function("records+decrypt+encrypt/4x16KiB", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| {
                let m = decoder.decode_in_place(buf).expect("well-formed records");
                reencrypt(&mut client.decrypt, &mut dc.encrypt, &mut buf[..m]);
                black_box(&buf[..m]);
            },
            BatchSize::SmallInput,
        )
    });

    let mut decoder = RecordDecoder::new();
    group.bench_function("records_only/4x16KiB", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| {
                let m = decoder.decode_in_place(buf).expect("well-formed records");
                black_box(&buf[..m]);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// DC -> client: one vectored read (a copy standing in for the `readv`) fills the bodies of
/// the encoder's records, each piece is transformed in place and committed as a record.
fn frame(encoder: &mut RecordEncoder, from_dc: &[u8], transform: impl FnMut(&mut [u8])) {
    encoder.clear();
    let readv = |bodies: &mut [std::io::IoSliceMut<'_>]| {
        let mut copied = 0;
        for body in bodies {
            let n = body.len().min(from_dc.len() - copied);
            body[..n].copy_from_slice(&from_dc[copied..copied + n]);
            copied += n;
        }
        Ok(copied)
    };
    let n = encoder.fill_vectored(readv, transform).expect("no I/O");
    assert_eq!(n, from_dc.len());
    black_box(encoder.as_bytes());
}

fn downlink(c: &mut Criterion) {
    let mut group = c.benchmark_group("downlink");
    group.throughput(Throughput::Bytes((RECORDS * PAYLOAD) as u64));
    let from_dc = random(RECORDS * PAYLOAD);

    let mut client = client_leg();
    let dc = dc_init(client.tag, client.dc, None);
    let Downlink::Reencrypt(mut dc_decrypt) = dc.downlink else {
        panic!("normal mode re-encrypts");
    };
    let mut encoder = RecordEncoder::with_capacity(RECORDS * FULL_RECORD_LEN);
    group.bench_function("reencrypt+frame/4x16KiB", |b| {
        b.iter(|| {
            frame(&mut encoder, &from_dc, |chunk| {
                reencrypt(&mut dc_decrypt, &mut client.encrypt, chunk);
            })
        })
    });

    let client = client_leg();
    let fast = dc_init(client.tag, client.dc, Some(&client));
    assert!(matches!(fast.downlink, Downlink::PassThrough));
    let mut encoder = RecordEncoder::with_capacity(RECORDS * FULL_RECORD_LEN);
    group.bench_function("fast_mode_frame/4x16KiB", |b| {
        b.iter(|| frame(&mut encoder, &from_dc, |_| {}))
    });
    group.finish();

    // The framing really produced full records.
    assert_eq!(
        encoder.as_bytes().len(),
        RECORDS * (RECORD_HEADER_LEN + PAYLOAD)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(30);
    targets = aes_baseline, uplink, downlink
}
criterion_main!(benches);
