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
