//! User secrets in every accepted spelling, and the ee-hex round trip.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::secret(data));
