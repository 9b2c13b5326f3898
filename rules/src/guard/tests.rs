use super::*;

/// A Modbus/TCP request: transaction, unit and PDU.
fn adu(transaction_id: u16, unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let mut a = transaction_id.to_be_bytes().to_vec();
    a.extend_from_slice(&[0, 0]);
    a.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    a.push(unit_id);
    a.extend_from_slice(pdu);
    a
}

fn read(tid: u16) -> Vec<u8> {
    adu(tid, 1, &[0x03, 0x00, 0x00, 0x00, 0x02])
}

fn write(tid: u16, value: u16) -> Vec<u8> {
    let [hi, lo] = value.to_be_bytes();
    adu(tid, 1, &[0x06, 0x00, 0x05, hi, lo])
}

/// The PLC's answer to `read(tid)`.
fn read_answer(tid: u16) -> Vec<u8> {
    adu(tid, 1, &[0x03, 0x04, 0x00, 0x07, 0x00, 0x08])
}

/// Blocks writes of values over 100, as a policy's setpoint bound would.
fn judge(_unit: u8, request: &Request<'_>) -> Judgement {
    match request {
        Request::WriteSingleRegister { value, .. } if *value > 100 => Judgement::Block {
            rule: "policy.setpoint_out_of_bounds".into(),
        },
        _ => Judgement::Allow,
    }
}

fn enforcing() -> Connection {
    Connection::new(Settings {
        mode: Mode::Enforce,
        ..Settings::default()
    })
}

fn client(c: &mut Connection, bytes: &[u8]) -> Vec<Action> {
    let mut out = Vec::new();
    c.client_bytes(bytes, &mut judge, &mut out);
    out
}

fn plc(c: &mut Connection, bytes: &[u8]) -> Vec<Action> {
    let mut out = Vec::new();
    c.plc_bytes(bytes, &mut out);
    out
}

/// The bytes sent to the PLC (`to_plc`) or to the client.
fn sent(actions: &[Action], to_plc: bool) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match (a, to_plc) {
            (Action::Upstream(b), true) | (Action::Client(b), false) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn upstream(actions: &[Action]) -> Vec<Vec<u8>> {
    sent(actions, true)
}

fn to_client(actions: &[Action]) -> Vec<Vec<u8>> {
    sent(actions, false)
}

fn verdicts(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Decided { verdict, .. } => Some(verdict.label()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_allowed_request_is_forwarded_byte_exact_and_its_answer_relayed_unchanged() {
    let mut c = enforcing();
    // Split across deliveries, as TCP may.
    let request = write(1, 50);
    let mut out = client(&mut c, &request[..4]);
    assert!(out.is_empty());
    out.extend(client(&mut c, &request[4..]));
    assert_eq!(upstream(&out), [request]);
    assert_eq!(verdicts(&out), ["allowed"]);
    assert!(
        to_client(&out).is_empty(),
        "nothing for the client before the PLC answers"
    );
    let answer = write(1, 50); // a write's answer echoes the request
    assert_eq!(to_client(&plc(&mut c, &answer)), [answer]);
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn in_enforce_a_blocked_write_never_reaches_the_plc_and_gets_the_exception() {
    let mut c = enforcing();
    let out = client(&mut c, &write(7, 500));
    assert!(upstream(&out).is_empty(), "the PLC never sees it");
    assert_eq!(verdicts(&out), ["blocked"]);
    assert_eq!(
        to_client(&out),
        [vec![0, 7, 0, 0, 0, 3, 1, 0x86, exception::ILLEGAL_FUNCTION]]
    );
    let custom = Connection::new(Settings {
        mode: Mode::Enforce,
        exception: 0x04,
        ..Settings::default()
    });
    let mut custom = custom;
    let out = client(&mut custom, &write(8, 500));
    assert_eq!(to_client(&out), [exception_adu(8, 1, 0x06, 0x04)]);
}

#[test]
fn in_monitor_a_blocked_write_is_forwarded_and_reported_as_would_block() {
    let mut c = Connection::new(Settings::default());
    let out = client(&mut c, &write(3, 500));
    assert_eq!(upstream(&out), [write(3, 500)]);
    assert_eq!(verdicts(&out), ["would_block"]);
    // A reload to enforce applies to the next request, on the same connection.
    c.set_settings(Settings {
        mode: Mode::Enforce,
        ..Settings::default()
    });
    let out = client(&mut c, &write(4, 500));
    assert!(upstream(&out).is_empty());
    assert_eq!(verdicts(&out), ["blocked"]);
}

#[test]
fn pipelined_answers_reach_the_client_in_the_order_it_asked() {
    let mut c = enforcing();
    // A read, a blocked write, another read: all sent at once.
    let mut burst = read(1);
    burst.extend(write(2, 999));
    burst.extend(read(3));
    let out = client(&mut c, &burst);
    assert_eq!(upstream(&out), [read(1), read(3)]);
    assert!(
        to_client(&out).is_empty(),
        "the refusal waits behind the first read"
    );
    // The PLC answers the second read first.
    assert!(to_client(&plc(&mut c, &read_answer(3))).is_empty());
    let out = plc(&mut c, &read_answer(1));
    assert_eq!(
        to_client(&out),
        [
            read_answer(1),
            exception_adu(2, 1, 0x06, exception::ILLEGAL_FUNCTION),
            read_answer(3)
        ]
    );
}

#[test]
fn a_malformed_request_is_refused_and_never_forwarded() {
    let mut c = enforcing();
    // Read Holding Registers with a byte missing.
    let out = client(&mut c, &adu(9, 1, &[0x03, 0x00, 0x00, 0x00]));
    assert!(upstream(&out).is_empty());
    assert_eq!(verdicts(&out), ["malformed"]);
    assert_eq!(
        to_client(&out),
        [exception_adu(9, 1, 0x03, exception::ILLEGAL_DATA_VALUE)]
    );
}

#[test]
fn an_unjudgeable_request_is_refused_when_failing_closed_and_forwarded_when_failing_open() {
    let mut broken = |_: u8, _: &Request<'_>| Judgement::Unjudgeable {
        reason: "policy cannot be evaluated".into(),
    };
    for (fail, forwarded, label) in [
        (Fail::Closed, false, "failed_closed"),
        (Fail::Open, true, "failed_open"),
    ] {
        let mut c = Connection::new(Settings {
            mode: Mode::Enforce,
            fail,
            ..Settings::default()
        });
        let mut out = Vec::new();
        c.client_bytes(&read(1), &mut broken, &mut out);
        assert_eq!(!upstream(&out).is_empty(), forwarded, "{fail:?}");
        assert_eq!(verdicts(&out), [label]);
    }
}

#[test]
fn requests_past_the_in_flight_limit_get_server_busy() {
    let mut c = Connection::new(Settings {
        mode: Mode::Enforce,
        max_in_flight: 2,
        ..Settings::default()
    });
    let mut burst = Vec::new();
    for tid in 1..=3 {
        burst.extend(read(tid));
    }
    let out = client(&mut c, &burst);
    assert_eq!(upstream(&out).len(), 2);
    assert_eq!(verdicts(&out), ["allowed", "allowed", "busy"]);
    plc(&mut c, &read_answer(1));
    let out = plc(&mut c, &read_answer(2));
    assert_eq!(
        to_client(&out).last(),
        Some(&exception_adu(3, 1, 0x03, exception::SERVER_DEVICE_BUSY))
    );
}

#[test]
fn when_the_plc_is_gone_waiting_and_later_requests_get_gateway_target_failed() {
    let mut c = enforcing();
    client(&mut c, &read(1));
    let mut out = Vec::new();
    c.plc_gone(&mut out);
    assert_eq!(
        to_client(&out),
        [exception_adu(1, 1, 0x03, exception::GATEWAY_TARGET_FAILED)]
    );
    let out = client(&mut c, &read(2));
    assert!(upstream(&out).is_empty());
    assert_eq!(
        to_client(&out),
        [exception_adu(2, 1, 0x03, exception::GATEWAY_TARGET_FAILED)]
    );
    // A blocked request is still blocked, with its own exception.
    let out = client(&mut c, &write(3, 500));
    assert_eq!(
        to_client(&out),
        [exception_adu(3, 1, 0x06, exception::ILLEGAL_FUNCTION)]
    );
}

#[test]
fn a_frame_whose_header_cannot_be_read_ends_the_connection() {
    let mut c = enforcing();
    // Protocol id 7: not Modbus/TCP.
    let mut bad = read(1);
    bad[3] = 7;
    let out = client(&mut c, &bad);
    assert!(upstream(&out).is_empty());
    assert!(matches!(out.last(), Some(Action::Close { .. })), "{out:?}");
    assert!(client(&mut c, &read(2)).is_empty(), "nothing after");
}

#[test]
fn an_answer_nobody_waits_for_is_dropped() {
    let mut c = enforcing();
    assert!(to_client(&plc(&mut c, &read_answer(5))).is_empty());
}
