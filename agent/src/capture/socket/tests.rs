use std::os::fd::AsFd;

use super::*;

/// The socket, or `None` (with a note) where this process may not open one.
fn socket_or_skip(test: &str) -> Option<OwnedFd> {
    match open_packet_socket() {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!(
                "SKIPPED {test}: opening an AF_PACKET socket needs CAP_NET_RAW (run as root)"
            );
            None
        }
        Err(e) => panic!("socket: {e}"),
    }
}

#[test]
fn options_apply_to_a_packet_socket_and_statistics_start_at_zero() {
    let Some(fd) = socket_or_skip("options_apply_to_a_packet_socket") else {
        return;
    };
    ignore_outgoing(fd.as_fd()).expect("PACKET_IGNORE_OUTGOING");
    let granted = set_receive_buffer(fd.as_fd(), 4 << 20).expect("SO_RCVBUF");
    assert!(granted >= 4 << 20, "granted {granted}");
    let counts = packet_statistics(fd.as_fd()).expect("PACKET_STATISTICS");
    assert_eq!(counts.drops, 0);
}

#[test]
fn a_duplicate_descriptor_reads_the_same_socket() {
    let Some(fd) = socket_or_skip("a_duplicate_descriptor_reads_the_same_socket") else {
        return;
    };
    let dup = fd.try_clone().expect("dup");
    drop(fd);
    assert!(packet_statistics(dup.as_fd()).is_ok());
}
