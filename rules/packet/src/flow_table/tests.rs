use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::dissect::{Dissected, TcpFlags, Transport};
use otwatch_rules::flow::{CloseReason, FlowEvent};

fn packet(src: (u8, u16), dst: (u8, u16), flags: TcpFlags, payload: &[u8]) -> Dissected<'_> {
    Dissected {
        vlan: 0,
        src: IpAddr::from([10, 0, 0, src.0]),
        dst: IpAddr::from([10, 0, 0, dst.0]),
        src_port: src.1,
        dst_port: dst.1,
        transport: Transport::Tcp(flags),
        payload,
        macs: Some(([2, 0, 0, 0, 0, src.0], [2, 0, 0, 0, 0, dst.0])),
    }
}

fn flags(seq: u32, syn: bool, ack: bool) -> TcpFlags {
    TcpFlags {
        seq,
        ack_number: 0,
        syn,
        ack,
        fin: false,
        rst: false,
    }
}

fn opened_client(table: &mut FlowTable, p: &Dissected<'_>) -> Option<SocketAddr> {
    let mut client = None;
    table.packet(Timestamp::default(), p, &mut |info, event| {
        if event == FlowEvent::Opened {
            client = Some(info.client);
        }
    });
    client
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 0, 0, host]), port)
}

#[test]
fn the_modbus_port_marks_the_server_even_against_a_syn() {
    let mut t = FlowTable::new(FlowConfig::default());
    let p = packet((8, 502), (57, 4446), flags(1, true, false), &[]);
    assert_eq!(opened_client(&mut t, &p), Some(addr(57, 4446)));
}

#[test]
fn the_syn_sender_is_the_client_off_the_modbus_port() {
    let mut t = FlowTable::new(FlowConfig::default());
    let p = packet((1, 6000), (2, 40000), flags(1, true, false), &[]);
    assert_eq!(opened_client(&mut t, &p), Some(addr(1, 6000)));
}

#[test]
fn without_handshake_or_modbus_port_the_lower_port_is_the_server() {
    let mut t = FlowTable::new(FlowConfig::default());
    let p = packet((1, 40000), (2, 5020), flags(1, false, true), b"x");
    assert_eq!(opened_client(&mut t, &p), Some(addr(1, 40000)));
}

#[test]
fn pure_acks_create_no_flow() {
    let mut t = FlowTable::new(FlowConfig::default());
    let p = packet((1, 40000), (2, 502), flags(1, false, true), &[]);
    assert_eq!(opened_client(&mut t, &p), None);
    assert!(t.is_empty());
}

#[test]
fn a_new_syn_on_the_same_ports_opens_a_new_connection() {
    let mut t = FlowTable::new(FlowConfig::default());
    let first = packet((1, 40000), (2, 502), flags(100, true, false), &[]);
    let again = packet((1, 40000), (2, 502), flags(100, true, false), &[]);
    let reused = packet((1, 40000), (2, 502), flags(9000, true, false), &[]);
    let mut closed = Vec::new();
    for p in [&first, &again, &reused] {
        t.packet(Timestamp::default(), p, &mut |_, e| {
            if let FlowEvent::Closed(reason) = e {
                closed.push(reason);
            }
        });
    }
    assert_eq!(closed, vec![CloseReason::Reused]);
    assert_eq!(t.counters().created, 2);
}

#[test]
fn fin_from_both_sides_closes_the_flow() {
    let mut t = FlowTable::new(FlowConfig::default());
    let mut fin = flags(1, false, true);
    fin.fin = true;
    let mut closed = Vec::new();
    for p in [
        packet(
            (1, 40000),
            (2, 502),
            flags(1, false, true),
            b"\0\x01\0\0\0\x06\x01\x03\0\0\0\x01",
        ),
        packet((1, 40000), (2, 502), TcpFlags { seq: 13, ..fin }, &[]),
        packet((2, 502), (1, 40000), TcpFlags { seq: 1, ..fin }, &[]),
    ] {
        t.packet(Timestamp::default(), &p, &mut |_, e| {
            if let FlowEvent::Closed(reason) = e {
                closed.push(reason);
            }
        });
    }
    assert_eq!(closed, vec![CloseReason::Fin]);
    assert!(t.is_empty());
}

#[test]
fn each_side_keeps_its_own_ethernet_address_when_the_server_speaks_first() {
    let mut table = FlowTable::new(FlowConfig::default());
    let response = [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7];
    let reply = packet((2, 502), (1, 40000), flags(1, false, true), &response);
    let mut macs = None;
    table.packet(Timestamp::from_secs(1), &reply, &mut |info, _| {
        macs = Some((info.client_mac, info.server_mac));
    });
    assert_eq!(
        macs,
        Some((Some([2, 0, 0, 0, 0, 1]), Some([2, 0, 0, 0, 0, 2])))
    );
}

const REQUEST: &[u8] = b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01";

fn client_segment(client: (u8, u16), seq: u32) -> Dissected<'static> {
    packet(client, (1, 502), flags(seq, false, true), REQUEST)
}

/// Whether two clients' flows sit in different slots of the table of recent flows (else both
/// go through the map and the order stays exact, which these tests would not notice).
fn apart(a: (u8, u16), b: (u8, u16)) -> bool {
    FlowKey::of(&client_segment(a, 0)).recent_index()
        != FlowKey::of(&client_segment(b, 0)).recent_index()
}

/// Feeds one request-sized segment from `client` (host, port) to the Modbus server 10.0.0.1:502
/// at `secs`, and returns the clients of the flows closed meanwhile, with why.
fn segment_at(
    table: &mut FlowTable,
    secs: u64,
    client: (u8, u16),
    seq: u32,
) -> Vec<(SocketAddr, CloseReason)> {
    let p = client_segment(client, seq);
    let mut closed = Vec::new();
    table.packet(Timestamp::from_secs(secs), &p, &mut |info, event| {
        if let FlowEvent::Closed(reason) = event {
            closed.push((info.client, reason));
        }
    });
    closed
}

#[test]
fn a_flow_kept_busy_without_map_lookups_does_not_shield_an_idle_flow_behind_it() {
    let mut t = FlowTable::new(FlowConfig {
        idle_timeout: Duration::from_secs(60),
        ..FlowConfig::default()
    });
    // A opens first (front of the order), B second; then only A talks, always found in the
    // table of recent flows, so the order is not touched.
    assert!(apart((2, 40000), (3, 40001)));
    assert!(segment_at(&mut t, 0, (2, 40000), 1).is_empty());
    assert!(segment_at(&mut t, 1, (3, 40001), 1).is_empty());
    let mut closed = Vec::new();
    for s in 2..=70 {
        closed.extend(segment_at(&mut t, s, (2, 40000), 1 + 12 * s as u32));
    }
    assert_eq!(closed, [(addr(3, 40001), CloseReason::Idle)]);
    assert_eq!(t.len(), 1, "the busy flow stays");
}

#[test]
fn eviction_takes_the_least_recently_active_flow_even_when_the_order_is_stale() {
    let mut t = FlowTable::new(FlowConfig {
        max_flows: 2,
        ..FlowConfig::default()
    });
    assert!(apart((2, 40000), (3, 40001)));
    assert!(segment_at(&mut t, 0, (2, 40000), 1).is_empty());
    assert!(segment_at(&mut t, 1, (3, 40001), 1).is_empty());
    // A, first in the order, stays active (found without touching the order); B goes quiet.
    assert!(segment_at(&mut t, 2, (2, 40000), 13).is_empty());
    let closed = segment_at(&mut t, 3, (4, 40002), 1);
    assert_eq!(closed, [(addr(3, 40001), CloseReason::Evicted)]);
    // The busy flow is still tracked: its next segment opens nothing new.
    let before = t.counters().created;
    assert!(segment_at(&mut t, 4, (2, 40000), 25).is_empty());
    assert_eq!(t.counters().created, before);
}
