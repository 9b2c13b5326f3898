use super::interpret::run as run_with;
use super::*;

/// Runs `program` on a received `frame` (no metadata).
fn run(program: &Program, frame: &[u8]) -> Option<u32> {
    run_with(program, frame, 0, 0)
}

/// An Ethernet frame with `ethertype`, and `payload` after the 14-byte header.
fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(protocol: u8) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, protocol, 0, 0];
    h.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    h.extend_from_slice(&[0; 20]);
    h
}

fn ipv6(next: u8) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 20, next, 64];
    h.extend_from_slice(&[0; 52]);
    h
}

#[test]
fn the_default_filter_keeps_tcp_and_udp_and_tagged_frames_and_drops_the_rest() {
    let p = Program::tcp_or_udp();
    let kept = |f: &[u8]| run(&p, f).expect("known instructions") > 0;
    assert!(kept(&frame(0x0800, &ipv4(6))));
    assert!(kept(&frame(0x0800, &ipv4(17))));
    assert!(kept(&frame(0x86dd, &ipv6(6))));
    assert!(kept(&frame(0x86dd, &ipv6(17))));
    assert!(kept(&frame(0x86dd, &ipv6(44))));
    assert!(kept(&frame(0x8100, &[0, 10, 0x08, 0x00])));
    assert!(kept(&frame(0x88a8, &[0, 10, 0x81, 0x00])));
    assert!(!kept(&frame(0x0800, &ipv4(1))), "ICMP");
    assert!(!kept(&frame(0x86dd, &ipv6(58))), "ICMPv6");
    assert!(!kept(&frame(0x0806, &[0; 28])), "ARP");
    assert!(!kept(&frame(0x88cc, &[0; 30])), "LLDP");
    assert!(!kept(&[0u8; 10]), "runt");
}

#[test]
fn tcpdump_ddd_output_parses_and_prints_back() {
    // `tcpdump -ddd udp` on Ethernet.
    let text = "12\n40 0 0 12\n21 0 5 34525\n48 0 0 20\n21 6 0 17\n21 0 6 44\n48 0 0 54\n21 3 4 17\n21 0 3 2048\n48 0 0 23\n21 0 1 17\n6 0 0 262144\n6 0 0 0\n";
    let p = Program::parse(text).unwrap();
    assert_eq!(p.instructions().len(), 12);
    assert_eq!(Program::parse(&p.to_string()).unwrap(), p);
    assert!(run(&p, &frame(0x0800, &ipv4(17))).unwrap() > 0);
    assert_eq!(run(&p, &frame(0x0800, &ipv4(6))), Some(0));
}

#[test]
fn a_malformed_filter_says_what_was_expected() {
    for (text, says) in [
        ("", "empty"),
        ("two,1 2 3 4", "count"),
        ("2,40 0 0 12", "1 instructions where the count says 2"),
        ("1,40 0 0", "instruction 1"),
        ("0", "1 to 4096"),
    ] {
        let e = Program::parse(text).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains("tcpdump -ddd"),
            "{text:?}: {e}"
        );
    }
}

/// An IPv4 packet (no link header: what a fanout selector sees) from `src` to `dst`.
fn ipv4_between(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut h = ipv4(6);
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h
}

#[test]
fn the_fanout_selector_sends_both_directions_of_a_host_pair_to_one_worker_and_spreads_pairs() {
    let p = Program::fanout_by_host_pair(2);
    // Received: from the IP header on, packet type PACKET_HOST (0).
    let received = |packet: &[u8], protocol| run_with(&p, packet, protocol, 0).unwrap();
    // Sent by this host: from the Ethernet header on, packet type PACKET_OUTGOING (4).
    let sent =
        |packet: &[u8], protocol| run_with(&p, &frame(protocol, packet), protocol, 4).unwrap();
    let mut used = [false; 2];
    for a in 1..=20u8 {
        for b in 100..=110u8 {
            let (x, y) = ([10, 0, a, 1], [10, 1, 0, b]);
            let there = received(&ipv4_between(x, y), 0x0800);
            assert_eq!(
                there,
                received(&ipv4_between(y, x), 0x0800),
                "{x:?} <-> {y:?}"
            );
            assert_eq!(
                there,
                sent(&ipv4_between(x, y), 0x0800),
                "{x:?} -> {y:?} sent"
            );
            assert_eq!(
                there,
                sent(&ipv4_between(y, x), 0x0800),
                "{y:?} -> {x:?} sent"
            );
            assert!(there < 2);
            used[there as usize] = true;
        }
    }
    assert_eq!(used, [true, true], "both workers get pairs");
    let mut v6 = ipv6(6);
    v6[8..24].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    v6[24..40].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 7, 8]);
    let mut v6_back = v6.clone();
    v6_back[8..24].copy_from_slice(&v6[24..40]);
    v6_back[24..40].copy_from_slice(&v6[8..24]);
    assert_eq!(received(&v6, 0x86dd), received(&v6_back, 0x86dd));
    assert_eq!(received(&v6, 0x86dd), sent(&v6_back, 0x86dd));
    assert_eq!(received(&[0; 28], 0x0806), 0, "ARP to worker 0");
    assert_eq!(
        run_with(
            &Program::fanout_by_host_pair(1),
            &ipv4_between([1, 2, 3, 4], [5, 6, 7, 8]),
            0x0800,
            0
        ),
        Some(0)
    );
}

#[test]
fn with_network_detection_the_default_filter_also_keeps_arp_and_says_which_filters_drop_it() {
    let p = Program::tcp_udp_or_arp();
    let kept = |f: &[u8]| run(&p, f).expect("known instructions") > 0;
    assert!(kept(&frame(0x0806, &[0; 28])), "ARP");
    assert!(kept(&super::interpret::ARP_REQUEST));
    assert!(kept(&frame(0x0800, &ipv4(6))));
    assert!(kept(&frame(0x0800, &ipv4(17))));
    assert!(kept(&frame(0x86dd, &ipv6(6))));
    assert!(kept(&frame(0x86dd, &ipv6(44))));
    assert!(kept(&frame(0x8100, &[0, 10, 0x08, 0x06])));
    assert!(kept(&frame(0x9100, &[0, 10, 0x08, 0x00])));
    assert!(!kept(&frame(0x0800, &ipv4(1))), "ICMP");
    assert!(!kept(&frame(0x86dd, &ipv6(58))), "ICMPv6");
    assert!(!kept(&frame(0x88cc, &[0; 30])), "LLDP");
    assert_eq!(p.keeps_arp(), Some(true));
    assert_eq!(Program::tcp_or_udp().keeps_arp(), Some(false));
    assert_eq!(Program::everything().keeps_arp(), Some(true));
    assert_eq!(
        Program::from_setting("tcp-udp-or-arp").unwrap(),
        Program::tcp_udp_or_arp()
    );
    // A program the interpreter cannot follow: nobody can say.
    let odd = Program::parse("1,199 0 0 0").unwrap();
    assert_eq!(odd.keeps_arp(), None);
}
