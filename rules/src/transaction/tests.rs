use super::*;
use crate::modbus::ExceptionCode;

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * 1_000_000)
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    outcome: Outcome,
    tid: Option<u16>,
    has_request: bool,
    has_response: bool,
    latency_ms: Option<u64>,
}

fn record(log: &mut Vec<Seen>, mismatches: &mut Vec<DecodeError>) -> impl FnMut(TrackerEvent<'_>) {
    move |event| match event {
        TrackerEvent::Transaction(t) => log.push(Seen {
            outcome: t.outcome,
            tid: t.transaction_id,
            has_request: t.request.is_some(),
            has_response: t.response.is_some(),
            latency_ms: t.latency().map(|d| d.as_millis() as u64),
        }),
        TrackerEvent::Mismatch { error, .. } => mismatches.push(error),
    }
}

const READ_3: [u8; 5] = [3, 0, 0, 0, 2];

/// Records the read of [`READ_3`] at `ms`, not kept decoded (as for a request that borrows
/// its frame), logging what the tracker reports.
fn request_read_3(
    t: &mut TransactionTracker,
    ms: u64,
    tid: Option<u16>,
    unit: u8,
    log: &mut Vec<Seen>,
    mismatches: &mut Vec<DecodeError>,
) {
    t.request(
        ts(ms),
        tid,
        unit,
        &READ_3,
        None,
        &mut record(log, mismatches),
    );
}

fn read_response() -> Response<'static> {
    Response::decode(&[3, 4, 0, 1, 0, 2]).unwrap()
}

#[test]
fn response_joins_request_by_transaction_id_and_unit_with_latency() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(7), 1, &mut log, &mut mm);
    t.response(
        ts(5),
        Some(7),
        1,
        Some(read_response()),
        &mut record(&mut log, &mut mm),
    );
    assert_eq!(
        log,
        vec![Seen {
            outcome: Outcome::Answered,
            tid: Some(7),
            has_request: true,
            has_response: true,
            latency_ms: Some(5)
        }]
    );
    assert!(mm.is_empty());
    assert_eq!(t.pending(), 0);
}

#[test]
fn response_for_another_unit_is_unsolicited() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(7), 1, &mut log, &mut mm);
    t.response(
        ts(5),
        Some(7),
        2,
        Some(read_response()),
        &mut record(&mut log, &mut mm),
    );
    assert_eq!(log[0].outcome, Outcome::Unsolicited);
    assert_eq!(t.pending(), 1);
}

#[test]
fn unanswered_request_expires_after_the_timeout() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let config = TrackerConfig {
        timeout: Duration::from_millis(100),
        max_pending: 8,
    };
    let mut t = TransactionTracker::new(config);
    request_read_3(&mut t, 0, Some(1), 1, &mut log, &mut mm);
    t.expire(ts(100), &mut record(&mut log, &mut mm));
    assert!(log.is_empty(), "not before the timeout has passed");
    t.expire(ts(101), &mut record(&mut log, &mut mm));
    assert_eq!(log[0].outcome, Outcome::Unanswered);
}

#[test]
fn pending_requests_are_bounded() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let config = TrackerConfig {
        timeout: Duration::from_secs(10),
        max_pending: 4,
    };
    let mut t = TransactionTracker::new(config);
    for tid in 0..10u16 {
        request_read_3(&mut t, 0, Some(tid), 1, &mut log, &mut mm);
    }
    assert_eq!(t.pending(), 4);
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|s| s.outcome == Outcome::Unanswered));
    assert_eq!(log[0].tid, Some(0), "the oldest goes first");
}

#[test]
fn reused_transaction_id_reports_the_earlier_request_unanswered() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(1), 1, &mut log, &mut mm);
    request_read_3(&mut t, 1, Some(1), 1, &mut log, &mut mm);
    assert_eq!(log.len(), 1);
    assert_eq!(t.pending(), 1);
}

#[test]
fn rtu_requests_match_by_unit_in_order() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, None, 3, &mut log, &mut mm);
    t.response(
        ts(2),
        None,
        3,
        Some(read_response()),
        &mut record(&mut log, &mut mm),
    );
    assert_eq!(log[0].outcome, Outcome::Answered);
}

#[test]
fn close_reports_every_waiting_request() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(1), 1, &mut log, &mut mm);
    request_read_3(&mut t, 0, Some(2), 1, &mut log, &mut mm);
    t.close(&mut record(&mut log, &mut mm));
    assert_eq!(log.len(), 2);
    assert_eq!(t.pending(), 0);
}

#[test]
fn malformed_response_still_answers_its_request() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(1), 1, &mut log, &mut mm);
    t.response(ts(1), Some(1), 1, None, &mut record(&mut log, &mut mm));
    assert_eq!(log[0].outcome, Outcome::Answered);
    assert!(!log[0].has_response);
}

#[test]
fn response_with_wrong_register_count_is_a_byte_count_mismatch() {
    let (mut log, mut mm) = (Vec::new(), Vec::new());
    let mut t = TransactionTracker::new(TrackerConfig::default());
    request_read_3(&mut t, 0, Some(1), 1, &mut log, &mut mm);
    let three = Response::decode(&[3, 6, 0, 1, 0, 2, 0, 3]).unwrap();
    t.response(
        ts(1),
        Some(1),
        1,
        Some(three),
        &mut record(&mut log, &mut mm),
    );
    assert_eq!(
        mm,
        vec![DecodeError::ByteCountMismatch {
            declared: 6,
            expected: 4
        }]
    );
}

#[test]
fn response_with_another_function_is_a_function_mismatch() {
    let request = Request::decode(&READ_3).unwrap();
    let response = Response::decode(&[4, 4, 0, 1, 0, 2]).unwrap();
    assert_eq!(
        check_response(&request, &response),
        Err(DecodeError::FunctionMismatch {
            request: 3,
            response: 4
        })
    );
}

#[test]
fn write_echo_must_repeat_the_request() {
    let request = Request::decode(&[6, 0, 1, 0, 3]).unwrap();
    let same = Response::decode(&[6, 0, 1, 0, 3]).unwrap();
    let other = Response::decode(&[6, 0, 1, 0, 4]).unwrap();
    assert_eq!(check_response(&request, &same), Ok(()));
    assert_eq!(
        check_response(&request, &other),
        Err(DecodeError::EchoMismatch)
    );
}

#[test]
fn exception_for_the_same_function_is_consistent() {
    let request = Request::decode(&READ_3).unwrap();
    let response = Response::Exception {
        function: request.function(),
        code: ExceptionCode::ILLEGAL_DATA_ADDRESS,
    };
    assert_eq!(check_response(&request, &response), Ok(()));
}

#[test]
fn read_bits_are_narrowed_to_the_quantity_asked() {
    let mut t = TransactionTracker::new(TrackerConfig::default());
    let mut counts = Vec::new();
    t.request(ts(0), Some(1), 1, &[1, 0, 0, 0, 10], None, &mut |_| {});
    let response = Response::decode(&[1, 2, 0xff, 0x03]).unwrap();
    t.response(ts(1), Some(1), 1, Some(response), &mut |e| {
        if let TrackerEvent::Transaction(Transaction {
            response: Some(Response::ReadBits { values, .. }),
            ..
        }) = e
        {
            counts.push(values.len());
        }
    });
    assert_eq!(counts, vec![10]);
}

#[test]
fn a_request_kept_decoded_joins_its_transaction_exactly_as_one_decoded_again() {
    // A read borrows nothing and is kept decoded; a multiple-register write borrows its values
    // and is decoded again from the kept bytes; a malformed request has no request either way.
    let write = [16u8, 0, 10, 0, 2, 4, 0, 7, 0, 9];
    let malformed = [3u8, 0, 0];
    for pdu in [&READ_3[..], &write[..], &malformed[..]] {
        let decoded = Request::decode_prefix(pdu).ok().map(|(r, _)| r);
        let mut joined = Vec::new();
        for given in [None, decoded.as_ref()] {
            let mut t = TransactionTracker::new(TrackerConfig::default());
            t.request(ts(0), Some(1), 1, pdu, given, &mut |_| {});
            t.close(&mut |e| {
                if let TrackerEvent::Transaction(t) = e {
                    // Compared by their text: the request borrows the tracker's bytes.
                    joined.push((t.outcome, format!("{:?}", t.request)));
                }
            });
        }
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0], joined[1], "{pdu:?}");
        assert_eq!(joined[0].1, format!("{decoded:?}"), "{pdu:?}");
    }
    assert!(Request::decode(&READ_3).unwrap().detached().is_some());
    assert!(Request::decode(&write).unwrap().detached().is_none());
}
