//! The `otwatch-agent replay` command as a user meets it: exit codes and messages for bad
//! arguments, missing files and damaged captures, and the summary of what was decoded.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Output};

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otwatch-agent"))
        .args(args)
        .output()
        .expect("run otwatch-agent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An Ethernet/IPv4/TCP frame from the client to port 502 (or back) carrying `payload`.
fn frame(to_server: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if to_server {
        ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 502)
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1], 502, 40000)
    };
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 65535)
        .psh()
        .ack(1);
    let mut out = Vec::new();
    builder.write(&mut out, payload).expect("build frame");
    out
}

/// A capture with `n` read-holding-registers transactions.
fn capture(path: &Path, n: u16) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = PcapWriter::new(file).unwrap();
    let (mut cseq, mut sseq) = (1000u32, 5000u32);
    for i in 0..n {
        let req = [&i.to_be_bytes()[..], &[0, 0, 0, 6, 1, 3, 0, 0, 0, 1]].concat();
        let resp = [&i.to_be_bytes()[..], &[0, 0, 0, 5, 1, 3, 2, 0, 42]].concat();
        for (to_server, seq, payload) in [(true, cseq, &req), (false, sseq, &resp)] {
            let data = frame(to_server, seq, payload);
            let ts = std::time::Duration::from_millis(u64::from(i) * 10 + u64::from(!to_server));
            writer
                .write_packet(&PcapPacket::new(ts, data.len() as u32, &data))
                .unwrap();
        }
        cseq += req.len() as u32;
        sseq += resp.len() as u32;
    }
}

#[test]
fn replay_prints_transactions_by_function() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ok.pcap");
    capture(&pcap, 5);
    let out = agent(&["replay", "--pcap", pcap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("answered 5"), "{text}");
    assert!(text.contains("read_holding_registers"), "{text}");
    assert!(text.contains("packets/s"), "{text}");
}

#[test]
fn missing_capture_names_the_file_and_exits_2() {
    let out = agent(&["replay", "--pcap", "/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/capture.pcap"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn file_that_is_not_a_capture_is_refused_with_its_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello world, not a capture").unwrap();
    let out = agent(&["replay", "--pcap", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a pcap or pcapng file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn truncated_capture_reports_offset_and_what_was_decoded_before() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cut.pcap");
    capture(&pcap, 4);
    let bytes = std::fs::read(&pcap).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 10]).unwrap();
    let out = agent(&["replay", "--pcap", pcap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cut.pcap") && err.contains("truncated at offset"),
        "{err}"
    );
    assert!(stdout(&out).contains("answered 3"), "{}", stdout(&out));
}

#[test]
fn corrupt_record_length_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("bad.pcap");
    capture(&pcap, 2);
    let mut bytes = std::fs::read(&pcap).unwrap();
    // The first record header starts at 24; its captured length is at 24 + 8.
    bytes[32..36].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    std::fs::write(&pcap, &bytes).unwrap();
    let out = agent(&["replay", "--pcap", pcap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("corrupt record at offset 24"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = agent(&["replay", "--pcap", "x.pcap", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"));
}

#[test]
fn zero_max_flows_is_refused_naming_the_flag() {
    let out = agent(&["replay", "--pcap", "x.pcap", "--max-flows", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--max-flows"), "{}", stderr(&out));
}

#[test]
fn transaction_log_has_one_joined_record_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ok.pcap");
    let log = dir.path().join("tx.jsonl");
    capture(&pcap, 3);
    let out = agent(&[
        "replay",
        "--pcap",
        pcap.to_str().unwrap(),
        "--transactions",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["outcome"], "answered");
    assert_eq!(first["function"], "read_holding_registers");
    assert_eq!(first["client_ip"], "10.0.0.1");
    assert_eq!(first["server_port"], 502);
    assert_eq!(first["address"], 0);
    assert_eq!(first["quantity"], 1);
    assert_eq!(first["read_values"], serde_json::json!([42]));
    assert_eq!(first["latency_us"], 1000);
    assert_eq!(first["ts"], "1970-01-01T00:00:00.000000Z");
}

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn check_accepts_every_shipped_example_policy() {
    let dir = workspace().join("deploy/policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = agent(&["check", "--policy", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                stderr(&out)
            );
            assert!(stdout(&out).contains("ok:"), "{}", stdout(&out));
            assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
            checked += 1;
        }
    }
    assert!(checked > 0, "no example policy in {}", dir.display());
}

#[test]
fn check_names_line_and_field_of_a_bad_policy_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "version = 1\n\n[[allow]]\nfrom = \"nobody\"\nto = \"any\"\nfunctions = \"read\"\n",
    )
    .unwrap();
    let out = agent(&["check", "--policy", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("allow[0].from"), "{err}");
    assert!(err.contains("\"nobody\""), "{err}");
}

#[test]
fn check_warns_about_a_shadowed_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.toml");
    std::fs::write(
        &path,
        "version = 1\n[[allow]]\nfrom = \"any\"\nto = \"any\"\nfunctions = \"read\"\n[[allow]]\nname = \"late\"\nfrom = \"10.0.0.1\"\nto = \"any\"\nfunctions = \"read_coils\"\n",
    )
    .unwrap();
    let out = agent(&["check", "--policy", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("warning: line 6: rule \"late\": shadowed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn learned_policy_replays_its_own_capture_without_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("normal.pcap");
    let policy = dir.path().join("learned.toml");
    let alerts = dir.path().join("alerts.jsonl");
    capture(&pcap, 50);
    let out = agent(&[
        "learn",
        "--pcap",
        pcap.to_str().unwrap(),
        "--out",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("learned from 50 requests"),
        "{}",
        stdout(&out)
    );
    let out = agent(&[
        "replay",
        "--pcap",
        pcap.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--alerts",
        alerts.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&alerts).unwrap(), "");
    assert!(stdout(&out).contains("alerts 0"), "{}", stdout(&out));
}

#[test]
fn replay_with_a_bad_policy_refuses_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ok.pcap");
    capture(&pcap, 1);
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "version = 7\n").unwrap();
    let out = agent(&[
        "replay",
        "--pcap",
        pcap.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("p.toml:1:"), "{}", stderr(&out));
}
