use std::net::SocketAddr;

use super::*;
use crate::flow::Protocol;
use crate::policy::{Policy, ViolationKind};

fn flow(client: &str) -> FlowInfo {
    FlowInfo {
        id: 1,
        vlan: 0,
        protocol: Protocol::Tcp,
        client: client.parse::<SocketAddr>().unwrap(),
        server: "10.0.1.10:502".parse().unwrap(),
        encapsulation: None,
        requests: 0,
        first_seen: Timestamp::default(),
        last_gap: None,
        first_answer: None,
        last_answer: None,
        answered_requests: 0,
        handshake_seen: true,
        client_mac: None,
        server_mac: None,
    }
}

fn observe(l: &mut Learner, f: &FlowInfo, ts: f64, unit: u8, pdu: &[u8]) {
    let request = Request::decode(pdu).unwrap();
    l.observe(
        Timestamp::from_nanos((ts * 1e9) as u64),
        f,
        &FlowEvent::Session(&Event::Request {
            transaction_id: Some(1),
            unit_id: unit,
            request,
            raw: pdu,
            outstanding: 1,
        }),
    );
}

fn violation(p: &Policy, f: &FlowInfo, unit: u8, pdu: &[u8]) -> Option<ViolationKind> {
    let c = p.candidates(f.client.ip(), f.server.ip());
    let request = Request::decode(pdu).unwrap();
    p.allowing_rule(&c, Timestamp::default(), unit, &request, |_, _| true)
        .err()
        .map(|v| v.kind)
}

#[test]
fn learned_policy_allows_what_was_seen_and_flags_deviations() {
    let mut l = Learner::new();
    let scada = flow("10.0.0.5:40000");
    let hmi = flow("10.0.0.6:40001");
    for i in 0..100 {
        let t = f64::from(i);
        observe(&mut l, &scada, t, 1, &[3, 0, 0, 0, 10]);
        observe(&mut l, &scada, t, 1, &[3, 0, 12, 0, 8]);
        observe(&mut l, &scada, t, 1, &[6, 1, 0x90, 0, (i % 100) as u8 + 3]);
        observe(&mut l, &hmi, t, 1, &[4, 0, 0, 0, 4]);
        observe(&mut l, &scada, t, 1, &[8, 0, 0, 0, 0]);
    }
    let text = l.to_policy(&["normal.pcap".into()]);
    assert!(text.contains("# 400 requests"), "{text}");
    let (policy, warnings) = Policy::parse(&text, "learned.toml").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    // Everything seen is allowed, including the hole between the two read blocks.
    for pdu in [
        &[3u8, 0, 0, 0, 10][..],
        &[3, 0, 12, 0, 8],
        &[3, 0, 10, 0, 2],
        &[6, 1, 0x90, 0, 50],
        &[8, 0, 0, 0, 0],
    ] {
        assert_eq!(violation(&policy, &scada, 1, pdu), None, "{pdu:?}");
    }
    assert_eq!(violation(&policy, &hmi, 1, &[4, 0, 0, 0, 4]), None);
    // Deviations are not.
    assert_eq!(
        violation(&policy, &hmi, 1, &[6, 1, 0x90, 0, 50]),
        Some(ViolationKind::UnauthorizedWrite)
    );
    assert_eq!(
        violation(&policy, &scada, 1, &[8, 0, 4, 0, 0]),
        Some(ViolationKind::UnauthorizedFunction)
    );
    assert_eq!(
        violation(&policy, &scada, 1, &[6, 1, 0x90, 0x27, 0x10]),
        Some(ViolationKind::SetpointOutOfBounds)
    );
    assert_eq!(
        violation(&policy, &scada, 1, &[3, 0, 100, 0, 1]),
        Some(ViolationKind::UnauthorizedRead)
    );
    assert_eq!(
        violation(&policy, &flow("10.0.0.99:1"), 1, &[3, 0, 0, 0, 1]),
        Some(ViolationKind::UnknownMaster)
    );
}

#[test]
fn write_bounds_are_rounded_out_to_two_significant_digits() {
    assert_eq!(round_out(3, 1497), (0, 1500));
    assert_eq!(round_out(120, 180), (120, 180));
    assert_eq!(round_out(7, 7), (7, 7));
    assert_eq!(round_out(0, 65_535), (0, 65_535));
}

#[test]
fn small_holes_between_read_blocks_are_closed_and_large_ones_kept() {
    assert_eq!(
        widen(&[(0, 9), (12, 20), (100, 119)]),
        vec![(0, 20), (100, 119)]
    );
}

fn to(client: &str, server: &str) -> FlowInfo {
    FlowInfo {
        server: server.parse::<SocketAddr>().unwrap(),
        ..flow(client)
    }
}

/// A master polling three PLCs: two with the same register map (a write seen on the first
/// only), one with another map.
fn row_of_plcs() -> Learner {
    let mut l = Learner::new();
    let a = to("10.0.0.5:40000", "10.0.1.10:502");
    let b = to("10.0.0.5:40001", "10.0.1.11:502");
    let other = to("10.0.0.5:40002", "10.0.1.12:502");
    for i in 0..50 {
        let t = f64::from(i);
        for f in [&a, &b] {
            observe(&mut l, f, t, 1, &[3, 0, 0, 0, 10]);
            observe(&mut l, f, t, 1, &[4, 0, 0, 0, 4]);
        }
        observe(&mut l, &other, t, 1, &[3, 0, 200, 0, 10]);
    }
    observe(&mut l, &a, 60.0, 1, &[6, 0, 5, 0, 42]);
    l
}

#[test]
fn targets_that_behave_alike_are_one_group_with_one_rule_and_a_write_seen_on_one_is_flagged() {
    let l = row_of_plcs();
    let text = l.to_policy(&["plant.pcap".into()]);
    assert!(
        text.contains("[groups]\nalike-1 = [\"host-10-0-1-10\", \"host-10-0-1-11\"]"),
        "{text}"
    );
    assert_eq!(text.matches("[[allow]]").count(), 2, "{text}");
    assert!(
        text.contains("function 6 (a write) was seen only on host-10-0-1-10"),
        "{text}"
    );
    assert!(
        text.contains("writes on host-10-0-1-10: holding_registers 5-5; values 42-42"),
        "{text}"
    );
    assert!(text.contains("writes on host-10-0-1-11: none"), "{text}");
    let (policy, warnings) = Policy::parse(&text, "learned.toml").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let twin = to("10.0.0.5:40001", "10.0.1.11:502");
    // The write seen on the first is allowed on its twin: the comment asks for a review.
    assert_eq!(violation(&policy, &twin, 1, &[6, 0, 5, 0, 42]), None);
    assert_eq!(violation(&policy, &twin, 1, &[4, 0, 0, 0, 4]), None);
    // The PLC with another map keeps its own rule.
    let other = to("10.0.0.5:40002", "10.0.1.12:502");
    assert_eq!(violation(&policy, &other, 1, &[3, 0, 200, 0, 10]), None);
    assert_eq!(
        violation(&policy, &other, 1, &[3, 0, 0, 0, 10]),
        Some(ViolationKind::UnauthorizedRead)
    );
}

#[test]
fn per_device_learning_writes_a_rule_per_target_and_no_groups() {
    let text = row_of_plcs().to_policy_per_device(&["plant.pcap".into()]);
    assert!(!text.contains("[groups]"), "{text}");
    assert_eq!(text.matches("[[allow]]").count(), 3, "{text}");
    let (policy, _) = Policy::parse(&text, "learned.toml").unwrap();
    let twin = to("10.0.0.5:40001", "10.0.1.11:502");
    assert_eq!(
        violation(&policy, &twin, 1, &[6, 0, 5, 0, 42]),
        Some(ViolationKind::UnauthorizedWrite)
    );
}

#[test]
fn targets_a_master_only_writes_to_are_not_grouped() {
    let mut l = Learner::new();
    let a = to("10.0.0.5:40000", "10.0.1.20:502");
    let b = to("10.0.0.5:40001", "10.0.1.21:502");
    observe(&mut l, &a, 1.0, 1, &[6, 0, 0, 0, 1]);
    observe(&mut l, &b, 1.0, 1, &[6, 0, 100, 0, 1]);
    let text = l.to_policy(&["plant.pcap".into()]);
    assert!(!text.contains("[groups]"), "{text}");
    let (policy, _) = Policy::parse(&text, "learned.toml").unwrap();
    // The write seen on the first is not allowed on the second.
    assert!(violation(&policy, &b, 1, &[6, 0, 0, 0, 1]).is_some());
}

/// An answered read of input registers `address..` bringing `values` back.
fn read_back(l: &mut Learner, f: &FlowInfo, ts: f64, address: u16, values: &[u16]) {
    let mut pdu = vec![4];
    pdu.extend_from_slice(&address.to_be_bytes());
    pdu.extend_from_slice(&(values.len() as u16).to_be_bytes());
    observe(l, f, ts, 1, &pdu);
    let mut answer = vec![4, (values.len() * 2) as u8];
    for v in values {
        answer.extend_from_slice(&v.to_be_bytes());
    }
    let t = Transaction {
        outcome: Outcome::Answered,
        transaction_id: Some(1),
        unit_id: 1,
        request_ts: None,
        response_ts: None,
        request: Request::decode(&pdu).ok(),
        request_pdu: &pdu,
        response: Response::decode(&answer).ok(),
    };
    l.observe(
        Timestamp::from_nanos((ts * 1e9) as u64),
        f,
        &FlowEvent::Session(&Event::Transaction(t)),
    );
}

#[test]
fn values_read_back_become_bounds_per_register_but_counters_and_rare_reads_stay_free() {
    let mut l = Learner::new();
    let hmi = flow("10.0.0.6:40001");
    for i in 0..200u16 {
        // A level swinging 400-600, a temperature 200-240 (twice, identical registers 1-2), a
        // counter that only grows, wrapping round.
        let level = 400 + (i * 37) % 201;
        let temperature = 200 + (i * 7) % 41;
        let counter = 65_000u16.wrapping_add(i * 10);
        read_back(
            &mut l,
            &hmi,
            f64::from(i),
            0,
            &[level, temperature, temperature, counter],
        );
    }
    // Register 9 is read twice only.
    read_back(&mut l, &hmi, 300.0, 9, &[5]);
    read_back(&mut l, &hmi, 301.0, 9, &[6]);
    let text = l.to_policy(&["normal.pcap".into()]);
    assert!(
        text.contains("{ input_registers = \"0\", min = 380, max = 620 }"),
        "{text}"
    );
    assert!(
        text.contains("{ input_registers = \"1-2\", min = 196, max = 244 }"),
        "{text}"
    );
    assert!(
        text.contains("input_registers 3 only grows (a counter or a clock)"),
        "{text}"
    );
    assert!(
        text.contains("input_registers 9 was read 2 times"),
        "{text}"
    );
    let (policy, _) = Policy::parse(&text, "learned.toml").unwrap();
    let limits = policy.allow[0].matcher.read_values.as_deref().unwrap();
    let bound = |address| limits.of(Some((Table::InputRegisters, address)));
    assert_eq!(bound(0).map(|b| (b.min, b.max)), Some((380, 620)));
    assert_eq!(bound(3), None, "the counter is free");
    assert_eq!(bound(9), None, "the rare one is free");
}

#[test]
fn two_learners_merged_write_the_policy_one_learner_of_both_shares_writes() {
    let (a, b) = (flow("10.0.0.5:40000"), flow("10.0.0.6:40000"));
    let mut one = Learner::new();
    let (mut first, mut second) = (Learner::new(), Learner::new());
    for (i, (f, pdu)) in [
        (&a, &[3u8, 0, 0, 0, 10][..]),
        (&b, &[4, 0, 5, 0, 2]),
        (&a, &[6, 0, 3, 0, 40]),
        (&a, &[3, 0, 20, 0, 2]),
    ]
    .into_iter()
    .enumerate()
    {
        observe(&mut one, f, i as f64, 1, pdu);
        let share = if i % 2 == 0 { &mut first } else { &mut second };
        observe(share, f, i as f64, 1, pdu);
    }
    first.merge(second);
    assert_eq!(first.requests(), 4);
    assert_eq!(first.to_policy(&["x".into()]), one.to_policy(&["x".into()]));
}

#[test]
fn learning_writes_each_hosts_macs_a_servers_rates_and_routers_in_language_2() {
    let mut l = Learner::new();
    let scada = flow("10.0.0.5:40000");
    let mac = |last: u8| Mac([0x00, 0x1d, 0x9c, 0, 0, last]);
    for i in 0..50 {
        let t = f64::from(i) / 10.0;
        observe(&mut l, &scada, t, 1, &[3, 0, 0, 0, 10]);
        l.ip_source(ip("10.0.0.5"), mac(5));
        l.ip_source(ip("10.0.1.10"), mac(10));
    }
    // Two connections in one second, one more later: the busiest second had two.
    for n in [0u64, 0, 2] {
        l.observe(Timestamp::from_secs(n), &scada, &FlowEvent::Opened);
    }
    // A router: one Ethernet address carrying five remote hosts, its own address in ARP.
    for host in 1..=5u8 {
        l.ip_source(ip(&format!("192.168.9.{host}")), mac(0xfe));
    }
    l.arp(&ArpFrame {
        vlan: 0,
        operation: 2,
        sender_mac: mac(0xfe),
        sender_ip: "10.0.0.254".parse().unwrap(),
        target_mac: mac(5),
        target_ip: "10.0.0.5".parse().unwrap(),
    });
    let text = l.to_policy(&["test".into()]);
    let (p, _) = Policy::parse(&text, "learned.toml").unwrap();
    assert_eq!(p.version, 2, "{text}");
    let plc = p.asset_of(ip("10.0.1.10")).unwrap();
    assert_eq!(plc.macs, [mac(10)], "{text}");
    assert_eq!(
        plc.request_rate.map(|r| (r.count, r.period.as_secs())),
        Some((10, 1)),
        "{text}"
    );
    assert_eq!(
        plc.connection_rate.map(|r| (r.count, r.period.as_secs())),
        Some((2, 1)),
        "{text}"
    );
    assert_eq!(p.asset_of(ip("10.0.0.5")).unwrap().macs, [mac(5)]);
    let router = p.asset_of(ip("10.0.0.254")).unwrap();
    assert_eq!(router.role, Some(crate::policy::Role::Router), "{text}");
    assert_eq!(router.macs, [mac(0xfe)]);
    // Nothing seen, nothing of language 2 written.
    let empty = Learner::new().to_policy(&["test".into()]);
    assert!(empty.contains("version = 1"), "{empty}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
