//! Frames an intruder crafts below the Modbus transaction: a SYN flood from spoofed source
//! addresses and gratuitous ARP replies that poison a PLC's and an HMI's caches. They are
//! written into the software SPAN port in the demo (loopback has no ARP, and spoofing sources
//! there needs root) and sent raw onto the captured interface in the network-namespace tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};

use crate::recorder::tcp_frame;

/// The intruder's own Ethernet address for crafted frames.
pub const INTRUDER_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];

/// `count` SYNs to `target`, each from another address of 172.16.0.0/12 (spoofed), sent
/// from the intruder's Ethernet address to `target_mac`.
pub fn syn_flood(target: SocketAddr, target_mac: [u8; 6], count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .filter_map(|n| {
            let src = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n)),
                1_024 + (n % 60_000) as u16,
            );
            tcp_frame(
                (INTRUDER_MAC, target_mac),
                src,
                target,
                n.wrapping_mul(2_654_435_761),
                0,
                "S",
                &[],
            )
        })
        .collect()
}

/// A gratuitous ARP reply, broadcast: `ip` is at `mac`.
pub fn arp_announce(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    arp(mac, ip, [0xff; 6], ip, ArpOperation::REPLY)
}

/// An ARP reply from `mac` saying `ip` is at `mac`, to `to_mac` asking about it from `to_ip`.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    arp(mac, ip, to_mac, to_ip, ArpOperation::REPLY)
}

fn arp(
    mac: [u8; 6],
    ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
    operation: ArpOperation,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    let eth = Ethernet2Header {
        source: mac,
        destination: target_mac,
        ether_type: EtherType::ARP,
    };
    frame.extend_from_slice(&eth.to_bytes());
    if let Ok(packet) = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        operation,
        &mac,
        &ip.octets(),
        &target_mac,
        &target_ip.octets(),
    ) {
        frame.extend_from_slice(&packet.to_bytes());
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_frames_dissect_as_an_intruder_would_have_them_read() {
        let frames = syn_flood("10.66.0.2:502".parse().unwrap(), [2, 0, 0, 0, 0, 2], 3);
        assert_eq!(frames.len(), 3);
        let eth = etherparse::SlicedPacket::from_ethernet(&frames[1]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = eth.net else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source(), [172, 16, 0, 1]);
        let gratuitous = arp_announce(INTRUDER_MAC, Ipv4Addr::new(10, 66, 0, 2));
        assert_eq!(gratuitous.len(), 42);
        assert_eq!(&gratuitous[12..14], &[0x08, 0x06]);
        assert_eq!(&gratuitous[28..32], &[10, 66, 0, 2], "sender address");
    }
}
