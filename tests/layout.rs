//! The layout rule of `src/lib.rs`: each stage folder imports only the folders listed before
//! it in the crate map. This test reads the sources and fails on an import that breaks it.

use std::path::Path;

/// The stage folders in the order of `src/lib.rs`'s map, lowest first.
const STAGES: [&str; 9] = [
    "config",
    "forward",
    "admission",
    "tls",
    "mtproto",
    "ops",
    "conn",
    "server",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_stage_imports_only_the_stages_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (rank, stage) in STAGES.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "src/{stage}/ has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for higher in &STAGES[rank + 1..] {
                if text.contains(&format!("crate::{higher}::")) {
                    violations.push(format!("{} imports crate::{higher}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_crate_map_lists_every_stage_in_order() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let positions: Vec<usize> = STAGES
        .iter()
        .map(|stage| {
            lib.find(&format!("//! - [`{stage}`]"))
                .unwrap_or_else(|| panic!("lib.rs's map does not list {stage}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}
