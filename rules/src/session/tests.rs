use proptest::prelude::*;

use super::*;
use crate::modbus::crc16;
use crate::reassembly::{Reassembler, SegmentFlags, StreamEvent};
use crate::transaction::Outcome;

/// An owned summary of one event, to compare runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Recognised(Encapsulation, bool),
    NotModbus,
    Request(Option<u16>, u8),
    Transaction {
        outcome: Outcome,
        tid: Option<u16>,
        unit: u8,
        request: Option<String>,
        response: Option<String>,
    },
    Error(&'static str),
    Skipped(usize),
}

fn seen(event: Event<'_>) -> Seen {
    match event {
        Event::Recognised {
            encapsulation,
            reversed,
        } => Seen::Recognised(encapsulation, reversed),
        Event::NotModbus { .. } => Seen::NotModbus,
        Event::Request {
            transaction_id,
            unit_id,
            ..
        } => Seen::Request(transaction_id, unit_id),
        Event::Transaction(t) => Seen::Transaction {
            outcome: t.outcome,
            tid: t.transaction_id,
            unit: t.unit_id,
            request: t.request.map(|r| format!("{r:?}")),
            response: t.response.map(|r| format!("{r:?}")),
        },
        Event::DecodeError { error, .. } | Event::ResponseMismatch { error, .. } => {
            Seen::Error(error.kind())
        }
        Event::Skipped { bytes, .. } => Seen::Skipped(bytes),
    }
}

fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    out.push(unit);
    out.extend_from_slice(pdu);
    out
}

fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = vec![unit];
    out.extend_from_slice(pdu);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

const T0: Timestamp = Timestamp::from_secs(1_000);

fn on_port() -> SessionHints {
    SessionHints {
        on_modbus_port: true,
        orientation_known: true,
    }
}

fn run(session: &mut Session, chunks: &[(Direction, Vec<u8>)]) -> Vec<Seen> {
    let mut out = Vec::new();
    for (direction, bytes) in chunks {
        session.stream(T0, *direction, bytes, &mut |e| out.push(seen(e)));
    }
    session.close(T0, &mut |e| out.push(seen(e)));
    out
}

fn transactions(events: &[Seen]) -> Vec<Seen> {
    events
        .iter()
        .filter(|e| matches!(e, Seen::Transaction { .. }))
        .cloned()
        .collect()
}

#[test]
fn request_and_response_on_the_modbus_port_join_into_a_transaction() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let events = run(
        &mut s,
        &[
            (Direction::ToServer, adu(1, 1, &[3, 0, 0, 0, 1])),
            (Direction::ToClient, adu(1, 1, &[3, 2, 0, 42])),
        ],
    );
    assert_eq!(events[0], Seen::Recognised(Encapsulation::Mbap, false));
    assert_eq!(events[1], Seen::Request(Some(1), 1));
    let [
        Seen::Transaction {
            outcome, response, ..
        },
    ] = &transactions(&events)[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*outcome, Outcome::Answered);
    assert!(response.as_deref().unwrap().contains("ReadRegisters"));
}

#[test]
fn non_modbus_payload_on_the_modbus_port_is_reported_once() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
    let events = run(
        &mut s,
        &[
            (Direction::ToServer, tls.clone()),
            (Direction::ToServer, tls),
        ],
    );
    assert_eq!(events, vec![Seen::NotModbus]);
    assert!(s.is_not_modbus());
}

#[test]
fn non_modbus_payload_elsewhere_is_ignored_silently() {
    let mut s = Session::new(SessionHints::default(), TrackerConfig::default());
    let events = run(
        &mut s,
        &[(Direction::ToServer, b"GET / HTTP/1.1\r\n\r\n".to_vec())],
    );
    assert!(events.is_empty());
    assert!(s.is_not_modbus());
}

#[test]
fn modbus_on_another_port_is_recognised() {
    let mut s = Session::new(
        SessionHints {
            on_modbus_port: false,
            orientation_known: true,
        },
        TrackerConfig::default(),
    );
    let events = run(
        &mut s,
        &[
            (Direction::ToServer, adu(9, 1, &[6, 0, 1, 0, 3])),
            (Direction::ToClient, adu(9, 1, &[6, 0, 1, 0, 3])),
        ],
    );
    assert_eq!(transactions(&events).len(), 1);
}

#[test]
fn wrong_guess_of_the_sides_is_corrected() {
    let mut s = Session::new(SessionHints::default(), TrackerConfig::default());
    // The caller guessed the sides wrong: the "response" direction carries a request.
    let events = run(
        &mut s,
        &[
            (Direction::ToClient, adu(4, 1, &[3, 0, 0, 0, 1])),
            (Direction::ToServer, adu(4, 1, &[3, 2, 0, 7])),
        ],
    );
    assert!(s.reversed());
    assert_eq!(events[0], Seen::Recognised(Encapsulation::Mbap, true));
    let t = transactions(&events);
    assert!(matches!(
        t[..],
        [Seen::Transaction {
            outcome: Outcome::Answered,
            ..
        }]
    ));
}

#[test]
fn malformed_request_answered_by_exception_is_a_transaction() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let events = run(
        &mut s,
        &[
            (
                Direction::ToServer,
                adu(1, 1, &[0x17, 0, 0, 0, 1, 0, 0, 0, 2, 2, 0, 0]),
            ),
            (Direction::ToClient, adu(1, 1, &[0x97, 0x0a])),
        ],
    );
    assert!(events.contains(&Seen::Error("byte_count_mismatch")));
    let [
        Seen::Transaction {
            outcome, request, ..
        },
    ] = &transactions(&events)[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*outcome, Outcome::Answered);
    assert_eq!(*request, None);
}

#[test]
fn padded_request_is_decoded_and_its_trailing_bytes_reported() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let events = run(
        &mut s,
        &[(Direction::ToServer, adu(1, 10, &[0x2b, 0x0e, 3, 1, 0]))],
    );
    assert!(events.contains(&Seen::Error("trailing_bytes")));
    assert!(events.contains(&Seen::Request(Some(1), 10)));
}

#[test]
fn udp_datagram_may_carry_several_adus() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let mut datagram = adu(1, 1, &[3, 0, 0, 0, 1]);
    datagram.extend(adu(2, 1, &[3, 0, 1, 0, 1]));
    let mut out = Vec::new();
    s.datagram(T0, Direction::ToServer, &datagram, &mut |e| {
        out.push(seen(e))
    });
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e, Seen::Request(..)))
            .count(),
        2
    );
}

#[test]
fn udp_datagram_shorter_than_its_length_field_is_a_length_mismatch() {
    let mut s = Session::new(on_port(), TrackerConfig::default());
    let mut datagram = adu(1, 1, &[3, 0, 0, 0, 1]);
    datagram.extend_from_slice(&[0, 2, 0, 0, 0, 6, 1, 3]);
    let mut out = Vec::new();
    s.datagram(T0, Direction::ToServer, &datagram, &mut |e| {
        out.push(seen(e))
    });
    assert!(out.contains(&Seen::Error("length_mismatch")));
}

#[test]
fn rtu_over_tcp_transactions_are_joined_by_unit() {
    let mut s = Session::new(
        SessionHints {
            on_modbus_port: false,
            orientation_known: true,
        },
        TrackerConfig::default(),
    );
    let events = run(
        &mut s,
        &[
            (Direction::ToServer, rtu(7, &[3, 0, 0, 0, 2])),
            (Direction::ToClient, rtu(7, &[3, 4, 0, 1, 0, 2])),
        ],
    );
    assert_eq!(events[0], Seen::Recognised(Encapsulation::Rtu, false));
    assert!(matches!(
        transactions(&events)[..],
        [Seen::Transaction {
            outcome: Outcome::Answered,
            tid: None,
            unit: 7,
            ..
        }]
    ));
}

#[test]
fn rtu_garbage_is_reported_when_the_other_side_speaks() {
    let mut s = Session::new(
        SessionHints {
            on_modbus_port: false,
            orientation_known: true,
        },
        TrackerConfig::default(),
    );
    let events = run(
        &mut s,
        &[
            (Direction::ToServer, rtu(7, &[3, 0, 0, 0, 2])),
            (Direction::ToClient, vec![7, 3, 4, 0, 1]),
            (Direction::ToServer, rtu(7, &[3, 0, 0, 0, 2])),
        ],
    );
    assert!(events.contains(&Seen::Error("crc_mismatch")));
}

// ---- property: segmentation, reordering and retransmission do not change transactions ----

/// One valid request with a consistent response.
fn exchange() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        (
            1u16..=125,
            any::<u16>(),
            prop::collection::vec(any::<u16>(), 125)
        )
            .prop_map(|(qty, addr, values)| {
                let addr = addr.min(u16::MAX - qty);
                let mut req = vec![3];
                req.extend(addr.to_be_bytes());
                req.extend(qty.to_be_bytes());
                let mut resp = vec![3, (qty * 2) as u8];
                for v in &values[..usize::from(qty)] {
                    resp.extend(v.to_be_bytes());
                }
                (req, resp)
            }),
        (any::<u16>(), any::<u16>()).prop_map(|(addr, value)| {
            let mut req = vec![6];
            req.extend(addr.to_be_bytes());
            req.extend(value.to_be_bytes());
            (req.clone(), req)
        }),
        (1u16..=123, any::<u16>()).prop_map(|(qty, addr)| {
            let addr = addr.min(u16::MAX - qty);
            let mut req = vec![16];
            req.extend(addr.to_be_bytes());
            req.extend(qty.to_be_bytes());
            req.push((qty * 2) as u8);
            for i in 0..qty {
                req.extend(i.to_be_bytes());
            }
            let mut resp = vec![16];
            resp.extend(addr.to_be_bytes());
            resp.extend(qty.to_be_bytes());
            (req, resp)
        }),
        (1u16..=2000, any::<u8>()).prop_map(|(qty, fill)| {
            let mut req = vec![1, 0, 0];
            req.extend(qty.to_be_bytes());
            let n = usize::from(qty).div_ceil(8);
            let mut resp = vec![1, n as u8];
            resp.extend(std::iter::repeat_n(fill, n));
            (req, resp)
        }),
        (1u8..=11)
            .prop_filter("valid code", |c| *c != 9)
            .prop_map(|code| { (vec![8, 0, 4, 0, 0], vec![0x88, code]) }),
    ]
}

/// A client stream and a server stream for `exchanges` on one connection.
fn streams(exchanges: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    for (i, (req, resp)) in exchanges.iter().enumerate() {
        to_server.extend(adu(i as u16, 1, req));
        to_client.extend(adu(i as u16, 1, resp));
    }
    (to_server, to_client)
}

/// Cuts `stream` at the given (sorted, deduplicated) points into (offset, bytes) segments.
fn cut(stream: &[u8], mut points: Vec<usize>) -> Vec<(u32, Vec<u8>)> {
    points.retain(|p| *p > 0 && *p < stream.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([stream.len()]) {
        out.push((start as u32, stream[start..p].to_vec()));
        start = p;
    }
    out
}

/// Feeds both directions through reassembly and a session: all client segments first (a
/// client may pipeline), then the server's.
fn decode(isn: [u32; 2], client: &[(u32, Vec<u8>)], server: &[(u32, Vec<u8>)]) -> Vec<Seen> {
    let mut session = Session::new(on_port(), TrackerConfig::default());
    let mut out = Vec::new();
    for (direction, segments, base) in [
        (Direction::ToServer, client, isn[0]),
        (Direction::ToClient, server, isn[1]),
    ] {
        let mut stream = Reassembler::default();
        stream.segment(
            base,
            SegmentFlags {
                syn: true,
                fin: false,
            },
            &[],
            &mut |_| {},
        );
        for (offset, bytes) in segments {
            let seq = base.wrapping_add(1).wrapping_add(*offset);
            stream.segment(seq, SegmentFlags::default(), bytes, &mut |event| {
                if let StreamEvent::Data(data) = event {
                    session.stream(T0, direction, data, &mut |e| out.push(seen(e)));
                }
            });
        }
    }
    session.close(T0, &mut |e| out.push(seen(e)));
    transactions(&out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn segmentation_reordering_and_retransmission_keep_transactions(
        exchanges in prop::collection::vec(exchange(), 1..40),
        client_cuts in prop::collection::vec(0usize..4000, 0..60),
        server_cuts in prop::collection::vec(0usize..4000, 0..60),
        isn in any::<[u32; 2]>(),
        shuffle_seed in any::<u64>(),
        retransmit in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (to_server, to_client) = streams(&exchanges);
        let whole = decode(isn, &cut(&to_server, vec![]), &cut(&to_client, vec![]));
        prop_assert_eq!(whole.len(), exchanges.len());
        let answered = |t: &Seen| matches!(t, Seen::Transaction { outcome: Outcome::Answered, .. });
        prop_assert!(whole.iter().all(answered), "every exchange answered");

        let mut client = cut(&to_server, client_cuts);
        let mut server = cut(&to_client, server_cuts);
        // Retransmit some segments, then shuffle each direction deterministically.
        for index in &retransmit {
            let again = client[index.index(client.len())].clone();
            client.push(again);
            let again = server[index.index(server.len())].clone();
            server.push(again);
        }
        let mut state = shuffle_seed | 1;
        let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
        for segments in [&mut client, &mut server] {
            for i in (1..segments.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                segments.swap(i, j);
            }
        }
        prop_assert_eq!(decode(isn, &client, &server), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_session(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
        on_modbus_port in any::<bool>(),
    ) {
        let mut s = Session::new(
            SessionHints { on_modbus_port, orientation_known: false },
            TrackerConfig::default(),
        );
        for (to_server, bytes) in &chunks {
            let direction = if *to_server { Direction::ToServer } else { Direction::ToClient };
            s.stream(T0, direction, bytes, &mut |_| {});
            s.datagram(T0, direction, bytes, &mut |_| {});
        }
        s.close(T0, &mut |_| {});
    }
}
