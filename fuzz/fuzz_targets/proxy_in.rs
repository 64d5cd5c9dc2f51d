//! The inbound PROXY v1/v2 header reader, whole vs. in fuzzed TCP segments.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::proxy_in(data));
