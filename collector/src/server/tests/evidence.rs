//! Evidence pcaps: taken when whole and an agent's own, served to analysts as files.
use base64::Engine as _;
use otwatch_packet::evidence::{EvidenceBuffer, Limits};
use otwatch_packet::frame::{CapturedPacket, LinkType};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::EvidenceRecord;

use super::*;

/// A pcap of three frames of one flow, as an agent writes it.
fn pcap() -> Vec<u8> {
    let mut b = EvidenceBuffer::new(Limits::default());
    for n in 0..3u8 {
        let frame = vec![n; 64];
        b.keep(
            1,
            &CapturedPacket {
                ts: Timestamp::from_secs(1_000 + u64::from(n)),
                link: LinkType::Ethernet,
                data: &frame,
                orig_len: 64,
            },
        );
    }
    b.pcap(1).unwrap()
}

fn record(alert: &str, pcap: &[u8]) -> EvidenceRecord {
    EvidenceRecord {
        alert: alert.into(),
        pcap: base64::engine::general_purpose::STANDARD.encode(pcap),
    }
}

#[tokio::test]
async fn an_alerts_evidence_is_kept_and_served_as_a_pcap_file() {
    let f = fixture();
    let a = alert(
        1,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    let mut b = batch("a1", vec![a.clone()]);
    b.evidence.push(record(&a.id, &pcap()));
    let r = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let response = router(f.state.clone())
        .oneshot(
            Request::builder()
                .uri(format!("/api/v1/alerts/{}/pcap", a.id))
                .header("authorization", format!("Bearer {}", f.viewer))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.tcpdump.pcap"
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"otwatch-write-denied-{}.pcap\"",
            a.id
        )
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), pcap().as_slice());
    assert_eq!(
        otwatch_packet::evidence::validate(&body).unwrap().packets,
        3
    );
}

#[tokio::test]
async fn evidence_that_is_not_a_whole_pcap_or_not_the_agents_own_alert_is_refused_naming_it() {
    let f = fixture();
    let mine = alert(
        1,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    assert_eq!(
        f.ingest(Some(&f.agent), &batch("a1", vec![mine.clone()]))
            .await
            .status,
        StatusCode::OK
    );
    let good = pcap();
    let cases: Vec<(EvidenceRecord, &str)> = vec![
        (
            EvidenceRecord {
                alert: mine.id.clone(),
                pcap: "not base64!".into(),
            },
            "evidence[0].pcap: not base64",
        ),
        (
            record(&mine.id, &good[..good.len() - 5]),
            "evidence[0].pcap: not a readable classic pcap",
        ),
        (
            record(&mine.id, &[0x0A, 0x0D, 0x0D, 0x0A, 0, 0, 0, 0]),
            "evidence[0].pcap: a pcapng file",
        ),
        (record(&"0".repeat(32), &good), "evidence[0].alert:"),
        (record("xyz", &good), "evidence[0].alert:"),
    ];
    for (rec, starts) in cases {
        let mut b = batch("a1", Vec::new());
        b.evidence.push(rec);
        let r = f.ingest(Some(&f.agent), &b).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{starts}: {}",
            r.body
        );
        let error = r.body["error"].as_str().unwrap();
        assert!(error.starts_with(starts), "{error}");
    }
    // Nothing was kept for the alert.
    let r = f
        .get(&format!("/api/v1/alerts/{}/pcap", mine.id), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("no packets were kept"),
        "{}",
        r.body
    );
    let r = f
        .get(
            &format!("/api/v1/alerts/{}/pcap", "1".repeat(32)),
            &f.viewer,
        )
        .await;
    assert_eq!(r.body["error"], "alert not found");
}

#[tokio::test]
async fn a_batch_whose_evidence_is_refused_stores_nothing_and_only_serious_alerts_take_it() {
    let f = fixture();
    let serious = alert(
        1,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    let mut b = batch("a1", vec![serious.clone()]);
    b.evidence.push(record(&"0".repeat(32), &pcap()));
    let r = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        f.stored(),
        0,
        "the alerts wait for the agent to set the record aside"
    );
    let minor = alert(2, "recon", Severity::Low, "10.0.0.9", "10.0.1.5", "a1");
    let mut b = batch("a1", vec![minor.clone()]);
    b.evidence.push(record(&minor.id, &pcap()));
    let r = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("is a low alert (evidence is taken for high and critical alerts)"),
        "{}",
        r.body
    );
    let mut b = batch("a1", Vec::new());
    for _ in 0..=otwatch_rules::validate::MAX_EVIDENCE_RECORDS {
        b.evidence.push(record(&serious.id, &pcap()));
    }
    let r = f.ingest(Some(&f.agent), &b).await;
    assert!(
        r.body["error"].as_str().unwrap().starts_with("evidence: "),
        "{}",
        r.body
    );
    assert_eq!(f.state.store.evidence_bytes("a1").unwrap(), 0);
}

#[tokio::test]
async fn evidence_goes_with_its_alert_when_retention_removes_it() {
    let f = fixture();
    let a = alert(
        1,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    let mut b = batch("a1", vec![a.clone()]);
    b.evidence.push(record(&a.id, &pcap()));
    assert_eq!(f.ingest(Some(&f.agent), &b).await.status, StatusCode::OK);
    assert!(f.state.store.evidence(&a.id).unwrap().is_some());
    assert_eq!(
        f.state.store.evidence_bytes("a1").unwrap(),
        pcap().len() as u64
    );
    f.state
        .store
        .enforce_retention(Some(Timestamp::from_secs(1_000_000)), None)
        .unwrap();
    assert_eq!(f.state.store.evidence(&a.id).unwrap(), None);
    assert_eq!(f.state.store.evidence_bytes("a1").unwrap(), 0);
}
