use std::time::Duration;

use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{AssetObservation, Heartbeat, IngestBatch};

use super::*;
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::store::Store;

const NOW: Timestamp = Timestamp::from_secs(5_000);

fn asset(ip: &str, zone: &str, criticality: Option<&str>, peers: &[&str]) -> AssetObservation {
    let mut a = AssetObservation::new(ip.parse().unwrap(), Timestamp::from_secs(900));
    a.zone = Some(zone.into());
    a.criticality = criticality.map(Into::into);
    a.peers = peers.iter().map(|p| p.parse().unwrap()).collect();
    a
}

fn heartbeat(agent: &str) -> Heartbeat {
    Heartbeat {
        agent: agent.into(),
        version: "0.1.0".into(),
        uptime_s: 1,
        policy_hash: None,
        packets_per_s: 0.0,
        packets: 0,
        drops: 0,
        flows: 0,
        outbox_depth: 0,
        outbox_dropped: 0,
        last_error: None,
        ..Heartbeat::default()
    }
}

fn plant() -> Store<MemoryKv> {
    let s = Store::open(MemoryKv::new()).unwrap();
    s.ingest(
        &IngestBatch {
            agent: "a1".into(),
            alerts: vec![
                alert(
                    1,
                    "write-denied",
                    Severity::High,
                    "10.0.0.9",
                    "10.0.1.5",
                    "a1",
                ),
                alert(2, "scan", Severity::Medium, "10.0.0.9", "10.0.1.6", "a1"),
            ],
            assets: vec![
                asset("10.0.1.5", "cell-1", Some("critical"), &["10.0.0.9"]),
                asset("10.0.1.6", "cell-1", None, &["10.0.0.9"]),
                asset("10.0.2.7", "cell-2", None, &[]),
            ],
            conversations: Vec::new(),
            evidence: Vec::new(),
            learned: Vec::new(),
        },
        NOW,
    )
    .unwrap();
    s
}

#[test]
fn an_open_high_incident_on_a_critical_plc_makes_it_the_riskiest_asset_with_its_factors_listed() {
    let s = plant();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    let top = &p.assets[0];
    assert_eq!(top.ip.to_string(), "10.0.1.5");
    // (20 for the open high incident + 1 peer) doubled for criticality "critical": 42
    // points, 34.3 on the saturating scale.
    assert_eq!(top.score, 34.3);
    let names: Vec<&str> = top.factors.iter().map(|f| f.factor.as_str()).collect();
    assert!(names[0].starts_with("open high incident #"), "{names:?}");
    assert!(names[0].ends_with("(write-denied) as target"), "{names:?}");
    assert_eq!(names[1], "talks Modbus with 1 hosts");
    assert_eq!(names[2], "criticality critical multiplies by 2");
    assert_eq!(p.open_incidents.get(&Severity::High), Some(&1));
    assert_eq!(p.open_incidents.get(&Severity::Medium), Some(&1));
}

#[test]
fn the_attacking_host_scores_even_when_no_agent_reported_it_as_an_asset() {
    let s = plant();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    let attacker = p
        .assets
        .iter()
        .find(|a| a.ip.to_string() == "10.0.0.9")
        .unwrap();
    assert_eq!(attacker.score, 24.4);
    assert_eq!(attacker.zone, None);
    assert!(p.zones.iter().any(|z| z.zone == "unzoned"));
}

#[test]
fn acknowledging_halves_an_incidents_weight_and_resolving_removes_it() {
    let s = plant();
    let high = s
        .incidents(None, 100)
        .unwrap()
        .into_iter()
        .find(|i| i.rule == "write-denied")
        .unwrap();
    s.set_incident_state(high.id, IncidentState::Acknowledged, "ops", None, NOW)
        .unwrap();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    assert_eq!(p.assets[0].ip.to_string(), "10.0.1.5");
    assert_eq!(p.assets[0].score, 19.7);
    assert_eq!(p.acknowledged_incidents, 1);
    assert_eq!(p.open_incidents.get(&Severity::High), None);
    s.set_incident_state(high.id, IncidentState::Resolved, "ops", None, NOW)
        .unwrap();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    let plc = p
        .assets
        .iter()
        .find(|a| a.ip.to_string() == "10.0.1.5")
        .unwrap();
    assert_eq!(plc.score, 2.0);
    assert_eq!(p.acknowledged_incidents, 0);
}

#[test]
fn a_zone_scores_its_riskiest_asset_plus_the_spread_of_risk_and_ranks_first() {
    let s = plant();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    assert_eq!(p.zones[0].zone, "cell-1");
    // Riskiest 34.3, and two assets at risk add 2.
    assert_eq!(p.zones[0].score, 36.3);
    assert_eq!(p.zones[0].factors.len(), 2);
    let quiet = p.zones.iter().find(|z| z.zone == "cell-2").unwrap();
    assert_eq!(quiet.score, 0.0);
}

#[test]
fn scores_approach_but_never_exceed_one_hundred() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let alerts = (0..10)
        .map(|n| {
            let rule = format!("r{n}");
            alert(n, &rule, Severity::Critical, "10.0.0.9", "10.0.1.5", "a1")
        })
        .collect();
    s.ingest(&batch("a1", alerts), NOW).unwrap();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    assert!(p.assets[0].score > 95.0 && p.assets[0].score < 100.0);
    assert_eq!(p.zones[0].score, 100.0);
}

#[test]
fn an_agent_silent_longer_than_the_threshold_is_offline() {
    let s = Store::open(MemoryKv::new()).unwrap();
    s.heartbeat(&heartbeat("fresh"), Timestamp::from_secs(4_990))
        .unwrap();
    s.heartbeat(&heartbeat("stale"), Timestamp::from_secs(4_900))
        .unwrap();
    let status = agent_status(s.agents(10).unwrap(), NOW, Duration::from_secs(30));
    let online: Vec<(&str, bool)> = status
        .iter()
        .map(|a| (a.record.heartbeat.agent.as_str(), a.online))
        .collect();
    assert_eq!(online, [("fresh", true), ("stale", false)]);
    let p = posture(&status, &[], &[]);
    assert_eq!((p.agents_online, p.agents_offline), (1, 1));
}

#[test]
fn a_critical_asset_outranks_a_normal_one_under_the_same_incidents() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let alerts = (0..8)
        .map(|n| {
            let rule = format!("r{n}");
            alert(n, &rule, Severity::High, "10.0.0.9", "10.0.1.5", "a1")
        })
        .collect();
    s.ingest(
        &IngestBatch {
            agent: "a1".into(),
            alerts,
            assets: vec![asset("10.0.1.5", "kiln", Some("critical"), &[])],
            conversations: Vec::new(),
            evidence: Vec::new(),
            learned: Vec::new(),
        },
        NOW,
    )
    .unwrap();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    assert_eq!(p.assets[0].ip.to_string(), "10.0.1.5");
    assert!(
        p.assets[0].score > p.assets[1].score + 10.0,
        "{:?}",
        p.assets
    );
}

#[test]
fn a_flood_from_many_sources_scores_no_host_and_spoofing_counts_its_address_once() {
    let s = Store::open(MemoryKv::new()).unwrap();
    s.ingest(
        &IngestBatch {
            agent: "a1".into(),
            alerts: vec![
                alert(
                    1,
                    "dos.syn_flood",
                    Severity::High,
                    "0.0.0.0",
                    "10.0.1.5",
                    "a1",
                ),
                alert(2, "spoof.arp", Severity::High, "10.0.2.7", "10.0.2.7", "a1"),
            ],
            assets: vec![asset("10.0.1.5", "cell-1", None, &[])],
            conversations: Vec::new(),
            evidence: Vec::new(),
            learned: Vec::new(),
        },
        NOW,
    )
    .unwrap();
    let p = posture(
        &[],
        &s.incidents(None, 100).unwrap(),
        &s.assets(100).unwrap(),
    );
    assert!(
        p.assets.iter().all(|a| !a.ip.is_unspecified()),
        "{:?}",
        p.assets
    );
    let spoofed = p
        .assets
        .iter()
        .find(|a| a.ip.to_string() == "10.0.2.7")
        .unwrap();
    assert_eq!(spoofed.factors.len(), 1, "{:?}", spoofed.factors);
    let flooded = p
        .assets
        .iter()
        .find(|a| a.ip.to_string() == "10.0.1.5")
        .unwrap();
    assert!(
        flooded.factors[0]
            .factor
            .ends_with("(dos.syn_flood) as target")
    );
}
