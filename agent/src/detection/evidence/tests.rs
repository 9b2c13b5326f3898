use std::sync::Arc;

use base64::Engine as _;
use etherparse::PacketBuilder;
use otwatch_delivery::Lane;
use otwatch_kv::sled::{AGENT_CACHE_BYTES, SledKv};
use otwatch_packet::capture_file::{CaptureDecoder, InMemory};
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::frame::LinkType;
use otwatch_packet::pipeline::Pipeline;
use otwatch_rules::detect::DetectionConfig;
use otwatch_rules::time::Timestamp;

use super::*;
use crate::delivery::outbox::{Outbox, Record};
use crate::detection::Detection;
use crate::telemetry::status::Status;

/// A Modbus/TCP frame between 10.0.0.1:40000 (the master) and 10.0.0.2:502.
fn frame(to_server: bool, seq: u32, adu: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if to_server {
        ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 502)
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1], 502, 40000)
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 1000)
        .ack(1)
        .write(&mut out, adu)
        .unwrap();
    out
}

fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut a = tid.to_be_bytes().to_vec();
    a.extend_from_slice(&[0, 0]);
    a.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    a.push(1);
    a.extend_from_slice(pdu);
    a
}

struct Agent {
    pipeline: Pipeline<Detection<Vec<u8>>>,
    outbox: Arc<Outbox>,
    _dir: tempfile::TempDir,
    ms: u64,
    seq: [u32; 2],
}

impl Agent {
    fn new(min_severity: Severity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open_with_cache(dir.path(), AGENT_CACHE_BYTES).unwrap();
        let outbox = Arc::new(Outbox::open(Arc::new(kv), 64 << 20).unwrap());
        let detection = Detection::new(DetectionConfig::default(), None, None, false)
            .with_outbox(outbox.clone(), Arc::new(Status::new()))
            .with_evidence(EvidenceOptions {
                min_severity,
                limits: Limits::default(),
            });
        Self {
            pipeline: Pipeline::new(FlowConfig::default(), detection),
            outbox,
            _dir: dir,
            ms: 0,
            seq: [1, 1],
        }
    }

    /// Sends one ADU either way; returns the frame.
    fn send(&mut self, to_server: bool, adu: &[u8]) -> Vec<u8> {
        let side = usize::from(!to_server);
        let f = frame(to_server, self.seq[side], adu);
        self.seq[side] += adu.len() as u32;
        self.ms += 1;
        self.pipeline.packet(&CapturedPacket {
            ts: Timestamp::from_nanos(self.ms * 1_000_000),
            link: LinkType::Ethernet,
            data: &f,
            orig_len: f.len() as u32,
        });
        f
    }

    /// A read of one holding register and its answer.
    fn poll(&mut self, tid: u16) {
        self.send(true, &adu(tid, &[3, 0, 0, 0, 1]));
        self.send(false, &adu(tid, &[3, 2, 0, 7]));
    }

    fn evidence(&self) -> Vec<EvidenceRecord> {
        let peeked = self.outbox.peek(Lane::Evidence, 100, u64::MAX).unwrap();
        peeked
            .records
            .into_iter()
            .map(|r| match r {
                Record::Evidence(e) => e,
                other => panic!("not evidence in the evidence lane: {other:?}"),
            })
            .collect()
    }

    fn alerts(&self) -> Vec<Alert> {
        let peeked = self.outbox.peek(Lane::Alerts, 100, u64::MAX).unwrap();
        peeked
            .records
            .into_iter()
            .filter_map(|r| match r {
                Record::Alert(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

/// The frames of a pcap, in order.
fn frames_of(pcap_base64: &str) -> Vec<Vec<u8>> {
    let pcap = base64::engine::general_purpose::STANDARD
        .decode(pcap_base64)
        .unwrap();
    otwatch_packet::evidence::validate(&pcap).unwrap();
    let mut input = InMemory::new(&pcap, &[]);
    let mut decoder = CaptureDecoder::new();
    let mut out = Vec::new();
    while let Some(p) = decoder.next_packet(&mut input).unwrap() {
        out.push(p.data.to_vec());
    }
    out
}

#[test]
fn a_serious_alert_takes_its_flows_frames_ending_with_its_own_even_when_the_flow_goes_on() {
    let mut agent = Agent::new(Severity::High);
    for tid in 0..30 {
        agent.poll(tid);
    }
    let stop = agent.send(true, &adu(100, &[8, 0, 4, 0, 0]));
    // Far more frames than a flow keeps follow in the same batch.
    for tid in 200..260 {
        agent.poll(tid);
    }
    agent.pipeline.observer_mut().flush_log();
    let alerts = agent.alerts();
    let alert = alerts
        .iter()
        .find(|a| a.rule == "diag.force_listen_only")
        .expect("the force-listen-only alert");
    let evidence = agent.evidence();
    assert_eq!(evidence.len(), 1, "one serious alert, one pcap");
    assert_eq!(evidence[0].alert, alert.id);
    let frames = frames_of(&evidence[0].pcap);
    assert_eq!(
        frames.last(),
        Some(&stop),
        "ends with the alert's own frame"
    );
    assert_eq!(frames.len(), Limits::default().per_flow_packets);
    let counts = agent.pipeline.observer().evidence_counts().unwrap();
    assert_eq!(
        (counts.queued, counts.no_frames, counts.over_limit),
        (1, 0, 0)
    );
}

#[test]
fn alerts_below_the_severity_take_no_packets_and_a_lower_setting_takes_them() {
    for (min, expected) in [(Severity::High, 0), (Severity::Low, 1)] {
        let mut agent = Agent::new(min);
        agent.poll(1);
        // Read Device Identification: a low-severity reconnaissance alert.
        agent.send(true, &adu(2, &[0x2b, 0x0e, 1, 0]));
        agent.pipeline.observer_mut().flush_log();
        assert!(
            agent
                .alerts()
                .iter()
                .any(|a| a.rule == "recon.read_device_id"),
            "the alert is raised either way"
        );
        assert_eq!(agent.evidence().len(), expected, "at {min:?}");
    }
}

#[test]
fn a_burst_of_serious_alerts_is_cut_at_the_batch_limit_and_counted() {
    let mut agent = Agent::new(Severity::Low);
    // Each from its own master, so nothing folds.
    for port in 0..(MAX_PER_BATCH as u16 + 10) {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 1, (port >> 8) as u8, port as u8], [10, 0, 0, 2], 64)
            .tcp(30000 + port, 502, 1, 1000)
            .ack(1)
            .write(&mut f, &adu(port, &[0x2b, 0x0e, 1, 0]))
            .unwrap();
        agent.pipeline.packet(&CapturedPacket {
            ts: Timestamp::from_nanos(1_000_000 + u64::from(port)),
            link: LinkType::Ethernet,
            data: &f,
            orig_len: f.len() as u32,
        });
    }
    agent.pipeline.observer_mut().flush_log();
    let counts = agent.pipeline.observer().evidence_counts().unwrap();
    let alerts = agent.alerts().len() as u64;
    assert_eq!(agent.evidence().len(), counts.queued as usize);
    assert!(counts.queued <= MAX_PER_BATCH as u64);
    assert_eq!(
        counts.queued + counts.no_frames + counts.over_limit,
        alerts,
        "every alert that wanted packets is accounted for"
    );
    assert!(counts.over_limit > 0);
}

#[test]
fn a_closed_flows_frames_stay_for_an_alert_raised_batches_later() {
    let mut evidence = Evidence::new(EvidenceOptions::default());
    let f = frame(true, 1, &adu(1, &[3, 0, 0, 0, 1]));
    let packet = CapturedPacket {
        ts: Timestamp::from_nanos(1),
        link: LinkType::Ethernet,
        data: &f,
        orig_len: f.len() as u32,
    };
    evidence.frame(7, &packet);
    assert!(evidence.end_batch().is_empty());
    // A folded alert of flow 7 raised when its window closes, batches after the connection
    // ended, still finds the frames up to its last occurrence.
    let mut alert = otwatch_rules::detect::agent_alert(
        "a",
        &otwatch_rules::alert::rule::FORCE_LISTEN_ONLY,
        Timestamp::from_nanos(1),
        "10.0.0.1:1".parse().unwrap(),
        String::new(),
    );
    alert.flow = 7;
    alert.severity = Severity::High;
    assert!(evidence.end_batch().is_empty());
    evidence.alert(&alert);
    let made = evidence.end_batch();
    assert_eq!(made.len(), 1);
    assert_eq!(frames_of(&made[0].pcap), vec![f]);
    // One older than every frame held gets none, counted.
    alert.ts = Timestamp::from_nanos(0);
    evidence.alert(&alert);
    assert!(evidence.end_batch().is_empty());
    assert_eq!(evidence.counts().no_frames, 1);
}

#[test]
fn alerts_about_the_agent_itself_take_no_packets() {
    let mut evidence = Evidence::new(EvidenceOptions::default());
    let alert = otwatch_rules::detect::agent_alert(
        "a",
        &otwatch_rules::alert::rule::POLICY_RELOAD_FAILED,
        Timestamp::from_nanos(1),
        "10.0.0.1:1".parse().unwrap(),
        String::new(),
    );
    evidence.alert(&alert);
    assert!(evidence.end_batch().is_empty());
    assert_eq!(evidence.counts(), EvidenceCounts::default());
}
