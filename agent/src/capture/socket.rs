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

/// `ETH_P_ALL` in network byte order, as `socket(2)` and `bind(2)` want it: every protocol.
fn eth_p_all() -> i32 {
    i32::from((libc::ETH_P_ALL as u16).to_be())
}

/// Opens a raw `AF_PACKET` socket receiving every protocol. Needs `CAP_NET_RAW`.
pub fn open_packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so handing it to OwnedFd (which closes it once) is sound.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            eth_p_all(),
        )
    };
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
