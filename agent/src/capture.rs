//! Where packets come from. Capture files are read packet by packet through [`PacketSource`];
//! live sources (an interface through a TPACKET_V3 ring or pnet, a pcap stream) through
//! [`live::LiveSource`], on a thread of their own. Every source hands out the same
//! [`CapturedPacket`]s, so the pipeline does not know or care which one is in use.

pub mod bpf;
pub(crate) mod file;
#[cfg(target_os = "linux")]
pub(crate) mod interface;
pub(crate) mod live;
pub(crate) mod pcap_stream;
#[cfg(target_os = "linux")]
pub mod pnet;
#[cfg(target_os = "linux")]
pub mod ring;
#[cfg(target_os = "linux")]
pub(crate) mod socket;

pub use file::CaptureFileError;
#[cfg(target_os = "linux")]
pub use interface::OpenError;

pub use otwatch_packet::frame::{CapturedPacket, LinkType};

/// A source of captured packets.
pub trait PacketSource {
    /// Why reading failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next packet, or `None` at the end of a finite source.
    fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, Self::Error>;
}

#[cfg(test)]
mod tests;
