use std::net::IpAddr;

use super::*;
use crate::modbus::Request;
use crate::test_flow::{request_event, tcp_flow};
use crate::transaction::{Outcome, Transaction};

fn flow(client: &str, server: &str) -> FlowInfo {
    FlowInfo {
        client_mac: Some([0, 0x1d, 0x9c, 0, 0, 9]),
        server_mac: Some([0, 0x80, 0xf4, 0, 0, 3]),
        ..tcp_flow(client, server)
    }
}

fn request(inv: &mut Inventory, ts: u64, flow: &FlowInfo, unit: u8, pdu: &[u8]) {
    let event = request_event(unit, pdu);
    inv.observe(Timestamp::from_secs(ts), flow, &FlowEvent::Session(&event));
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Read Device Identification response, basic objects: vendor, product code, revision.
const DEVICE_ID: &[u8] = &[
    0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x03, //
    0x00, 0x0E, b'S', b'c', b'h', b'n', b'e', b'i', b'd', b'e', b'r', b' ', b'E', b'l', b'e',
    b'c', //
    0x01, 0x0A, b'B', b'M', b'X', b'P', b'3', b'4', b'2', b'0', b'2', b'0', //
    0x02, 0x05, b'v', b'3', b'.', b'2', b' ',
];

#[test]
fn a_request_makes_its_client_a_master_and_its_server_a_slave_with_units_functions_and_peers() {
    let mut inv = Inventory::new();
    let f = flow("10.0.0.9", "10.0.1.5");
    request(&mut inv, 10, &f, 1, &[0x03, 0x00, 0x00, 0x00, 0x02]);
    request(&mut inv, 11, &f, 2, &[0x06, 0x00, 0x01, 0x00, 0x05]);
    let seen = inv.take_changed(None);
    assert_eq!(seen.len(), 2);
    let (master, slave) = (&seen[0], &seen[1]);
    assert_eq!(master.ip, ip("10.0.0.9"));
    assert!(master.master && !master.slave);
    assert_eq!(master.functions, [3, 6]);
    assert_eq!(master.peers, [ip("10.0.1.5")]);
    assert_eq!(master.macs, ["00:1d:9c:00:00:09"]);
    assert!(master.units.is_empty());
    assert!(slave.slave && !slave.master);
    assert_eq!(slave.units, [1, 2]);
    assert_eq!(slave.macs, ["00:80:f4:00:00:03"]);
    assert_eq!(
        (slave.first_seen, slave.last_seen),
        (Timestamp::from_secs(10), Timestamp::from_secs(11))
    );
}

#[test]
fn polling_that_teaches_nothing_new_reports_no_change() {
    let mut inv = Inventory::new();
    let f = flow("10.0.0.9", "10.0.1.5");
    request(&mut inv, 10, &f, 1, &[0x03, 0x00, 0x00, 0x00, 0x02]);
    assert_eq!(inv.take_changed(None).len(), 2);
    for t in 11..100 {
        request(&mut inv, t, &f, 1, &[0x03, 0x00, 0x00, 0x00, 0x02]);
    }
    assert!(inv.take_changed(None).is_empty());
    request(
        &mut inv,
        100,
        &f,
        1,
        &[0x10, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x07],
    );
    let changed = inv.take_changed(None);
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[1].last_seen, Timestamp::from_secs(100));
}

#[test]
fn a_device_identification_response_names_the_servers_vendor_product_and_revision() {
    let mut inv = Inventory::new();
    let f = flow("10.0.0.9", "10.0.1.5");
    let pdu = [0x2B, 0x0E, 0x01, 0x00];
    request(&mut inv, 10, &f, 1, &pdu);
    let t = Transaction {
        outcome: Outcome::Answered,
        transaction_id: Some(1),
        unit_id: 1,
        request_ts: Some(Timestamp::from_secs(10)),
        response_ts: Some(Timestamp::from_secs(10)),
        request: Request::decode(&pdu).ok(),
        request_pdu: &pdu,
        response: Some(Response::decode(DEVICE_ID).unwrap()),
    };
    inv.observe(
        Timestamp::from_secs(10),
        &f,
        &FlowEvent::Session(&Event::Transaction(t)),
    );
    let seen = inv.take_changed(None);
    let plc = seen.iter().find(|a| a.ip == ip("10.0.1.5")).unwrap();
    assert_eq!(plc.vendor.as_deref(), Some("Schneider Elec"));
    assert_eq!(plc.product_code.as_deref(), Some("BMXP342020"));
    assert_eq!(plc.revision.as_deref(), Some("v3.2"));
    assert_eq!(plc.product_name, None);
}

#[test]
fn hosts_the_policy_lists_carry_its_name_zone_and_criticality() {
    let policy = Policy::parse(
        r#"
version = 1
[[asset]]
name = "kiln-plc"
addresses = ["10.0.1.5"]
zone = "kiln"
criticality = "critical"
"#,
        "p.toml",
    )
    .unwrap()
    .0;
    let mut inv = Inventory::new();
    request(
        &mut inv,
        10,
        &flow("10.0.0.9", "10.0.1.5"),
        1,
        &[0x03, 0, 0, 0, 1],
    );
    let seen = inv.take_changed(Some(&policy));
    let plc = &seen[1];
    assert_eq!(plc.name.as_deref(), Some("kiln-plc"));
    assert_eq!(plc.zone.as_deref(), Some("kiln"));
    assert_eq!(plc.criticality.as_deref(), Some("critical"));
    assert_eq!(seen[0].name, None);
}

#[test]
fn a_scan_of_more_hosts_than_the_limit_is_counted_not_stored() {
    let mut inv = Inventory::new();
    let extra = 10;
    for n in 0..(MAX_HOSTS as u32 + extra) {
        let target = IpAddr::from((0x0A01_0000u32 + n).to_be_bytes()).to_string();
        request(
            &mut inv,
            10,
            &flow("10.0.0.9", &target),
            1,
            &[0x03, 0, 0, 0, 1],
        );
    }
    assert_eq!(inv.len(), MAX_HOSTS);
    assert!(inv.untracked() >= u64::from(extra));
    let scanner = inv
        .take_changed(None)
        .into_iter()
        .find(|a| a.ip == ip("10.0.0.9"))
        .unwrap();
    assert_eq!(scanner.peers.len(), MAX_PEERS);
}
