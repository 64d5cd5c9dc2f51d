//! The fake-TLS ClientHello digest check with fuzzed clock and skew.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::faketls(data));
