use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::flow::{CloseReason, FlowEvent, FlowInfo};
use crate::test_flow::{request_event, tcp_flow};

const PDU: [u8; 5] = [3, 0, 0, 0, 1];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(last: u8) -> Mac {
    Mac([0x00, 0x1d, 0x9c, 0, 0, last])
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_nanos(1_700_000_000_000_000_000 + ms * 1_000_000)
}

fn policy(text: &str) -> Arc<Policy> {
    Arc::new(Policy::parse(text, "test.toml").unwrap().0)
}

/// Taps of `n` workers (a flow goes to worker `id % n`, ARP and claims to `key % n`) and the
/// watch over them.
struct Run {
    taps: Vec<Tap>,
    watch: Watch,
    alerts: Vec<Alert>,
    second: u64,
}

impl Run {
    fn new(workers: usize, policy: Option<Arc<Policy>>) -> Self {
        Self {
            taps: (0..workers).map(|_| Tap::new(&[502])).collect(),
            watch: Watch::new(workers, "a1".into(), Duration::from_secs(60), policy),
            alerts: Vec::new(),
            second: 0,
        }
    }

    fn worker(&mut self, ts: Timestamp, key: u64) -> usize {
        let second = ts.as_nanos() / 1_000_000_000;
        if second != self.second {
            self.second = second;
            for w in 0..self.taps.len() {
                self.taps[w].tick(ts);
                self.submit(w);
            }
        }
        (key % self.taps.len() as u64) as usize
    }

    fn submit(&mut self, w: usize) {
        let samples = self.taps[w].take();
        let mark = self.taps[w].watermark();
        let alerts = &mut self.alerts;
        self.watch.submit(w, samples, mark, &mut |a| alerts.push(a));
    }

    /// A flow to `server` ("ip" on port 502, or "ip:port").
    fn flow(id: u64, client: IpAddr, server: &str) -> FlowInfo {
        let mut f = tcp_flow("10.0.0.1", "10.0.0.2");
        f.server = server
            .parse()
            .unwrap_or_else(|_| SocketAddr::new(ip(server), 502));
        f.id = id;
        f.client = SocketAddr::new(client, 40_000);
        f.requests = 0;
        f
    }

    fn syn(&mut self, ts: Timestamp, id: u64, client: IpAddr, server: &str) {
        let w = self.worker(ts, id);
        let f = Self::flow(id, client, server);
        self.taps[w].flow_event(ts, &f, &FlowEvent::Opened);
        self.submit(w);
    }

    fn request(&mut self, ts: Timestamp, id: u64, client: IpAddr, server: &str, nth: u64) {
        let w = self.worker(ts, id);
        let mut f = Self::flow(id, client, server);
        f.requests = nth;
        let event = request_event(1, &PDU);
        self.taps[w].flow_event(ts, &f, &FlowEvent::Session(&event));
        self.submit(w);
    }

    fn fin(&mut self, ts: Timestamp, id: u64, client: IpAddr, server: &str) {
        let w = self.worker(ts, id);
        let f = Self::flow(id, client, server);
        self.taps[w].flow_event(ts, &f, &FlowEvent::Closed(CloseReason::Fin));
        self.submit(w);
    }

    fn heard(&mut self, ts: Timestamp, from: &str, m: Mac, route: u64) {
        let w = self.worker(ts, route);
        self.taps[w].ip_source(ts, 0, ip(from), m);
        self.submit(w);
    }

    fn arp(&mut self, ts: Timestamp, claims: &str, m: Mac, reply: bool) {
        let w = self.worker(ts, 7);
        let sender_ip: Ipv4Addr = claims.parse().unwrap();
        let frame = ArpFrame {
            vlan: 0,
            operation: if reply { 2 } else { 1 },
            sender_mac: m,
            sender_ip,
            target_mac: Mac([0xff; 6]),
            target_ip: if reply {
                sender_ip
            } else {
                Ipv4Addr::new(10, 0, 0, 1)
            },
        };
        self.taps[w].arp(ts, &frame);
        self.submit(w);
    }

    fn finish(mut self) -> Vec<Alert> {
        for w in 0..self.taps.len() {
            self.taps[w].finish();
            self.submit(w);
            let alerts = &mut self.alerts;
            self.watch.done(w, &mut |a| alerts.push(a));
        }
        self.alerts
    }
}

fn rules_of(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.rule.as_str()).collect()
}

/// 2,000 SYNs a second for 5 s to 10.0.0.9:502, each from another address, none completing.
fn syn_flood(workers: usize) -> Vec<Alert> {
    let mut run = Run::new(workers, None);
    let mut id = 0;
    for ms in 0..5_000u64 {
        for _ in 0..2 {
            id += 1;
            let src = IpAddr::V4(Ipv4Addr::from(0xac10_0000 + id as u32));
            run.syn(at(ms), id, src, "10.0.0.9");
        }
    }
    run.finish()
}

#[test]
fn a_syn_flood_raises_once_at_once_and_folds_the_rest_with_its_count() {
    let alerts = syn_flood(1);
    assert_eq!(
        rules_of(&alerts),
        ["dos.syn_flood", "dos.syn_flood"],
        "{alerts:#?}"
    );
    let (first, folded) = (&alerts[0], &alerts[1]);
    assert_eq!(first.count, 2_000);
    assert_eq!(folded.count, 8_000);
    assert_eq!(first.dst_ip, ip("10.0.0.9"));
    assert_eq!(first.dst_port, 502);
    assert_eq!(
        first.src_ip,
        ip("0.0.0.0"),
        "many sources have no one address"
    );
    assert_eq!(first.technique, ["T0814", "T0826"]);
    let message = first.message.as_deref().unwrap();
    assert!(message.contains("100% never completed"), "{message}");
    assert!(message.contains("about"), "{message}");
    for a in &alerts {
        crate::validate::alert(a).unwrap();
    }
}

#[test]
fn the_same_flood_split_over_two_or_three_workers_raises_the_same_alerts() {
    let one = syn_flood(1);
    for workers in [2, 3] {
        let split = syn_flood(workers);
        let key = |a: &Alert| (a.id.clone(), a.count, a.first_ts, a.ts, a.src_ip, a.dst_ip);
        assert_eq!(
            one.iter().map(key).collect::<Vec<_>>(),
            split.iter().map(key).collect::<Vec<_>>(),
            "{workers} workers"
        );
    }
}

#[test]
fn hmis_reconnecting_after_a_blip_raise_nothing() {
    let mut run = Run::new(2, None);
    let mut id = 0;
    // Six HMIs reconnect to eight PLCs at once, then poll each 100 ms.
    for hmi in 1..=6u8 {
        for plc in 1..=8u8 {
            id += 1;
            let src = IpAddr::V4(Ipv4Addr::new(10, 0, 1, hmi));
            let dst = format!("10.0.0.{plc}");
            run.syn(at(u64::from(hmi)), id, src, &dst);
            for n in 1..=100 {
                run.request(at(10 + n * 100), id, src, &dst, n);
            }
        }
    }
    assert_eq!(run.finish(), []);
}

#[test]
fn a_connection_storm_raises_a_connection_flood_unless_the_baseline_allows_it() {
    let storm = |policy: Option<Arc<Policy>>| {
        let mut run = Run::new(2, policy);
        let mut id = 0;
        for ms in (0..3_000u64).step_by(5) {
            id += 1;
            let src = IpAddr::V4(Ipv4Addr::new(10, 0, 1, (id % 3) as u8 + 1));
            run.syn(at(ms), id, src, "10.0.0.9");
            run.request(at(ms + 1), id, src, "10.0.0.9", 1);
            run.fin(at(ms + 2), id, src, "10.0.0.9");
        }
        run.finish()
    };
    let alerts = storm(None);
    assert_eq!(
        rules_of(&alerts),
        ["dos.connection_flood", "dos.connection_flood"],
        "{alerts:#?}"
    );
    assert_eq!(alerts[0].count, 200);
    let busy = policy(
        "version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nconnection_rate = \"30/s\"\n",
    );
    assert_eq!(
        storm(Some(busy)),
        [],
        "200/s is under 10 x a baseline of 30/s"
    );
    let quiet = policy(
        "version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nconnection_rate = \"1/s\"\n",
    );
    assert_eq!(rules_of(&storm(Some(quiet)))[0], "dos.connection_flood");
}

#[test]
fn floods_count_against_modbus_servers_only_wherever_they_listen() {
    let storm = |server: &str, polled: bool| {
        let mut run = Run::new(1, None);
        if polled {
            run.request(at(0), 1, ip("10.0.1.1"), server, 1);
        }
        for n in 0..400u64 {
            let src = IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n as u32));
            run.syn(at(500 + n), n + 10, src, server);
        }
        rules_of(&run.finish()).first().map(|r| r.to_string())
    };
    assert_eq!(
        storm("10.0.0.9:8080", false),
        None,
        "a web server's SYNs are not ours"
    );
    assert_eq!(
        storm("10.0.0.9:8080", true).as_deref(),
        Some("dos.syn_flood"),
        "it answered Modbus"
    );
    assert_eq!(
        storm("10.0.0.9:502", false).as_deref(),
        Some("dos.syn_flood"),
        "the Modbus port"
    );
}

#[test]
fn requests_from_many_masters_raise_a_distributed_flood_and_from_three_do_not() {
    let flood = |masters: u32| {
        let mut run = Run::new(2, None);
        for n in 0..6_000u64 {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + (n as u32 % masters)));
            let id = u64::from(n as u32 % masters) + 1;
            run.request(at(n / 3), id, src, "10.0.0.9", n / u64::from(masters) + 1);
        }
        run.finish()
    };
    let many = flood(6_000);
    assert_eq!(
        rules_of(&many),
        ["dos.distributed_flood", "dos.distributed_flood"],
        "{many:#?}"
    );
    assert_eq!(many[0].count, 3_000);
    assert_eq!(
        flood(3),
        [],
        "three fast pollers are not a distributed flood"
    );
}

/// The PLC at 10.0.0.9 (MAC 09) answers an ARP request, then every 200 ms from `from` to
/// `to` ms.
fn plc_talks(run: &mut Run, from: u64, to: u64) {
    run.arp(at(from), "10.0.0.9", mac(9), true);
    for ms in (from..to).step_by(200) {
        run.heard(at(ms), "10.0.0.9", mac(9), 1);
    }
}

#[test]
fn arp_replies_moving_a_plcs_address_to_a_busy_mac_raise_arp_spoofing_naming_both() {
    let mut run = Run::new(2, None);
    plc_talks(&mut run, 0, 30_000);
    for ms in (0..30_000).step_by(500) {
        run.heard(at(ms), "10.0.0.66", mac(0x66), 2);
    }
    for ms in (10_000..30_000).step_by(1_000) {
        run.arp(at(ms), "10.0.0.9", mac(0x66), true);
    }
    let alerts = run.finish();
    assert_eq!(rules_of(&alerts), ["spoof.arp", "spoof.arp"], "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.technique, ["T0830"]);
    assert_eq!((a.src_ip, a.dst_ip), (ip("10.0.0.66"), ip("10.0.0.9")));
    let message = a.message.as_deref().unwrap();
    assert!(
        message.contains(&mac(0x66).to_string()) && message.contains(&mac(9).to_string()),
        "{message}"
    );
}

#[test]
fn a_second_mac_claiming_a_plcs_address_in_arp_while_it_talks_is_arp_spoofing() {
    let mut run = Run::new(1, None);
    plc_talks(&mut run, 0, 20_000);
    run.arp(at(5_000), "10.0.0.9", mac(0x66), false);
    for ms in (5_000..20_000).step_by(300) {
        run.heard(at(ms), "10.0.0.9", mac(0x66), 2);
    }
    let alerts = run.finish();
    assert_eq!(rules_of(&alerts)[0], "spoof.arp", "{alerts:#?}");
}

#[test]
fn a_firewall_forwarding_a_plcs_traffic_without_claiming_it_in_arp_raises_nothing() {
    // Captured on both sides of a firewall: the PLC's frames come from its own Ethernet
    // address and, forwarded, from the firewall's, which never claims the address in ARP.
    let mut run = Run::new(2, None);
    for ms in (0..20_000).step_by(300) {
        run.heard(at(ms), "10.0.0.9", mac(0xf1), 2);
    }
    plc_talks(&mut run, 100, 20_000);
    for ms in (0..20_000).step_by(700) {
        run.heard(at(ms), "10.0.1.86", mac(0x86), 3);
        run.heard(at(ms + 1), "10.0.1.86", mac(0xf0), 3);
    }
    run.arp(at(9_000), "10.0.1.86", mac(0x86), false);
    assert_eq!(run.finish(), []);
}

#[test]
fn a_replaced_plc_is_a_low_mac_change_unless_the_policy_declares_its_new_mac() {
    let replaced = |policy: Option<Arc<Policy>>| {
        let mut run = Run::new(2, policy);
        plc_talks(&mut run, 0, 10_000);
        run.arp(at(40_000), "10.0.0.9", mac(0x99), true);
        for ms in (40_000..70_000).step_by(200) {
            run.heard(at(ms), "10.0.0.9", mac(0x99), 3);
        }
        run.finish()
    };
    let alerts = replaced(None);
    assert_eq!(rules_of(&alerts), ["spoof.mac_change"], "{alerts:#?}");
    assert_eq!(alerts[0].severity, Severity::Low);
    let declared = policy(&format!(
        "version = 2\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.9\"\nmacs = [\"{}\", \"{}\"]\n",
        mac(9),
        mac(0x99)
    ));
    assert_eq!(replaced(Some(declared)), []);
}

#[test]
fn a_flooder_that_looks_like_a_router_is_still_caught_poisoning() {
    let mut run = Run::new(2, None);
    plc_talks(&mut run, 0, 20_000);
    for ms in (0..20_000).step_by(500) {
        run.heard(at(ms), "10.0.0.66", mac(0x66), 2);
    }
    // Spoofed sources, all from the intruder's Ethernet address.
    for n in 0..500u32 {
        run.heard(
            at(5_000 + u64::from(n)),
            &Ipv4Addr::from(0xac10_0000 + n).to_string(),
            mac(0x66),
            u64::from(n),
        );
    }
    run.arp(at(12_000), "10.0.0.9", mac(0x66), true);
    let alerts = run.finish();
    assert!(rules_of(&alerts).contains(&"spoof.arp"), "{alerts:#?}");
}

#[test]
fn a_workstation_changing_its_dhcp_lease_raises_nothing() {
    let mut run = Run::new(2, None);
    plc_talks(&mut run, 0, 60_000);
    for ms in (0..20_000).step_by(500) {
        run.heard(at(ms), "10.0.0.50", mac(0x50), 4);
    }
    run.arp(at(25_000), "10.0.0.51", mac(0x50), false);
    run.arp(at(25_001), "10.0.0.51", mac(0x50), true);
    for ms in (25_000..60_000).step_by(500) {
        run.heard(at(ms), "10.0.0.51", mac(0x50), 4);
    }
    assert_eq!(run.finish(), []);
}

#[test]
fn routed_traffic_carrying_the_routers_mac_raises_nothing() {
    let mut run = Run::new(2, None);
    plc_talks(&mut run, 0, 60_000);
    // Hosts behind the router, some of them also on the captured segment's VLAN... under their
    // own addresses: the router's Ethernet address carries them all.
    for ms in (0..60_000).step_by(250) {
        let host = 1 + (ms / 250) % 12;
        run.heard(at(ms), &format!("192.168.7.{host}"), mac(0xfe), host);
    }
    // One of them also shows up directly once.
    run.heard(at(30_000), "192.168.7.3", mac(0x73), 5);
    for ms in (30_000..60_000).step_by(500) {
        run.heard(at(ms), "192.168.7.3", mac(0x73), 5);
    }
    assert_eq!(run.finish(), []);
}

#[test]
fn a_policy_can_turn_a_network_rule_off_or_declare_a_router() {
    let off = policy("version = 2\n[detectors.\"dos.syn_flood\"]\nenabled = false\n");
    let mut run = Run::new(1, Some(off));
    for n in 0..500u64 {
        run.syn(
            at(n),
            n + 1,
            IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n as u32)),
            "10.0.0.9",
        );
    }
    assert_eq!(run.finish(), []);

    // A router declared in the policy, first heard carrying a host's address it later shares.
    let router = policy(&format!(
        "version = 2\n[[asset]]\nname = \"gw\"\naddress = \"10.0.0.254\"\nrole = \"router\"\nmacs = [\"{}\"]\n",
        mac(0xfe)
    ));
    let mut run = Run::new(1, Some(router));
    plc_talks(&mut run, 0, 20_000);
    for ms in (0..20_000).step_by(300) {
        run.heard(at(ms), "10.0.0.9", mac(0xfe), 1);
    }
    assert_eq!(run.finish(), []);
}

#[test]
fn after_the_clock_steps_back_the_seconds_merge_again_and_a_split_flood_is_still_seen() {
    // Two workers each see half of a flood that only the merge puts over the limit, an hour
    // after a first flood and after the capture clock stepped back by that hour.
    let mut run = Run::new(2, None);
    let flood = |run: &mut Run, from_ms: u64, base: u32| {
        for n in 0..160u32 {
            let src = IpAddr::V4(Ipv4Addr::from(base + n));
            run.syn(
                at(from_ms + u64::from(n) * 5),
                u64::from(base + n),
                src,
                "10.0.0.9",
            );
        }
    };
    flood(&mut run, 3_600_000, 0xac10_0000);
    for w in 0..2 {
        run.taps[w].finish();
        run.submit(w);
        let alerts = &mut run.alerts;
        run.watch.clock_stepped(w, &mut |a| alerts.push(a));
    }
    run.second = 0;
    flood(&mut run, 0, 0xac20_0000);
    let alerts = run.finish();
    let floods: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule == "dos.syn_flood")
        .collect();
    assert_eq!(floods.len(), 2, "one per flood, each merged: {alerts:#?}");
    assert!(floods.iter().all(|a| a.count == 160), "{floods:#?}");
}
