//! From a captured frame to addresses, ports and transport payload (crate `etherparse`).
//!
//! Link layers: Ethernet (802.1Q and QinQ tags; trailer bytes after the IP datagram are ignored
//! because the IP length bounds the payload), Linux SLL and SLL2, raw IP, BSD loopback. IPv4 and
//! IPv6; IPv4 fragments are handed back for [`crate::defrag`] to reassemble.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    ArpHardwareId, ArpPacketSlice, EtherType, Ethernet2Slice, IpNumber, Ipv4Slice, Ipv6Slice,
    LinuxSllProtocolType, LinuxSllSlice, SingleVlanSlice, TcpSlice, UdpSlice,
};

use crate::frame::{CapturedPacket, LinkType};
use otwatch_rules::mac::Mac;
use otwatch_rules::network::ArpFrame;

/// TCP header fields the reassembler needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags {
    /// Sequence number of the first payload byte (or of the SYN).
    pub seq: u32,
    /// Acknowledgement number, valid when `ack` is set.
    pub ack_number: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
}

/// The transport layer of a dissected packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp(TcpFlags),
    /// A UDP datagram.
    Udp,
}

/// A packet reduced to what flow tracking needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dissected<'a> {
    /// Outermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP or UDP.
    pub transport: Transport,
    /// Transport payload.
    pub payload: &'a [u8],
    /// Source and destination Ethernet addresses, when the link layer is Ethernet.
    pub macs: Option<([u8; 6], [u8; 6])>,
}

/// An IPv4 fragment, to be reassembled before its transport header can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Outermost VLAN id.
    pub vlan: u16,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP identification.
    pub id: u16,
    /// Transport protocol number.
    pub protocol: u8,
    /// Offset of this fragment in 8-byte units.
    pub offset: u16,
    /// Whether more fragments follow.
    pub more: bool,
    /// This fragment's payload.
    pub payload: &'a [u8],
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dissection<'a> {
    /// TCP or UDP over IP.
    Packet(Dissected<'a>),
    /// An IPv4 fragment.
    Fragment(Fragment<'a>),
    /// An ARP packet for IPv4 over Ethernet.
    Arp(ArpFrame),
    /// Valid but of no interest (ICMP, IPv6 fragments, ...), with a reason for the counters.
    Ignored(&'static str),
    /// Headers that do not parse, with a reason for the counters.
    Malformed(&'static str),
}

/// Dissects one captured frame.
///
/// Each layer is read with etherparse's per-header slices rather than its all-layers
/// `SlicedPacket`, which carries (and copies) state for every layer it knows: on the packet path
/// that was a third of the agent's time.
pub fn dissect<'a>(packet: &CapturedPacket<'a>) -> Dissection<'a> {
    let data = packet.data;
    match packet.link {
        LinkType::Ethernet => match Ethernet2Slice::from_slice_without_fcs(data) {
            Ok(eth) => match ether_payload(eth.ether_type(), eth.payload_slice()) {
                Dissection::Packet(mut p) => {
                    p.macs = Some((eth.source(), eth.destination()));
                    Dissection::Packet(p)
                }
                other => other,
            },
            Err(_) => Dissection::Malformed("ethernet_header"),
        },
        LinkType::LinuxSll => match LinuxSllSlice::from_slice(data) {
            Ok(sll) => match sll.protocol_type() {
                LinuxSllProtocolType::EtherType(ether_type) => {
                    ether_payload(ether_type, sll.payload_slice())
                }
                _ => Dissection::Ignored("not_ip"),
            },
            Err(_) => Dissection::Malformed("sll_header"),
        },
        LinkType::LinuxSll2 => match (data.get(..2), data.get(20..)) {
            (Some(&[hi, lo]), Some(rest)) => {
                ether_payload(EtherType(u16::from_be_bytes([hi, lo])), rest)
            }
            _ => Dissection::Malformed("sll2_header"),
        },
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => ip(0, data),
        LinkType::Null => match data.get(4..) {
            Some(rest) => ip(0, rest),
            None => Dissection::Malformed("null_header"),
        },
        LinkType::Unsupported(_) => Dissection::Ignored("unsupported_link_type"),
    }
}

/// Most VLAN tags skipped before giving up (QinQ is two).
const MAX_VLAN_TAGS: usize = 4;

fn ether_payload(mut ether_type: EtherType, mut data: &[u8]) -> Dissection<'_> {
    let mut vlan = None;
    for _ in 0..=MAX_VLAN_TAGS {
        match ether_type {
            EtherType::IPV4 => return ipv4(vlan.unwrap_or(0), data),
            EtherType::IPV6 => return ipv6(vlan.unwrap_or(0), data),
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => match SingleVlanSlice::from_slice(data) {
                Ok(tag) => {
                    vlan.get_or_insert(tag.vlan_identifier().value());
                    ether_type = tag.ether_type();
                    data = tag.payload_slice();
                }
                Err(_) => return Dissection::Malformed("vlan_header"),
            },
            EtherType::ARP => return arp(vlan.unwrap_or(0), data),
            _ => return Dissection::Ignored("not_ip"),
        }
    }
    Dissection::Malformed("too_many_vlan_tags")
}

/// An ARP packet, if it maps IPv4 addresses to Ethernet ones (the only kind there is on an
/// industrial segment; others are ignored).
fn arp(vlan: u16, data: &[u8]) -> Dissection<'static> {
    let Ok(arp) = ArpPacketSlice::from_slice(data) else {
        return Dissection::Malformed("arp_header");
    };
    let six = |b: &[u8]| <[u8; 6]>::try_from(b).ok().map(Mac);
    let four = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET || arp.proto_addr_type() != EtherType::IPV4 {
        return Dissection::Ignored("arp_not_ipv4_over_ethernet");
    }
    match (
        six(arp.sender_hw_addr()),
        four(arp.sender_protocol_addr()),
        six(arp.target_hw_addr()),
        four(arp.target_protocol_addr()),
    ) {
        (Some(sender_mac), Some(sender_ip), Some(target_mac), Some(target_ip)) => {
            Dissection::Arp(ArpFrame {
                vlan,
                operation: arp.operation().0,
                sender_mac,
                sender_ip,
                target_mac,
                target_ip,
            })
        }
        _ => Dissection::Ignored("arp_not_ipv4_over_ethernet"),
    }
}

fn ip(vlan: u16, data: &[u8]) -> Dissection<'_> {
    match data.first().map(|b| b >> 4) {
        Some(4) => ipv4(vlan, data),
        Some(6) => ipv6(vlan, data),
        _ => Dissection::Malformed("ip_version"),
    }
}

fn ipv4(vlan: u16, data: &[u8]) -> Dissection<'_> {
    let Ok(ip) = Ipv4Slice::from_slice(data) else {
        return Dissection::Malformed("ipv4_header");
    };
    let h = ip.header();
    let (src, dst) = (IpAddr::from(h.source()), IpAddr::from(h.destination()));
    let payload = ip.payload();
    if payload.fragmented {
        return Dissection::Fragment(Fragment {
            vlan,
            src,
            dst,
            id: h.identification(),
            protocol: payload.ip_number.0,
            offset: h.fragments_offset().value(),
            more: h.more_fragments(),
            payload: payload.payload,
        });
    }
    transport(vlan, src, dst, payload.ip_number, payload.payload)
}

fn ipv6(vlan: u16, data: &[u8]) -> Dissection<'_> {
    let Ok(ip) = Ipv6Slice::from_slice(data) else {
        return Dissection::Malformed("ipv6_header");
    };
    if ip.is_payload_fragmented() {
        return Dissection::Ignored("ipv6_fragment");
    }
    let h = ip.header();
    let (src, dst) = (
        IpAddr::from(h.source_addr()),
        IpAddr::from(h.destination_addr()),
    );
    let payload = ip.payload();
    transport(vlan, src, dst, payload.ip_number, payload.payload)
}

fn transport(
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    payload: &[u8],
) -> Dissection<'_> {
    match protocol {
        IpNumber::TCP => match TcpSlice::from_slice(payload) {
            Ok(tcp) => Dissection::Packet(tcp_packet(vlan, src, dst, &tcp)),
            Err(_) => Dissection::Malformed("tcp_header"),
        },
        IpNumber::UDP => match UdpSlice::from_slice(payload) {
            Ok(udp) => Dissection::Packet(udp_packet(vlan, src, dst, &udp)),
            Err(_) => Dissection::Malformed("udp_header"),
        },
        _ => Dissection::Ignored("not_tcp_or_udp"),
    }
}

/// Reads the transport header of a reassembled IPv4 datagram.
pub fn reassembled<'a>(fragment: &Fragment<'_>, payload: &'a [u8]) -> Dissection<'a> {
    transport(
        fragment.vlan,
        fragment.src,
        fragment.dst,
        IpNumber(fragment.protocol),
        payload,
    )
}

fn tcp_packet<'a>(vlan: u16, src: IpAddr, dst: IpAddr, tcp: &TcpSlice<'a>) -> Dissected<'a> {
    Dissected {
        vlan,
        src,
        dst,
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        transport: Transport::Tcp(TcpFlags {
            seq: tcp.sequence_number(),
            ack_number: tcp.acknowledgment_number(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        }),
        payload: tcp.payload(),
        macs: None,
    }
}

fn udp_packet<'a>(vlan: u16, src: IpAddr, dst: IpAddr, udp: &UdpSlice<'a>) -> Dissected<'a> {
    Dissected {
        vlan,
        src,
        dst,
        src_port: udp.source_port(),
        dst_port: udp.destination_port(),
        transport: Transport::Udp,
        payload: udp.payload(),
        macs: None,
    }
}

#[cfg(test)]
mod tests;
