//! One scenario played on the in-memory model, sled and PostgreSQL: every answer the API
//! builds on (alert pages with cursors, incidents, assets, agents, the live feed's sequence)
//! must be the same whichever engine holds the data. Then two stores on one database, as two
//! replicas, ingesting together: every alert once, incidents grouped as on one store.

use std::sync::Arc;

use otwatch_kv_postgres::throwaway::Cluster;
use otwatch_kv_postgres::{Create, PgKv};
use otwatch_rules::alert::Severity;
use otwatch_rules::wire::{AssetObservation, Heartbeat};

use super::*;
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::kv::sled::SledKv;

const NOW: Timestamp = Timestamp::from_secs(100_000);

/// Everything the scenario's answers show, as JSON, for comparison.
fn play<K: Kv>(s: &Store<K>) -> serde_json::Value {
    let rules = ["write", "diag", "scan"];
    let hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    let mut sequence = Vec::new();
    for round in 0..12u64 {
        let agent = format!("a{}", round % 3);
        let alerts: Vec<Alert> = (0..40u64)
            .map(|i| {
                // Alerts repeat across rounds (retries), and rounds 6.. jump two hours ahead,
                // so some keys open a second incident.
                let n = (round * 30 + i) + if round >= 6 { 7_200 } else { 0 };
                let rule = rules[(n % 3) as usize];
                let src = hosts[(n % 2) as usize];
                alert(n, rule, Severity::High, src, hosts[2], &agent)
            })
            .collect();
        let mut b = batch(&agent, alerts);
        let mut o = AssetObservation::new(
            hosts[(round % 3) as usize].parse().unwrap(),
            Timestamp::from_secs(1_000 + round),
        );
        o.zone = Some(format!("zone{}", round % 2));
        b.assets.push(o);
        let (reply, fresh) = s.ingest_sequenced(&b, NOW).unwrap();
        sequence.push((reply.accepted, reply.duplicates, fresh.first().map(|f| f.0)));
        s.heartbeat(
            &Heartbeat {
                agent: agent.clone(),
                ..Heartbeat::default()
            },
            NOW,
        )
        .unwrap();
    }
    s.set_incident_state(
        1,
        IncidentState::Acknowledged,
        "ann",
        Some("seen".into()),
        NOW,
    )
    .unwrap();
    s.set_incident_state(2, IncidentState::Resolved, "bob", None, NOW)
        .unwrap();
    let removed = s
        .enforce_retention(Some(Timestamp::from_secs(1_100)), None)
        .unwrap();
    // Every page of a filtered query, through its cursors.
    let mut pages = Vec::new();
    let filter = AlertFilter {
        rule: Some("write".into()),
        ..Default::default()
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = s.query_alerts(&filter, cursor.as_deref(), 17).unwrap();
        pages.push(serde_json::to_value(&page.alerts).unwrap());
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let (since, through) = s.alerts_since(0, 10_000).unwrap();
    let (rest, _) = s.alerts_since(through, 10_000).unwrap();
    let agents: Vec<_> = s
        .agents(100)
        .unwrap()
        .into_iter()
        .map(|a| (a.heartbeat.agent, a.alerts))
        .collect();
    serde_json::json!({
        "ingests": sequence,
        "removed": removed,
        "pages": pages,
        "feed": since.iter().map(|(seq, a)| (seq, a.id.clone())).collect::<Vec<_>>(),
        "through": through,
        "rest": rest.len(),
        "incidents": serde_json::to_value(s.incidents(None, 1_000).unwrap()).unwrap(),
        "open": s.open_incident_count().unwrap(),
        "assets": serde_json::to_value(s.assets(100).unwrap()).unwrap(),
        "agents": agents,
        "count": s.alert_count().unwrap(),
    })
}

#[test]
fn the_store_answers_the_same_on_memory_sled_and_postgres() {
    let model = play(&Store::open(MemoryKv::new()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let on_sled = play(&Store::open(SledKv::open(dir.path()).unwrap()).unwrap());
    assert_eq!(on_sled, model, "sled differs from the model");
    let Some(cluster) = Cluster::for_test("the_store_answers_the_same_on_postgres") else {
        return;
    };
    cluster.create_database("store").unwrap();
    let kv = PgKv::open(&cluster.options("store"), Create::IfMissing).unwrap();
    let on_postgres = play(&Store::open(kv).unwrap());
    assert_eq!(on_postgres, model, "PostgreSQL differs from the model");
}

#[test]
fn two_replicas_on_one_database_store_each_alert_once_and_group_as_one() {
    let Some(cluster) = Cluster::for_test("two_replicas_on_one_database") else {
        return;
    };
    cluster.create_database("replicas").unwrap();
    let options = cluster.options("replicas");
    let first = PgKv::open(&options, Create::IfMissing).unwrap();
    let replicas = [
        Arc::new(Store::open(first).unwrap()),
        Arc::new(Store::open(PgKv::open(&options, Create::Never).unwrap()).unwrap()),
    ];
    // Four agents; each batch goes to both replicas at once (an agent retrying on another
    // replica after a lost acknowledgement), and every alert of a rule between two hosts
    // belongs to one incident.
    let threads: Vec<_> = (0..4u64)
        .flat_map(|agent| {
            replicas.iter().map(move |store| {
                let store = Arc::clone(store);
                std::thread::spawn(move || {
                    let name = format!("agent{agent}");
                    for round in 0..10u64 {
                        let alerts = (0..20u64)
                            .map(|i| {
                                let n = agent * 1_000 + round * 20 + i;
                                alert(n, "write", Severity::High, "10.0.0.1", "10.0.0.9", &name)
                            })
                            .collect();
                        store.ingest(&batch(&name, alerts), NOW).unwrap();
                    }
                })
            })
        })
        .collect::<Vec<_>>();
    for t in threads {
        t.join().unwrap();
    }
    for store in &replicas {
        assert_eq!(store.alert_count().unwrap(), 800, "each alert stored once");
        let incidents = store.incidents(None, 100).unwrap();
        assert_eq!(
            incidents.len(),
            1,
            "one incident for one rule between two hosts"
        );
        assert_eq!(incidents[0].alerts, 800);
        assert_eq!(store.open_incident_count().unwrap(), 1);
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let (page, through) = store.alerts_since(after, 10_000).unwrap();
            seen.extend(page.into_iter().map(|(seq, _)| seq));
            if through == after {
                break;
            }
            after = through;
        }
        assert_eq!(
            seen,
            (1..=800).collect::<Vec<u64>>(),
            "sequence numbers 1..=800, no gap"
        );
        for agent in 0..4 {
            let record = store.agent(&format!("agent{agent}")).unwrap().unwrap();
            assert_eq!(record.alerts, 200);
        }
    }
}
