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
fn all_pairs_together_stay_within_32_mib() {
    let record = std::mem::size_of::<PairState>();
    assert!(
        record * Pairs::MAX <= 32 << 20,
        "{record} bytes per pair x {} pairs",
        Pairs::MAX
    );
}
