//! The Dockerfile, `.dockerignore` and deploy/docker-compose.yml as a builder would read them,
//! since no Docker engine runs here: the build stage's context holds what cargo needs (cargo
//! itself resolves a tree of exactly the COPYed files), the image runs as a non-root user with
//! the bind capability set on the very binary ENTRYPOINT runs, the HEALTHCHECK runs
//! `frontgate health`, and CMD's route file is one the image ships, valid, with the metrics
//! endpoint the health check asks.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One Dockerfile instruction: its keyword (upper case) and the rest of its logical line.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's instructions: comments dropped, `\` continuations joined.
fn instructions() -> Vec<Instruction> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part);
                logical.push(' ');
            }
            None => {
                logical.push_str(trimmed);
                let (keyword, args) = logical.split_once(' ').unwrap_or((&logical, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
                logical.clear();
            }
        }
    }
    assert!(
        logical.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

/// The stages: each starts with its FROM.
fn stages() -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions() {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the first instruction is FROM")
            .push(instruction);
    }
    stages
}

/// The exec-form (JSON array) arguments of an instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form array: {args}: {e}"))
}

/// The one instruction `keyword` of a stage.
fn only<'a>(stage: &'a [Instruction], keyword: &str) -> &'a Instruction {
    let found: Vec<_> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(
        found.len(),
        1,
        "one {keyword} in the final stage: {found:?}"
    );
    found[0]
}

/// COPY's flags, sources and destination.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let (flags, paths): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
    let (dest, sources) = paths.split_last().expect("COPY has a destination");
    (flags, sources.to_vec(), dest)
}

/// `.dockerignore`'s patterns.
fn ignored() -> Vec<String> {
    std::fs::read_to_string(repo().join(".dockerignore"))
        .expect("a .dockerignore keeps target/ out of the build context")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// Whether a context path is left out by a pattern: the pattern names it or a folder above
/// it (`**/` patterns at any depth; this file uses no other wildcard).
fn is_ignored(path: &str, patterns: &[String]) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    patterns
        .iter()
        .any(|pattern| match pattern.strip_prefix("**/") {
            Some(name) => parts.contains(&name),
            None => (1..=parts.len()).any(|n| parts[..n].join("/") == *pattern),
        })
}

#[test]
fn dockerignore_keeps_build_outputs_and_history_out() {
    let patterns = ignored();
    for path in [
        "target/release/frontgate",
        "fuzz/target/x",
        "tests/common/kit/target/debug/x",
        "integration/bench-mtproto-client/target/x",
        ".git/HEAD",
    ] {
        assert!(is_ignored(path, &patterns), "{path} is sent to the builder");
    }
}

#[test]
fn the_build_stage_context_is_what_cargo_needs() {
    let stages = stages();
    let build = &stages[0];
    let workdir = only(build, "WORKDIR").args.clone();
    assert_eq!(workdir, "/src");
    let patterns = ignored();
    let tree = tempfile::tempdir().unwrap();
    for copy in build.iter().filter(|i| i.keyword == "COPY") {
        let (flags, sources, dest) = copy_parts(&copy.args);
        assert!(flags.is_empty(), "{copy:?}");
        for source in sources {
            assert!(
                !is_ignored(source, &patterns),
                "{source} is COPYed but .dockerignore leaves it out"
            );
            let target = if dest.ends_with('/') {
                tree.path()
                    .join(dest)
                    .join(Path::new(source).file_name().unwrap())
            } else {
                tree.path().join(dest)
            };
            copy_tree(&repo().join(source), &target);
        }
    }
    let run = only(build, "RUN");
    assert!(
        run.args
            .contains("cargo build --release --locked --bin frontgate"),
        "{run:?}"
    );
    // cargo resolves the package from exactly the COPYed files, as the builder's `cargo build
    // --locked` would; a missing path dependency or source file fails here.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(tree.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo cannot read the build context: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = metadata["resolve"]["root"].as_str().unwrap();
    assert!(root.contains("frontgate"), "{root}");
    let targets = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "frontgate")
        .unwrap()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(targets.contains(&"frontgate".to_string()), "{targets:?}");
    assert!(tree.path().join("src/main.rs").exists());
}

/// Copies a file or a folder (recursively) to `to`, creating the folders above it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "target" {
                continue; // .dockerignore's **/target
            }
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

#[test]
fn the_image_runs_non_root_with_the_capability_on_its_entrypoint() {
    let stages = stages();
    let last = stages.last().unwrap();
    let user = only(last, "USER").args.clone();
    assert!(
        !["root", "0", "0:0", "root:root"].contains(&user.as_str()),
        "USER {user}"
    );
    let entrypoint = exec_form(&only(last, "ENTRYPOINT").args);
    let binary = entrypoint[0].as_str();
    // The RUN that sets the capability also writes the binary (one layer), and nothing
    // writes that path after it.
    let (at, run) = last
        .iter()
        .enumerate()
        .find(|(_, i)| i.keyword == "RUN" && i.args.contains("setcap"))
        .expect("a RUN with setcap in the final stage");
    assert!(
        run.args
            .contains(&format!("setcap cap_net_bind_service=+ep {binary}")),
        "{run:?}"
    );
    assert!(
        run.args
            .contains(&format!("install -m 0755 /tmp/frontgate {binary}")),
        "{run:?}"
    );
    assert!(
        run.args.contains(
            "--mount=type=bind,from=build,source=/src/target/release/frontgate,target=/tmp/frontgate"
        ),
        "the binary comes from the build stage's release build: {run:?}"
    );
    let created_user = format!("--shell /usr/sbin/nologin {user}");
    assert!(
        run.args.contains(&created_user) && run.args.contains("useradd --system --uid 10001"),
        "the same RUN creates {user} with the documented uid: {run:?}"
    );
    for later in &last[at + 1..] {
        assert!(
            !(later.keyword == "COPY" || later.keyword == "ADD") || !later.args.contains(binary),
            "{later:?} writes over the binary after its capability was set"
        );
    }
}

#[test]
fn cmd_and_healthcheck_read_a_route_file_the_image_ships() {
    let stages = stages();
    let last = stages.last().unwrap();
    let entrypoint = exec_form(&only(last, "ENTRYPOINT").args);
    let cmd = exec_form(&only(last, "CMD").args);
    assert_eq!(cmd[0], "run");
    let config_of = |args: &[String]| -> String {
        let at = args.iter().position(|a| a == "--config").expect("--config");
        args[at + 1].clone()
    };
    let config = config_of(&cmd);

    let health = &only(last, "HEALTHCHECK").args;
    let health_cmd = exec_form(&health[health.find("CMD ").expect("HEALTHCHECK CMD") + 4..]);
    assert_eq!(
        health_cmd[..2],
        [entrypoint[0].clone(), "health".to_string()]
    );
    assert_eq!(config_of(&health_cmd), config);

    let copy = last
        .iter()
        .filter(|i| i.keyword == "COPY")
        .find(|i| copy_parts(&i.args).2 == config)
        .unwrap_or_else(|| panic!("no COPY writes {config}: CMD would read a missing file"));
    let (flags, sources, _) = copy_parts(&copy.args);
    assert_eq!(sources, ["routes.example.yaml"]);
    assert!(!is_ignored(sources[0], &ignored()));
    // Readable by the image's user through its group, by nobody else: it holds secrets.
    let user = only(last, "USER").args.clone();
    assert_eq!(
        flags,
        [format!("--chown=root:{user}"), "--chmod=0640".into()]
    );

    let shipped = frontgate::config::load(&repo().join(sources[0])).unwrap();
    let metrics = shipped
        .metrics
        .expect("the shipped file has the metrics endpoint the HEALTHCHECK asks");
    assert!(metrics.ip().is_loopback(), "{metrics}");
}

#[test]
fn compose_mounts_what_the_image_reads_and_keeps_only_the_bind_capability() {
    let text = std::fs::read_to_string(repo().join("deploy/docker-compose.yml")).unwrap();
    let compose: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let service = &compose["services"]["frontgate"];
    assert_eq!(service["build"], "..");
    assert!(repo().join("deploy/../Dockerfile").exists());
    assert_eq!(service["network_mode"], "host");
    assert_eq!(service["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(service["cap_add"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert!(
        service.get("user").is_none(),
        "the image's own user reads the file"
    );
    let volumes: Vec<&str> = service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "/etc/frontgate:/etc/frontgate:ro",
            "frontgate-state:/var/lib/frontgate"
        ]
    );
    let stages = stages();
    let last = stages.last().unwrap();
    let cmd = exec_form(&only(last, "CMD").args);
    assert!(cmd.iter().any(|a| a.starts_with("/etc/frontgate/")));
    assert!(last
        .iter()
        .any(|i| i.keyword == "RUN" && i.args.contains("/var/lib/frontgate")));
}
