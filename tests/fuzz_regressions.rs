//! Replays the kept fuzz inputs in `tests/data/fuzz/<target>/` (seeds and every input that
//! once broke a target) through the same harness functions the fuzz targets call, on stable.
//! A panic here is a regression; see `fuzz/README.md` for how the files are found and kept.

mod common;

use std::path::Path;

use common::fuzz_harness;

/// Runs every kept input of `target` through `run`, naming the file that panics.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            !name.starts_with("LICENSE") && !name.starts_with("README")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kept inputs in {}", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panics", path.display());
    }
}

#[test]
fn hello() {
    replay("hello", fuzz_harness::hello);
}

#[test]
fn records() {
    replay("records", fuzz_harness::records);
}

#[test]
fn obfuscated2() {
    replay("obfuscated2", fuzz_harness::obfuscated2);
}

#[test]
fn secret() {
    replay("secret", fuzz_harness::secret);
}

#[test]
fn proxy_in() {
    replay("proxy_in", fuzz_harness::proxy_in);
}

#[test]
fn config() {
    replay("config", fuzz_harness::config);
}

#[test]
fn faketls() {
    replay("faketls", fuzz_harness::faketls);
}
