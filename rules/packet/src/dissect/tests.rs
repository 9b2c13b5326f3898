use etherparse::PacketBuilder;

use super::*;
use crate::frame::CapturedPacket;
use otwatch_rules::time::Timestamp;

const MODBUS: &[u8] = &[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];

fn captured(link: LinkType, data: &[u8]) -> CapturedPacket<'_> {
    CapturedPacket {
        ts: Timestamp::default(),
        link,
        data,
        orig_len: data.len() as u32,
    }
}

fn tcp_ipv4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 502, 7, 1000)
        .ack(9)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn expect_packet<'a>(d: Dissection<'a>) -> Dissected<'a> {
    match d {
        Dissection::Packet(p) => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn ethernet_ipv4_tcp_yields_addresses_ports_flags_and_payload() {
    let frame = tcp_ipv4(MODBUS);
    let p = expect_packet(dissect(&captured(LinkType::Ethernet, &frame)));
    assert_eq!(p.src, IpAddr::from([10, 0, 0, 1]));
    assert_eq!(p.dst_port, 502);
    assert_eq!(p.payload, MODBUS);
    let Transport::Tcp(flags) = p.transport else {
        panic!()
    };
    assert_eq!((flags.seq, flags.ack_number, flags.ack), (7, 9, true));
}

#[test]
fn ethernet_trailer_after_the_ip_datagram_is_ignored() {
    let mut frame = tcp_ipv4(MODBUS);
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0]);
    let p = expect_packet(dissect(&captured(LinkType::Ethernet, &frame)));
    assert_eq!(p.payload, MODBUS);
}

#[test]
fn vlan_and_qinq_tags_are_skipped_and_the_outer_id_kept() {
    let mut single = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 502, 7, 1000)
        .write(&mut single, MODBUS)
        .unwrap();
    let p = expect_packet(dissect(&captured(LinkType::Ethernet, &single)));
    assert_eq!((p.vlan, p.payload), (42, MODBUS));

    let mut qinq = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .double_vlan(
            etherparse::VlanId::try_new(100).unwrap(),
            etherparse::VlanId::try_new(7).unwrap(),
        )
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 502, 7, 1000)
        .write(&mut qinq, MODBUS)
        .unwrap();
    let p = expect_packet(dissect(&captured(LinkType::Ethernet, &qinq)));
    assert_eq!((p.vlan, p.payload), (100, MODBUS));
}

#[test]
fn ipv6_udp_is_dissected() {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(40000, 502)
        .write(&mut frame, MODBUS)
        .unwrap();
    let p = expect_packet(dissect(&captured(LinkType::Ethernet, &frame)));
    assert!(p.src.is_ipv6());
    assert_eq!(p.transport, Transport::Udp);
    assert_eq!(p.payload, MODBUS);
}

#[test]
fn raw_ip_sll_sll2_and_loopback_link_types_are_dissected() {
    let ether = tcp_ipv4(MODBUS);
    let ip = &ether[14..];
    let p = expect_packet(dissect(&captured(LinkType::RawIp, ip)));
    assert_eq!(p.payload, MODBUS);

    // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 1, 1, 1, 1, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(ip);
    let p = expect_packet(dissect(&captured(LinkType::LinuxSll, &sll)));
    assert_eq!(p.payload, MODBUS);

    // SLL2: protocol, reserved, interface index, ARPHRD, packet type, address length, address.
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 1, 1, 1, 1, 1, 0, 0,
    ];
    sll2.extend_from_slice(ip);
    let p = expect_packet(dissect(&captured(LinkType::LinuxSll2, &sll2)));
    assert_eq!(p.payload, MODBUS);

    let mut null = 2u32.to_le_bytes().to_vec();
    null.extend_from_slice(ip);
    let p = expect_packet(dissect(&captured(LinkType::Null, &null)));
    assert_eq!(p.payload, MODBUS);
}

#[test]
fn ipv4_fragment_is_handed_back_for_reassembly() {
    let frame = tcp_ipv4(MODBUS);
    let mut fragmented = frame.clone();
    // Set "more fragments" in the IPv4 flags of the first fragment.
    fragmented[20] |= 0x20;
    match dissect(&captured(LinkType::Ethernet, &fragmented)) {
        Dissection::Fragment(f) => {
            assert!(f.more);
            assert_eq!(f.offset, 0);
            assert_eq!(f.protocol, 6);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_is_malformed_and_arp_is_ignored() {
    assert!(matches!(
        dissect(&captured(LinkType::Ethernet, &[0x45; 20])),
        Dissection::Malformed(_) | Dissection::Ignored(_)
    ));
    assert!(matches!(
        dissect(&captured(LinkType::Ethernet, &[1, 2, 3])),
        Dissection::Malformed(_)
    ));
    assert!(matches!(
        dissect(&captured(LinkType::Unsupported(147), &[0; 40])),
        Dissection::Ignored("unsupported_link_type")
    ));
}
