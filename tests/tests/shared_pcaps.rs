//! Every third-party capture in `../shared/pcaps` replays through the agent binary without a
//! crash, and the Modbus PDUs decoded per function code agree with tshark 4.0's counts
//! (`PROVENANCE.md`; tshark counts without retransmitted segments). Where otwatch differs, the
//! entry says why.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use otwatch_tests::{count, crowded_windows, read_alerts, replay_summary, shared_dir};

/// (file, requests by function, responses by function incl. exceptions, exceptions "fc/code")
struct Expected {
    file: &'static str,
    requests: &'static [(u8, u64)],
    responses: &'static [(u8, u64)],
    exceptions: &'static [(&'static str, u64)],
}

const EXPECTED: &[Expected] = &[
    Expected {
        file: "icsnpp-modbus/modbus_example.pcap",
        requests: &[
            (1, 2),
            (2, 2),
            (3, 3),
            (4, 2),
            (5, 1),
            (6, 1),
            (7, 1),
            (8, 1),
            (15, 1),
            (16, 1),
            (17, 1),
            (20, 1),
            (21, 1),
            (22, 2),
            (23, 2),
            (24, 1),
            (43, 1),
        ],
        responses: &[
            (1, 2),
            (2, 2),
            (3, 3),
            (4, 2),
            (5, 1),
            (6, 1),
            (7, 1),
            (8, 1),
            (15, 1),
            (16, 1),
            (17, 1),
            (20, 1),
            (21, 1),
            (22, 2),
            (23, 2),
            (24, 1),
            (43, 1),
        ],
        exceptions: &[("3/2", 1)],
    },
    // 2147 frames with 2-5 pipelined ADUs and 2 ADUs split across segments: exact agreement.
    Expected {
        file: "iti/ModbusTCP.pcap",
        requests: &[(1, 1519), (2, 1574), (4, 2768), (15, 2115), (16, 14)],
        responses: &[(1, 1519), (2, 1572), (4, 2768), (15, 2113), (16, 14)],
        exceptions: &[],
    },
    // tshark: FC4 584 requests / 585 responses. Four retransmissions here are re-packetised
    // (same sequence number, more bytes) and carry ADUs seen nowhere else; tshark skips
    // retransmitted segments whole, otwatch delivers their new bytes once: +4 requests and +6
    // responses, no overlap conflict.
    Expected {
        file: "iti/mb2.pcap",
        requests: &[(1, 345), (2, 362), (4, 588), (15, 498)],
        responses: &[(1, 345), (2, 362), (4, 591), (15, 498)],
        exceptions: &[],
    },
    Expected {
        file: "iti/modbus_test.pcap",
        requests: &[(4, 1079), (6, 63)],
        responses: &[(4, 1053), (6, 63)],
        exceptions: &[],
    },
    // 926 retransmitted copies (capture duplicates) are dropped by reassembly, as by tshark.
    Expected {
        file: "iti/modbus_test_2.pcap",
        requests: &[(3, 43), (4, 2339)],
        responses: &[(3, 43), (4, 1550)],
        exceptions: &[],
    },
    Expected {
        file: "malmod/modbus.pcapng",
        requests: &[(43, 1)],
        responses: &[(43, 1)],
        exceptions: &[],
    },
    Expected {
        file: "ndpi/modbus.pcap",
        requests: &[(3, 51)],
        responses: &[(3, 51)],
        exceptions: &[],
    },
    Expected {
        file: "pcap-share/modbus.pcapng",
        requests: &[(5, 6395)],
        responses: &[(5, 6395)],
        exceptions: &[],
    },
    // tshark counts one FC42 response: the second FC42 frame (frame 113) starts with the 3
    // stray bytes of the first, so tshark reads it as a continuation; otwatch reports the stray
    // bytes as a decode error and decodes the frame behind them.
    Expected {
        file: "quickdraw/modbus_test_data_part1.pcap",
        requests: &[(1, 2), (3, 1), (5, 2), (6, 1), (8, 8), (17, 2), (43, 2)],
        responses: &[(1, 12), (3, 1), (5, 2), (6, 1), (8, 8), (17, 2), (42, 2)],
        exceptions: &[("1/5", 5), ("1/6", 5), ("8/11", 4)],
    },
    Expected {
        file: "s4x15/Advantech.pcap",
        requests: &[(1, 6), (2, 36), (3, 58)],
        responses: &[(1, 4), (2, 31), (3, 61)],
        exceptions: &[],
    },
    Expected {
        file: "s4x15/Modicon.pcap",
        requests: &[(3, 168)],
        responses: &[(3, 168)],
        exceptions: &[],
    },
    Expected {
        file: "suricata-verify/modbus.pcap",
        requests: &[(1, 2), (3, 1), (5, 2), (6, 1), (8, 8), (17, 2), (43, 2)],
        responses: &[(1, 7), (3, 1), (5, 2), (6, 1), (8, 8), (17, 2)],
        exceptions: &[("1/6", 5), ("8/11", 4)],
    },
    // The FC23 request's write byte count disagrees with its quantity: tshark shows it, otwatch
    // reports it as a byte_count_mismatch decode error instead of a request.
    Expected {
        file: "zeek/4SICS-GeekLounge-151022-min.pcap",
        requests: &[],
        responses: &[(23, 1)],
        exceptions: &[("23/10", 1)],
    },
    // Bit-flipped frames: one FC4 request's quantity (147) is out of range and is a decode
    // error; tshark decodes it anyway.
    Expected {
        file: "zeek/fuzz-1011.pcap",
        requests: &[(4, 1)],
        responses: &[(4, 2)],
        exceptions: &[],
    },
    Expected {
        file: "zeek/modbus-and-non-modbus-p502.pcap",
        requests: &[(1, 2), (3, 1), (5, 2), (6, 1)],
        responses: &[(1, 2), (3, 1), (5, 2), (6, 1)],
        exceptions: &[],
    },
    // The normal FC43 response has four bytes after its (empty) object list: a
    // trailing_bytes decode error, so only the exception response counts.
    Expected {
        file: "zeek/modbus-eit.pcap",
        requests: &[(43, 2)],
        responses: &[(43, 1)],
        exceptions: &[("43/4", 1)],
    },
    Expected {
        file: "zeek/modbusBig.pcap",
        requests: &[(1, 1387), (5, 1387)],
        responses: &[(1, 1387), (5, 1387)],
        exceptions: &[],
    },
    Expected {
        file: "zeek/modbusSmall.pcap",
        requests: &[(1, 8), (15, 8)],
        responses: &[(1, 8), (15, 8)],
        exceptions: &[],
    },
];

#[test]
fn every_shared_capture_decodes_to_the_expected_function_counts() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/pcaps is not present next to the project");
        return;
    };
    let mut failures = Vec::new();
    for e in EXPECTED {
        let path = shared.join("pcaps").join(e.file);
        let (summary, code) = replay_summary(&[&path], &[]);
        if code != Some(0) {
            failures.push(format!("{}: exit code {code:?}", e.file));
        }
        for (section, expected) in [("requests", e.requests), ("responses", e.responses)] {
            let got: Vec<(u8, u64)> = (1..=127u8)
                .map(|fc| (fc, count(&summary, section, &fc.to_string())))
                .filter(|(_, n)| *n > 0)
                .collect();
            if got != expected {
                failures.push(format!(
                    "{}: {section} {got:?}, expected {expected:?}",
                    e.file
                ));
            }
        }
        let exceptions: Vec<(String, u64)> = summary["modbus"]["exceptions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<(String, u64)> = e
            .exceptions
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        if exceptions != expected {
            failures.push(format!(
                "{}: exceptions {exceptions:?}, expected {expected:?}",
                e.file
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_capture_in_the_shared_folder_is_covered() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/pcaps is not present next to the project");
        return;
    };
    let mut files = Vec::new();
    for dir in std::fs::read_dir(shared.join("pcaps")).unwrap().flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pcap") || name.ends_with(".pcapng") {
                files.push(format!("{}/{name}", dir.file_name().to_string_lossy()));
            }
        }
    }
    let known: Vec<&str> = EXPECTED.iter().map(|e| e.file).collect();
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !known.contains(&f.as_str()))
        .collect();
    // New captures must still replay cleanly even before their counts are pinned here.
    for f in &missing {
        let (_, code) = replay_summary(&[&shared.join("pcaps").join(f)], &[]);
        assert_eq!(code, Some(0), "{f} did not replay cleanly");
    }
}

#[test]
fn non_modbus_payloads_on_port_502_are_flagged_not_decoded() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/pcaps is not present next to the project");
        return;
    };
    let path = shared.join("pcaps/zeek/modbus-and-non-modbus-p502.pcap");
    let (summary, _) = replay_summary(&[&path], &[]);
    assert_eq!(summary["modbus"]["mbap_flows"], 1);
    assert_eq!(summary["modbus"]["non_modbus_flows"], 6);
    assert_eq!(summary["modbus"]["decode_errors"], serde_json::json!({}));
}

#[test]
fn quickdraw_attack_frames_become_decode_events() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/pcaps is not present next to the project");
        return;
    };
    let path = shared.join("pcaps/quickdraw/modbus_test_data_part1.pcap");
    let (summary, _) = replay_summary(&[&path], &[]);
    // Illegal packet size (MBAP length 0x8804) twice, invalid protocol id twice, padded frames.
    assert_eq!(count(&summary, "decode_errors", "length_too_large"), 2);
    assert!(count(&summary, "decode_errors", "invalid_protocol_id") >= 2);
    assert!(count(&summary, "decode_errors", "trailing_bytes") >= 2);
    // The ten exception replies from 10.0.0.8 answer nothing.
    assert_eq!(count(&summary, "transactions", "unsolicited"), 12);
}

/// (file, rules that must be raised, rules that must not)
const DETECTIONS: &[(&str, &[&str], &[&str])] = &[
    (
        "quickdraw/modbus_test_data_part1.pcap",
        &[
            "diag.force_listen_only",
            "diag.restart_communications",
            "diag.clear_counters",
            "recon.read_device_id",
            "recon.report_server_id",
            "dos.busy_exception_storm",
            "dos.acknowledge_exception_storm",
            "proto.illegal_adu_size",
            "proto.invalid_protocol_id",
            "proto.length_mismatch",
        ],
        &["impact.brute_force_io", "recon.points_scan"],
    ),
    (
        "suricata-verify/modbus.pcap",
        &[
            "diag.force_listen_only",
            "diag.restart_communications",
            "diag.clear_counters",
            "recon.read_device_id",
            "recon.report_server_id",
            "dos.busy_exception_storm",
        ],
        &["impact.brute_force_io"],
    ),
    (
        "icsnpp-modbus/modbus_example.pcap",
        &[
            "file.read_record",
            "file.write_record",
            "recon.read_device_id",
            "recon.report_server_id",
        ],
        &["recon.points_scan", "diag.force_listen_only"],
    ),
    ("zeek/modbus-eit.pcap", &["recon.read_device_id"], &[]),
    ("malmod/modbus.pcapng", &["recon.read_device_id"], &[]),
    (
        "zeek/modbus-and-non-modbus-p502.pcap",
        &["proto.non_modbus"],
        &["proto.malformed", "proto.invalid_protocol_id"],
    ),
    (
        "zeek/4SICS-GeekLounge-151022-min.pcap",
        &["proto.malformed"],
        &[],
    ),
    // Normal polling and writing: nothing at all.
    ("zeek/modbusSmall.pcap", &[], &["*"]),
    ("pcap-share/modbus.pcapng", &[], &["*"]),
    ("iti/mb2.pcap", &[], &["*"]),
    ("iti/modbus_test_2.pcap", &[], &["*"]),
    ("s4x15/Modicon.pcap", &[], &["*"]),
    ("s4x15/Advantech.pcap", &[], &["*"]),
    ("zeek/modbusBig.pcap", &[], &["*"]),
];

#[test]
fn shared_captures_raise_what_expected_md_says_and_nothing_absurd() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/pcaps is not present next to the project");
        return;
    };
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for (n, (file, must, must_not)) in DETECTIONS.iter().enumerate() {
        let path = shared.join("pcaps").join(file);
        let out = dir.path().join(format!("{n}.jsonl"));
        let (summary, code) = replay_summary(&[&path], &["--alerts", out.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{file}");
        // One event is one alert, not hundreds: at most 3 per (rule, master, target) in a
        // window (the first at once, the totals, and the next window's first).
        let alerts = read_alerts(&out);
        for crowded in crowded_windows(&alerts, std::time::Duration::from_secs(60), 3) {
            failures.push(format!("{file}: {crowded}"));
        }
        let raised: Vec<String> = summary["alerts"]["by_rule"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for rule in *must {
            if !raised.iter().any(|r| r == rule) {
                failures.push(format!("{file}: {rule} not raised (raised {raised:?})"));
            }
        }
        for rule in *must_not {
            if raised.iter().any(|r| *rule == "*" || r == rule) {
                failures.push(format!("{file}: must not raise {rule} (raised {raised:?})"));
            }
        }
        // Nothing absurd: no capture here justifies a critical alert.
        if summary["alerts"]["by_severity"]["critical"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            failures.push(format!("{file}: critical alert raised"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
