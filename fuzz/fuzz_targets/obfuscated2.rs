//! The obfuscated2 init parser, one secret and the every-user search.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::obfuscated2(data));
