//! The whole deterministic path, from captured frames to alerts, with nothing but the pure
//! crates: dissection, flow table, reassembly, sessions, the policy and the built-in detectors.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use etherparse::PacketBuilder;
use otwatch_packet::detector::Detector;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_packet::pipeline::Pipeline;
use otwatch_rules::alert::Alert;
use otwatch_rules::detect::{DetectionConfig, Engine};
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;

const POLICY: &str = r#"
version = 1
name = "two-hosts"

[[asset]]
name = "plc"
addresses = ["10.0.0.2"]
role = "slave"

[[asset]]
name = "hmi"
addresses = ["10.0.0.1"]
role = "master"

[[allow]]
from = "hmi"
to = "plc"
functions = "read"
holding_registers = "0-9"
"#;

/// One TCP segment of a conversation with the PLC (10.0.0.2:502).
struct Segment {
    client: [u8; 4],
    port: u16,
    to_server: bool,
    seq: u32,
}

impl Segment {
    fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let server = [10, 0, 0, 2];
        let (src, dst, sport, dport) = if self.to_server {
            (self.client, server, self.port, 502)
        } else {
            (server, self.client, 502, self.port)
        };
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, self.seq, 1000)
            .ack(1)
            .write(&mut out, payload)
            .unwrap();
        out
    }
}

/// A Modbus/TCP ADU: transaction id, unit 1, then the PDU.
fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut out = tid.to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    out.push(1);
    out.extend_from_slice(pdu);
    out
}

/// The HMI reads register 0 ten times (allowed), then a stranger writes register 5 and asks
/// the PLC to restart its communications: the policy and the built-in detectors both speak.
fn traffic() -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut ms = 0;
    let mut exchange = |client: [u8; 4], port: u16, n: u32, request: &[u8], reply: &[u8]| {
        let tid = n as u16;
        let ask = adu(tid, request);
        let answer = adu(tid, reply);
        let seq = 1 + n * ask.len() as u32;
        let back = 1 + n * answer.len() as u32;
        ms += 100;
        frames.push((
            ms,
            Segment {
                client,
                port,
                to_server: true,
                seq,
            }
            .frame(&ask),
        ));
        ms += 5;
        frames.push((
            ms,
            Segment {
                client,
                port,
                to_server: false,
                seq: back,
            }
            .frame(&answer),
        ));
    };
    for n in 0..10 {
        exchange([10, 0, 0, 1], 40000, n, &[3, 0, 0, 0, 1], &[3, 2, 0, 7]);
    }
    exchange(
        [10, 0, 0, 66],
        41000,
        0,
        &[6, 0, 5, 0, 99],
        &[6, 0, 5, 0, 99],
    );
    exchange([10, 0, 0, 66], 41000, 1, &[8, 0, 1, 0, 0], &[8, 0, 1, 0, 0]);
    frames
}

fn alerts_of(frames: &[(u64, Vec<u8>)], policy: Option<Arc<Policy>>) -> Vec<Alert> {
    let engine = Engine::new(DetectionConfig::default(), policy);
    let mut pipeline = Pipeline::new(FlowConfig::default(), Detector::new(engine, Vec::new()));
    for (ms, frame) in frames {
        pipeline.packet(&CapturedPacket {
            ts: Timestamp::from_nanos(ms * 1_000_000),
            link: LinkType::Ethernet,
            data: frame,
            orig_len: frame.len() as u32,
        });
    }
    pipeline.finish();
    pipeline.into_observer().into_sink()
}

fn rules_of(alerts: &[Alert]) -> Vec<&str> {
    let mut rules: Vec<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

fn policy() -> Arc<Policy> {
    Arc::new(Policy::parse(POLICY, "two-hosts.toml").unwrap().0)
}

#[test]
fn frames_from_a_stranger_raise_policy_and_builtin_alerts_and_allowed_reads_raise_none() {
    let alerts = alerts_of(&traffic(), Some(policy()));
    let rules = rules_of(&alerts);
    assert!(rules.contains(&"policy.unknown_master"), "{rules:?}");
    assert!(rules.contains(&"diag.restart_communications"), "{rules:?}");
    assert!(
        alerts.iter().all(|a| a.src_ip.to_string() == "10.0.0.66"),
        "the HMI's allowed reads raised: {alerts:?}"
    );
}

#[test]
fn the_same_frames_raise_the_same_alerts_with_the_same_ids() {
    let frames = traffic();
    let first = alerts_of(&frames, Some(policy()));
    let second = alerts_of(&frames, Some(policy()));
    assert!(!first.is_empty());
    assert_eq!(first, second);
}

#[test]
fn without_a_policy_only_the_builtin_detectors_speak() {
    let alerts = alerts_of(&traffic(), None);
    let rules = rules_of(&alerts);
    assert!(rules.contains(&"diag.restart_communications"), "{rules:?}");
    assert!(rules.iter().all(|r| !r.starts_with("policy.")), "{rules:?}");
}
