//! Helpers for otwatch's end-to-end tests: finding the built binaries and the shared test data.

pub mod plc;
pub mod recorder;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's top folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `../shared` next to the project, where third-party captures and tools live, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = workspace_root().parent()?.join("shared");
    dir.is_dir().then_some(dir)
}

/// The path of a workspace binary (`otwatch-agent`, `otwatch-collector`), building it first if
/// this test run has not.
pub fn binary(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps; binaries sit one level up.
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target/debug"));
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .current_dir(workspace_root())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "could not build {name}");
    }
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// Runs `otwatch-agent replay` on `pcaps` and returns its JSON summary and exit code.
pub fn replay_summary(pcaps: &[&Path], extra: &[&str]) -> (serde_json::Value, Option<i32>) {
    let dir = tempfile_dir();
    let summary = dir.join("summary.json");
    let mut cmd = Command::new(binary("otwatch-agent"));
    cmd.arg("replay").arg("--no-progress");
    for p in pcaps {
        cmd.arg("--pcap").arg(p);
    }
    cmd.arg("--summary-json").arg(&summary).args(extra);
    let output = cmd.output().expect("run otwatch-agent");
    let text = std::fs::read_to_string(&summary).unwrap_or_else(|_| {
        panic!(
            "no summary; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    (
        serde_json::from_str(&text).expect("summary is JSON"),
        output.status.code(),
    )
}

fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "otwatch-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Reads a counter from a summary's `modbus.<section>` map (missing means zero).
pub fn count(summary: &serde_json::Value, section: &str, key: &str) -> u64 {
    summary["modbus"][section][key].as_u64().unwrap_or(0)
}
