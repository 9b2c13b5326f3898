//! The incident and asset pages' endpoints.
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{AssetObservation, IngestBatch};

use super::*;

/// Rule `write-denied` from 10.0.0.9 to the PLC 10.0.1.5 three times and to 10.0.1.6 twice,
/// and `recon` to the PLC once; the PLC reported as an asset using functions 3 and 6.
async fn investigated() -> Fixture {
    let f = fixture();
    let mut list = Vec::new();
    for (n, rule, dst) in [
        (0, "write-denied", "10.0.1.5"),
        (1, "write-denied", "10.0.1.6"),
        (2, "write-denied", "10.0.1.5"),
        (3, "recon", "10.0.1.5"),
        (4, "write-denied", "10.0.1.6"),
        (5, "write-denied", "10.0.1.5"),
    ] {
        list.push(alert(n, rule, Severity::High, "10.0.0.9", dst, "a1"));
    }
    let mut plc = AssetObservation::new("10.0.1.5".parse().unwrap(), Timestamp::from_secs(1_000));
    plc.slave = true;
    plc.functions = vec![3, 6];
    plc.vendor = Some("Acme".into());
    let mut b = batch("a1", list);
    b.assets.push(plc);
    assert_eq!(f.ingest(Some(&f.agent), &b).await.status, StatusCode::OK);
    f
}

#[tokio::test]
async fn an_incident_comes_with_its_own_alerts_paged_and_its_techniques_named() {
    let f = investigated().await;
    let incidents = f.get("/api/v1/incidents?limit=10", &f.viewer).await.body;
    let id = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["rule"] == "write-denied" && i["dst_ip"] == "10.0.1.5")
        .unwrap()["id"]
        .clone();
    let r = f.get(&format!("/api/v1/incidents/{id}"), &f.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let flows: Vec<(String, String)> = r.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().into(),
                a["dst_ip"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        flows,
        vec![("write-denied".to_string(), "10.0.1.5".to_string()); 3]
    );
    assert_eq!(r.body["next"], Value::Null);
    assert_eq!(
        r.body["techniques"][0]["name"],
        "Unauthorized Command Message"
    );
    assert_eq!(
        r.body["techniques"][0]["tactics"][0]["name"],
        "Impair Process Control"
    );
    // Paged.
    let first = f
        .get(&format!("/api/v1/incidents/{id}?limit=2"), &f.viewer)
        .await;
    assert_eq!(first.body["alerts"].as_array().unwrap().len(), 2);
    let next = first.body["next"].as_str().unwrap();
    let rest = f
        .get(
            &format!("/api/v1/incidents/{id}?limit=2&cursor={next}"),
            &f.viewer,
        )
        .await;
    assert_eq!(
        rest.body["alerts"].as_array().unwrap().len(),
        1,
        "{}",
        rest.body
    );
    assert_eq!(rest.body["next"], Value::Null);
}

#[tokio::test]
async fn an_unknown_or_malformed_incident_is_refused_naming_why() {
    let f = investigated().await;
    let r = f.get("/api/v1/incidents/999", &f.viewer).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.get("/api/v1/incidents/abc", &f.viewer).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("id: \"abc\" is not valid")
    );
    let r = f.get("/api/v1/incidents/1?colour=red", &f.viewer).await;
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("colour: unknown parameter")
    );
    assert_eq!(
        f.get("/api/v1/incidents/1", &f.agent).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_asset_page_holds_its_record_risk_incidents_and_alerts() {
    let f = investigated().await;
    let r = f.get("/api/v1/assets/10.0.1.5", &f.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["record"]["vendor"], "Acme");
    assert_eq!(r.body["functions"][1]["name"], "write_single_register");
    assert_eq!(
        r.body["incidents"].as_array().unwrap().len(),
        2,
        "write-denied and recon"
    );
    assert_eq!(r.body["alerts"].as_array().unwrap().len(), 4);
    let factors = r.body["risk"]["factors"].as_array().unwrap();
    assert!(
        factors
            .iter()
            .any(|f| f["factor"].as_str().unwrap().contains("as target")),
        "{factors:?}"
    );
    // The master is in no agent's inventory, but it is in alerts: it has a page.
    let r = f.get("/api/v1/assets/10.0.0.9", &f.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["record"], Value::Null);
    assert_eq!(r.body["incidents"].as_array().unwrap().len(), 3);
    let r = f.get("/api/v1/assets/10.9.9.9", &f.viewer).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.get("/api/v1/assets/plc-1", &f.viewer).await;
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("ip: \"plc-1\" is not valid")
    );
}

/// The HMI polling the PLC at 5 requests/s, reported by two agents on one segment.
fn polling(agent: &str) -> IngestBatch {
    let mut b = batch(agent, Vec::new());
    b.conversations
        .push(otwatch_rules::wire::ConversationObservation {
            master: "10.0.0.2".parse().unwrap(),
            slave: "10.0.1.5".parse().unwrap(),
            since: Timestamp::from_secs(1_000),
            until: Timestamp::from_secs(1_010),
            requests: 50,
            exceptions: 0,
            units: vec![1],
            functions: vec![3],
            reads: otwatch_rules::wire::TableRanges {
                holding_registers: vec![[0, 9]],
                ..Default::default()
            },
            writes: Default::default(),
        });
    b
}

#[tokio::test]
async fn the_map_draws_conversations_incident_pairs_and_hosts_only_alerts_name() {
    let f = investigated().await;
    for agent in ["a1", "a1"] {
        assert_eq!(
            f.ingest(Some(&f.agent), &polling(agent)).await.status,
            StatusCode::OK
        );
    }
    let r = f.get("/api/v1/map", &f.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let edges = r.body["edges"].as_array().unwrap();
    let polled = edges.iter().find(|e| e["kind"] == "conversation").unwrap();
    assert_eq!(
        (&polled["master"], &polled["slave"]),
        (&Value::from("10.0.0.2"), &Value::from("10.0.1.5"))
    );
    assert_eq!(polled["rate"], 5.0);
    assert_eq!(
        polled["requests"], 50,
        "a window sent twice (a retried batch) counts once"
    );
    // The attacker's pairs are incident edges, with their worst incident.
    let attacks: Vec<&Value> = edges.iter().filter(|e| e["kind"] == "incident").collect();
    assert_eq!(attacks.len(), 2, "{edges:?}");
    assert!(
        attacks
            .iter()
            .all(|e| e["master"] == "10.0.0.9" && e["worst"] == "high")
    );
    let node = |ip: &str| {
        r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["ip"] == ip)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("10.0.0.9")["only_in_alerts"], true);
    assert_eq!(node("10.0.1.5")["in_inventory"], true);
    assert_eq!(node("10.0.1.5")["worst"], "high");
    assert_eq!(node("10.0.0.2")["master"], true);
    assert_eq!(node("10.0.0.2")["only_in_alerts"], false);
    assert_eq!(r.body["truncated"], false);
    // The PLC's page lists what its master reads of it.
    let page = f.get("/api/v1/assets/10.0.1.5", &f.viewer).await;
    assert_eq!(
        page.body["as_slave"][0]["master"], "10.0.0.2",
        "{}",
        page.body
    );
    assert_eq!(
        page.body["as_slave"][0]["reads"]["holding_registers"],
        serde_json::json!([[0, 9]])
    );
    let hmi = f.get("/api/v1/assets/10.0.0.2", &f.viewer).await;
    assert_eq!(
        hmi.status,
        StatusCode::OK,
        "a host only conversations name has a page"
    );
    assert_eq!(hmi.body["as_master"][0]["slave"], "10.0.1.5");
}

#[tokio::test]
async fn a_conversation_report_out_of_bounds_is_refused_naming_the_field() {
    let f = fixture();
    let mut b = polling("a1");
    b.conversations[0].units = vec![3, 1];
    let r = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("conversations[0].units"),
        "{}",
        r.body
    );
    let mut b = polling("a1");
    b.conversations[0].until = Timestamp::from_secs(900);
    let r = f.ingest(Some(&f.agent), &b).await;
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("conversations[0].until"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn the_alerts_between_two_hosts_are_those_either_way_and_peer_needs_asset() {
    let f = investigated().await;
    let r = f
        .get("/api/v1/alerts?asset=10.0.0.9&peer=10.0.1.6", &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let alerts = r.body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|a| a["dst_ip"] == "10.0.1.6"));
    let r = f.get("/api/v1/alerts?peer=10.0.1.6", &f.viewer).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("peer: taken only with asset")
    );
}
