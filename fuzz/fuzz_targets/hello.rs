//! The ClientHello peek: one-shot decision vs. the same bytes in fuzzed TCP segments.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::hello(data));
