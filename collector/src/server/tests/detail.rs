//! The incident and asset pages' endpoints.
use otwatch_rules::wire::AssetObservation;

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
