//! From a captured frame to addresses, ports and transport payload (crate `etherparse`).
//!
//! Link layers: Ethernet (802.1Q and QinQ tags; trailer bytes after the IP datagram are ignored
//! because the IP length bounds the payload), Linux SLL and SLL2, raw IP, BSD loopback. IPv4 and
//! IPv6; IPv4 fragments are handed back for [`crate::defrag`] to reassemble.

use std::net::IpAddr;

use etherparse::{EtherType, IpNumber, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice};

use crate::capture::{CapturedPacket, LinkType};

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
    /// Valid but of no interest (ARP, ICMP, IPv6 fragments, ...), with a reason for the counters.
    Ignored(&'static str),
    /// Headers that do not parse, with a reason for the counters.
    Malformed(&'static str),
}

/// Dissects one captured frame.
pub fn dissect<'a>(packet: &CapturedPacket<'a>) -> Dissection<'a> {
    let data = packet.data;
    let sliced = match packet.link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(data),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(data),
        LinkType::LinuxSll2 => match (data.get(..2), data.get(20..)) {
            (Some(&[hi, lo]), Some(rest)) => {
                SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([hi, lo])), rest)
            }
            _ => return Dissection::Malformed("sll2_header"),
        },
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => SlicedPacket::from_ip(data),
        LinkType::Null => match data.get(4..) {
            Some(rest) => SlicedPacket::from_ip(rest),
            None => return Dissection::Malformed("null_header"),
        },
        LinkType::Unsupported(_) => return Dissection::Ignored("unsupported_link_type"),
    };
    let sliced = match sliced {
        Ok(s) => s,
        Err(_) => return Dissection::Malformed("headers"),
    };
    let vlan = sliced.vlan_ids().first().map_or(0, |v| v.value());
    let (src, dst) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let (src, dst) = (IpAddr::from(h.source()), IpAddr::from(h.destination()));
            if h.is_fragmenting_payload() {
                return Dissection::Fragment(Fragment {
                    vlan,
                    src,
                    dst,
                    id: h.identification(),
                    protocol: h.protocol().0,
                    offset: h.fragments_offset().value(),
                    more: h.more_fragments(),
                    payload: ip.payload().payload,
                });
            }
            (src, dst)
        }
        Some(NetSlice::Ipv6(ip)) => {
            if ip.is_payload_fragmented() {
                return Dissection::Ignored("ipv6_fragment");
            }
            let h = ip.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
            )
        }
        Some(NetSlice::Arp(_)) => return Dissection::Ignored("arp"),
        None => return Dissection::Ignored("not_ip"),
    };
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => Dissection::Packet(tcp_packet(vlan, src, dst, &tcp)),
        Some(TransportSlice::Udp(udp)) => Dissection::Packet(udp_packet(vlan, src, dst, &udp)),
        Some(_) => Dissection::Ignored("not_tcp_or_udp"),
        None => Dissection::Ignored("no_transport"),
    }
}

/// Reads the transport header of a reassembled IPv4 datagram.
pub fn reassembled<'a>(fragment: &Fragment<'_>, payload: &'a [u8]) -> Dissection<'a> {
    let (vlan, src, dst) = (fragment.vlan, fragment.src, fragment.dst);
    match IpNumber(fragment.protocol) {
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
    }
}

#[cfg(test)]
mod tests;
