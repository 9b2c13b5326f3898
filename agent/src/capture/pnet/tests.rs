use std::net::UdpSocket;
use std::time::Instant;

use super::*;

/// Opens loopback, or `None` (with a note) where this process may not capture.
fn loopback_or_skip(test: &str) -> Option<PnetSource> {
    let options = PnetOptions {
        interface: "lo".into(),
        socket_buffer: 8 << 20,
        ignore_outgoing: None,
        promiscuous: false,
        filter: crate::capture::bpf::Program::tcp_or_udp(),
    };
    match PnetSource::open(&options) {
        Ok(source) => Some(source),
        Err(OpenError::Permission { .. }) => {
            eprintln!("SKIPPED {test}: capturing needs CAP_NET_RAW (run as root; CI does)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Frames captured within `wait` whose bytes contain `marker`: (captured length, length on
/// the wire).
fn frames_with(source: &mut PnetSource, marker: &[u8], wait: Duration) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        source
            .poll(Duration::from_millis(5), &mut |p| {
                if p.data.windows(marker.len()).any(|w| w == marker) {
                    found.push((p.data.len(), p.orig_len));
                }
            })
            .unwrap();
    }
    found
}

#[test]
fn on_loopback_a_frame_is_seen_once_and_a_64k_frame_arrives_whole() {
    let Some(mut source) = loopback_or_skip("on_loopback_a_frame_is_seen_once") else {
        return;
    };
    assert!(source.describe().contains("ignoring outgoing frames"));
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let marker = b"otwatch-pnet-test-marker";
    let mut big = vec![0x5a; 60_000];
    big[..marker.len()].copy_from_slice(marker);
    tx.send_to(&big, rx.local_addr().unwrap()).unwrap();
    let frames = frames_with(&mut source, marker, Duration::from_millis(500));
    // Ethernet (14) + IPv4 (20) + UDP (8) + payload, once, uncut.
    assert_eq!(frames, vec![(60_042, 60_042)]);
    assert_eq!(source.kernel_drops(), 0);
}
