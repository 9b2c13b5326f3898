//! The shipped deployment files agree with the code: every metric the Prometheus rules and the
//! Grafana dashboard use is one the agent or the collector exports, the dashboard is valid
//! JSON, and the systemd units start commands the binaries accept. (`agent.toml`,
//! `collector.toml` and every policy are parsed by the agent's and collector's own tests.)
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::process::Command;

use otwatch_tests::{binary, workspace_root};

/// Every `otwatch_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("otwatch_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metrics the agent and the collector register (their names are string literals in their
/// metrics modules).
fn exported() -> BTreeSet<String> {
    let root = workspace_root();
    let mut names = BTreeSet::new();
    for file in ["agent/src/telemetry/metrics.rs", "collector/src/metrics.rs"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for name in metric_names(&text) {
            names.insert(name.clone());
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn every_metric_the_prometheus_rules_and_grafana_dashboard_use_is_exported() {
    let exported = exported();
    let root = workspace_root();
    for file in [
        "deploy/prometheus/otwatch-alerts.yml",
        "deploy/grafana/otwatch-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses no otwatch metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics nobody exports: {unknown:?}"
        );
    }
}

#[test]
fn the_grafana_dashboard_is_valid_json_with_panels() {
    let text =
        std::fs::read_to_string(workspace_root().join("deploy/grafana/otwatch-dashboard.json"))
            .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));
}

#[test]
fn the_systemd_units_start_commands_the_binaries_accept() {
    for (unit, bin) in [
        ("otwatch-agent.service", "otwatch-agent"),
        ("otwatch-collector.service", "otwatch-collector"),
    ] {
        let text =
            std::fs::read_to_string(workspace_root().join("deploy/systemd").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace();
        assert!(words.next().unwrap().ends_with(bin));
        let args: Vec<&str> = words.collect();
        // Asking for help with the same arguments parses them without running anything.
        let out = Command::new(binary(bin))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
