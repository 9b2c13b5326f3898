use crate::flow::{FlowInfo, Protocol};
use crate::time::Timestamp;

use super::*;

fn flow(id: u64, client: &str, server: &str) -> FlowInfo {
    FlowInfo {
        id,
        vlan: 0,
        protocol: Protocol::Tcp,
        client: client.parse().unwrap(),
        server: server.parse().unwrap(),
        encapsulation: None,
        requests: 0,
        first_seen: Timestamp::from_secs(1),
        last_gap: None,
        first_answer: None,
        last_answer: None,
        answered_requests: 0,
        handshake_seen: true,
        client_mac: None,
        server_mac: None,
    }
}

#[test]
fn a_pair_keeps_its_id_across_flows_and_a_reused_flow_id_does_not_mislead() {
    let mut pairs = Pairs::default();
    let hmi_plc1 = flow(1, "10.0.0.9:40000", "10.0.0.3:502");
    assert_eq!(pairs.intern(&hmi_plc1), (0, true));
    assert_eq!(pairs.intern(&hmi_plc1), (0, false));
    // Another connection between the same hosts, in the same slot of the flow-id table.
    let reconnect = flow(1 + RECENT as u64, "10.0.0.9:40001", "10.0.0.3:502");
    assert_eq!(pairs.intern(&reconnect), (0, false));
    // The same flow id for other hosts (an id is unique only within one flow table): a new pair.
    let other = flow(1, "10.0.0.9:40000", "10.0.0.4:502");
    assert_eq!(pairs.intern(&other), (1, true));
    assert_eq!(pairs.intern(&hmi_plc1), (0, false));
    assert_eq!(pairs.intern(&other), (1, false));
}

#[test]
fn a_reused_flow_id_between_ipv6_hosts_does_not_mislead() {
    let mut pairs = Pairs::default();
    let hmi_plc1 = flow(7, "[fd00::9]:40000", "[fd00::3]:502");
    assert_eq!(pairs.intern(&hmi_plc1), (0, true));
    assert_eq!(pairs.intern(&hmi_plc1), (0, false));
    let other = flow(7, "[fd00::9]:40000", "[fd00::4]:502");
    assert_eq!(pairs.intern(&other), (1, true));
    // The IPv4 hosts of the same flow id, and the same hosts written as IPv4-mapped IPv6.
    let v4 = flow(7, "10.0.0.9:40000", "10.0.0.3:502");
    assert_eq!(pairs.intern(&v4), (2, true));
    let mapped = flow(7, "[::ffff:10.0.0.9]:40000", "[::ffff:10.0.0.3]:502");
    assert_eq!(pairs.intern(&mapped), (2, false));
    assert_eq!(pairs.intern(&hmi_plc1), (0, false));
}

#[test]
fn all_pairs_together_stay_within_32_mib() {
    let record = std::mem::size_of::<PairState>();
    assert!(
        record * Pairs::MAX <= 32 << 20,
        "{record} bytes per pair x {} pairs",
        Pairs::MAX
    );
}

#[test]
fn what_a_request_reads_sits_on_two_cache_lines_and_the_windows_follow() {
    use std::mem::offset_of;
    // Memo: lines 0 to 3 (a lookup reads one set, within one line).
    assert_eq!(offset_of!(PairState, memo), 0);
    assert_eq!(std::mem::size_of::<Memo>(), 256);
    // Rate buckets: line 4.
    assert_eq!(offset_of!(PairState, rates), 256);
    assert_eq!(std::mem::size_of::<Rates>(), 64);
    // Unit window and the unit of the read-block windows: line 5.
    for end in [
        offset_of!(PairState, units) + std::mem::size_of::<Distinct>(),
        offset_of!(PairState, blocks_unit) + 2,
    ] {
        assert!((321..=384).contains(&end), "{end}");
    }
    // Read-block windows: lines 6 and 7, two windows each.
    assert_eq!(offset_of!(PairState, blocks), 384);
    assert_eq!(std::mem::size_of::<Tables>(), 128);
    assert_eq!(std::mem::size_of::<Distinct>(), 32);
}

#[test]
fn each_unit_read_has_its_own_block_windows() {
    let mut pair = PairState::default();
    let window = std::time::Duration::from_secs(60);
    let t = Timestamp::from_secs(10);
    // Unit 1 reads three blocks of holding registers, units 2 and 3 another block each: were
    // the windows shared, unit 2's block would be the fourth.
    for block in 0..3 {
        assert!(!pair.tables(1)[2].add(t, window, block, 4));
    }
    assert!(!pair.tables(2)[2].add(t, window, 10, 4));
    assert!(!pair.tables(3)[2].add(t, window, 20, 4));
    // Input registers are counted apart from holding registers.
    assert!(!pair.tables(1)[3].add(t, window, 30, 4));
    // The fourth block of unit 1 reaches its threshold.
    assert!(pair.tables(1)[2].add(t, window, 3, 4));
}
