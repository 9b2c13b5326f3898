//! A device that stops answering, from captured frames to alerts with the pure crates only:
//! real TCP conversations (handshakes, retransmissions, resets) through dissection, the flow
//! table, the sessions and the detection engine, with capture time advancing as a live
//! capture's does when no packet comes.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use etherparse::PacketBuilder;
use otwatch_packet::detector::Detector;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_packet::pipeline::Pipeline;
use otwatch_rules::alert::Alert;
use otwatch_rules::detect::{DetectionConfig, Engine};
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;

const PLC: [u8; 4] = [10, 0, 0, 2];
const HMI: [u8; 4] = [10, 0, 0, 1];

/// Captured frames, by capture time in milliseconds.
#[derive(Default)]
struct Capture {
    frames: Vec<(u64, Vec<u8>)>,
}

/// One TCP connection of a master with the PLC (port 502), tracking both sequence numbers.
struct Conn {
    client: [u8; 4],
    port: u16,
    /// The PLC's port: 502 unless another service of it is tried.
    plc_port: u16,
    client_seq: u32,
    server_seq: u32,
    tid: u16,
}

/// Which TCP flags a segment carries.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    rst: bool,
    fin: bool,
}

impl Conn {
    fn new(client: [u8; 4], port: u16) -> Self {
        Self {
            client,
            port,
            plc_port: 502,
            client_seq: 1_000,
            server_seq: 50_000,
            tid: 0,
        }
    }

    fn segment(&self, to_server: bool, seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sport, dport, ack) = if to_server {
            (self.client, PLC, self.port, self.plc_port, self.server_seq)
        } else {
            (PLC, self.client, self.plc_port, self.port, self.client_seq)
        };
        let mut tcp = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 1000);
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.ack {
            tcp = tcp.ack(ack);
        }
        if flags.rst {
            tcp = tcp.rst();
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        let mut out = Vec::new();
        tcp.write(&mut out, payload).unwrap();
        out
    }

    /// The master's SYN (sent again by a retransmission with the same sequence number).
    fn syn(&self) -> Vec<u8> {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        self.segment(true, self.client_seq - 1, syn, &[])
    }

    /// The PLC's SYN-ACK.
    fn syn_ack(&self) -> Vec<u8> {
        let flags = Flags {
            syn: true,
            ack: true,
            ..Flags::default()
        };
        self.segment(false, self.server_seq - 1, flags, &[])
    }

    /// A request from the master (unit 1), returned with its transaction id.
    fn request(&mut self, pdu: &[u8]) -> (Vec<u8>, u16) {
        self.tid = self.tid.wrapping_add(1);
        let adu = adu(self.tid, pdu);
        let frame = self.segment(true, self.client_seq, ack(), &adu);
        self.client_seq += adu.len() as u32;
        (frame, self.tid)
    }

    /// The PLC's answer to transaction `tid`.
    fn answer(&mut self, tid: u16, pdu: &[u8]) -> Vec<u8> {
        let adu = adu(tid, pdu);
        let frame = self.segment(false, self.server_seq, ack(), &adu);
        self.server_seq += adu.len() as u32;
        frame
    }

    /// The device's stack acknowledges what the master sent, without answering.
    fn answer_ack(&self) -> Vec<u8> {
        self.segment(false, self.server_seq, ack(), &[])
    }

    /// An RST from the master or from the PLC.
    fn reset(&self, by_server: bool) -> Vec<u8> {
        let rst = Flags { rst: true, ..ack() };
        self.ending(by_server, rst)
    }

    /// A FIN from one side.
    fn fin(&self, by_server: bool) -> Vec<u8> {
        let fin = Flags { fin: true, ..ack() };
        self.ending(by_server, fin)
    }

    /// An empty segment with `flags` from one side, at its next sequence number.
    fn ending(&self, by_server: bool, flags: Flags) -> Vec<u8> {
        let seq = if by_server {
            self.server_seq
        } else {
            self.client_seq
        };
        self.segment(!by_server, seq, flags, &[])
    }
}

fn ack() -> Flags {
    Flags {
        ack: true,
        ..Flags::default()
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

const READ: &[u8] = &[3, 0, 0, 0, 2];
const READ_ANSWER: &[u8] = &[3, 4, 0, 7, 0, 8];
/// Write single register 40 with 0xFFFF: the request the PLC's firmware chokes on.
const WRITE: &[u8] = &[6, 0, 40, 0xFF, 0xFF];

impl Capture {
    fn at(&mut self, ms: u64, frame: Vec<u8>) {
        self.frames.push((ms, frame));
    }

    /// A connection opened at `ms` and polled once a second for `polls` seconds, answered
    /// after `latency` ms; returns the connection and when the polls ended.
    fn polled(&mut self, conn: &mut Conn, ms: u64, polls: u64, latency: u64) -> u64 {
        self.at(ms, conn.syn());
        self.at(ms + 1, conn.syn_ack());
        self.poll(conn, ms + 10, polls, latency)
    }

    /// Polls on an open connection.
    fn poll(&mut self, conn: &mut Conn, ms: u64, polls: u64, latency: u64) -> u64 {
        for i in 0..polls {
            let t = ms + i * 1_000;
            let (frame, tid) = conn.request(READ);
            self.at(t, frame);
            self.at(t + latency, conn.answer(tid, READ_ANSWER));
        }
        ms + polls * 1_000
    }

    /// Runs the frames through the pure pipeline in time order, advancing capture time every
    /// half second without packets as a live capture does, and closes at the end.
    fn alerts(mut self, policy: Option<&str>) -> Vec<Alert> {
        self.frames.sort_by_key(|(ms, _)| *ms);
        let policy = policy.map(|p| std::sync::Arc::new(Policy::parse(p, "p.toml").unwrap().0));
        let engine = Engine::new(DetectionConfig::default(), policy);
        let mut pipeline = Pipeline::new(FlowConfig::default(), Detector::new(engine, Vec::new()));
        let mut clock = 0;
        for (ms, frame) in &self.frames {
            while clock + 500 < *ms {
                clock += 500;
                pipeline.tick(Timestamp::from_nanos(clock * 1_000_000));
            }
            clock = clock.max(*ms);
            pipeline.packet(&CapturedPacket {
                ts: Timestamp::from_nanos(ms * 1_000_000),
                link: LinkType::Ethernet,
                data: frame,
                orig_len: frame.len() as u32,
            });
        }
        pipeline.finish();
        let alerts = pipeline.into_observer().into_sink();
        for a in &alerts {
            assert_eq!(otwatch_rules::validate::alert(a), Ok(()), "{a:?}");
        }
        alerts
    }
}

fn of_rule<'a>(alerts: &'a [Alert], rule: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

fn secs(ts: Timestamp) -> f64 {
    ts.as_nanos() as f64 / 1e9
}

#[test]
fn a_plc_that_crashes_on_a_write_is_down_within_30_s_naming_the_write_then_recovers() {
    let mut capture = Capture::default();
    let mut conn = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut conn, 1_000, 20, 5);
    // The write the firmware chokes on: never answered, resent by the master's TCP stack.
    let (write, _) = conn.request(WRITE);
    capture.at(end, write.clone());
    for backoff in [300, 900, 2_100, 4_500] {
        capture.at(end + backoff, write.clone());
    }
    // The master gives up on the connection and reconnects every 3 s: no SYN-ACK comes.
    capture.at(end + 8_000, conn.reset(false));
    let mut port = 40_001;
    let mut t = end + 9_000;
    while t < end + 45_000 {
        let attempt = Conn::new(HMI, port);
        capture.at(t, attempt.syn());
        capture.at(t + 1_000, attempt.syn());
        port += 1;
        t += 3_000;
    }
    // The PLC is back: it takes the next connection and answers.
    let mut back = Conn::new(HMI, port);
    capture.polled(&mut back, t, 5, 5);

    let alerts = capture.alerts(None);
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    let down = down[0];
    let silence_began = end as f64 / 1e3;
    let raised = secs(down.ts) - silence_began;
    assert!((0.0..=30.0).contains(&raised), "raised {raised} s after");
    assert_eq!(down.function.as_deref(), Some("write_single_register"));
    assert_eq!(down.address, Some(40));
    assert_eq!(down.src_ip.to_string(), "10.0.0.1");
    assert_eq!(down.dst_ip.to_string(), "10.0.0.2");
    assert_eq!(down.technique, ["T0814", "T0826"]);
    assert_eq!(
        down.evidence.as_deref(),
        Some(&*hex(&adu(21, WRITE))),
        "the evidence is the write's frame"
    );
    let message = down.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("write_single_register unit 1 at 40"),
        "{message}"
    );
    assert!(message.contains("unanswered"), "{message}");

    let up = of_rule(&alerts, "availability.device_recovered");
    assert_eq!(up.len(), 1, "{alerts:#?}");
    let downtime = secs(up[0].ts) - silence_began;
    assert!(downtime > 45.0, "{downtime}");
    let message = up[0].message.as_deref().unwrap_or_default();
    assert!(message.contains(&format!("{:.1} s", downtime)), "{message}");
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_device_that_answers_late_even_past_the_transaction_timeout_is_not_down() {
    let mut capture = Capture::default();
    let mut slow = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut slow, 1_000, 60, 8_000);
    // Later still: 12 s, past the 10 s the tracker waits, so the answers come unsolicited.
    capture.poll(&mut slow, end, 60, 12_000);
    let alerts = capture.alerts(None);
    assert!(
        of_rule(&alerts, "availability.device_unresponsive").is_empty(),
        "{alerts:#?}"
    );
}

#[test]
fn a_master_that_disconnects_or_gives_up_after_one_timeout_raises_nothing() {
    let mut capture = Capture::default();
    // One master polls, then says goodbye properly.
    let mut leaving = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut leaving, 1_000, 10, 5);
    capture.at(end, leaving.fin(false));
    capture.at(end + 1, leaving.fin(true));
    // Another polls, asks once more without an answer and resets the connection.
    let mut impatient = Conn::new([10, 0, 0, 5], 41_000);
    let end = capture.polled(&mut impatient, 1_000, 10, 5);
    let (unanswered, _) = impatient.request(READ);
    capture.at(end, unanswered);
    capture.at(end + 3_000, impatient.reset(false));
    // A third keeps polling for two minutes, so time passes with traffic.
    let mut steady = Conn::new([10, 0, 0, 6], 42_000);
    capture.polled(&mut steady, 1_000, 120, 5);
    let alerts = capture.alerts(None);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_device_that_resets_a_waiting_connection_and_stays_silent_is_down() {
    let mut capture = Capture::default();
    let mut conn = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut conn, 1_000, 10, 5);
    let (unanswered, _) = conn.request(READ);
    capture.at(end, unanswered);
    capture.at(end + 2_000, conn.reset(true));
    // Nothing more from either side; the live capture's clock runs on.
    let mut other = Conn::new([10, 0, 0, 7], 43_000);
    capture.polled(&mut other, end, 1, 5);
    let clock = Conn::new([10, 0, 0, 8], 44_000);
    capture.at(end + 40_000, clock.syn());
    let alerts = capture.alerts(None);
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    assert!(
        down[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("reset the connection"),
        "{down:#?}"
    );
    assert_eq!(down[0].src_ip.to_string(), "10.0.0.1");
}

#[test]
fn a_capture_that_starts_mid_connection_or_ends_while_requests_wait_raises_nothing() {
    let mut capture = Capture::default();
    // Picked up mid-connection: answers to requests the capture never saw come first.
    let mut conn = Conn::new(HMI, 40_000);
    conn.tid = 100;
    capture.at(1_000, conn.answer(98, READ_ANSWER));
    capture.at(1_005, conn.answer(99, READ_ANSWER));
    let end = capture.poll(&mut conn, 2_000, 30, 5);
    // The last 15 s: requests and retransmissions with no answer, then the capture ends.
    let mut t = end;
    while t < end + 15_000 {
        let (frame, _) = conn.request(READ);
        capture.at(t, frame.clone());
        capture.at(t + 400, frame);
        t += 1_000;
    }
    let alerts = capture.alerts(None);
    assert!(
        of_rule(&alerts, "availability.device_unresponsive").is_empty(),
        "{alerts:#?}"
    );
}

#[test]
fn the_policy_tunes_how_long_a_device_may_be_silent_or_turns_the_rule_off() {
    let crash = || {
        let mut capture = Capture::default();
        let mut conn = Conn::new(HMI, 40_000);
        let end = capture.polled(&mut conn, 1_000, 10, 5);
        let (write, _) = conn.request(WRITE);
        for i in 0..12 {
            capture.at(end + i * 1_000, write.clone());
        }
        // The live capture's clock runs on.
        let clock = Conn::new([10, 0, 0, 8], 44_000);
        capture.at(end + 40_000, clock.syn());
        (capture, end)
    };
    let tuned = |settings: &str| {
        format!(
            "version = 1\n[[asset]]\nname = \"plc\"\naddresses = [\"10.0.0.2\"]\n\
             [[asset]]\nname = \"hmi\"\naddresses = [\"10.0.0.1\"]\n\
             [[allow]]\nfrom = \"hmi\"\nto = \"plc\"\nfunctions = [\"read\", \"write\"]\n\
             [detectors.\"availability.device_unresponsive\"]\n{settings}\n"
        )
    };
    let (capture, end) = crash();
    let alerts = capture.alerts(Some(&tuned("window = \"5s\"")));
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    assert!((secs(down[0].ts) - end as f64 / 1e3 - 5.0).abs() < 1e-6);
    let (capture, _) = crash();
    let alerts = capture.alerts(Some(&tuned("enabled = false")));
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn connections_refused_on_another_port_of_the_device_are_not_an_outage() {
    let mut capture = Capture::default();
    let mut conn = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut conn, 1_000, 10, 5);
    // An engineering tool knocks on the PLC's S7 port every 3 s for a minute: refused.
    for i in 0..20 {
        let mut other = Conn::new(HMI, 41_000 + i);
        other.plc_port = 102;
        let t = end + u64::from(i) * 3_000;
        capture.at(t, other.syn());
        capture.at(t + 1, other.reset(true));
    }
    // The Modbus poll goes on, slowly.
    capture.poll(&mut conn, end + 30_000, 2, 5);
    let alerts = capture.alerts(None);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_request_the_device_drops_while_it_answers_the_next_ones_is_no_outage() {
    let mut capture = Capture::default();
    let mut conn = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut conn, 1_000, 10, 5);
    // One request lost by the device; the poll goes on, answered, for 9 s. The master then
    // asks once more and hangs up: the tracker gives up on both, and only the last one was
    // left waiting by a device that had answered everything since the lost one.
    let (lost, _) = conn.request(READ);
    capture.at(end, lost);
    let next = capture.poll(&mut conn, end + 500, 9, 5);
    let (last, _) = conn.request(READ);
    capture.at(next + 1_000, last);
    capture.at(next + 2_000, conn.reset(false));
    // Time passes with traffic.
    let mut other = Conn::new([10, 0, 0, 9], 45_000);
    capture.polled(&mut other, 1_000, 60, 5);
    let alerts = capture.alerts(None);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_connection_left_unanswered_while_another_of_the_master_is_answered_is_no_outage() {
    let mut capture = Capture::default();
    let mut first = Conn::new(HMI, 40_000);
    capture.polled(&mut first, 1_000, 60, 5);
    // A second connection of the same master whose requests go unanswered until it resets,
    // while the first keeps being answered: the device is alive.
    let mut second = Conn::new(HMI, 40_001);
    let t = capture.polled(&mut second, 10_000, 2, 5);
    for i in 0..5 {
        let (frame, _) = second.request(READ);
        capture.at(t + i * 1_000, frame);
    }
    capture.at(t + 6_000, second.reset(false));
    let alerts = capture.alerts(None);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn a_device_silent_to_one_master_is_down_for_it_while_it_answers_another() {
    let mut capture = Capture::default();
    let mut hmi = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut hmi, 1_000, 10, 5);
    // The HMI's requests go unanswered for 40 s; its stack keeps resending them.
    let mut t = end;
    while t < end + 40_000 {
        let (frame, _) = hmi.request(READ);
        capture.at(t, frame.clone());
        capture.at(t + 300, frame);
        t += 1_000;
    }
    // Meanwhile the device answers a historian, polled from another address.
    let mut historian = Conn::new([10, 0, 0, 9], 45_000);
    capture.polled(&mut historian, 1_000, 60, 5);
    let alerts = capture.alerts(None);
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    assert_eq!(down[0].src_ip.to_string(), "10.0.0.1");
    let raised = secs(down[0].ts) - end as f64 / 1e3;
    assert!((raised - 20.0).abs() < 1e-6, "raised {raised} s after");
}

#[test]
fn a_slow_poller_or_a_short_window_is_raised_from_distinct_requests() {
    // The device hangs; its stack still acknowledges, so nothing is resent: the master asks
    // again every `every` ms on the same connection, each time a new request.
    let hang = |every: u64| {
        let mut capture = Capture::default();
        let mut conn = Conn::new(HMI, 40_000);
        let end = capture.polled(&mut conn, 1_000, 10, 5);
        let mut t = end;
        while t < end + 60_000 {
            let (frame, _) = conn.request(READ);
            capture.at(t, frame);
            capture.at(t + 1, conn.answer_ack());
            t += every;
        }
        (capture, end)
    };
    let (capture, end) = hang(10_000);
    let alerts = capture.alerts(None);
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    assert!((secs(down[0].ts) - end as f64 / 1e3 - 20.0).abs() < 1e-6);
    let (capture, end) = hang(1_000);
    let policy = "version = 1\n[[asset]]\nname = \"plc\"\naddresses = [\"10.0.0.2\"]\n\
                  [[asset]]\nname = \"hmi\"\naddresses = [\"10.0.0.1\"]\n\
                  [[allow]]\nfrom = \"hmi\"\nto = \"plc\"\nfunctions = [\"read\"]\n\
                  [detectors.\"availability.device_unresponsive\"]\nwindow = \"5s\"\n";
    let alerts = capture.alerts(Some(policy));
    let down = of_rule(&alerts, "availability.device_unresponsive");
    assert_eq!(down.len(), 1, "{alerts:#?}");
    assert!((secs(down[0].ts) - end as f64 / 1e3 - 5.0).abs() < 1e-6);
}

#[test]
fn a_request_dropped_by_a_slow_poller_s_device_is_no_outage() {
    // Polled every 30 s; the device drops one request and answers the next at once.
    let mut capture = Capture::default();
    let mut conn = Conn::new(HMI, 40_000);
    let end = capture.polled(&mut conn, 1_000, 3, 5);
    let (lost, _) = conn.request(READ);
    capture.at(end, lost);
    capture.poll(&mut conn, end + 30_000, 1, 5);
    capture.poll(&mut conn, end + 60_000, 2, 5);
    let clock = Conn::new([10, 0, 0, 8], 44_000);
    capture.at(end + 120_000, clock.syn());
    let alerts = capture.alerts(None);
    assert!(alerts.is_empty(), "{alerts:#?}");
}
