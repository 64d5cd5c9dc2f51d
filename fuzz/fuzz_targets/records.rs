//! The fake-TLS record decoder, whole vs. in fuzzed chunks.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::records(data));
