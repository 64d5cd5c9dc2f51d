//! Route-file loading: YAML text to a validated config or an error.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config(data));
