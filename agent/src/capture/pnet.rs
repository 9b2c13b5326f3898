//! Live capture on an interface through pnet's `AF_PACKET` channel: portable and simple, one
//! system call per frame (the TPACKET_V3 ring is the faster backend).
//!
//! The socket is opened here rather than by pnet so that it gets what pnet does not set: a
//! receive buffer sized for bursts, `PACKET_IGNORE_OUTGOING` on loopback (where every frame
//! is both sent and received, and would otherwise be seen twice), and a descriptor kept for
//! the kernel's drop counters. pnet reads into a buffer of fixed size and cuts longer frames
//! silently (4096 bytes by default): the buffer here holds the largest frame an interface can
//! carry, and a frame that fills it is counted as truncated.

use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkReceiver};

use super::bpf::Program;
use super::interface::{self, OpenError};
use super::live::{LiveSource, Polled};
use super::socket;
use super::{CapturedPacket, LinkType};
use crate::telemetry::status::wall_clock;

/// The read buffer: an IPv4 or IPv6 packet of 64 KiB with Ethernet and two VLAN tags fits,
/// with room to spare for offloaded (GRO) frames.
pub const READ_BUFFER: usize = 256 << 10;

/// How to open the interface.
#[derive(Debug, Clone)]
pub struct PnetOptions {
    /// The interface's name.
    pub interface: String,
    /// Bytes of socket receive buffer asked for (the kernel may grant less).
    pub socket_buffer: usize,
    /// Whether to ignore frames this host sends; `None`: only on loopback.
    pub ignore_outgoing: Option<bool>,
    /// Whether to put the interface in promiscuous mode (a SPAN port needs it).
    pub promiscuous: bool,
    /// What the kernel passes on.
    pub filter: Program,
}

/// An interface read through pnet.
pub struct PnetSource {
    rx: Box<dyn DataLinkReceiver>,
    /// A duplicate of pnet's descriptor, for `PACKET_STATISTICS`.
    stats_fd: OwnedFd,
    description: String,
}

impl std::fmt::Debug for PnetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PnetSource")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl PnetSource {
    /// Opens the interface for capture.
    pub fn open(options: &PnetOptions) -> Result<Self, OpenError> {
        let interface = interface::find(&options.interface)?;
        let name = interface.name.clone();
        let os = |what: &'static str| interface::os_error(&name, what);
        let fd = interface::open_socket(&name)?;
        socket::attach_filter(fd.as_fd(), &options.filter.to_kernel())
            .map_err(os("capture filter"))?;
        let granted = socket::set_receive_buffer(fd.as_fd(), options.socket_buffer)
            .map_err(os("receive buffer"))?;
        let ignore_outgoing = interface::ignore_outgoing(&fd, options.ignore_outgoing, &interface)?;
        let stats_fd = fd.try_clone().map_err(os("dup"))?;
        let config = pnet_datalink::Config {
            read_buffer_size: READ_BUFFER,
            read_timeout: Some(Duration::from_millis(5)),
            promiscuous: options.promiscuous,
            socket_fd: Some(fd.into_raw_fd()),
            ..pnet_datalink::Config::default()
        };
        let rx = match pnet_datalink::channel(&interface, config).map_err(os("open channel"))? {
            Channel::Ethernet(_, rx) => rx,
            _ => {
                return Err(os("open channel")(std::io::Error::other(
                    "not an Ethernet channel",
                )));
            }
        };
        let description = format!(
            "pnet on {name} ({}, socket buffer {} KiB)",
            interface::describe_mode(options.promiscuous, ignore_outgoing, &options.filter),
            granted / 1024
        );
        Ok(Self {
            rx,
            stats_fd,
            description,
        })
    }
}

impl LiveSource for PnetSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn poll(
        &mut self,
        _timeout: Duration,
        on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
    ) -> std::io::Result<Polled> {
        match self.rx.next() {
            Ok(frame) => {
                let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                // A frame that fills the buffer may have been cut: say it was at least one
                // byte longer, so it counts as truncated.
                let orig_len = if frame.len() >= READ_BUFFER {
                    len.saturating_add(1)
                } else {
                    len
                };
                on_packet(&CapturedPacket {
                    // pnet does not pass the kernel's timestamp on: the time of reading is close.
                    ts: wall_clock(),
                    link: LinkType::Ethernet,
                    data: frame,
                    orig_len,
                });
                Ok(Polled::Packets(1))
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(Polled::Packets(0)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Polled::Packets(0)),
            Err(e) => Err(e),
        }
    }

    fn kernel_drops(&mut self) -> u64 {
        socket::packet_statistics(self.stats_fd.as_fd()).map_or(0, |c| c.drops)
    }
}

#[cfg(test)]
mod tests;
