//! Dependencies point one way: the pure crates (`otwatch-rules`, `otwatch-packet`,
//! `otwatch-delivery`) at the bottom, the agent and the collector beside each other on them,
//! the storage engine (`otwatch-kv`) shared. The agent never links the collector; the pure
//! crates link no I/O crate; the fuzz targets link only the pure crates.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::process::Command;

use otwatch_tests::workspace_root;

/// The names in a manifest's `[dependencies]` section (not dev- or build-dependencies).
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace_root().join(manifest)).unwrap();
    let mut inside = false;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").to_string();
            if !name.is_empty() && !name.starts_with('#') {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn the_agent_links_rules_and_the_storage_engine_never_the_collector() {
    let agent = dependencies("agent/Cargo.toml");
    assert!(
        agent.contains("otwatch-rules") && agent.contains("otwatch-kv"),
        "{agent:?}"
    );
    assert!(!agent.contains("otwatch-collector"), "{agent:?}");
    let kv = dependencies("collector/kv/Cargo.toml");
    assert!(kv.iter().all(|d| !d.starts_with("otwatch-")), "{kv:?}");
    let rules = dependencies("rules/Cargo.toml");
    assert!(
        rules.iter().all(|d| !d.starts_with("otwatch-")),
        "{rules:?}"
    );
    let packet = dependencies("rules/packet/Cargo.toml");
    let ours: Vec<_> = packet
        .iter()
        .filter(|d| d.starts_with("otwatch-"))
        .collect();
    assert_eq!(ours, ["otwatch-rules"], "{packet:?}");
    let collector = dependencies("collector/Cargo.toml");
    assert!(!collector.contains("otwatch-agent"), "{collector:?}");
    // The PostgreSQL engine builds on the storage trait alone, and only the collector uses it.
    let postgres = dependencies("collector/postgres/Cargo.toml");
    let ours: Vec<_> = postgres
        .iter()
        .filter(|d| d.starts_with("otwatch-"))
        .collect();
    assert_eq!(ours, ["otwatch-kv"], "{postgres:?}");
    assert!(collector.contains("otwatch-kv-postgres"), "{collector:?}");
    assert!(!agent.contains("otwatch-kv-postgres"), "{agent:?}");
}

#[test]
fn the_fuzz_targets_link_only_the_pure_crates() {
    let fuzz = dependencies("fuzz/Cargo.toml");
    let ours: Vec<_> = fuzz.iter().filter(|d| d.starts_with("otwatch-")).collect();
    assert_eq!(
        ours,
        ["otwatch-delivery", "otwatch-packet", "otwatch-rules"],
        "{fuzz:?}"
    );
}

/// Crates that do I/O, keep time or spawn threads: none may be in a pure crate's tree.
const IO_CRATES: [&str; 11] = [
    "tokio",
    "sled",
    "libc",
    "pnet_datalink",
    "pnet_sys",
    "mio",
    "socket2",
    "rustix",
    "ureq",
    "hyper",
    "otwatch-kv",
];

#[test]
fn no_io_crate_is_in_the_pure_crates_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in ["otwatch-rules", "otwatch-packet", "otwatch-delivery"] {
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(["--format", "{p}", "-p", krate])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(krate),
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let io: Vec<_> = IO_CRATES.iter().filter(|c| names.contains(*c)).collect();
        assert!(io.is_empty(), "{krate} depends on {io:?}: {names:?}");
    }
}

#[test]
fn cargo_tree_of_the_agent_shows_no_collector_crate_not_even_for_its_tests() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--format", "{p}", "-p", "otwatch-agent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("otwatch-agent"),
        "cargo tree -p otwatch-agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("otwatch-collector"), "{text}");
    // Nor the database driver the collector's replicas use.
    assert!(!text.contains("postgres"), "{text}");
}

/// Every (name, version) a `Cargo.lock` lists.
fn locked(lock: &str) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join(lock)).unwrap();
    let mut packages = BTreeSet::new();
    let mut name = None;
    for line in text.lines() {
        if line == "[[package]]" {
            name = None;
        } else if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            packages.insert((n, v.trim_matches('"').to_string()));
        }
    }
    packages
}

#[test]
fn the_fuzz_lock_file_keeps_to_the_versions_the_workspace_locks() {
    let workspace = locked("Cargo.lock");
    let names: BTreeSet<&String> = workspace.iter().map(|(n, _)| n).collect();
    let fuzz = locked("fuzz/Cargo.lock");
    assert!(fuzz.iter().any(|(n, _)| n == "otwatch-rules"), "{fuzz:?}");
    // A crate both lock files list is at a version the workspace locks too: fuzzing runs the code
    // the agent and collector run. (`cargo update --manifest-path fuzz/Cargo.toml -p NAME
    // --precise VERSION` mends a drift.)
    let drift: Vec<_> = fuzz
        .iter()
        .filter(|(n, _)| names.contains(n))
        .filter(|p| !workspace.contains(*p))
        .collect();
    assert!(drift.is_empty(), "fuzz/Cargo.lock drifts: {drift:?}");
}
