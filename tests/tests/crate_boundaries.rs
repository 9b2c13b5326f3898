//! Dependencies point one way: `rules` at the bottom, the agent and the collector beside each
//! other on it, the storage engine (`otwatch-kv`) shared. The agent never links the collector.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;

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
    let collector = dependencies("collector/Cargo.toml");
    assert!(!collector.contains("otwatch-agent"), "{collector:?}");
}
