//! What every capture source hands the packet path: one frame, its capture time and its link
//! type. Sources live in the agent (files, interfaces, streams); this is their common currency.

use otwatch_rules::time::Timestamp;

/// The link layer a packet starts with (the pcap LINKTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// 1: Ethernet II, with optional 802.1Q / QinQ tags.
    Ethernet,
    /// 113: Linux cooked capture v1.
    LinuxSll,
    /// 276: Linux cooked capture v2.
    LinuxSll2,
    /// 101 (and 12, 14): raw IPv4 or IPv6.
    RawIp,
    /// 228: raw IPv4.
    Ipv4,
    /// 229: raw IPv6.
    Ipv6,
    /// 0 and 108: BSD loopback, a 4-byte address family before the IP header.
    Null,
    /// Anything else, by its LINKTYPE number.
    Unsupported(u32),
}

impl LinkType {
    /// Maps a pcap LINKTYPE number.
    pub fn from_linktype(code: u32) -> Self {
        match code {
            1 => Self::Ethernet,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            12 | 14 | 101 => Self::RawIp,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            0 | 108 => Self::Null,
            other => Self::Unsupported(other),
        }
    }
}

/// One captured frame, borrowed from the source's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct CapturedPacket<'a> {
    /// Capture time.
    pub ts: Timestamp,
    /// How the frame starts.
    pub link: LinkType,
    /// The bytes captured (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub orig_len: u32,
}

impl CapturedPacket<'_> {
    /// Whether the capture cut the frame short (snap length).
    pub fn truncated(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.orig_len)
    }
}
