//! Learning on one benign capture of the shared plant generator, then enforcing on another:
//! a 2,000,000-packet capture from another seed raises zero alerts, and each deviation from
//! the learned behaviour raises the alert that names it.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use otwatch_tests::recorder::{Chunk, Endpoints, write_pcap};
use otwatch_tests::{binary, count, replay_summary, shared_dir, workspace_root};

/// Generates (once per build tree) a benign capture with the shared generator.
fn generated(shared: &Path, packets: u32, seed: u32) -> PathBuf {
    let dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("plant-{packets}-seed{seed}.pcap"));
    if !out.exists() {
        let partial = out.with_extension("partial");
        let status = Command::new("python3")
            .arg(shared.join("tools/gen-modbus-pcap.py"))
            .args([
                "--packets",
                &packets.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .arg("--out")
            .arg(&partial)
            .status()
            .unwrap();
        assert!(status.success(), "gen-modbus-pcap.py failed");
        std::fs::rename(&partial, &out).unwrap();
    }
    out
}

fn learn(pcap: &Path, out: &Path) {
    let status = Command::new(binary("otwatch-agent"))
        .args(["learn", "--no-progress", "--pcap"])
        .arg(pcap)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

/// One Modbus/TCP exchange of a master with a PLC of the generated plant.
fn exchange(client: [u8; 4], server: [u8; 4], unit: u8, pdu: &[u8], response: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pcap");
    let adu = |pdu: &[u8]| {
        let mut a = vec![0, 1, 0, 0, 0, pdu.len() as u8 + 1, unit];
        a.extend_from_slice(pdu);
        a
    };
    let start = Instant::now();
    let chunks = [
        Chunk {
            at: start,
            to_server: true,
            bytes: adu(pdu),
        },
        Chunk {
            at: start + Duration::from_millis(2),
            to_server: false,
            bytes: adu(response),
        },
    ];
    let endpoints = Endpoints {
        client: (client, 50_123),
        server: (server, 502),
    };
    write_pcap(&path, &chunks, endpoints).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn policy_learned_on_one_seed_raises_nothing_on_two_million_packets_of_another() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/tools/gen-modbus-pcap.py is not present next to the project");
        return;
    };
    let normal = generated(&shared, 300_000, 1);
    let big = generated(&shared, 2_000_000, 2);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("learned.toml");
    learn(&normal, &policy);

    let (summary, code) = replay_summary(&[&big], &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(summary["packets"]["packets"].as_u64().unwrap() >= 2_000_000);
    assert_eq!(count(&summary, "transactions", "answered"), 666_643);
    assert_eq!(summary["alerts"]["total"], 0, "{}", summary["alerts"]);

    // Each deviation raises the alert that names it.
    let (scada, hmi, plc, stranger) = (
        [10, 10, 0, 5],
        [10, 10, 0, 6],
        [10, 10, 1, 10],
        [10, 10, 0, 99],
    );
    // A process value read back far outside what the plant's registers ever showed.
    let mut outside = vec![3, 20];
    for v in [1u16, 2, 3, 5000, 5, 6, 7, 8, 9, 10] {
        outside.extend_from_slice(&v.to_be_bytes());
    }
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "policy.process_value_out_of_bounds",
            exchange(scada, plc, 1, &[3, 0, 0, 0, 10], &outside),
        ),
        (
            "policy.unauthorized_write",
            exchange(hmi, plc, 1, &[6, 1, 0x90, 0, 7], &[6, 1, 0x90, 0, 7]),
        ),
        (
            "policy.setpoint_out_of_bounds",
            exchange(
                scada,
                plc,
                1,
                &[6, 1, 0x90, 0x13, 0x88],
                &[6, 1, 0x90, 0x13, 0x88],
            ),
        ),
        (
            "policy.unauthorized_read",
            exchange(scada, plc, 1, &[3, 3, 0x84, 0, 10], &[0x83, 2]),
        ),
        (
            "policy.unauthorized_function",
            exchange(scada, plc, 1, &[8, 0, 4, 0, 0], &[8, 0, 4, 0, 0]),
        ),
        (
            "policy.unknown_master",
            exchange(stranger, plc, 1, &[3, 0, 0, 0, 10], &[0x83, 2]),
        ),
    ];
    for (rule, pcap_bytes) in cases {
        let path = dir.path().join(format!("{rule}.pcap"));
        std::fs::write(&path, pcap_bytes).unwrap();
        let (summary, _) = replay_summary(&[&path], &["--policy", policy.to_str().unwrap()]);
        assert_eq!(
            summary["alerts"]["by_rule"][rule], 1,
            "{rule}: {}",
            summary["alerts"]["by_rule"]
        );
    }
}
