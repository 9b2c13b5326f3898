//! Attacks below the Modbus transaction, replayed from captures written for the purpose by
//! the agent binary: a SYN flood from spoofed sources, a connection storm, a distributed
//! request flood and ARP poisoning each raise their rule, and their nearest benign cases (an
//! HMI reconnecting after a blip, a PLC replaced with a new MAC the policy declares, a DHCP
//! lease change, a busy server whose rate `learn` wrote into the policy) raise none of
//! them.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use otwatch_rules::alert::Alert;
use otwatch_tests::recorder::tcp_frame;
use otwatch_tests::sim::crafted::{arp_announce, arp_reply};
use otwatch_tests::{binary, read_alerts};
use pcap_file::pcap::{PcapPacket, PcapWriter};

const PLC: [u8; 6] = [0x00, 0x1d, 0x9c, 0, 0, 0x09];
const HMI: [u8; 6] = [0x00, 0x1d, 0x9c, 0, 0, 0x10];
const INTRUDER: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
const T0: u64 = 1_700_000_000;

fn plc() -> SocketAddr {
    "10.0.0.9:502".parse().unwrap()
}

/// A capture of `frames` (time in ms from T0, bytes).
struct Capture(Vec<(u64, Vec<u8>)>);

impl Capture {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn at(&mut self, ms: u64, frame: Vec<u8>) {
        self.0.push((ms, frame));
    }

    /// The HMI (10.0.0.10) polls the PLC on one connection every 200 ms from `from` to `to`
    /// ms, opening it with a handshake (and the ARP that comes first) at `from`.
    fn hmi_polls(&mut self, from: u64, to: u64, port: u16) {
        self.polls((Ipv4Addr::new(10, 0, 0, 10), HMI), port, from, to, 200);
    }

    /// `master` (address, Ethernet address) reads two registers of the PLC on one connection
    /// every `every` ms from `from` to `to` ms, opening it with a handshake (and the ARP that
    /// comes first) at `from`.
    fn polls(&mut self, master: (Ipv4Addr, [u8; 6]), port: u16, from: u64, to: u64, every: u64) {
        let (ip, mac) = master;
        let client = SocketAddr::new(IpAddr::V4(ip), port);
        self.at(from, arp_reply(PLC, Ipv4Addr::new(10, 0, 0, 9), mac, ip));
        let (mut c, mut s) = (1_000u32, 9_000u32);
        self.at(
            from,
            tcp_frame((mac, PLC), client, plc(), c, 0, "S", &[]).unwrap(),
        );
        self.at(
            from,
            tcp_frame((PLC, mac), plc(), client, s, c + 1, "SA", &[]).unwrap(),
        );
        c += 1;
        s += 1;
        self.at(
            from,
            tcp_frame((mac, PLC), client, plc(), c, s, "A", &[]).unwrap(),
        );
        let mut tid = 0u16;
        for ms in (from + 10..to).step_by(every as usize) {
            tid = tid.wrapping_add(1);
            let [a, b] = tid.to_be_bytes();
            let request = [a, b, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2];
            let response = [a, b, 0, 0, 0, 7, 1, 3, 4, 0, 1, 0, 2];
            self.at(
                ms,
                tcp_frame((mac, PLC), client, plc(), c, s, "PA", &request).unwrap(),
            );
            c += request.len() as u32;
            self.at(
                ms + 2,
                tcp_frame((PLC, mac), plc(), client, s, c, "PA", &response).unwrap(),
            );
            s += response.len() as u32;
        }
    }

    /// 20,000 read requests a second from `from` ms for two seconds, each from another
    /// address, unanswered.
    fn request_flood(&mut self, from: u64) {
        for n in 0..40_000u32 {
            let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + n)), 30_000);
            let [a, b] = (n as u16).to_be_bytes();
            let request = [a, b, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];
            self.at(
                from + u64::from(n) / 20,
                tcp_frame((HMI, PLC), client, plc(), n, 1, "PA", &request).unwrap(),
            );
        }
    }

    /// The capture, as a pcap file at `path`.
    fn write(&mut self, path: &Path) {
        self.0.sort_by_key(|f| f.0);
        let mut writer = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        for (ms, frame) in &self.0 {
            let ts = Duration::from_secs(T0) + Duration::from_millis(*ms);
            writer
                .write_packet(&PcapPacket::new(ts, frame.len() as u32, frame))
                .unwrap();
        }
    }

    /// Replays it through `otwatch-agent replay` (with `policy`, if any) and returns the
    /// alerts by rule.
    fn alerts(mut self, dir: &Path, policy: Option<&str>) -> BTreeMap<String, Vec<Alert>> {
        let pcap = dir.join("x.pcap");
        self.write(&pcap);
        let alerts = dir.join("alerts.jsonl");
        let _ = std::fs::remove_file(&alerts);
        let mut cmd = Command::new(binary("otwatch-agent"));
        cmd.args(["replay", "--no-progress", "--pcap"])
            .arg(&pcap)
            .arg("--alerts")
            .arg(&alerts);
        if let Some(text) = policy {
            let path = dir.join("policy.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--policy").arg(&path);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut by_rule: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
        for a in read_alerts(&alerts) {
            by_rule.entry(a.rule.clone()).or_default().push(a);
        }
        by_rule
    }
}

fn network_rules(by_rule: &BTreeMap<String, Vec<Alert>>) -> Vec<&str> {
    by_rule
        .keys()
        .map(String::as_str)
        .filter(|r| {
            r.starts_with("dos.syn")
                || r.starts_with("dos.conn")
                || r.starts_with("dos.dist")
                || r.starts_with("spoof.arp")
                || r.starts_with("spoof.mac")
        })
        .collect()
}

#[test]
fn a_syn_flood_from_200000_spoofed_sources_is_one_folded_syn_flood() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::new();
    c.hmi_polls(0, 4_000, 40_000);
    let frames = otwatch_tests::sim::crafted::syn_flood(plc(), PLC, 200_000);
    for (i, frame) in frames.into_iter().enumerate() {
        c.at(1_000 + i as u64 / 100, frame);
    }
    let by_rule = c.alerts(dir.path(), None);
    assert_eq!(network_rules(&by_rule), ["dos.syn_flood"], "{by_rule:#?}");
    let floods = &by_rule["dos.syn_flood"];
    assert_eq!(
        floods.len(),
        2,
        "raised at once, the rest folded: {floods:#?}"
    );
    assert_eq!(floods.iter().map(|a| a.count).sum::<u64>(), 200_000);
    assert_eq!(floods[0].src_ip, IpAddr::from([0, 0, 0, 0]));
    assert_eq!((floods[0].dst_ip, floods[0].dst_port), (plc().ip(), 502));
    let message = floods[0].message.as_deref().unwrap();
    assert!(message.contains("100% never completed"), "{message}");
}

#[test]
fn a_connection_storm_and_a_distributed_flood_raise_theirs_and_a_reconnecting_hmi_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 300 full connections a second for two seconds, from three masters.
    let mut storm = Capture::new();
    storm.hmi_polls(0, 4_000, 40_000);
    for n in 0..600u32 {
        let client = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, (n % 3) as u8 + 1)),
            20_000 + n as u16,
        );
        let ms = 1_000 + u64::from(n) * 10 / 3;
        let (c, s) = (n * 7, n * 11);
        storm.at(
            ms,
            tcp_frame((HMI, PLC), client, plc(), c, 0, "S", &[]).unwrap(),
        );
        storm.at(
            ms,
            tcp_frame((PLC, HMI), plc(), client, s, c + 1, "SA", &[]).unwrap(),
        );
        storm.at(
            ms,
            tcp_frame((HMI, PLC), client, plc(), c + 1, s + 1, "A", &[]).unwrap(),
        );
        storm.at(
            ms + 1,
            tcp_frame((HMI, PLC), client, plc(), c + 1, s + 1, "FA", &[]).unwrap(),
        );
        storm.at(
            ms + 1,
            tcp_frame((PLC, HMI), plc(), client, s + 1, c + 2, "FA", &[]).unwrap(),
        );
        storm.at(
            ms + 1,
            tcp_frame((HMI, PLC), client, plc(), c + 2, s + 2, "A", &[]).unwrap(),
        );
    }
    let by_rule = storm.alerts(dir.path(), None);
    assert_eq!(
        network_rules(&by_rule),
        ["dos.connection_flood"],
        "{by_rule:#?}"
    );

    // 20,000 read requests a second for two seconds, each from another address, unanswered.
    let mut flood = Capture::new();
    flood.hmi_polls(0, 4_000, 40_000);
    flood.request_flood(1_000);
    let by_rule = flood.alerts(dir.path(), None);
    assert_eq!(
        network_rules(&by_rule),
        ["dos.distributed_flood"],
        "{by_rule:#?}"
    );
    let first = &by_rule["dos.distributed_flood"][0];
    assert!(first.count >= 20_000, "{first:?}");
    assert_eq!(first.src_ip, IpAddr::from([0, 0, 0, 0]), "many masters");

    // An HMI that lost the network for a moment reconnects: a few new connections, quiet.
    let mut blip = Capture::new();
    blip.hmi_polls(0, 3_000, 40_000);
    for (i, port) in [40_001u16, 40_002, 40_003].into_iter().enumerate() {
        blip.hmi_polls(5_000 + i as u64 * 50, 9_000, port);
    }
    let by_rule = blip.alerts(dir.path(), None);
    assert!(network_rules(&by_rule).is_empty(), "{by_rule:#?}");
}

#[test]
fn arp_poisoning_is_spoofing_and_a_declared_replacement_or_a_dhcp_change_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ip = |d: u8| Ipv4Addr::new(10, 0, 0, d);
    let mut poisoned = Capture::new();
    poisoned.hmi_polls(0, 20_000, 40_000);
    poisoned.at(3_000, arp_announce(INTRUDER, ip(66)));
    for s in 5..15u64 {
        poisoned.at(s * 1_000, arp_announce(INTRUDER, ip(9)));
        poisoned.at(s * 1_000 + 1, arp_announce(INTRUDER, ip(10)));
    }
    let by_rule = poisoned.alerts(dir.path(), None);
    assert_eq!(network_rules(&by_rule), ["spoof.arp"], "{by_rule:#?}");
    let about_plc = by_rule["spoof.arp"]
        .iter()
        .find(|a| a.dst_ip == IpAddr::V4(ip(9)))
        .unwrap();
    assert_eq!(about_plc.src_ip, IpAddr::V4(ip(66)));
    let message = about_plc.message.as_deref().unwrap();
    assert!(
        message.contains("02:66:66:66:66:66") && message.contains("00:1d:9c:00:00:09"),
        "{message}"
    );

    // The PLC replaced: the old one falls silent, the new one announces itself and answers.
    const NEW_PLC: [u8; 6] = [0x00, 0x1d, 0x9c, 0, 0, 0x99];
    let replaced = || {
        let mut c = Capture::new();
        c.hmi_polls(0, 10_000, 40_000);
        c.at(40_000, arp_announce(NEW_PLC, ip(9)));
        let hmi = SocketAddr::new(IpAddr::V4(ip(10)), 40_001);
        for ms in (40_010..60_000).step_by(500) {
            c.at(
                ms,
                tcp_frame((NEW_PLC, HMI), plc(), hmi, ms as u32, 1, "A", &[]).unwrap(),
            );
        }
        c
    };
    let undeclared = replaced().alerts(dir.path(), None);
    assert_eq!(
        network_rules(&undeclared),
        ["spoof.mac_change"],
        "{undeclared:#?}"
    );
    assert_eq!(
        undeclared["spoof.mac_change"][0].severity,
        otwatch_rules::alert::Severity::Low
    );
    let policy = "version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nmacs = [\"00:1d:9c:00:00:09\", \"00:1d:9c:00:00:99\"]\n\n[[asset]]\nname = \"hmi\"\naddress = \"10.0.0.10\"\n\n[[allow]]\nfrom = \"hmi\"\nto = \"plc\"\nfunctions = [\"read_holding_registers\"]\n";
    let declared = replaced().alerts(dir.path(), Some(policy));
    assert!(network_rules(&declared).is_empty(), "{declared:#?}");

    // A workstation's DHCP lease changes: it announces its new address, the old one goes.
    let mut dhcp = Capture::new();
    dhcp.hmi_polls(0, 30_000, 40_000);
    let ws: [u8; 6] = [0x00, 0x1d, 0x9c, 0, 0, 0x50];
    dhcp.at(1_000, arp_announce(ws, ip(50)));
    dhcp.at(15_000, arp_announce(ws, ip(51)));
    let by_rule = dhcp.alerts(dir.path(), None);
    assert!(network_rules(&by_rule).is_empty(), "{by_rule:#?}");
}

/// Twelve masters polling the PLC 100 times a second each: 1,200 requests a second from 12
/// sources, over the default limit for a server without a baseline.
fn busy_plant(capture: &mut Capture, to: u64) {
    for i in 0..12u8 {
        let master = (Ipv4Addr::new(10, 0, 0, 20 + i), [0x00, 0x1d, 0x9c, 0, 1, i]);
        capture.polls(master, 41_000 + u16::from(i), u64::from(i), to, 10);
    }
}

#[test]
fn a_learned_baseline_quiets_a_busy_server_and_still_catches_a_flood_far_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut busy = Capture::new();
    busy_plant(&mut busy, 6_000);
    let by_rule = busy.alerts(dir.path(), None);
    assert_eq!(
        network_rules(&by_rule),
        ["dos.distributed_flood"],
        "without a baseline, 1,200 requests a second from 12 masters is over the default limit"
    );

    // `learn` on a capture of the same normal traffic writes the PLC's rate into the policy.
    let mut normal = Capture::new();
    busy_plant(&mut normal, 20_000);
    let pcap = dir.path().join("normal.pcap");
    normal.write(&pcap);
    let learned = dir.path().join("learned.toml");
    let out = Command::new(binary("otwatch-agent"))
        .args(["learn", "--no-progress", "--pcap"])
        .arg(&pcap)
        .arg("--out")
        .arg(&learned)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = std::fs::read_to_string(&learned).unwrap();
    assert!(policy.contains("request_rate = "), "{policy}");

    let mut busy = Capture::new();
    busy_plant(&mut busy, 6_000);
    let by_rule = busy.alerts(dir.path(), Some(&policy));
    assert!(
        by_rule.is_empty(),
        "the learned plant is quiet: {by_rule:#?}"
    );

    // 20,000 requests a second is far above ten times the baseline.
    let mut flooded = Capture::new();
    busy_plant(&mut flooded, 6_000);
    flooded.request_flood(2_000);
    let by_rule = flooded.alerts(dir.path(), Some(&policy));
    assert_eq!(
        network_rules(&by_rule),
        ["dos.distributed_flood"],
        "{by_rule:#?}"
    );
}
