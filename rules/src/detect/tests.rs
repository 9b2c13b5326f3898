use std::net::SocketAddr;

use smallvec::SmallVec;

use super::*;
use crate::Direction;
use crate::flow::Protocol;
use crate::framing::Encapsulation;
use crate::modbus::{DecodeError, Response};
use crate::test_flow::PLANT_POLICY as POLICY;
use crate::transaction::Transaction;

const CLIENT: &str = "10.0.0.9:40000";
const SERVER: &str = "10.0.0.3:502";

fn flow() -> FlowInfo {
    FlowInfo {
        encapsulation: Some(Encapsulation::Mbap),
        requests: 1,
        handshake_seen: true,
        ..FlowInfo::new(
            1,
            Protocol::Tcp,
            CLIENT.parse().unwrap(),
            SERVER.parse().unwrap(),
            Timestamp::from_secs(1_000),
        )
    }
}

/// The session's event for a request (transaction id 1) to `unit`.
fn request_event<'a>(
    unit: u8,
    request: Request<'a>,
    raw: &'a [u8],
    outstanding: usize,
) -> Event<'a> {
    Event::Request {
        transaction_id: Some(1),
        unit_id: unit,
        request,
        raw,
        outstanding,
    }
}

fn at(secs: f64) -> Timestamp {
    Timestamp::from_nanos((1_000.0e9 + secs * 1e9) as u64)
}

/// A test bench: an engine, a flow, and the alerts raised so far.
struct Bench {
    engine: Engine,
    flow: FlowInfo,
    alerts: Vec<Alert>,
}

impl Bench {
    fn new() -> Self {
        Self::with_policy(None)
    }

    fn with_policy(policy: Option<&str>) -> Self {
        let policy = policy.map(|text| Arc::new(Policy::parse(text, "test.toml").unwrap().0));
        Self {
            engine: Engine::new(DetectionConfig::default(), policy),
            flow: flow(),
            alerts: Vec::new(),
        }
    }

    fn event(&mut self, ts: Timestamp, event: FlowEvent<'_>) {
        let alerts = &mut self.alerts;
        self.engine
            .observe(ts, &self.flow, &event, &mut |a| alerts.push(a));
    }

    fn request(&mut self, ts: Timestamp, unit: u8, pdu: &[u8]) {
        self.request_outstanding(ts, unit, pdu, 1);
    }

    fn request_outstanding(&mut self, ts: Timestamp, unit: u8, pdu: &[u8], outstanding: usize) {
        let (request, _) = Request::decode_prefix(pdu).unwrap();
        self.event(
            ts,
            FlowEvent::Session(&request_event(unit, request, pdu, outstanding)),
        );
    }

    fn exchange(&mut self, ts: Timestamp, unit: u8, request: &[u8], response: &[u8]) {
        self.request(ts, unit, request);
        let t = Transaction {
            outcome: Outcome::Answered,
            transaction_id: Some(1),
            unit_id: unit,
            request_ts: Some(ts),
            response_ts: Some(ts),
            request: Request::decode(request).ok(),
            request_pdu: request,
            response: Response::decode(response).ok(),
        };
        self.event(ts, FlowEvent::Session(&Event::Transaction(t)));
    }

    fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        let alerts = &mut self.alerts;
        self.engine
            .clock_stepped(before, now, &mut |a| alerts.push(a));
    }

    fn finish(&mut self) -> &[Alert] {
        let alerts = &mut self.alerts;
        self.engine.finish(&mut |a| alerts.push(a));
        // Whatever the engine raises, the collector takes.
        for a in &self.alerts {
            assert_eq!(crate::validate::alert(a), Ok(()), "{a:?}");
        }
        &self.alerts
    }

    fn rules(&mut self) -> Vec<String> {
        self.finish().iter().map(|a| a.rule.clone()).collect()
    }

    /// The alerts of `rule`, in the order raised.
    fn alerts_of(&mut self, rule: &RuleMeta) -> Vec<Alert> {
        self.finish()
            .iter()
            .filter(|a| a.rule == rule.id)
            .cloned()
            .collect()
    }

    fn raised(&mut self, rule: &RuleMeta) -> usize {
        self.finish().iter().filter(|a| a.rule == rule.id).count()
    }
}

// ---- commands dangerous by themselves ----

#[test]
fn force_listen_only_raises_t0814_and_return_query_data_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 10, &[8, 0, 4, 0, 0]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "diag.force_listen_only");
    assert_eq!(alert.severity, Severity::High);
    assert!(alert.technique.contains(&"T0814".to_string()));
    assert_eq!(alert.src_ip.to_string(), "10.0.0.9");
    assert_eq!(alert.dst_port, 502);
    assert_eq!(alert.function.as_deref(), Some("diagnostics"));
    assert_eq!(alert.evidence.as_deref(), Some("0800040000"));

    let mut benign = Bench::new();
    benign.request(at(0.0), 10, &[8, 0, 0, 0x12, 0x34]);
    assert!(benign.rules().is_empty());
}

#[test]
fn restart_communications_raises_t0816_and_a_counter_read_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[8, 0, 1, 0, 0]);
    assert_eq!(b.raised(&rule::RESTART_COMMUNICATIONS), 1);
    let mut benign = Bench::new();
    benign.request(at(0.0), 1, &[8, 0, 11, 0, 0]);
    assert!(benign.rules().is_empty());
}

#[test]
fn clear_counters_raises_and_a_counter_read_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[8, 0, 10, 0, 0]);
    assert_eq!(b.raised(&rule::CLEAR_COUNTERS), 1);
    let mut benign = Bench::new();
    benign.request(at(0.0), 1, &[8, 0, 12, 0, 0]);
    assert!(benign.rules().is_empty());
}

#[test]
fn read_device_identification_raises_t0888_and_canopen_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[0x2b, 0x0e, 1, 0]);
    assert_eq!(b.finish()[0].technique, vec!["T0888"]);
    let mut benign = Bench::new();
    benign.request(at(0.0), 1, &[0x2b, 0x0d, 1, 2]);
    assert!(benign.rules().is_empty());
}

#[test]
fn report_server_id_raises_and_read_exception_status_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[0x11]);
    assert_eq!(b.raised(&rule::REPORT_SERVER_ID), 1);
    let mut benign = Bench::new();
    benign.request(at(0.0), 1, &[0x07]);
    assert!(benign.rules().is_empty());
}

#[test]
fn umas_program_transfer_and_mode_changes_raise_and_umas_reads_do_not() {
    for (code, meta) in [
        (0x30, &rule::UMAS_PROGRAM_DOWNLOAD),
        (0x31, &rule::UMAS_PROGRAM_DOWNLOAD),
        (0x33, &rule::UMAS_PROGRAM_UPLOAD),
        (0x40, &rule::UMAS_START),
        (0x41, &rule::UMAS_STOP),
    ] {
        let mut b = Bench::new();
        b.request(at(0.0), 0, &[0x5a, 0, code, 0xff]);
        assert_eq!(b.raised(meta), 1, "UMAS {code:#x}");
    }
    let mut benign = Bench::new();
    benign.request(at(0.0), 0, &[0x5a, 0, 0x02]);
    assert!(benign.rules().is_empty());
    let stop = {
        let mut b = Bench::new();
        b.request(at(0.0), 0, &[0x5a, 0, 0x41]);
        b.finish()[0].clone()
    };
    assert_eq!(stop.severity, Severity::Critical);
    assert_eq!(stop.technique, vec!["T0858", "T0881"]);
}

#[test]
fn file_record_and_modicon_programming_raise_and_plain_reads_do_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[0x14, 7, 6, 0, 4, 0, 1, 0, 2]);
    b.request(at(0.0), 1, &[0x15, 9, 6, 0, 4, 0, 7, 0, 1, 0x12, 0x34]);
    b.request(at(0.0), 1, &[0x7d, 1, 2, 3]);
    assert_eq!(
        b.rules(),
        vec!["file.read_record", "file.write_record", "program.modicon"]
    );
    let mut benign = Bench::new();
    benign.request(at(0.0), 1, &[3, 0, 0, 0, 10]);
    assert!(benign.rules().is_empty());
}

#[test]
fn broadcast_write_raises_and_broadcast_read_does_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 0, &[6, 0, 1, 0, 3]);
    assert_eq!(b.raised(&rule::BROADCAST_WRITE), 1);
    let mut benign = Bench::new();
    benign.request(at(0.0), 0, &[3, 0, 1, 0, 3]);
    assert!(benign.rules().is_empty());
}

// ---- protocol anomalies ----

fn decode_error(b: &mut Bench, error: DecodeError, raw: &[u8]) {
    b.event(
        at(0.0),
        FlowEvent::Session(&Event::DecodeError {
            direction: Direction::ToServer,
            error,
            transaction_id: None,
            unit_id: None,
            raw,
        }),
    );
}

#[test]
fn decode_errors_map_to_their_anomaly_rules() {
    let cases = [
        (
            DecodeError::LengthTooLarge(0x8804),
            "proto.illegal_adu_size",
        ),
        (DecodeError::LengthTooSmall(1), "proto.illegal_adu_size"),
        (DecodeError::TrailingBytes(1), "proto.length_mismatch"),
        (
            DecodeError::LengthMismatch {
                declared: 6,
                present: 2,
            },
            "proto.length_mismatch",
        ),
        (
            DecodeError::InvalidProtocolId(0x10),
            "proto.invalid_protocol_id",
        ),
        (DecodeError::UnknownFunction(42), "proto.malformed"),
    ];
    for (error, id) in cases {
        let mut b = Bench::new();
        decode_error(&mut b, error, &[0, 1, 0, 0, 0x88, 4]);
        assert_eq!(b.rules(), vec![id], "{error:?}");
    }
}

#[test]
fn non_modbus_on_the_modbus_port_raises_t0885() {
    let mut b = Bench::new();
    b.event(
        at(0.0),
        FlowEvent::Session(&Event::NotModbus {
            direction: Direction::ToServer,
            sample: b"\x16\x03\x01",
        }),
    );
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "proto.non_modbus");
    assert_eq!(alert.technique, vec!["T0885"]);
    assert_eq!(alert.evidence.as_deref(), Some("160301"));
}

#[test]
fn conflicting_overlap_raises_evasion() {
    let mut b = Bench::new();
    b.event(
        at(0.0),
        FlowEvent::OverlapConflict {
            direction: Direction::ToServer,
            bytes: 4,
        },
    );
    assert_eq!(b.raised(&rule::OVERLAP_CONFLICT), 1);
    let mut benign = Bench::new();
    benign.event(
        at(0.0),
        FlowEvent::Retransmission {
            direction: Direction::ToServer,
            bytes: 4,
        },
    );
    assert!(benign.rules().is_empty());
}

// ---- exception bursts ----

fn exceptions(b: &mut Bench, code: u8, times: &[f64]) {
    for t in times {
        b.exchange(at(*t), 1, &[3, 0, 0, 0, 1], &[0x83, code]);
    }
}

#[test]
fn three_busy_exceptions_in_a_minute_are_a_storm_and_two_are_not() {
    let mut b = Bench::new();
    exceptions(&mut b, 6, &[0.0, 10.0, 20.0]);
    let alerts = b.finish().to_vec();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "dos.busy_exception_storm");
    assert_eq!(alerts[0].count, 3);
    assert_eq!(
        alerts[0].src_ip.to_string(),
        "10.0.0.3",
        "the busy server is the source"
    );
    assert_eq!(alerts[0].exception.as_deref(), Some("server_device_busy"));

    let mut two = Bench::new();
    exceptions(&mut two, 6, &[0.0, 10.0]);
    assert!(two.rules().is_empty());
    let mut spread = Bench::new();
    exceptions(&mut spread, 6, &[0.0, 40.0, 80.0]);
    assert!(
        spread.rules().is_empty(),
        "three exceptions over 80 s are not a burst"
    );
}

#[test]
fn acknowledge_exceptions_make_an_acknowledge_storm() {
    let mut b = Bench::new();
    exceptions(&mut b, 5, &[0.0, 1.0, 2.0]);
    assert_eq!(b.raised(&rule::ACKNOWLEDGE_STORM), 1);
}

#[test]
fn illegal_address_bursts_are_a_points_scan_and_illegal_function_bursts_a_function_scan() {
    let mut b = Bench::new();
    exceptions(&mut b, 2, &[0.0, 1.0, 2.0]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "recon.points_scan");
    assert_eq!(
        alert.src_ip.to_string(),
        "10.0.0.9",
        "the scanner is the source"
    );
    let mut f = Bench::new();
    exceptions(&mut f, 1, &[0.0, 1.0, 2.0]);
    assert_eq!(f.raised(&rule::FUNCTION_CODE_SCAN), 1);
    let mut one = Bench::new();
    exceptions(&mut one, 2, &[0.0]);
    assert!(
        one.rules().is_empty(),
        "one bad address is a typo, not a scan"
    );
}

// ---- scans, sweeps, floods, brute force ----

#[test]
fn ten_unit_ids_in_a_minute_are_a_unit_scan_and_a_four_unit_gateway_is_not() {
    let mut b = Bench::new();
    for unit in 1..=10 {
        b.request(at(f64::from(unit)), unit, &[3, 0, 0, 0, 1]);
    }
    assert_eq!(b.raised(&rule::UNIT_ID_SCAN), 1);
    let mut gateway = Bench::new();
    for round in 0..20 {
        for unit in [1, 2, 3, 7] {
            gateway.request(at(f64::from(round)), unit, &[4, 0, 0, 0, 8]);
        }
    }
    assert!(gateway.rules().is_empty());
}

#[test]
fn after_the_clock_steps_back_windows_restart_and_folded_repeats_are_reported_at_once() {
    // Six unit ids, the clock corrected an hour back, six more: two windows of six, no scan
    // (one window of twelve, dated an hour ahead, would be one).
    let mut b = Bench::new();
    for unit in 1..=6 {
        b.request(at(f64::from(unit)), unit, &[3, 0, 0, 0, 1]);
    }
    b.clock_stepped(at(6.0), at(-3_600.0));
    for unit in 7..=12 {
        b.request(at(f64::from(unit) - 3_600.0), unit, &[3, 0, 0, 0, 1]);
    }
    assert_eq!(b.raised(&rule::UNIT_ID_SCAN), 0);

    // Repeats folded before the step are reported by it, not an hour later.
    let mut b = Bench::new();
    for n in 0..3 {
        b.request(at(f64::from(n)), 10, &[8, 0, 4, 0, 0]);
    }
    assert_eq!(b.alerts.len(), 1);
    b.clock_stepped(at(2.0), at(-3_600.0));
    assert_eq!(b.alerts.len(), 2);
    assert_eq!(b.alerts[1].count, 2);
}

#[test]
fn reads_walking_through_addresses_are_a_sweep_and_polling_is_not() {
    let mut b = Bench::new();
    for i in 0..20u16 {
        let addr = (i * 10).to_be_bytes();
        b.request(at(f64::from(i)), 1, &[3, addr[0], addr[1], 0, 10]);
    }
    assert_eq!(b.raised(&rule::ADDRESS_SWEEP), 1);
    let mut polling = Bench::new();
    for i in 0..300 {
        for (hi, lo) in [(0, 0), (0, 100), (0, 200)] {
            polling.request(at(f64::from(i) * 0.2), 1, &[3, hi, lo, 0, 10]);
        }
    }
    assert!(polling.rules().is_empty());
}

#[test]
fn requests_piling_up_unanswered_are_a_flood() {
    let mut b = Bench::new();
    b.request_outstanding(at(0.0), 1, &[3, 0, 0, 0, 1], 100);
    assert_eq!(b.raised(&rule::REQUEST_FLOOD), 1);
    let mut benign = Bench::new();
    benign.request_outstanding(at(0.0), 1, &[3, 0, 0, 0, 1], 99);
    assert!(benign.rules().is_empty());
}

#[test]
fn a_coil_toggled_sixty_times_in_a_minute_is_brute_force_and_cyclic_rewrites_are_not() {
    let mut b = Bench::new();
    for i in 0..61u16 {
        let value = if i % 2 == 0 { 0xff } else { 0 };
        b.request(at(f64::from(i) * 0.5), 1, &[5, 0, 7, value, 0]);
    }
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "impact.brute_force_io");
    assert_eq!(alert.technique, vec!["T0806"]);
    assert_eq!(alert.address, Some(7));

    let mut cyclic = Bench::new();
    for i in 0..500 {
        cyclic.request(at(f64::from(i) * 0.1), 1, &[5, 0, 7, 0xff, 0]);
    }
    assert!(cyclic.rules().is_empty());
}

// ---- responses ----

fn unsolicited(b: &mut Bench, ts: Timestamp) {
    let t = Transaction {
        outcome: Outcome::Unsolicited,
        transaction_id: Some(77),
        unit_id: 1,
        request_ts: None,
        response_ts: Some(ts),
        request: None,
        request_pdu: &[],
        response: Response::decode(&[3, 2, 0, 1]).ok(),
    };
    b.event(ts, FlowEvent::Session(&Event::Transaction(t)));
}

#[test]
fn response_without_request_after_the_handshake_is_spoofing() {
    let mut b = Bench::new();
    unsolicited(&mut b, at(30.0));
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "spoof.unsolicited_response");
    assert_eq!(alert.technique, vec!["T0856"]);
    assert_eq!(alert.src_ip.to_string(), "10.0.0.3");
}

#[test]
fn response_without_request_right_after_a_mid_stream_pickup_is_not() {
    let mut b = Bench::new();
    b.flow.handshake_seen = false;
    b.flow.requests = 0;
    unsolicited(&mut b, at(1.0));
    assert!(b.rules().is_empty());
    let mut lossy = Bench::new();
    lossy.flow.last_gap = Some(at(25.0));
    unsolicited(&mut lossy, at(30.0));
    assert!(
        lossy.rules().is_empty(),
        "the request may have been lost by the capture"
    );
}

#[test]
fn response_that_does_not_match_its_request_is_reported() {
    let mut b = Bench::new();
    b.event(
        at(0.0),
        FlowEvent::Session(&Event::ResponseMismatch {
            error: DecodeError::EchoMismatch,
            transaction_id: Some(1),
            unit_id: 1,
        }),
    );
    assert_eq!(b.raised(&rule::RESPONSE_MISMATCH), 1);
}

// ---- baseline ----

#[test]
fn a_pair_first_seen_after_the_baseline_is_new_and_one_seen_during_it_is_not() {
    let mut b = Bench::new();
    b.request(at(0.0), 1, &[3, 0, 0, 0, 1]);
    b.flow.client = "10.0.0.66:40000".parse::<SocketAddr>().unwrap();
    b.request(at(601.0), 1, &[3, 0, 0, 0, 1]);
    let alerts = b.finish().to_vec();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "baseline.new_pair");
    assert_eq!(alerts[0].src_ip.to_string(), "10.0.0.66");
}

// ---- folding and ids ----

#[test]
fn a_three_thousand_request_flood_is_two_alerts_not_three_thousand() {
    let mut b = Bench::new();
    for i in 0..3000 {
        b.request(at(f64::from(i) * 0.01), 1, &[8, 0, 4, 0, 0]);
    }
    let alerts = b.finish().to_vec();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].count, 1);
    assert_eq!(alerts[1].count, 2999);
    assert!(alerts[1].first_ts > alerts[0].first_ts);
    assert_ne!(alerts[0].id, alerts[1].id);
}

#[test]
fn repeats_after_the_window_start_a_new_alert() {
    let mut b = Bench::new();
    for t in [0.0, 30.0, 61.0, 62.0] {
        b.request(at(t), 1, &[0x11]);
    }
    let counts: Vec<u64> = b.finish().iter().map(|a| a.count).collect();
    assert_eq!(counts, vec![1, 1, 1, 1]);
}

#[test]
fn alert_ids_are_stable_across_runs_and_differ_between_alerts() {
    let run = || {
        let mut b = Bench::new();
        b.request(at(0.0), 1, &[8, 0, 4, 0, 0]);
        b.request(at(1.0), 1, &[0x11]);
        b.finish().iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert_ne!(first[0], first[1]);
    assert_eq!(first[0].len(), 32);
}

#[test]
fn alert_round_trips_through_json_with_rfc3339_times() {
    let mut b = Bench::new();
    b.request(at(0.5), 1, &[8, 0, 4, 0, 0]);
    let alert = b.finish()[0].clone();
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(json["ts"], "1970-01-01T00:16:40.500000Z");
    assert_eq!(json["schema"], 3);
    assert_eq!(json["severity"], "high");
    let back: Alert = serde_json::from_value(json).unwrap();
    assert_eq!(back, alert);
}

// ---- policy ----

/// `POLICY` with `line` added to its rule for the scada master.
fn with_scada_rule(line: &str) -> String {
    let last = "write_values = { min = 0, max = 1500 }\n";
    POLICY.replace(last, &format!("{last}{line}\n"))
}

/// `POLICY` with `line` added to its rule for the hmi.
fn with_hmi_rule(line: &str) -> String {
    let last = "functions = [\"read\"]\n";
    POLICY.replace(last, &format!("{last}{line}\n"))
}

#[test]
fn allowed_traffic_raises_nothing() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.exchange(
        at(0.0),
        1,
        &[3, 0, 0, 0, 10],
        &[
            3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    b.request(at(1.0), 1, &[6, 1, 0x90, 0, 100]);
    assert!(b.rules().is_empty(), "{:?}", b.rules());
}

#[test]
fn write_from_read_only_master_raises_t0855() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    b.request(at(0.0), 1, &[6, 1, 0x90, 0, 100]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "policy.unauthorized_write");
    assert!(alert.technique.contains(&"T0855".to_string()));
    assert_eq!(alert.values, Some(vec![100]));
    assert!(alert.message.unwrap().contains("hmi reads"));
}

#[test]
fn master_the_policy_does_not_know_raises_unknown_master() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.flow.client = "10.0.0.66:40000".parse().unwrap();
    b.request(at(0.0), 1, &[3, 0, 0, 0, 1]);
    assert_eq!(b.rules(), vec!["policy.unknown_master"]);
}

#[test]
fn setpoint_outside_its_bounds_raises_t0836() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.request(at(0.0), 1, &[6, 1, 0x90, 0x07, 0xd0]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "policy.setpoint_out_of_bounds");
    assert_eq!(alert.values, Some(vec![2000]));
}

#[test]
fn write_outside_the_covered_ranges_raises_write_outside_ranges() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.request(at(0.0), 1, &[6, 0, 200, 0, 1]);
    assert_eq!(b.rules(), vec!["policy.write_outside_ranges"]);
}

#[test]
fn function_the_policy_never_allows_raises_unauthorized_function() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.request(at(0.0), 1, &[8, 0, 0, 0, 0]);
    assert_eq!(b.rules(), vec!["policy.unauthorized_function"]);
}

#[test]
fn with_a_policy_built_in_detectors_still_run_and_new_pairs_are_not_baselined() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.request(at(700.0), 1, &[8, 0, 4, 0, 0]);
    assert_eq!(
        b.rules(),
        vec!["diag.force_listen_only", "policy.unauthorized_function"]
    );
}

#[test]
fn tuning_disables_recolours_and_suppresses_detectors() {
    let policy = format!(
        "{POLICY}\n[detectors.\"recon.report_server_id\"]\nenabled = false\n\n[detectors.\"diag.force_listen_only\"]\nseverity = \"critical\"\n\n[detectors.\"diag.clear_counters\"]\nsuppress = [\"scada\"]\n"
    );
    let mut b = Bench::with_policy(Some(&policy));
    b.request(at(0.0), 1, &[0x11]);
    b.request(at(1.0), 1, &[8, 0, 4, 0, 0]);
    b.request(at(2.0), 1, &[8, 0, 10, 0, 0]);
    let builtin: Vec<(String, Severity)> = b
        .finish()
        .iter()
        .filter(|a| !a.rule.starts_with("policy."))
        .map(|a| (a.rule.clone(), a.severity))
        .collect();
    assert_eq!(
        builtin,
        vec![("diag.force_listen_only".to_string(), Severity::Critical)]
    );
}

#[test]
fn explicit_alert_rule_raises_with_its_severity_technique_and_threshold() {
    let policy = format!(
        "{POLICY}\n[[alert]]\nname = \"setpoint-change\"\nfrom = \"any\"\nto = \"plc\"\nfunctions = [\"write\"]\nholding_registers = \"400-403\"\nseverity = \"low\"\ntechnique = [\"T0836\"]\nmessage = \"setpoint changed on the PLC\"\nthreshold = 2\n"
    );
    let mut b = Bench::with_policy(Some(&policy));
    b.request(at(0.0), 1, &[6, 1, 0x90, 0, 100]);
    assert!(b.alerts.is_empty(), "below the threshold");
    b.request(at(1.0), 1, &[6, 1, 0x90, 0, 101]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "policy.alert.setpoint-change");
    assert_eq!(alert.severity, Severity::Low);
    assert_eq!(alert.technique, vec!["T0836"]);
    assert_eq!(alert.count, 2);
    assert_eq!(
        alert.message.as_deref(),
        Some("setpoint changed on the PLC")
    );
}

#[test]
fn an_alert_rule_still_matches_a_poll_whose_verdict_is_remembered() {
    let policy = format!(
        "{POLICY}\n[[alert]]\nname = \"setpoint-read\"\nfrom = \"any\"\nto = \"plc\"\nfunctions = [\"read\"]\nholding_registers = \"400-403\"\nseverity = \"low\"\nthreshold = 3\n"
    );
    let mut b = Bench::with_policy(Some(&policy));
    // The same allowed read three times: the second and third are answered from the pair's
    // verdict memory, and the alert rule must see them all.
    for t in [0.0, 1.0, 2.0] {
        b.request(at(t), 1, &[3, 1, 0x90, 0, 4]);
    }
    let alerts = b.finish();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "policy.alert.setpoint-read");
    assert_eq!(alerts[0].count, 3);
}

#[test]
fn process_value_outside_its_limits_is_reported_from_the_response() {
    let policy = with_hmi_rule("read_values = { min = 0, max = 1000 }");
    let mut b = Bench::with_policy(Some(&policy));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    b.exchange(at(0.0), 1, &[3, 0, 0, 0, 2], &[3, 4, 0, 5, 0x0b, 0xb8]);
    let alert = b.finish()[0].clone();
    assert_eq!(alert.rule, "policy.process_value_out_of_bounds");
    assert_eq!((alert.address, alert.values), (Some(1), Some(vec![3000])));
    let mut ok = Bench::with_policy(Some(&policy));
    ok.flow.client = "10.0.0.20:40000".parse().unwrap();
    ok.exchange(at(0.0), 1, &[3, 0, 0, 0, 2], &[3, 4, 0, 5, 0, 6]);
    assert!(ok.rules().is_empty());
}

#[test]
fn one_register_leaving_its_own_range_alerts_while_its_neighbours_stay_quiet() {
    // A level (0-1000), a temperature (150-350) and a pump speed (0-100), read together.
    let policy = with_hmi_rule(
        "read_values = [\n  { holding_registers = \"0\", min = 0, max = 1000 },\n  { holding_registers = \"1\", min = 150, max = 350 },\n  { holding_registers = \"2\", min = 0, max = 100 },\n]",
    );
    let read = [3, 0, 0, 0, 3];
    let answer = |level: u16, temperature: u16, speed: u16| {
        let mut pdu = vec![3, 6];
        for v in [level, temperature, speed] {
            pdu.extend_from_slice(&v.to_be_bytes());
        }
        pdu
    };
    let mut b = Bench::with_policy(Some(&policy));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    // Each within its own range, though the level's 900 is far above the temperature's.
    b.exchange(at(0.0), 1, &read, &answer(900, 200, 80));
    assert!(b.rules().is_empty(), "{:?}", b.rules());
    // The temperature leaves its range; the level and the speed are as before.
    b.exchange(at(1.0), 1, &read, &answer(900, 420, 80));
    let alerts = b.finish();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "policy.process_value_out_of_bounds");
    assert_eq!((alerts[0].address, alerts[0].quantity), (Some(1), Some(1)));
    assert_eq!(alerts[0].values, Some(vec![420]));
    let message = alerts[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("150..=350"), "{message}");
}

#[test]
fn registers_no_range_names_are_bounded_by_the_entry_without_one_or_not_at_all() {
    let bounded = with_hmi_rule(
        "read_values = [{ holding_registers = \"0\", min = 0, max = 10 }, { min = 0, max = 100 }]",
    );
    let unbounded =
        with_hmi_rule("read_values = [{ holding_registers = \"0\", min = 0, max = 10 }]");
    let read = [3, 0, 5, 0, 1];
    for (policy, expected) in [(bounded, 1), (unbounded, 0)] {
        let mut b = Bench::with_policy(Some(&policy));
        b.flow.client = "10.0.0.20:40000".parse().unwrap();
        b.exchange(at(0.0), 1, &read, &[3, 2, 0x01, 0x00]);
        assert_eq!(b.finish().len(), expected, "{policy}");
    }
}

#[test]
fn rate_limit_is_enforced_in_capture_time() {
    let policy = with_hmi_rule("rate = \"10/s\"");
    let mut b = Bench::with_policy(Some(&policy));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    for i in 0..10 {
        b.request(at(f64::from(i) * 0.1), 1, &[3, 0, 0, 0, 1]);
    }
    assert!(b.alerts.is_empty(), "10 per second is within the rate");
    for i in 0..20 {
        b.request(at(1.0 + f64::from(i) * 0.01), 1, &[3, 0, 0, 0, 1]);
    }
    assert!(b.rules().contains(&"policy.rate_exceeded".to_string()));
}

#[test]
fn command_outside_the_time_window_raises_outside_hours() {
    let policy = with_hmi_rule("hours = \"06:00-18:00\"");
    let mut b = Bench::with_policy(Some(&policy));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    // 1970-01-01T00:16:40Z is outside 06:00-18:00 UTC.
    b.request(at(0.0), 1, &[3, 0, 0, 0, 1]);
    assert_eq!(b.rules(), vec!["policy.outside_hours"]);
}

/// The rule a violation of `kind` is reported under.
fn violation_rule(kind: ViolationKind) -> &'static str {
    match kind {
        ViolationKind::UnknownMaster => rule::UNKNOWN_MASTER.id,
        ViolationKind::UnauthorizedRead => rule::UNAUTHORIZED_READ.id,
        ViolationKind::UnauthorizedWrite => rule::UNAUTHORIZED_WRITE.id,
        ViolationKind::UnauthorizedFunction => rule::UNAUTHORIZED_FUNCTION.id,
        ViolationKind::WriteOutsideRanges => rule::WRITE_OUTSIDE_RANGES.id,
        ViolationKind::SetpointOutOfBounds => rule::SETPOINT_OUT_OF_BOUNDS.id,
        ViolationKind::ProcessValueOutOfBounds => rule::PROCESS_VALUE_OUT_OF_BOUNDS.id,
        ViolationKind::RateExceeded => rule::RATE_EXCEEDED.id,
        ViolationKind::OutsideHours => rule::OUTSIDE_HOURS.id,
    }
}

/// A small deterministic random sequence (xorshift64) for the tests that replay mixed traffic.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[test]
fn remembered_verdicts_agree_with_checking_every_request_afresh() {
    let text = with_scada_rule("rate = \"10/s\"");
    let policy = Policy::parse(&text, "test.toml").unwrap().0;
    let flow = flow();
    let candidates = policy.candidates(flow.client.ip(), flow.server.ip());
    assert!(candidates.timeless);
    let mut pair_state = PairState::default();
    let mut fresh_rates: SmallVec<[(usize, Option<RateState>); 1]> = SmallVec::new();
    // A master polling a few registers, now and then writing a setpoint (some out of bounds)
    // or reading outside its ranges, at a pace that crosses the rate limit in bursts.
    let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
    let mut nanos = 5_000_000_000u64;
    let (mut remembered, mut violations, mut rate_exceeded) = (0, 0, 0);
    for _ in 0..3_000 {
        let r = next();
        nanos += if r.is_multiple_of(7) {
            1_000_000
        } else {
            40_000_000
        };
        let ts = Timestamp::from_nanos(nanos);
        let pdu: Vec<u8> = match r % 10 {
            0 => vec![
                6,
                1,
                0x90 + (r >> 8) as u8 % 4,
                (r >> 16) as u8 % 8,
                (r >> 24) as u8,
            ],
            1 => vec![3, 0, 150, 0, 1],
            2 => vec![4, 0, (r >> 8) as u8 % 3, 0, 2],
            _ => vec![3, 0, 10 * ((r >> 8) as u8 % 4), 0, 10],
        };
        let unit = 1 + (r >> 32) as u8 % 2;
        let request = Request::decode(&pdu).unwrap();
        let expected = policy
            .allowing_rule(&candidates, ts, unit, &request, |rule, rate| {
                slot(&mut fresh_rates, rule)
                    .get_or_insert_with(|| RateState::new(rate, ts))
                    .take(rate, ts)
            })
            .err()
            .map(|v| violation_rule(v.kind));
        let shape = memo::shape(unit, &request);
        let event = FlowEvent::Session(&request_event(unit, request, &pdu, 1));
        let mut findings = Vec::new();
        let mut pair = PairRef::new(0, false, &mut pair_state, shape);
        if pair.recall.verdict().is_some() {
            remembered += 1;
        }
        policy_checks(&policy, &mut pair, ts, &flow, &event, &mut findings);
        pair.remember();
        let got: Vec<&str> = findings
            .iter()
            .map(|f| match f {
                Pending::Builtin(meta, _) => meta.id,
                Pending::Custom(..) => "custom",
            })
            .collect();
        assert_eq!(got, Vec::from_iter(expected), "{pdu:?} at {ts:?}");
        violations += usize::from(expected.is_some());
        rate_exceeded += usize::from(expected == Some(rule::RATE_EXCEEDED.id));
    }
    assert!(
        remembered > 1_000,
        "the memory answered often ({remembered})"
    );
    assert!(
        violations > 300,
        "violations were checked too ({violations})"
    );
    assert!(rate_exceeded > 10, "and rates exceeded ({rate_exceeded})");
}

#[test]
fn a_new_policy_forgets_which_rule_allowed_what() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.request(at(0.0), 1, &[3, 0, 0, 0, 1]);
    b.request(at(0.1), 1, &[3, 0, 0, 0, 1]);
    assert!(b.rules().is_empty());
    let stricter = POLICY.replace(
        "holding_registers = [\"0-99\", \"400-403\"]",
        "holding_registers = [\"400-403\"]",
    );
    let policy = Arc::new(Policy::parse(&stricter, "test.toml").unwrap().0);
    let alerts = &mut b.alerts;
    b.engine.set_policy(Some(policy), &mut |a| alerts.push(a));
    b.request(at(0.2), 1, &[3, 0, 0, 0, 1]);
    assert_eq!(b.rules(), vec!["policy.unauthorized_read"]);
}

#[test]
fn a_rule_with_hours_is_matched_afresh_at_every_request() {
    let policy = with_scada_rule("hours = \"06:00-18:00\"");
    let mut b = Bench::with_policy(Some(&policy));
    let t = |h: u64, m: u64| Timestamp::from_secs(h * 3600 + m * 60);
    b.request(t(12, 0), 1, &[3, 0, 0, 0, 1]);
    b.request(t(12, 1), 1, &[3, 0, 0, 0, 1]);
    assert!(b.rules().is_empty());
    b.request(t(19, 0), 1, &[3, 0, 0, 0, 1]);
    assert_eq!(b.rules(), vec!["policy.outside_hours"]);
}

#[test]
fn remembered_windows_agree_with_adding_every_read_afresh() {
    // A unit-id scan of 3 units within 5 s, a sweep of 4 blocks within 3 s: windows of
    // different lengths, so a remembered window end must be the earlier of the two.
    let text = format!(
        "{POLICY}\n[detectors.\"recon.unit_id_scan\"]\nthreshold = 3\nwindow = \"5s\"\n\n\
         [detectors.\"recon.address_sweep\"]\nthreshold = 4\nwindow = \"3s\"\n"
    );
    let policy = Policy::parse(&text, "test.toml").unwrap().0;
    let config = DetectionConfig::default();
    let mut builtins = Builtins::new(Limits::resolve(Some(&policy), &config));
    let flow = flow();
    let mut state = PairState::default();
    let mut units = window::Distinct::default();
    let mut blocks: std::collections::HashMap<(u8, u8), window::Distinct> = Default::default();
    // A master polling a few blocks of unit 1, now and then reading other blocks or units,
    // at paces around the windows' lengths.
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
    let mut nanos = 5_000_000_000u64;
    let (mut remembered, mut scans, mut sweeps) = (0, 0, 0);
    for _ in 0..5_000 {
        let r = next();
        nanos += [20_000_000, 200_000_000, 700_000_000][(r % 3) as usize];
        let ts = Timestamp::from_nanos(nanos);
        let function = 1 + (r >> 8) as u8 % 4;
        let address = if r >> 16 & 7 == 0 {
            (r >> 24) as u8
        } else {
            10 * ((r >> 24) as u8 % 3)
        };
        let unit = if r >> 32 & 15 == 0 {
            (r >> 40) as u8 % 8
        } else {
            1
        };
        let pdu = [function, 0, address, 0, 4];
        let request = Request::decode(&pdu).unwrap();
        let shape = memo::shape(unit, &request);
        let event = FlowEvent::Session(&request_event(unit, request, &pdu, 1));
        let mut pair = PairRef::new(0, false, &mut state, shape);
        remembered += usize::from(ts < pair.recall.windows_until);
        let mut got = Vec::new();
        builtins.observe(
            ts,
            &flow,
            &event,
            Some(&mut pair),
            &config,
            &mut |meta, _| got.push(meta.id),
        );
        pair.remember();
        let mut expected = Vec::new();
        if units.add(ts, Duration::from_secs(5), u32::from(unit), 3) {
            expected.push(rule::UNIT_ID_SCAN.id);
            scans += 1;
        }
        let block = u32::from(address) << 16 | 4;
        if blocks
            .entry((unit, function))
            .or_default()
            .add(ts, Duration::from_secs(3), block, 4)
        {
            expected.push(rule::ADDRESS_SWEEP.id);
            sweeps += 1;
        }
        assert_eq!(got, expected, "{pdu:?} to unit {unit} at {ts:?}");
    }
    assert!(remembered > 800, "the memory answered often ({remembered})");
    assert!(
        scans > 20 && sweeps > 20,
        "and windows fired ({scans}, {sweeps})"
    );
}

#[test]
fn an_unknown_master_scanning_247_unit_ids_is_one_event_with_every_unit_listed() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.flow.client = "10.0.0.66:40000".parse().unwrap();
    for unit in 1..=247u8 {
        b.request(at(f64::from(unit) * 0.01), unit, &[3, 0, 10, 0, 2]);
    }
    let alerts = b.alerts_of(&rule::UNKNOWN_MASTER);
    // The first occurrence at once, the window's totals when it closes.
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts.iter().map(|a| a.count).sum::<u64>(), 247);
    let first = alerts[0].seen.as_ref().expect("seen");
    assert_eq!(first.units, [1]);
    let rest = alerts[1].seen.as_ref().expect("seen");
    assert_eq!(rest.units, (2..=247).collect::<Vec<u8>>());
    assert_eq!(rest.functions, [3]);
    assert_eq!(rest.ranges, [[10, 11]]);
    assert_eq!(alerts[0].unit_id, Some(1), "the raising occurrence's unit");
    assert_ne!(alerts[0].id, alerts[1].id);
    for a in &alerts {
        assert_eq!(a.schema, 3);
        assert_eq!(a.id, a.derived_id(if a.count == 1 { 0 } else { 1 }));
    }
}

#[test]
fn a_rule_whose_unit_is_identity_still_folds_per_unit() {
    let mut b = Bench::new();
    // Broadcast writes to unit 0 and restart commands to two units: per unit.
    b.request(at(0.0), 1, &[8, 0, 1, 0, 0]);
    b.request(at(0.1), 2, &[8, 0, 1, 0, 0]);
    let restarts = b.alerts_of(&rule::RESTART_COMMUNICATIONS);
    assert_eq!(restarts.len(), 2);
    assert!(restarts.iter().all(|a| a.seen.is_none()));
}

#[test]
fn unauthorized_writes_to_many_registers_are_one_alert_listing_the_ranges() {
    let mut b = Bench::with_policy(Some(POLICY));
    b.flow.client = "10.0.0.20:40000".parse().unwrap();
    for (i, reg) in [100u16, 101, 102, 300, 301, 900].iter().enumerate() {
        let [hi, lo] = reg.to_be_bytes();
        b.request(at(i as f64 * 0.1), 1, &[6, hi, lo, 0, 1]);
    }
    let writes = b.alerts_of(&rule::UNAUTHORIZED_WRITE);
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[1].count, 5);
    assert_eq!(
        writes[1].seen.as_ref().map(|s| s.ranges.clone()),
        Some(vec![[101, 102], [300, 301], [900, 900]])
    );
}

#[test]
fn a_unit_id_scan_alert_lists_every_unit_its_detector_counted() {
    let mut b = Bench::new();
    for unit in 1..=12u8 {
        b.request(at(f64::from(unit) * 0.1), unit, &[3, 0, 0, 0, 1]);
    }
    let scans = b.alerts_of(&rule::UNIT_ID_SCAN);
    let first = scans.first().expect("a unit-id scan");
    let units = &first.seen.as_ref().expect("seen").units;
    assert!(units.len() >= 10, "{units:?}");
    assert!(units.contains(&first.unit_id.unwrap()));
}

#[test]
fn observe_judged_names_the_findings_of_the_request_in_hand_as_each_comes() {
    let mut b = Bench::with_policy(Some(&format!(
        "{POLICY}\n[[alert]]\nname = \"setpoint-writes\"\nfrom = \"scada\"\nto = \"plc\"\nfunctions = [\"write_single_register\"]\n"
    )));
    let judge = |pdu: &[u8], b: &mut Bench| {
        let (request, _) = Request::decode_prefix(pdu).unwrap();
        let event = request_event(1, request, pdu, 1);
        let mut found = Vec::new();
        let alerts = &mut b.alerts;
        b.engine.observe_judged(
            at(0.0),
            &b.flow,
            &FlowEvent::Session(&event),
            &mut |a| alerts.push(a),
            &mut |j| found.push(j.rule_id()),
        );
        found.sort();
        found
    };
    // An allowed poll: nothing.
    assert!(judge(&[3, 0, 0, 0, 10], &mut b).is_empty());
    // A setpoint out of bounds: the violation and the policy's alert rule, at once; and again
    // for the same request a second later, though folding makes that no new alert.
    for _ in 0..2 {
        assert_eq!(
            judge(&[6, 1, 0x90, 0x07, 0xd0], &mut b),
            [
                "policy.alert.setpoint-writes",
                "policy.setpoint_out_of_bounds"
            ]
        );
    }
    // A built-in detector's finding (force listen only) for the same master.
    assert_eq!(
        judge(&[8, 0, 4, 0, 0], &mut b),
        ["diag.force_listen_only", "policy.unauthorized_function"]
    );
}
