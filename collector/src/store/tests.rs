use std::path::Path;

use otwatch_rules::alert::Severity;
use otwatch_rules::wire::AssetObservation;

use super::*;
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::kv::sled::SledKv;

fn store() -> Store<MemoryKv> {
    Store::open(MemoryKv::new()).unwrap()
}

/// How many keys of one namespace the store holds.
fn keys_in<K: Kv>(s: &Store<K>, namespace: u8) -> usize {
    crate::kv::scan_prefix(s.kv(), &[namespace], Order::Ascending, usize::MAX)
        .unwrap()
        .len()
}

/// The newest `limit` alerts of rule `r`.
fn of_rule_r(s: &Store<MemoryKv>, limit: usize) -> AlertPage {
    s.query_alerts(
        &AlertFilter {
            rule: Some("r".into()),
            ..Default::default()
        },
        None,
        limit,
    )
    .unwrap()
}

const NOW: Timestamp = Timestamp::from_secs(5_000);

#[test]
fn a_retried_batch_is_recognised_and_counted_once() {
    let s = store();
    let b = batch(
        "a1",
        (0..10)
            .map(|n| alert(n, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1"))
            .collect(),
    );
    let (first, fresh) = s.ingest(&b, NOW).unwrap();
    assert_eq!((first.accepted, first.duplicates, fresh.len()), (10, 0, 10));
    let (second, fresh) = s.ingest(&b, NOW).unwrap();
    assert_eq!(
        (second.accepted, second.duplicates, fresh.len()),
        (0, 10, 0)
    );
    assert_eq!(s.alert_count().unwrap(), 10);
    assert_eq!(s.agent("a1").unwrap().unwrap().alerts, 10);
    let all = s.query_alerts(&AlertFilter::default(), None, 100).unwrap();
    assert_eq!(all.alerts.len(), 10);
    assert_eq!(s.incidents(None, 10).unwrap()[0].alerts, 10);
}

#[test]
fn duplicate_ids_inside_one_batch_count_once() {
    let s = store();
    let a = alert(1, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
    let (reply, _) = s.ingest(&batch("a1", vec![a.clone(), a]), NOW).unwrap();
    assert_eq!((reply.accepted, reply.duplicates), (1, 1));
}

#[test]
fn malformed_alert_id_is_refused_naming_the_field_and_nothing_is_stored() {
    let s = store();
    let mut bad = alert(1, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
    bad.id = "not-hex".into();
    let good = alert(2, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
    let e = s.ingest(&batch("a1", vec![good, bad]), NOW).unwrap_err();
    assert!(e.to_string().contains("alerts[].id"), "{e}");
    assert_eq!(s.alert_count().unwrap(), 0);
}

#[test]
fn queries_filter_by_every_field_newest_first() {
    let s = store();
    let alerts = vec![
        alert(
            1,
            "policy.unauthorized_write",
            Severity::High,
            "10.0.0.1",
            "10.0.0.2",
            "a1",
        ),
        alert(
            2,
            "recon.read_device_id",
            Severity::Low,
            "10.0.0.3",
            "10.0.0.2",
            "a2",
        ),
        alert(
            3,
            "diag.force_listen_only",
            Severity::Critical,
            "10.0.0.1",
            "10.0.0.4",
            "a1",
        ),
        alert(
            4,
            "policy.unauthorized_write",
            Severity::Medium,
            "10.0.0.5",
            "10.0.0.6",
            "a2",
        ),
    ];
    s.ingest(&batch("x", alerts), NOW).unwrap();
    let ids = |f: AlertFilter| -> Vec<String> {
        s.query_alerts(&f, None, 100)
            .unwrap()
            .alerts
            .iter()
            .map(|a| a.id[31..].to_string())
            .collect()
    };
    assert_eq!(ids(AlertFilter::default()), vec!["4", "3", "2", "1"]);
    assert_eq!(
        ids(AlertFilter {
            rule: Some("policy.unauthorized_write".into()),
            ..Default::default()
        }),
        vec!["4", "1"]
    );
    assert_eq!(
        ids(AlertFilter {
            agent: Some("a2".into()),
            ..Default::default()
        }),
        vec!["4", "2"]
    );
    assert_eq!(
        ids(AlertFilter {
            asset: Some("10.0.0.2".parse().unwrap()),
            ..Default::default()
        }),
        vec!["2", "1"]
    );
    assert_eq!(
        ids(AlertFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        }),
        vec!["3", "1"]
    );
    assert_eq!(
        ids(AlertFilter {
            technique: Some("T0855".into()),
            ..Default::default()
        })
        .len(),
        4
    );
    assert_eq!(
        ids(AlertFilter {
            since: Some(Timestamp::from_secs(1_002)),
            until: Some(Timestamp::from_secs(1_004)),
            ..Default::default()
        }),
        vec!["3", "2"]
    );
    assert_eq!(
        ids(AlertFilter {
            agent: Some("a1".into()),
            min_severity: Some(Severity::Critical),
            ..Default::default()
        }),
        vec!["3"]
    );
}

#[test]
fn cursor_pages_through_every_alert_exactly_once() {
    let s = store();
    let alerts: Vec<Alert> = (0..1000)
        .map(|n| {
            let sev = if n % 7 == 0 {
                Severity::Critical
            } else {
                Severity::Low
            };
            alert(n, "r", sev, "10.0.0.1", "10.0.0.2", "a1")
        })
        .collect();
    s.ingest(&batch("a1", alerts), NOW).unwrap();
    for filter in [
        AlertFilter::default(),
        AlertFilter {
            min_severity: Some(Severity::Low),
            ..Default::default()
        },
        AlertFilter {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        },
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s.query_alerts(&filter, cursor.as_deref(), 37).unwrap();
            seen.extend(page.alerts.iter().map(|a| a.ts));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected = if filter.min_severity == Some(Severity::Critical) {
            143
        } else {
            1000
        };
        assert_eq!(seen.len(), expected, "{filter:?}");
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "newest first, no repeats"
        );
    }
}

/// A small deterministic generator, so the test needs no dependency and always sees the same
/// alerts.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[test]
fn every_query_over_overlapping_batches_matches_a_full_scan_page_by_page() {
    let s = store();
    let mut rng = 7u64;
    let rules = ["r1", "r2", "r3"];
    let severities = [Severity::Low, Severity::High, Severity::Critical];
    let mut all = Vec::new();
    // Four agents' batches interleave in time; some alerts within a batch are seconds apart
    // (several postings per value), some batches arrive late with old times.
    for b in 0..40u64 {
        let agent = format!("a{}", b % 4);
        let base_ms = if b % 9 == 8 { b * 200 } else { b * 1_500 };
        let alerts: Vec<Alert> = (0..50u64)
            .map(|i| {
                let n = b * 50 + i;
                let mut a = alert(
                    n,
                    rules[(lcg(&mut rng) % 3) as usize],
                    severities[(lcg(&mut rng) % 3) as usize],
                    &format!("10.0.0.{}", lcg(&mut rng) % 4),
                    &format!("10.0.1.{}", lcg(&mut rng) % 3),
                    &agent,
                );
                let ms = base_ms + lcg(&mut rng) % 4_000;
                a.ts = Timestamp::from_nanos(1_000_000_000_000 + ms * 1_000_000);
                a
            })
            .collect();
        all.extend(alerts.clone());
        s.ingest(&batch(&agent, alerts), NOW).unwrap();
    }
    let at = |ms: u64| Timestamp::from_nanos(1_000_000_000_000 + ms * 1_000_000);
    let filters = [
        AlertFilter::default(),
        AlertFilter {
            rule: Some("r2".into()),
            ..Default::default()
        },
        AlertFilter {
            agent: Some("a1".into()),
            until: Some(at(30_000)),
            ..Default::default()
        },
        AlertFilter {
            asset: Some("10.0.1.2".parse().unwrap()),
            since: Some(at(10_000)),
            ..Default::default()
        },
        AlertFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        },
        AlertFilter {
            technique: Some("T0855".into()),
            min_severity: Some(Severity::Critical),
            since: Some(at(5_000)),
            until: Some(at(50_000)),
            ..Default::default()
        },
    ];
    for filter in &filters {
        for page_size in [7, 100] {
            assert_pages_match_a_full_scan(&s, &all, filter, page_size);
        }
    }
}

/// Pages through `filter`'s alerts and checks they are exactly `all`'s matches, newest first.
fn assert_pages_match_a_full_scan<K: Kv>(
    s: &Store<K>,
    all: &[Alert],
    filter: &AlertFilter,
    page_size: usize,
) {
    let mut expected: Vec<&Alert> = all.iter().filter(|a| filter.matches(a)).collect();
    expected.sort_by_key(|a| std::cmp::Reverse((a.ts, a.id.clone())));
    let expected: Vec<&str> = expected.iter().map(|a| a.id.as_str()).collect();
    assert!(expected.len() > 20, "{filter:?} selects enough to page");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .query_alerts(filter, cursor.as_deref(), page_size)
            .unwrap();
        seen.extend(page.alerts.iter().map(|a| a.id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected, "{filter:?}, pages of {page_size}");
}

#[test]
fn bad_cursor_is_refused_naming_the_field() {
    let e = store()
        .query_alerts(&AlertFilter::default(), Some("zz"), 10)
        .unwrap_err();
    assert!(e.to_string().starts_with("cursor:"), "{e}");
}

#[test]
fn alerts_of_one_rule_between_the_same_hosts_group_into_an_incident_across_agents() {
    let s = store();
    s.ingest(
        &batch(
            "a1",
            vec![alert(
                1,
                "r",
                Severity::Medium,
                "10.0.0.1",
                "10.0.0.2",
                "a1",
            )],
        ),
        NOW,
    )
    .unwrap();
    s.ingest(
        &batch(
            "a2",
            vec![alert(2, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a2")],
        ),
        NOW,
    )
    .unwrap();
    s.ingest(
        &batch(
            "a2",
            vec![alert(
                3,
                "other",
                Severity::Low,
                "10.0.0.1",
                "10.0.0.2",
                "a2",
            )],
        ),
        NOW,
    )
    .unwrap();
    let incidents = s.incidents(None, 10).unwrap();
    assert_eq!(incidents.len(), 2);
    let grouped = incidents.iter().find(|i| i.rule == "r").unwrap();
    assert_eq!(grouped.alerts, 2);
    assert_eq!(grouped.severity, Severity::High);
    assert_eq!(grouped.agents.len(), 2);
    assert_eq!(grouped.state, IncidentState::Open);
}

#[test]
fn an_alert_long_after_the_last_starts_a_new_incident() {
    let s = store();
    let mut late = alert(2, "r", Severity::Medium, "10.0.0.1", "10.0.0.2", "a1");
    late.ts = Timestamp::from_secs(1_000 + 7_200);
    s.ingest(
        &batch(
            "a1",
            vec![
                alert(1, "r", Severity::Medium, "10.0.0.1", "10.0.0.2", "a1"),
                late,
            ],
        ),
        NOW,
    )
    .unwrap();
    assert_eq!(s.incidents(None, 10).unwrap().len(), 2);
}

#[test]
fn alerts_after_a_quiet_spell_in_one_batch_all_join_the_one_new_incident() {
    let s = store();
    let at = |n: u64, secs: u64| {
        let mut a = alert(n, "r", Severity::Medium, "10.0.0.1", "10.0.0.2", "a1");
        a.ts = Timestamp::from_secs(secs);
        a
    };
    s.ingest(&batch("a1", vec![at(1, 1_000)]), NOW).unwrap();
    // Two hours later: the first of these opens a new incident, the others join it.
    let later = (2..6).map(|n| at(n, 8_200 + n)).collect();
    s.ingest(&batch("a1", later), NOW).unwrap();
    let incidents = s.incidents(None, 10).unwrap();
    let counts: Vec<u64> = incidents.iter().map(|i| i.alerts).collect();
    assert_eq!(counts, [4, 1], "newest first");
    s.ingest(&batch("a1", vec![at(9, 8_300)]), NOW).unwrap();
    assert_eq!(
        s.incidents(None, 10).unwrap()[0].alerts,
        5,
        "the open one stays the key's"
    );
}

#[test]
fn a_backlog_spanning_quiet_spells_of_two_keys_leaves_each_key_on_its_newest_incident() {
    let s = store();
    let at = |n: u64, rule: &str, secs: u64| {
        let mut a = alert(n, rule, Severity::Medium, "10.0.0.1", "10.0.0.2", "a1");
        a.ts = Timestamp::from_secs(secs);
        a
    };
    // One batch: k and m, then both again two hours later.
    let backlog = vec![
        at(1, "k", 1_000),
        at(2, "m", 1_000),
        at(3, "k", 8_200),
        at(4, "m", 8_201),
    ];
    s.ingest(&batch("a1", backlog), NOW).unwrap();
    s.ingest(
        &batch("a1", vec![at(5, "k", 8_300), at(6, "m", 8_300)]),
        NOW,
    )
    .unwrap();
    let mut per_rule: Vec<(String, u64)> = s
        .incidents(None, 10)
        .unwrap()
        .iter()
        .map(|i| (i.rule.clone(), i.alerts))
        .collect();
    per_rule.sort();
    let expected: Vec<(String, u64)> = [("k", 1), ("k", 2), ("m", 1), ("m", 2)]
        .map(|(r, n)| (r.to_string(), n))
        .into();
    assert_eq!(
        per_rule, expected,
        "the later alerts joined the incidents opened after the quiet spell"
    );
}

#[test]
fn acknowledging_and_resolving_record_who_and_when_and_resolved_incidents_stay_closed() {
    let s = store();
    s.ingest(
        &batch(
            "a1",
            vec![alert(
                1,
                "r",
                Severity::Medium,
                "10.0.0.1",
                "10.0.0.2",
                "a1",
            )],
        ),
        NOW,
    )
    .unwrap();
    let id = s.incidents(None, 1).unwrap()[0].id;
    s.set_incident_state(id, IncidentState::Acknowledged, "alice", None, NOW)
        .unwrap();
    let resolved = s
        .set_incident_state(
            id,
            IncidentState::Resolved,
            "bob",
            Some("patched".into()),
            NOW,
        )
        .unwrap();
    assert_eq!(resolved.history.len(), 2);
    assert_eq!(resolved.history[0].by, "alice");
    assert_eq!(resolved.history[1].note.as_deref(), Some("patched"));
    s.ingest(
        &batch(
            "a1",
            vec![alert(
                2,
                "r",
                Severity::Medium,
                "10.0.0.1",
                "10.0.0.2",
                "a1",
            )],
        ),
        NOW,
    )
    .unwrap();
    let open = s.incidents(Some(IncidentState::Open), 10).unwrap();
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, id);
    assert!(matches!(
        s.set_incident_state(999, IncidentState::Resolved, "bob", None, NOW),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn asset_observations_merge_across_agents() {
    let s = store();
    let mut seen_by_a1 =
        AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(10));
    seen_by_a1.slave = true;
    seen_by_a1.units = vec![1];
    let mut seen_by_a2 =
        AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(20));
    seen_by_a2.units = vec![2];
    seen_by_a2.vendor = Some("Schneider Electric".into());
    report(&s, "a1", seen_by_a1);
    report(&s, "a2", seen_by_a2);
    let record = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    let asset = &record.asset;
    assert_eq!(asset.units, vec![1, 2]);
    assert!(asset.slave);
    assert_eq!(asset.vendor.as_deref(), Some("Schneider Electric"));
    assert_eq!(
        (asset.first_seen, asset.last_seen),
        (Timestamp::from_secs(10), Timestamp::from_secs(20))
    );
    let agents: Vec<&str> = record
        .reported_by
        .iter()
        .map(|r| r.agent.as_str())
        .collect();
    assert_eq!(agents, ["a1", "a2"]);
    assert!(record.conflicts.is_empty());
}

fn labelled(zone: &str, name: &str) -> AssetObservation {
    let mut o = AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(10));
    o.zone = Some(zone.into());
    o.name = Some(name.into());
    o.criticality = Some("critical".into());
    o
}

fn report(s: &Store<MemoryKv>, agent: &str, obs: AssetObservation) {
    s.ingest(
        &IngestBatch {
            agent: agent.into(),
            alerts: vec![],
            assets: vec![obs],
            conversations: Vec::new(),
            evidence: Vec::new(),
            learned: Vec::new(),
        },
        NOW,
    )
    .unwrap();
}

#[test]
fn an_agent_cannot_overwrite_the_labels_another_reported_and_the_disagreement_shows() {
    let s = store();
    report(&s, "a1", labelled("cell-1", "press-plc"));
    let mut hostile = labelled("lab", "spare");
    hostile.criticality = Some("low".into());
    report(&s, "a2", hostile);
    let record = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    // The first reporter's labels stand.
    assert_eq!(record.asset.zone.as_deref(), Some("cell-1"));
    assert_eq!(record.asset.name.as_deref(), Some("press-plc"));
    assert_eq!(record.asset.criticality.as_deref(), Some("critical"));
    // Both claims are kept and shown.
    let zone: Vec<(&str, &str)> = record.conflicts["zone"]
        .iter()
        .map(|c| (c.agent.as_str(), c.value.as_str()))
        .collect();
    assert_eq!(zone, [("a1", "cell-1"), ("a2", "lab")]);
    assert!(record.conflicts.contains_key("criticality"));
    assert_eq!(record.highest_criticality(), Some("critical"));
    // The API shows them too.
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["zone"], "cell-1");
    assert_eq!(json["conflicts"]["name"][1]["agent"], "a2");
    // An agent changing its own label is no conflict.
    report(&s, "a1", labelled("cell-2", "press-plc"));
    report(&s, "a2", labelled("cell-2", "press-plc"));
    let record = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    assert_eq!(record.asset.zone.as_deref(), Some("cell-2"));
    assert!(record.conflicts.is_empty(), "{:?}", record.conflicts);
}

#[test]
fn repeated_reports_never_grow_an_asset_past_its_caps_and_what_they_drop_is_counted() {
    let s = store();
    // 10,000 batches of 16 fresh MACs each, with fresh peers and units: 160,000 MACs offered.
    for n in 0..10_000u32 {
        let mut o = AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(10));
        o.macs = (0..16u32)
            .map(|i| {
                let b = (n * 16 + i).to_be_bytes();
                format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
            })
            .collect();
        o.peers = vec![IpAddr::from((n * 16).to_be_bytes())];
        o.units = vec![(n % 256) as u8];
        report(&s, "a1", o);
    }
    let record = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    use otwatch_rules::validate::{MAX_CODES, MAX_MACS, MAX_PEERS};
    assert_eq!(record.asset.macs.len(), MAX_MACS);
    assert_eq!(record.asset.peers.len(), MAX_PEERS);
    assert_eq!(record.asset.units.len(), MAX_CODES);
    assert_eq!(record.dropped.macs, 160_000 - MAX_MACS as u64);
    assert_eq!(record.dropped.peers, 10_000 - MAX_PEERS as u64);
    assert_eq!(record.dropped.units, 0, "units repeat: nothing to drop");
    assert_eq!(
        s.asset_entries_dropped().unwrap(),
        record.dropped.total(),
        "the store's counter agrees"
    );
    let size = serde_json::to_vec(&s.assets(10).unwrap()).unwrap().len();
    assert!(size < 64 * 1024, "/assets is {size} bytes");
}

#[test]
fn an_asset_stored_before_per_agent_reports_keeps_its_labels_and_is_cut_to_the_caps() {
    let s = store();
    // What an earlier release stored: a plain observation, labels and an overgrown list.
    let mut old = labelled("cell-1", "press-plc");
    old.macs = (0..1000u32)
        .map(|i| {
            let b = i.to_be_bytes();
            format!("02:00:00:00:{:02x}:{:02x}", b[2], b[3])
        })
        .collect();
    s.kv()
        .apply({
            let mut b = Batch::new();
            b.put(
                keys::named(keys::ASSET, b"10.0.0.2"),
                serde_json::to_vec(&old).unwrap(),
            );
            b
        })
        .unwrap();
    let read = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    assert_eq!(read.asset.zone.as_deref(), Some("cell-1"));
    report(&s, "a2", labelled("lab", "press-plc"));
    let record = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap();
    assert_eq!(record.asset.zone.as_deref(), Some("cell-1"));
    assert_eq!(record.reported_by[0].agent, model::EARLIER_RELEASE);
    assert_eq!(record.conflicts["zone"].len(), 2);
    assert_eq!(record.asset.macs.len(), otwatch_rules::validate::MAX_MACS);
    assert_eq!(record.dropped.macs, 1000 - 16);
}

#[test]
fn two_views_of_one_host_in_one_batch_are_both_kept() {
    // Two workers of one agent each saw part of a PLC's traffic, reported in one batch.
    let s = store();
    let mut one = AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(10));
    one.units = vec![1];
    one.peers = vec!["10.0.0.5".parse().unwrap()];
    let mut other = AssetObservation::new("10.0.0.2".parse().unwrap(), Timestamp::from_secs(11));
    other.units = vec![2];
    other.peers = vec!["10.0.0.6".parse().unwrap()];
    let reply = s
        .ingest(
            &IngestBatch {
                agent: "a1".into(),
                alerts: vec![],
                assets: vec![one, other],
                conversations: Vec::new(),
                evidence: Vec::new(),
                learned: Vec::new(),
            },
            NOW,
        )
        .unwrap()
        .0;
    assert_eq!(reply.assets, 2);
    let asset = s.asset("10.0.0.2".parse().unwrap()).unwrap().unwrap().asset;
    assert_eq!(asset.units, vec![1, 2]);
    assert_eq!(asset.peers.len(), 2, "{:?}", asset.peers);
}

#[test]
fn retention_by_age_removes_old_alerts_and_their_index_entries() {
    let s = store();
    s.ingest(
        &batch(
            "a1",
            (0..10)
                .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
                .collect(),
        ),
        NOW,
    )
    .unwrap();
    let removed = s
        .enforce_retention(Some(Timestamp::from_secs(1_005)), None)
        .unwrap();
    assert_eq!(removed, 5);
    assert_eq!(s.alert_count().unwrap(), 5);
    let by_rule = of_rule_r(&s, 100);
    assert_eq!(by_rule.alerts.len(), 5);
    // Alerts one second apart pair up in postings; of the five per value, the two whose alerts
    // are all gone went, [1004 s, 1005 s] stays with 1005.
    assert_eq!(
        keys_in(&s, keys::INDEX),
        18,
        "three postings for each of six values"
    );
    let removed = s
        .enforce_retention(Some(Timestamp::from_secs(2_000)), None)
        .unwrap();
    assert_eq!(removed, 5);
    for namespace in [
        keys::INDEX,
        keys::POSTING_RECORDS,
        keys::ID,
        keys::ALERT,
        keys::SEQUENCE,
    ] {
        let left = crate::kv::scan_prefix(s.kv(), &[namespace], Order::Ascending, 10).unwrap();
        assert!(left.is_empty(), "{} left: {left:?}", namespace as char);
    }
}

#[test]
fn an_alert_from_a_skewed_clock_keeps_only_its_own_postings() {
    let s = store();
    let mut alerts: Vec<Alert> = (0..5)
        .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
        .collect();
    let mut future = alert(5, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1");
    future.ts = Timestamp::from_secs(10_000_000);
    alerts.push(future);
    s.ingest(&batch("a1", alerts), NOW).unwrap();
    s.enforce_retention(Some(Timestamp::from_secs(1_005)), None)
        .unwrap();
    // The far-off alert's six postings (one per value) and their record; nothing of the rest.
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (6, 1)
    );
    assert_eq!(of_rule_r(&s, 10).alerts.len(), 1);
}

#[test]
fn retention_removes_every_posting_whose_alerts_are_all_gone() {
    let s = store();
    for b in 0..4 {
        let alerts = (b * 10..b * 10 + 10)
            .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
            .collect();
        s.ingest(&batch("a1", alerts), NOW).unwrap();
    }
    // Alerts one second apart pair up: five postings per value and batch, six values; one
    // record per second that ends a posting.
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (120, 20)
    );
    // Alerts 0..=14 go: the first batch's postings, and the second's two first per value; the
    // posting of alerts 14 and 15 stays with 15.
    s.enforce_retention(Some(Timestamp::from_secs(1_015)), None)
        .unwrap();
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (78, 13)
    );
    let by_rule = of_rule_r(&s, 100);
    assert_eq!(by_rule.alerts.len(), 25);
    assert!(
        by_rule
            .alerts
            .iter()
            .all(|a| a.ts >= Timestamp::from_secs(1_015))
    );
}

#[test]
fn retention_by_size_removes_a_tenth_of_the_oldest_per_pass() {
    let s = store();
    s.ingest(
        &batch(
            "a1",
            (0..100)
                .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
                .collect(),
        ),
        NOW,
    )
    .unwrap();
    assert_eq!(s.enforce_retention(None, Some(1)).unwrap(), 10);
    let oldest = s
        .query_alerts(&AlertFilter::default(), None, 1000)
        .unwrap()
        .alerts
        .last()
        .unwrap()
        .ts;
    assert_eq!(oldest, Timestamp::from_secs(1_010));
    assert_eq!(s.enforce_retention(None, Some(u64::MAX)).unwrap(), 0);
}

#[test]
fn a_schema_1_store_is_upgraded_in_place_and_its_alerts_stay_queryable_and_expirable() {
    let kv = MemoryKv::new();
    let mut b = Batch::new();
    b.put(
        keys::named(keys::META, b"schema"),
        1u32.to_be_bytes().to_vec(),
    );
    for n in 0..3 {
        let a = alert(n, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
        let id = keys::alert_id(&a.id).unwrap();
        let suffix = keys::order(a.ts.as_nanos(), &id);
        b.put(keys::alert(&suffix), json(&a));
        b.put(
            keys::named(keys::ID, &id),
            a.ts.as_nanos().to_be_bytes().to_vec(),
        );
        // Schema 1: one empty key per alert and index value.
        for (field, value) in [(keys::Field::Rule, &b"r"[..]), (keys::Field::Agent, b"a1")] {
            b.put(
                migrate::v2_index_key(field.byte(), value, &suffix),
                Vec::new(),
            );
        }
    }
    kv.apply(b).unwrap();
    let s = Store::open(kv).unwrap();
    // Per value, alerts 0 and 1 (a second apart) share a posting, alert 2 has its own; one
    // record for the postings ending at second 1001, one for 1002.
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (4, 2)
    );
    let by_rule = of_rule_r(&s, 10);
    let ids: Vec<&str> = by_rule.alerts.iter().map(|a| &a.id[29..]).collect();
    assert_eq!(ids, ["002", "001", "000"]);
    let version = s.kv().get(&keys::named(keys::META, b"schema")).unwrap();
    assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
    s.enforce_retention(Some(Timestamp::from_secs(1_002)), None)
        .unwrap();
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (2, 1)
    );
}

#[test]
fn a_large_schema_1_store_upgrades_across_pages_into_postings_that_answer_like_a_full_scan() {
    let kv = MemoryKv::new();
    let mut b = Batch::new();
    b.put(
        keys::named(keys::META, b"schema"),
        1u32.to_be_bytes().to_vec(),
    );
    let severities = [Severity::Low, Severity::High, Severity::Critical];
    let mut all = Vec::new();
    // 800 alerts a quarter second apart with six index values each: more old keys than one
    // page of the upgrade reads.
    for n in 0..800u64 {
        let mut a = alert(
            n,
            ["r1", "r2"][(n % 2) as usize],
            severities[(n % 3) as usize],
            &format!("10.0.0.{}", n % 3),
            &format!("10.0.1.{}", n % 2),
            ["a0", "a1"][(n / 7 % 2) as usize],
        );
        a.ts = Timestamp::from_nanos(1_000_000_000_000 + n * 250_000_000);
        let id = keys::alert_id(&a.id).unwrap();
        let suffix = keys::order(a.ts.as_nanos(), &id);
        b.put(keys::alert(&suffix), json(&a));
        b.put(
            keys::named(keys::ID, &id),
            a.ts.as_nanos().to_be_bytes().to_vec(),
        );
        for (field, value) in keys::index_values(&a) {
            b.put(
                migrate::v2_index_key(field.byte(), &value, &suffix),
                Vec::new(),
            );
        }
        all.push(a);
    }
    kv.apply(b).unwrap();
    let s = Store::open(kv).unwrap();
    let postings = keys_in(&s, keys::INDEX);
    assert!(
        postings < 4_800 / 2,
        "{postings} postings for 4,800 old keys"
    );
    let filters = [
        AlertFilter::default(),
        AlertFilter {
            rule: Some("r2".into()),
            ..Default::default()
        },
        AlertFilter {
            agent: Some("a1".into()),
            ..Default::default()
        },
        AlertFilter {
            asset: Some("10.0.0.2".parse().unwrap()),
            ..Default::default()
        },
        AlertFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        },
    ];
    for filter in &filters {
        assert_pages_match_a_full_scan(&s, &all, filter, 50);
    }
}

#[test]
fn another_schema_version_on_disk_is_refused() {
    let kv = MemoryKv::new();
    let mut b = Batch::new();
    b.put(
        keys::named(keys::META, b"schema"),
        99u32.to_be_bytes().to_vec(),
    );
    kv.apply(b).unwrap();
    assert!(matches!(
        Store::open(kv),
        Err(StoreError::Schema { found: 99 })
    ));
}

#[test]
fn an_acknowledged_ingest_survives_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::child_ingests_then_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env("OTWATCH_STORE_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let s = Store::open(SledKv::open(dir.path()).unwrap()).unwrap();
    assert_eq!(s.alert_count().unwrap(), 50);
    assert_eq!(
        s.query_alerts(&AlertFilter::default(), None, 100)
            .unwrap()
            .alerts
            .len(),
        50
    );
}

#[test]
#[ignore = "run by an_acknowledged_ingest_survives_kill_dash_nine in a child process"]
fn child_ingests_then_aborts() {
    let dir = std::env::var("OTWATCH_STORE_DIR").unwrap();
    let s = Store::open(SledKv::open(Path::new(&dir)).unwrap()).unwrap();
    let alerts = (0..50)
        .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
        .collect();
    s.ingest(&batch("a1", alerts), NOW).unwrap();
    // Acknowledged: now die without closing anything.
    std::process::abort();
}

#[test]
fn ingest_goes_on_between_the_pages_of_a_long_retention_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(SledKv::open(dir.path()).unwrap()).unwrap());
    let old = |n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1");
    for chunk in 0..20 {
        let alerts = (chunk * 500..(chunk + 1) * 500).map(old).collect();
        s.ingest(&batch("a1", alerts), NOW).unwrap();
    }
    let cutoff = Timestamp::from_secs(1_000_000);
    let pass = std::thread::spawn({
        let s = s.clone();
        move || s.enforce_retention(Some(cutoff), None).unwrap()
    });
    // Once the pass has removed its first page of 512, a batch gets in before it is over
    // (when the pass held the store for its whole length, the batch waited for all 20 pages).
    while s.alert_count().unwrap() == 10_000 {
        std::thread::yield_now();
    }
    let fresh = alert(2_000_000, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1");
    s.ingest(&batch("a1", vec![fresh]), NOW).unwrap();
    let removed_meanwhile = 10_000 - (s.alert_count().unwrap() - 1);
    assert!(
        removed_meanwhile < 10_000,
        "the batch got in only after the whole pass"
    );
    assert_eq!(pass.join().unwrap(), 10_000);
    assert_eq!(s.alert_count().unwrap(), 1, "the new alert stays");
    assert_eq!(keys_in(&s, keys::ALERT), 1);
}

/// A store written by the release before prefix-free index keys (schema 2), dumped key by key:
/// agent a1's 30 alerts of rule `policy.unauthorized_write` (techniques T0855, T0836), and
/// agent a2's 30 alerts whose rule and technique are a1's followed by NUL and 0x7f, which sorted
/// into a1's postings and blinded its queries.
fn schema_2_store() -> MemoryKv {
    let kv = MemoryKv::new();
    let mut b = Batch::new();
    for line in include_str!("fixtures/schema-2-store.kv").lines() {
        let (k, v) = line.split_once(' ').unwrap();
        b.put(hex::decode(k).unwrap(), hex::decode(v).unwrap());
    }
    kv.apply(b).unwrap();
    kv
}

/// The ids of every alert a filter returns, page by page.
fn ids_of<K: Kv>(s: &Store<K>, filter: &AlertFilter) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.query_alerts(filter, cursor.as_deref(), 7).unwrap();
        ids.extend(page.alerts.iter().map(|a| a.id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

#[test]
fn a_schema_2_store_is_upgraded_and_a_value_with_a_nul_suffix_no_longer_blinds_another() {
    let s = Store::open(schema_2_store()).unwrap();
    let version = s.kv().get(&keys::named(keys::META, b"schema")).unwrap();
    assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
    let everything = ids_of(&s, &AlertFilter::default());
    assert_eq!(everything.len(), 60);
    let of = |field: &dyn Fn(&mut AlertFilter)| {
        let mut f = AlertFilter::default();
        field(&mut f);
        ids_of(&s, &f)
    };
    let a1 = of(&|f| f.agent = Some("a1".into()));
    let a2 = of(&|f| f.agent = Some("a2".into()));
    assert_eq!((a1.len(), a2.len()), (30, 30));
    assert_eq!(
        of(&|f| f.rule = Some("policy.unauthorized_write".into())),
        a1
    );
    assert_eq!(of(&|f| f.technique = Some("T0855".into())), a1);
    assert_eq!(of(&|f| f.technique = Some("T0836".into())), a1);
    assert_eq!(
        of(&|f| f.rule = Some("policy.unauthorized_write\u{0}\u{7f}".into())),
        a2
    );
    assert_eq!(
        of(&|f| f.technique = Some("T0855\u{0}\u{7f}\u{7f}".into())),
        a2
    );
    // Incidents, assets and counters come through as they were; each agent's stored alerts
    // are counted once, for retention's fair shares.
    assert_eq!(s.alert_count().unwrap(), 60);
    let held: Vec<(String, u64)> = s.stored_by_agent().unwrap().into_iter().collect();
    assert_eq!(held, [("a1".to_string(), 30), ("a2".to_string(), 30)]);
    assert_eq!(
        s.incident(1).unwrap().unwrap().state,
        IncidentState::Acknowledged
    );
    assert!(s.asset("10.0.0.9".parse().unwrap()).unwrap().is_some());
    // The open-incident counter, which schema 2 did not keep, is counted once at open.
    assert_eq!(s.open_incident_count().unwrap(), 1);
    // Retention still finds every posting through the upgraded records.
    s.enforce_retention(Some(Timestamp::from_secs(10_000)), None)
        .unwrap();
    assert_eq!(
        (keys_in(&s, keys::INDEX), keys_in(&s, keys::POSTING_RECORDS)),
        (0, 0)
    );
}

/// Which field the property below puts its two values in.
#[derive(Debug, Clone, Copy)]
enum IndexedField {
    Rule,
    Technique,
    Agent,
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// For any two distinct values of an indexed field (the second often the first with bytes
    /// after it, as a hostile agent would make it) and any interleaving of their alerts across
    /// batches and times, a query for either returns exactly its own alerts.
    #[test]
    fn a_query_for_one_value_returns_exactly_its_own_alerts_whatever_the_other_holds(
        first in "[\\x00-\\x7f\\u{80}-\\u{10ffff}]{0,5}",
        tail in proptest::prop_oneof![
            "\\x00[\\x00-\\x7f\\xff]{0,3}",
            "[\\x00\\x01\\x7f\\xff a-z]{0,4}",
        ],
        extends in proptest::bool::ANY,
        field in proptest::sample::select(vec![
            IndexedField::Rule,
            IndexedField::Technique,
            IndexedField::Agent,
        ]),
        alerts in proptest::collection::vec(
            (proptest::bool::ANY, 0u64..4_000, proptest::bool::ANY),
            1..60,
        ),
    ) {
        let second = if extends { format!("{first}{tail}") } else { tail.clone() };
        proptest::prop_assume!(first != second);
        let s = store();
        let mut pending = Vec::new();
        let mut expected: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for (n, (which, millis, cut)) in alerts.into_iter().enumerate() {
            let value = if which { &second } else { &first };
            let mut a = alert(n as u64, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
            a.ts = Timestamp::from_nanos(1_000_000_000_000 + millis * 1_000_000);
            match field {
                IndexedField::Rule => a.rule = value.clone(),
                IndexedField::Technique => a.technique = vec![value.clone()],
                IndexedField::Agent => a.agent = value.clone(),
            }
            expected[usize::from(which)].push(a.id.clone());
            pending.push(a);
            if cut {
                s.ingest(&batch("a1", std::mem::take(&mut pending)), NOW).unwrap();
            }
        }
        s.ingest(&batch("a1", pending), NOW).unwrap();
        for (value, expected) in [&first, &second].into_iter().zip(expected) {
            let mut filter = AlertFilter::default();
            match field {
                IndexedField::Rule => filter.rule = Some(value.clone()),
                IndexedField::Technique => filter.technique = Some(value.clone()),
                IndexedField::Agent => filter.agent = Some(value.clone()),
            }
            let mut got = ids_of(&s, &filter);
            let mut expected = expected;
            got.sort();
            expected.sort();
            proptest::prop_assert_eq!(got, expected, "query for {:?}", value);
        }
    }
}

#[test]
fn the_open_incident_count_follows_every_ingest_and_state_change() {
    let s = store();
    let b = batch(
        "a1",
        vec![
            alert(1, "r1", Severity::High, "10.0.0.1", "10.0.0.2", "a1"),
            alert(2, "r2", Severity::High, "10.0.0.1", "10.0.0.2", "a1"),
            alert(3, "r2", Severity::High, "10.0.0.1", "10.0.0.2", "a1"),
        ],
    );
    s.ingest(&b, NOW).unwrap();
    assert_eq!(s.open_incident_count().unwrap(), 2);
    s.set_incident_state(1, IncidentState::Acknowledged, "lead", None, NOW)
        .unwrap();
    assert_eq!(s.open_incident_count().unwrap(), 1);
    s.set_incident_state(1, IncidentState::Resolved, "lead", None, NOW)
        .unwrap();
    s.set_incident_state(2, IncidentState::Resolved, "lead", None, NOW)
        .unwrap();
    assert_eq!(s.open_incident_count().unwrap(), 0);
    // Resolved incidents stay closed: the next alert opens a new one.
    s.ingest(
        &batch(
            "a1",
            vec![alert(4, "r1", Severity::High, "10.0.0.1", "10.0.0.2", "a1")],
        ),
        NOW,
    )
    .unwrap();
    assert_eq!(s.open_incident_count().unwrap(), 1);
    assert_eq!(
        s.open_incident_count().unwrap(),
        s.incidents(Some(IncidentState::Open), 100).unwrap().len() as u64
    );
}

#[test]
fn incident_totals_saturate_and_notes_and_history_are_capped() {
    let s = store();
    let mut a = alert(1, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
    a.count = u64::MAX;
    let mut b = alert(2, "r", Severity::High, "10.0.0.1", "10.0.0.2", "a1");
    b.count = u64::MAX;
    s.ingest(&batch("a1", vec![a, b]), NOW).unwrap();
    assert_eq!(s.incident(1).unwrap().unwrap().occurrences, u64::MAX);
    let long = "n".repeat(MAX_NOTE + 1);
    assert!(matches!(
        s.set_incident_state(1, IncidentState::Acknowledged, "lead", Some(long), NOW),
        Err(StoreError::Invalid { field, .. }) if field == "note"
    ));
    for n in 0..MAX_HISTORY + 5 {
        s.set_incident_state(
            1,
            IncidentState::Acknowledged,
            "lead",
            Some(format!("{n}")),
            NOW,
        )
        .unwrap();
    }
    let i = s.incident(1).unwrap().unwrap();
    assert_eq!((i.history.len(), i.earlier_changes), (MAX_HISTORY, 5));
    assert_eq!(i.history.last().unwrap().note.as_deref(), Some("104"));
}

fn session(credential: &str, created: u64, ttl: u64) -> session::Session {
    session::Session {
        credential: credential.into(),
        name: "soc".into(),
        role: Role::Viewer,
        created: Timestamp::from_secs(created),
        expires: Timestamp::from_secs(created + ttl),
    }
}

#[test]
fn a_session_ends_at_its_expiry_and_purging_removes_expired_and_orphaned_ones() {
    let s = store();
    s.open_session("h1", &session("c1", 100, 60)).unwrap();
    s.open_session("h2", &session("c2", 100, 600)).unwrap();
    s.open_session("h3", &session("c1", 100, 600)).unwrap();
    assert!(
        s.session("h1", Timestamp::from_secs(159))
            .unwrap()
            .is_some()
    );
    assert!(
        s.session("h1", Timestamp::from_secs(160))
            .unwrap()
            .is_none()
    );
    // h1 expired; h2's credential is gone.
    let purged = s
        .purge_sessions(Timestamp::from_secs(200), |c| c == "c1")
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(keys_in(&s, keys::SESSION), 1);
    assert!(s.close_session("h3").unwrap());
    assert!(!s.close_session("h3").unwrap());
}

#[test]
fn one_credential_keeps_at_most_its_newest_sessions() {
    let s = store();
    let max = session::MAX_SESSIONS_PER_CREDENTIAL as u64;
    for n in 0..max + 5 {
        s.open_session(&format!("h{n}"), &session("c1", 100 + n, 600))
            .unwrap();
    }
    s.open_session("other", &session("c2", 50, 600)).unwrap();
    assert_eq!(keys_in(&s, keys::SESSION), max as usize + 1);
    let now = Timestamp::from_secs(200);
    assert!(s.session("h0", now).unwrap().is_none(), "the oldest went");
    assert!(s.session(&format!("h{}", max + 4), now).unwrap().is_some());
    assert!(s.session("other", now).unwrap().is_some());
}

/// A window of `master` polling `slave` from `since` for 10 s, 20 requests.
fn polled(
    master: std::net::IpAddr,
    slave: &str,
    since: u64,
) -> otwatch_rules::wire::ConversationObservation {
    otwatch_rules::wire::ConversationObservation {
        master,
        slave: slave.parse().unwrap(),
        since: Timestamp::from_secs(since),
        until: Timestamp::from_secs(since + 10),
        requests: 20,
        exceptions: 0,
        units: vec![1],
        functions: vec![3],
        reads: Default::default(),
        writes: Default::default(),
    }
}

#[test]
fn one_agent_inventing_conversations_fills_its_own_share_and_old_ones_expire() {
    let s = store();
    let cap = conversation::MAX_PER_AGENT;
    let mut next = 0u32;
    while u64::from(next) < cap + 5 {
        let mut b = batch("rogue", Vec::new());
        for _ in 0..1000 {
            let master = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + next));
            b.conversations.push(polled(master, "10.0.1.5", 1_000));
            next += 1;
        }
        s.ingest(&b, NOW).unwrap();
    }
    assert_eq!(s.conversations(usize::MAX).unwrap().len() as u64, cap);
    assert_eq!(s.conversations_dropped().unwrap(), u64::from(next) - cap);
    // Another agent's conversation still finds room.
    let mut b = batch("hall-1", Vec::new());
    b.conversations
        .push(polled("10.0.0.2".parse().unwrap(), "10.0.1.5", 50_000));
    s.ingest(&b, NOW).unwrap();
    assert_eq!(s.conversations(usize::MAX).unwrap().len() as u64, cap + 1);
    // An age limit removes the quiet ones, and their share is free again.
    s.enforce_retention(Some(Timestamp::from_secs(40_000)), None)
        .unwrap();
    let left = s.conversations(usize::MAX).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].master.to_string(), "10.0.0.2");
    let mut b = batch("rogue", Vec::new());
    b.conversations
        .push(polled("10.9.9.9".parse().unwrap(), "10.0.1.5", 60_000));
    s.ingest(&b, NOW).unwrap();
    assert_eq!(s.conversations(usize::MAX).unwrap().len(), 2);
}

#[test]
fn stored_alerts_are_numbered_in_ingest_order_and_duplicates_get_no_number() {
    let s = store();
    let first: Vec<Alert> = (0..3)
        .map(|n| alert(n, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1"))
        .collect();
    let (_, fresh) = s
        .ingest_sequenced(&batch("a1", first.clone()), NOW)
        .unwrap();
    assert_eq!(
        fresh.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Older by the clock, later by ingest: numbered after, not between.
    let mut again = first[1..].to_vec();
    let mut older = alert(9, "r", Severity::Low, "10.0.0.1", "10.0.0.2", "a1");
    older.ts = Timestamp::from_secs(1);
    again.push(older.clone());
    let (reply, fresh) = s.ingest_sequenced(&batch("a1", again), NOW).unwrap();
    assert_eq!(reply.duplicates, 2);
    assert_eq!(fresh, vec![(4, older.clone())]);
    assert_eq!(s.last_sequence().unwrap(), 4);
    let since: Vec<(u64, String)> = s
        .alerts_since(1, 10)
        .unwrap()
        .0
        .into_iter()
        .map(|(seq, a)| (seq, a.id))
        .collect();
    assert_eq!(
        since,
        [
            (2, first[1].id.clone()),
            (3, first[2].id.clone()),
            (4, older.id.clone())
        ]
    );
    let (two, through) = s.alerts_since(1, 2).unwrap();
    assert_eq!(
        (two.len(), through),
        (2, 3),
        "at most the limit, and how far"
    );
    assert_eq!(s.alerts_since(4, 10).unwrap(), (Vec::new(), 4));
    // Retention takes an alert's number with it: what is left resumes without it.
    s.enforce_retention(Some(Timestamp::from_secs(2)), None)
        .unwrap();
    let left: Vec<u64> = s
        .alerts_since(0, 10)
        .unwrap()
        .0
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(left, [1, 2, 3]);
    assert_eq!(
        keys_in(&s, keys::SEQUENCE),
        2,
        "one record per batch, kept while it numbers an alert"
    );
    s.enforce_retention(Some(Timestamp::from_secs(1_000_000)), None)
        .unwrap();
    assert_eq!(keys_in(&s, keys::SEQUENCE), 0, "spent records go");
    assert!(s.alerts_since(0, 10).unwrap().0.is_empty());
    assert_eq!(
        s.last_sequence().unwrap(),
        4,
        "numbers are never given out again"
    );
}
