//! Live capture through an `AF_PACKET` TPACKET_V3 ring: the kernel writes frames into blocks of
//! memory shared with the agent and hands over a whole block at a time (when it is full, or
//! after a short timeout), so a busy SPAN port costs one `poll` per block instead of one system
//! call per frame.
//!
//! No maintained, permissively licensed crate does this, so this module talks to the kernel
//! through `libc` (the socket options are in [`super::socket`]). The shared memory is read
//! here, and every `unsafe` block says why it is sound. The rules it relies on (Linux
//! `Documentation/networking/packet_mmap.rst`):
//! - a block belongs to the agent from the moment its `block_status` has `TP_STATUS_USER` until
//!   the agent writes `TP_STATUS_KERNEL` back; the kernel does not touch it in between;
//! - blocks are handed over in ring order; the agent reads them in the same order;
//! - inside a block, `num_pkts` frames start at `offset_to_first_pkt`, each header's
//!   `tp_next_offset` leads to the next, and each frame's bytes sit at `tp_mac` from its header.
//!
//! Offsets read from the ring are checked against the block's bounds before use, so a kernel
//! bug cannot make the agent read outside the mapping.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use otwatch_rules::time::Timestamp;

use super::bpf::Program;
use super::interface::{self, OpenError};
use super::live::{LiveSource, Polled};
use super::socket;
use super::{CapturedPacket, LinkType};

/// How to set the ring up.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// The interface's name.
    pub interface: String,
    /// Bytes per block (a power of two, at least a page; 1 MiB by default).
    pub block_size: u32,
    /// Blocks in the ring (64 by default: 64 MiB of buffer).
    pub blocks: u32,
    /// Longest a partly filled block waits before it is handed over (the capture's latency
    /// when traffic is light).
    pub retire: Duration,
    /// Whether to ignore frames this host sends; `None`: only on loopback.
    pub ignore_outgoing: Option<bool>,
    /// Whether to put the interface in promiscuous mode (a SPAN port needs it).
    pub promiscuous: bool,
    /// What the kernel passes on.
    pub filter: Program,
    /// Share the interface's frames with other rings: (fanout group id, workers in the
    /// group). Each host pair's frames go to one of them.
    pub fanout: Option<(u16, u32)>,
}

impl RingOptions {
    /// The defaults for `interface`: 64 blocks of 1 MiB, handed over after at most 4 ms,
    /// promiscuous, TCP and UDP only.
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_string(),
            block_size: 1 << 20,
            blocks: 64,
            retire: Duration::from_millis(4),
            ignore_outgoing: None,
            promiscuous: true,
            filter: Program::tcp_or_udp(),
            fanout: None,
        }
    }
}

/// The shared memory of the ring, unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by one RingSource; moving it to another thread
// moves the only handle to it.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned, and nothing borrows the
        // mapping any more (slices handed out never outlive `poll`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// An interface read through a TPACKET_V3 ring.
pub struct RingSource {
    // Field order matters: the mapping is unmapped before the socket is closed.
    ring: Mapping,
    fd: OwnedFd,
    block_size: usize,
    blocks: usize,
    next: usize,
    /// A frame with its VLAN tag put back (the kernel strips it into the header).
    scratch: Vec<u8>,
    description: String,
}

impl std::fmt::Debug for RingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSource")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Offset of `block_status` in a block descriptor: `version` and `offset_to_priv` (two u32)
/// come first, then the 8-aligned `tpacket_hdr_v1`, which starts with it.
const BLOCK_STATUS: usize = 8;

impl RingSource {
    /// Opens the interface and maps its ring.
    pub fn open(options: &RingOptions) -> Result<Self, OpenError> {
        let iface = interface::find(&options.interface)?;
        let name = iface.name.clone();
        let os = |what: &'static str| interface::os_error(&name, what);
        let invalid = |what: &'static str, message: &str| {
            os(what)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                message.to_string(),
            ))
        };
        let page = 4096u32;
        if !options.block_size.is_power_of_two() || options.block_size < page {
            return Err(invalid(
                "ring block size",
                "expected a power of two of at least 4096 bytes",
            ));
        }
        if options.blocks == 0 {
            return Err(invalid("ring blocks", "expected at least 1"));
        }
        let fd = interface::open_socket(&name)?;
        socket::use_tpacket_v3(fd.as_fd()).map_err(os("PACKET_VERSION"))?;
        socket::attach_filter(fd.as_fd(), &options.filter.to_kernel())
            .map_err(os("capture filter"))?;
        let ignore_outgoing = interface::ignore_outgoing(&fd, options.ignore_outgoing, &iface)?;
        let retire_ms = u32::try_from(options.retire.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        socket::request_rx_ring(
            fd.as_fd(),
            options.block_size,
            options.blocks,
            2048,
            retire_ms,
        )
        .map_err(os("PACKET_RX_RING"))?;
        let len = options.block_size as usize * options.blocks as usize;
        let ring = map(&fd, len).map_err(os("mmap"))?;
        socket::bind_interface(fd.as_fd(), iface.index).map_err(os("bind"))?;
        if options.promiscuous {
            socket::add_promiscuous(fd.as_fd(), iface.index).map_err(os("promiscuous mode"))?;
        }
        if let Some((group, workers)) = options.fanout {
            let selector = Program::fanout_by_host_pair(workers).to_kernel();
            socket::join_fanout(fd.as_fd(), group, &selector, ignore_outgoing)
                .map_err(os("PACKET_FANOUT"))?;
        }
        let description = format!(
            "TPACKET_V3 ring on {name} ({} x {} KiB blocks, {}{})",
            options.blocks,
            options.block_size / 1024,
            interface::describe_mode(options.promiscuous, ignore_outgoing, &options.filter),
            match options.fanout {
                Some((group, workers)) => {
                    format!(", fanout group {group} of {workers} by host pair")
                }
                None => String::new(),
            }
        );
        Ok(Self {
            ring,
            fd,
            block_size: options.block_size as usize,
            blocks: options.blocks as usize,
            next: 0,
            scratch: Vec::with_capacity(1 << 16),
            description,
        })
    }

    /// The status word of block `index`, shared with the kernel.
    fn status(&self, index: usize) -> &AtomicU32 {
        // SAFETY: `index < blocks`, so the word lies inside the mapping; blocks start on page
        // boundaries, so it is 4-aligned; the kernel and this reader only access it atomically
        // (the kernel with barriers around its stores), and the mapping outlives `&self`.
        unsafe {
            AtomicU32::from_ptr(
                self.ring
                    .ptr
                    .as_ptr()
                    .add(index * self.block_size + BLOCK_STATUS)
                    .cast(),
            )
        }
    }

    /// Hands out every frame of the block at `self.next`, which the kernel has handed over,
    /// then gives the block back.
    fn drain_block(&mut self, on_packet: &mut dyn FnMut(&CapturedPacket<'_>)) -> usize {
        let start = self.next * self.block_size;
        // SAFETY: the block `start..start + block_size` lies inside the mapping and belongs to
        // the agent until its status is written back below (TP_STATUS_USER was read with
        // Acquire ordering, so the kernel's writes to it are visible); the kernel does not
        // write to it meanwhile, so a shared slice over it is sound for this call.
        let block: &[u8] = unsafe {
            std::slice::from_raw_parts(self.ring.ptr.as_ptr().add(start), self.block_size)
        };
        let u32_at = |at: usize| -> Option<u32> {
            let b = block.get(at..at + 4)?;
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u16_at = |at: usize| -> Option<u16> {
            let b = block.get(at..at + 2)?;
            Some(u16::from_ne_bytes([b[0], b[1]]))
        };
        // tpacket_hdr_v1 after block_status: num_pkts, offset_to_first_pkt.
        let packets = u32_at(BLOCK_STATUS + 4).unwrap_or(0);
        let mut at = u32_at(BLOCK_STATUS + 8).unwrap_or(0) as usize;
        let mut handed = 0;
        for _ in 0..packets {
            // tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac (u16), net (u16),
            // then hv1: rxhash, vlan_tci (u32), vlan_tpid (u16).
            let (
                Some(next),
                Some(sec),
                Some(nsec),
                Some(snaplen),
                Some(len),
                Some(status),
                Some(mac),
            ) = (
                u32_at(at),
                u32_at(at + 4),
                u32_at(at + 8),
                u32_at(at + 12),
                u32_at(at + 16),
                u32_at(at + 20),
                u16_at(at + 24),
            )
            else {
                break;
            };
            let data_start = at + usize::from(mac);
            let Some(data) = block.get(data_start..data_start + snaplen as usize) else {
                break;
            };
            let ts = Timestamp::from_nanos(
                u64::from(sec)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(nsec)),
            );
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0)
                .then(|| u32_at(at + 32).unwrap_or(0) as u16)
                .filter(|_| data.len() >= 12);
            let packet = match vlan {
                // The kernel took the 802.1Q tag out of the frame (VLAN offload): put it back,
                // so the agent sees the frame as it was on the wire.
                Some(tci) => {
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        u16_at(at + 36).unwrap_or(0x8100)
                    } else {
                        0x8100
                    };
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&data[..12]);
                    self.scratch.extend_from_slice(&tpid.to_be_bytes());
                    self.scratch.extend_from_slice(&tci.to_be_bytes());
                    self.scratch.extend_from_slice(&data[12..]);
                    CapturedPacket {
                        ts,
                        link: LinkType::Ethernet,
                        data: &self.scratch,
                        orig_len: len.saturating_add(4),
                    }
                }
                None => CapturedPacket {
                    ts,
                    link: LinkType::Ethernet,
                    data,
                    orig_len: len,
                },
            };
            on_packet(&packet);
            handed += 1;
            if next == 0 {
                break;
            }
            at += next as usize;
        }
        self.status(self.next)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.blocks;
        handed
    }
}

/// Maps the ring of `fd`.
fn map(fd: &OwnedFd, len: usize) -> std::io::Result<Mapping> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of the socket's ring, which the kernel sized to `len`
    // (PACKET_RX_RING succeeded); no existing memory is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(ptr.cast())
        .map(|ptr| Mapping { ptr, len })
        .ok_or_else(|| std::io::Error::other("mmap returned null"))
}

impl LiveSource for RingSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
    ) -> std::io::Result<Polled> {
        let ready = |s: &Self| s.status(s.next).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0;
        if !ready(self) {
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            socket::wait_readable(self.fd.as_fd(), ms)?;
            if !ready(self) {
                return Ok(Polled::Packets(0));
            }
        }
        Ok(Polled::Packets(self.drain_block(on_packet)))
    }

    fn kernel_drops(&mut self) -> u64 {
        socket::packet_statistics(self.fd.as_fd()).map_or(0, |c| c.drops)
    }

    /// A block is handed on as soon as it is read: the kernel already waited for it to fill
    /// (or for the retire timeout).
    fn polls_in_batches(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
