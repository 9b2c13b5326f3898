//! Both live backends on a real veth pair (root only; CI is root): each frame once and whole,
//! the filter applied in the kernel, loopback frames not seen twice.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pnet_datalink::Channel;

use super::bpf::Program;
use super::interface;
use super::live::LiveSource;
use super::pnet::{PnetOptions, PnetSource};
use super::ring::{RingOptions, RingSource};

/// A veth pair made for one test and removed after it.
struct Veth {
    capture: String,
    peer: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Veth {
    /// The pair, or `None` (with a note) where this process may not make one.
    fn create(test: &str) -> Option<Self> {
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            eprintln!(
                "SKIPPED {test}: making a veth pair and capturing need root (CI runs as root)"
            );
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 10_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let veth = Self {
            capture: format!("otwc{id}"),
            peer: format!("otwp{id}"),
        };
        ip(&[
            "link",
            "add",
            &veth.capture,
            "type",
            "veth",
            "peer",
            "name",
            &veth.peer,
        ]);
        for dev in [&veth.capture, &veth.peer] {
            ip(&["link", "set", dev, "mtu", "9000"]);
            ip(&["link", "set", dev, "up"]);
        }
        Some(veth)
    }

    /// Sends raw frames out of the peer end.
    fn send(&self, frames: &[Vec<u8>]) {
        send_on(&self.peer, frames);
    }
}

/// Sends raw frames out of `name`.
fn send_on(name: &str, frames: &[Vec<u8>]) {
    let iface = interface::find(name).unwrap();
    let Ok(Channel::Ethernet(mut tx, _)) =
        pnet_datalink::channel(&iface, pnet_datalink::Config::default())
    else {
        panic!("no channel on {name}");
    };
    for f in frames {
        tx.send_to(f, None).unwrap().unwrap();
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.capture])
            .output();
    }
}

/// An Ethernet frame: IPv4/UDP (`udp`) or ARP, `size` bytes long, carrying `marker` and `n`;
/// with an 802.1Q tag when `vlan` is set.
fn frame(marker: &[u8; 8], n: u32, size: usize, udp: bool, vlan: Option<u16>) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
    }
    let start = f.len();
    if udp {
        let ip_len = (size - start - 2) as u16;
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
        f[start + 4..start + 6].copy_from_slice(&ip_len.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x13, 0x88, 0x01, 0xf6]);
        f.extend_from_slice(&(ip_len - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    } else {
        f.extend_from_slice(&[0x08, 0x06]);
    }
    f.extend_from_slice(marker);
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(size, 0xab);
    f
}

/// Every frame carrying `marker` that `source` delivers within `wait`, as delivered.
fn collect(
    source: &mut dyn LiveSource,
    marker: &[u8; 8],
    want: usize,
    wait: Duration,
) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && found.len() < want {
        source
            .poll(Duration::from_millis(10), &mut |p| {
                if p.data.windows(8).any(|w| w == marker) {
                    assert!(!p.truncated(), "frame of {} cut", p.orig_len);
                    found.push(p.data.to_vec());
                }
            })
            .unwrap();
    }
    // Anything late would be a duplicate.
    let settle = Instant::now() + Duration::from_millis(100);
    while Instant::now() < settle {
        source
            .poll(Duration::from_millis(10), &mut |p| {
                if p.data.windows(8).any(|w| w == marker) {
                    found.push(p.data.to_vec());
                }
            })
            .unwrap();
    }
    found
}

/// Sends 200 small UDP frames, 5 jumbo ones, 20 ARP frames and 3 tagged UDP frames from the
/// peer, and checks what `source` saw: every UDP frame once and whole, no ARP. With
/// `tags_kept`, tagged frames keep their 802.1Q tag; otherwise (pnet: the kernel strips the tag
/// into metadata that `recvfrom` does not return) they arrive without it.
fn frames_arrive_once_whole_and_filtered(
    veth: &Veth,
    source: &mut dyn LiveSource,
    marker: &[u8; 8],
    tags_kept: bool,
) {
    let mut sent = Vec::new();
    for n in 0..200 {
        sent.push(frame(marker, n, 80, true, None));
    }
    for n in 200..205 {
        sent.push(frame(marker, n, 9014, true, None));
    }
    for n in 205..208 {
        sent.push(frame(marker, n, 120, true, Some(10)));
    }
    let arp: Vec<Vec<u8>> = (0..20)
        .map(|n| frame(marker, 1000 + n, 60, false, None))
        .collect();
    veth.send(&arp);
    veth.send(&sent);
    let mut got = collect(source, marker, sent.len(), Duration::from_secs(3));
    if !tags_kept {
        for f in &mut sent {
            if f[12..14] == [0x81, 0x00] {
                f.drain(12..16);
            }
        }
    }
    got.sort();
    sent.sort();
    assert_eq!(got.len(), sent.len(), "frames seen");
    assert!(got == sent, "frames differ from what was sent");
}

#[test]
fn the_ring_delivers_each_frame_once_and_whole_with_its_vlan_tag_and_filters_the_rest() {
    let Some(veth) = Veth::create("the_ring_delivers_each_frame_once") else {
        return;
    };
    let mut source = RingSource::open(&RingOptions::new(&veth.capture)).unwrap();
    assert!(
        source.describe().starts_with("TPACKET_V3 ring on otwc"),
        "{}",
        source.describe()
    );
    frames_arrive_once_whole_and_filtered(&veth, &mut source, b"ringtest", true);
    assert_eq!(source.kernel_drops(), 0);
}

#[test]
fn pnet_delivers_each_frame_once_and_whole_and_filters_the_rest_but_loses_vlan_tags() {
    let Some(veth) = Veth::create("pnet_delivers_each_frame_once") else {
        return;
    };
    let mut source = PnetSource::open(&PnetOptions {
        interface: veth.capture.clone(),
        socket_buffer: 8 << 20,
        ignore_outgoing: None,
        promiscuous: true,
        filter: Program::tcp_or_udp(),
    })
    .unwrap();
    frames_arrive_once_whole_and_filtered(&veth, &mut source, b"pnettest", false);
}

#[test]
fn on_loopback_the_ring_sees_each_frame_once() {
    let Some(_veth) = Veth::create("on_loopback_the_ring_sees_each_frame_once") else {
        return;
    };
    let mut source = RingSource::open(&RingOptions::new("lo")).unwrap();
    assert!(source.describe().contains("ignoring outgoing frames"));
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let marker = b"ringlo!!";
    for n in 0..50u32 {
        let mut payload = marker.to_vec();
        payload.extend_from_slice(&n.to_be_bytes());
        tx.send_to(&payload, rx.local_addr().unwrap()).unwrap();
    }
    let got = collect(&mut source, marker, 50, Duration::from_secs(2));
    assert_eq!(got.len(), 50);
}

/// An IPv4/UDP frame from `src` to `dst` carrying `marker` and `n`.
fn udp_between(src: [u8; 4], dst: [u8; 4], marker: &[u8; 8], n: u32) -> Vec<u8> {
    let mut f = frame(marker, n, 80, true, None);
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f
}

#[test]
fn rings_in_a_fanout_group_share_the_frames_once_each_with_every_host_pair_on_one_ring() {
    let Some(veth) = Veth::create("rings_in_a_fanout_group") else {
        return;
    };
    let group = (std::process::id() & 0xffff) as u16 ^ 0x5a5a;
    let mut rings: Vec<RingSource> = (0..2)
        .map(|_| {
            let mut options = RingOptions::new(&veth.capture);
            options.fanout = Some((group, 2));
            RingSource::open(&options).unwrap()
        })
        .collect();
    assert!(
        rings[0].describe().contains("fanout group"),
        "{}",
        rings[0].describe()
    );
    let marker = b"fanout!!";
    // One direction arrives from the peer; the other leaves from the capture side itself (the
    // kernel hands the selector a sent frame from its link header, a received one from its IP
    // header: both must choose the same ring).
    let (mut incoming, mut outgoing) = (Vec::new(), Vec::new());
    for pair in 0..20u8 {
        let (a, b) = ([10, 0, 0, pair + 1], [10, 9, pair, 7]);
        for k in 0..5u32 {
            let n = u32::from(pair) * 100 + k;
            incoming.push(udp_between(a, b, marker, n));
            outgoing.push(udp_between(b, a, marker, n + 50));
        }
    }
    veth.send(&incoming);
    send_on(&veth.capture, &outgoing);
    let sent: Vec<Vec<u8>> = incoming.into_iter().chain(outgoing).collect();
    // Which ring saw which frame.
    let mut seen: Vec<(usize, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && seen.len() < sent.len() {
        for (i, ring) in rings.iter_mut().enumerate() {
            ring.poll(Duration::from_millis(5), &mut |p| {
                if p.data.windows(8).any(|w| w == marker) {
                    seen.push((i, p.data.to_vec()));
                }
            })
            .unwrap();
        }
    }
    assert_eq!(seen.len(), sent.len(), "each frame once, across the group");
    let mut per_pair: std::collections::BTreeMap<[u8; 8], std::collections::BTreeSet<usize>> =
        Default::default();
    for (ring, f) in &seen {
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        a.copy_from_slice(&f[26..30]);
        b.copy_from_slice(&f[30..34]);
        let key = if a < b { [a, b] } else { [b, a] }.concat();
        let key: [u8; 8] = key.try_into().unwrap();
        per_pair.entry(key).or_default().insert(*ring);
    }
    assert_eq!(per_pair.len(), 20);
    assert!(
        per_pair.values().all(|r| r.len() == 1),
        "a pair split: {per_pair:?}"
    );
    let used: std::collections::BTreeSet<usize> =
        per_pair.values().flat_map(|r| r.iter().copied()).collect();
    assert_eq!(used.len(), 2, "both rings get pairs");
}
