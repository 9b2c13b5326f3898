use std::net::IpAddr;

use super::*;
use crate::modbus::Request;
use crate::test_flow::{request_event, tcp_flow};
use crate::transaction::{Outcome, Transaction};

fn flow(client: &str, server: &str) -> FlowInfo {
    tcp_flow(client, server)
}

fn request(c: &mut Conversations, ts: u64, flow: &FlowInfo, unit: u8, pdu: &[u8]) {
    let event = request_event(unit, pdu);
    c.observe(Timestamp::from_secs(ts), flow, &FlowEvent::Session(&event));
}

fn exception(c: &mut Conversations, ts: u64, flow: &FlowInfo) {
    let pdu = [0x06, 0x00, 0x01, 0x00, 0x05];
    let t = Transaction {
        outcome: Outcome::Answered,
        transaction_id: Some(1),
        unit_id: 1,
        request_ts: Some(Timestamp::from_secs(ts)),
        response_ts: Some(Timestamp::from_secs(ts)),
        request: Request::decode(&pdu).ok(),
        request_pdu: &pdu,
        response: Some(Response::decode(&[0x86, 0x02]).unwrap()),
    };
    c.observe(
        Timestamp::from_secs(ts),
        flow,
        &FlowEvent::Session(&Event::Transaction(t)),
    );
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_window_counts_requests_and_exceptions_and_lists_what_the_pair_touched() {
    let mut c = Conversations::new();
    let hmi = flow("10.0.0.9", "10.0.1.5");
    for t in 0..10 {
        request(&mut c, 100 + t, &hmi, 1, &[0x03, 0x00, 0x0a, 0x00, 0x04]); // 10-13
    }
    request(&mut c, 105, &hmi, 2, &[0x04, 0x00, 0x00, 0x00, 0x02]); // input 0-1
    request(&mut c, 106, &hmi, 1, &[0x06, 0x00, 0x0e, 0x00, 0x07]); // write 14
    request(&mut c, 107, &hmi, 1, &[0x05, 0x00, 0x03, 0xff, 0x00]); // coil 3
    exception(&mut c, 107, &hmi);
    let report = c.take_window(Timestamp::from_secs(110));
    assert_eq!(report.len(), 1);
    let o = &report[0];
    assert_eq!((o.master, o.slave), (ip("10.0.0.9"), ip("10.0.1.5")));
    assert_eq!(
        (o.since, o.until),
        (Timestamp::from_secs(100), Timestamp::from_secs(110))
    );
    assert_eq!((o.requests, o.exceptions), (13, 1));
    assert_eq!(o.units, [1, 2]);
    assert_eq!(o.functions, [3, 4, 5, 6]);
    assert_eq!(o.reads.holding_registers, [[10, 13]]);
    assert_eq!(o.reads.input_registers, [[0, 1]]);
    assert_eq!(o.writes.holding_registers, [[14, 14]]);
    assert_eq!(o.writes.coils, [[3, 3]]);
    assert!(crate::validate::conversation(o).is_ok());
}

#[test]
fn windows_chain_and_a_quiet_pair_is_reported_once_then_left_out() {
    let mut c = Conversations::new();
    let hmi = flow("10.0.0.9", "10.0.1.5");
    request(&mut c, 100, &hmi, 1, &[0x03, 0x00, 0x0a, 0x00, 0x04]);
    c.take_window(Timestamp::from_secs(110));
    request(&mut c, 115, &hmi, 1, &[0x03, 0x00, 0x0a, 0x00, 0x04]);
    let second = c.take_window(Timestamp::from_secs(120));
    assert_eq!(second[0].since, Timestamp::from_secs(110), "windows chain");
    assert_eq!(second[0].requests, 1);
    // Nothing new: one report saying it went quiet, then none.
    let quiet = c.take_window(Timestamp::from_secs(130));
    assert_eq!(quiet.len(), 1);
    assert_eq!(quiet[0].requests, 0);
    assert!(c.take_window(Timestamp::from_secs(140)).is_empty());
}

#[test]
fn a_scan_of_many_slaves_keeps_the_table_bounded_and_counts_the_rest() {
    let mut c = Conversations::new();
    for n in 0..(MAX_CONVERSATIONS as u32 + 100) {
        let slave = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
        request(
            &mut c,
            100,
            &flow("10.9.9.9", &slave),
            1,
            &[0x03, 0x00, 0x00, 0x00, 0x01],
        );
    }
    assert_eq!(c.len(), MAX_CONVERSATIONS);
    assert_eq!(c.untracked(), 100);
    let report = c.take_window(Timestamp::from_secs(110));
    assert_eq!(report.len(), MAX_CONVERSATIONS);
}

#[test]
fn a_pair_quiet_for_an_hour_of_windows_is_forgotten_and_a_long_gap_is_cut_to_a_day() {
    let mut c = Conversations::new();
    let scan = flow("10.9.9.9", "10.0.1.77");
    request(&mut c, 100, &scan, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]);
    let mut t = 110;
    c.take_window(Timestamp::from_secs(t));
    for _ in 0..=FORGET_AFTER_WINDOWS {
        t += 10;
        c.take_window(Timestamp::from_secs(t));
    }
    assert_eq!(
        c.len(),
        1,
        "still remembered after {FORGET_AFTER_WINDOWS} quiet windows"
    );
    c.take_window(Timestamp::from_secs(t + 10));
    assert!(c.is_empty(), "forgotten");
    // A capture with a two-day gap: the window reported covers at most a day.
    let hmi = flow("10.0.0.2", "10.0.1.5");
    request(&mut c, t + 20, &hmi, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]);
    c.take_window(Timestamp::from_secs(t + 30));
    let later = t + 30 + 2 * 86_400;
    request(&mut c, later, &hmi, 1, &[0x03, 0x00, 0x00, 0x00, 0x01]);
    let report = c.take_window(Timestamp::from_secs(later + 5));
    assert!(
        crate::validate::conversation(&report[0]).is_ok(),
        "{report:?}"
    );
}
