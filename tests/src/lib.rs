//! Helpers for otwatch's end-to-end tests: finding the built binaries and the shared test data.

pub mod attack;
pub mod collector;
pub mod netns;
pub mod plc;
pub mod recorder;
pub mod sim;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A two-thread tokio runtime for the async peers (PLCs, recording proxies) a test drives.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("no tokio runtime: {e}"))
}

/// The header and packets of the capture at `pcap`, to play as a live stream.
pub fn packets_of(
    pcap: &Path,
) -> (
    pcap_file::pcap::PcapHeader,
    Vec<pcap_file::pcap::PcapPacket<'static>>,
) {
    let file = std::fs::File::open(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let header = reader.header();
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        packets.push(
            packet
                .unwrap_or_else(|e| panic!("{}: {e}", pcap.display()))
                .into_owned(),
        );
    }
    (header, packets)
}

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

/// The path of a workspace binary (`otwatch-agent`, `otwatch-collector`).
///
/// `cargo test --workspace` builds every binary before running any test. Running only this
/// package's tests does not, so a binary older than the sources it is built from is refused
/// rather than silently tested.
pub fn binary(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps; binaries sit one level up.
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target/debug"));
    let path = profile_dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    // What each binary is built from (both use the storage engine, `collector/kv`, and the
    // log set-up, `collector/telemetry`).
    let sources: &[&str] = match name {
        "otwatch-collector" => &[
            "rules/src",
            "collector/kv/src",
            "collector/telemetry/src",
            "collector/src",
        ],
        _ => &[
            "rules/src",
            "rules/packet/src",
            "rules/delivery/src",
            "collector/kv/src",
            "collector/telemetry/src",
            "agent/src",
        ],
    };
    let newest_source = sources
        .iter()
        .filter_map(|dir| newest(&workspace_root().join(dir)))
        .max();
    match (built, newest_source) {
        (None, _) => panic!(
            "{} is not built: run `cargo test --workspace` (or `cargo build --bins` first)",
            path.display()
        ),
        (Some(built), Some(source)) if source > built => panic!(
            "{} is older than its sources: run `cargo test --workspace` (or `cargo build --bins` first)",
            path.display()
        ),
        _ => path,
    }
}

/// The newest modification time of any file under `dir` that goes into a binary (unit-test
/// files, `tests.rs`, do not: editing one does not rebuild the binaries).
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let time = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        latest = latest.max(time);
    }
    latest
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

/// The (rule, master, target) groups of `alerts` that have more than `most` alerts within one
/// `window` (by `first_ts`), described: what alert folding must keep empty.
pub fn crowded_windows(
    alerts: &[otwatch_rules::alert::Alert],
    window: std::time::Duration,
    most: usize,
) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<_, Vec<u64>> = std::collections::BTreeMap::new();
    for a in alerts {
        groups
            .entry((a.rule.clone(), a.src_ip, a.dst_ip))
            .or_default()
            .push(a.first_ts.as_nanos());
    }
    let span = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    let mut crowded = Vec::new();
    for ((rule, src, dst), mut times) in groups {
        times.sort_unstable();
        let worst = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i].saturating_add(span))
                    .count()
            })
            .max()
            .unwrap_or(0);
        if worst > most {
            crowded.push(format!(
                "{rule} {src} -> {dst}: {worst} alerts within {window:?}"
            ));
        }
    }
    crowded
}

/// The alerts in a JSON-lines file the agent wrote with `--alerts`.
pub fn read_alerts(path: &Path) -> Vec<otwatch_rules::alert::Alert> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an alert per line"))
        .collect()
}

/// Waits for `child` to exit and checks it succeeded, panicking with `what` after `timeout`.
pub fn wait_success(child: &mut std::process::Child, what: &str, timeout: std::time::Duration) {
    let mut status = None;
    wait_for(&format!("{what} to finish"), timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if let Some(status) = status {
        assert!(status.success(), "{what} ended with {status}");
    }
}

/// Polls `done` every 50 ms until it holds, panicking with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
