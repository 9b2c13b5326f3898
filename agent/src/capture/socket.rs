//! The Linux `AF_PACKET` socket options the capture backends need and no maintained crate
//! wraps: opening the socket, ignoring outgoing frames, sizing the receive buffer, and reading
//! the kernel's drop counters (`PACKET_STATISTICS`).
//!
//! This is the only place in the agent that calls the C library directly. Every `unsafe`
//! block is one system call on a file descriptor this module owns (an [`OwnedFd`]) or
//! borrows (a [`BorrowedFd`]), with pointers to properly sized locals; each says why it is
//! sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Opens a raw `AF_PACKET` socket that receives nothing until it is bound to an interface
/// with a protocol (protocol 0 here; pnet's channel and [`bind_interface`] bind with
/// `ETH_P_ALL`): a socket opened for every protocol would receive the frames of every
/// interface until then, and count them as drops once its buffer filled. Needs `CAP_NET_RAW`.
pub fn open_packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so handing it to OwnedFd (which closes it once) is sound.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: BorrowedFd<'_>, level: i32, option: i32, value: i32) -> io::Result<()> {
    // SAFETY: the pointer is to a live i32 and the length passed is its size; the descriptor
    // is valid for the borrow's lifetime.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a socket option whose value is a plain C struct.
fn set_struct<T>(fd: BorrowedFd<'_>, level: i32, option: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` (a `repr(C)` kernel struct from libc) and the
    // length passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: BorrowedFd<'_>, level: i32, option: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: the pointers are to a live i32 and its length, which the kernel writes at most.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Stops the socket from seeing frames this host sends (`PACKET_IGNORE_OUTGOING`, Linux 4.20).
/// On loopback every frame is both sent and received: without this each would be seen twice.
pub fn ignore_outgoing(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
}

/// Asks for a receive buffer of `bytes` (beyond `net.core.rmem_max` only with
/// `CAP_NET_ADMIN`) and returns the size the kernel granted.
pub fn set_receive_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let wanted = i32::try_from(bytes).unwrap_or(i32::MAX);
    if set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, wanted).is_err() {
        set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, wanted)?;
    }
    let granted = get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok(usize::try_from(granted).unwrap_or(0))
}

/// Switches the socket to TPACKET_V3 (memory-mapped ring of variable-size frames in blocks).
pub fn use_tpacket_v3(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        libc::tpacket_versions::TPACKET_V3 as i32,
    )
}

/// Asks the kernel for a receive ring (`PACKET_RX_RING`) of `blocks` blocks of `block_size`
/// bytes, each handed to the reader when full or after `retire_ms` milliseconds.
pub fn request_rx_ring(
    fd: BorrowedFd<'_>,
    block_size: u32,
    blocks: u32,
    frame_size: u32,
    retire_ms: u32,
) -> io::Result<()> {
    let req = libc::tpacket_req3 {
        tp_block_size: block_size,
        tp_block_nr: blocks,
        tp_frame_size: frame_size,
        tp_frame_nr: (block_size / frame_size).saturating_mul(blocks),
        tp_retire_blk_tov: retire_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    set_struct(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
}

/// Attaches a classic BPF program: the kernel drops what it rejects before it costs a copy.
pub fn attach_filter(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?,
        filter: program.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call; `program` outlives it.
    set_struct(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Joins fanout group `group` (bound sockets of one interface sharing its frames), with the
/// kernel choosing each frame's socket by running `selector`: it returns the socket's index.
///
/// With `ignore_outgoing`, the group ignores frames this host sends: in a group the socket
/// option `PACKET_IGNORE_OUTGOING` is not consulted, the group's own flag is (Linux 6.4).
pub fn join_fanout(
    fd: BorrowedFd<'_>,
    group: u16,
    selector: &[libc::sock_filter],
    ignore_outgoing: bool,
) -> io::Result<()> {
    // Fragments are reassembled before the choice, so every piece of a datagram goes one way.
    let mut mode = libc::PACKET_FANOUT_CBPF | libc::PACKET_FANOUT_FLAG_DEFRAG;
    if ignore_outgoing {
        mode |= libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    }
    // The kernel reads the option as a u32: group id in the low half, mode and flags above.
    let arg = i32::from_ne_bytes((u32::from(group) | (mode << 16)).to_ne_bytes());
    set_int(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, arg)?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(selector.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?,
        filter: selector.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call; `selector` outlives it.
    set_struct(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
}

/// Puts the interface in promiscuous mode for as long as the socket lives.
pub fn add_promiscuous(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: i32::try_from(ifindex).unwrap_or(0),
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    set_struct(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// Binds the socket to one interface, every protocol.
pub fn bind_interface(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is a valid value (plain integers and arrays).
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    // SAFETY: the pointer is to a live sockaddr_ll and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for the socket to become readable (or to report an error).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLERR,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    let rc = unsafe { libc::poll(&raw mut pollfd, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0)
}

/// What the kernel counted since the last call (reading resets its counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Frames that reached the socket, dropped ones included.
    pub packets: u64,
    /// Frames dropped because the buffer or ring was full.
    pub drops: u64,
}

/// Reads and resets the socket's `PACKET_STATISTICS`.
pub fn packet_statistics(fd: BorrowedFd<'_>) -> io::Result<KernelCounts> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the pointers are to a live tpacket_stats and its length, which the kernel writes
    // at most; the descriptor is valid for the borrow's lifetime.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(KernelCounts {
        packets: u64::from(stats.tp_packets),
        drops: u64::from(stats.tp_drops),
    })
}

#[cfg(test)]
mod tests;
