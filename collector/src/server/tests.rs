use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::wire::IngestBatch;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::feed::BroadcastFeed;
use crate::fixtures::{self, batch};

/// Alert number `n`, with the id its fields derive (ingest checks it).
fn alert(n: u64, rule: &str, severity: Severity, src: &str, dst: &str, agent: &str) -> Alert {
    fixtures::verified(fixtures::alert(n, rule, severity, src, dst, agent))
}
use crate::kv::memory::MemoryKv;
use crate::store::model::Role;

struct Fixture {
    _dir: tempfile::TempDir,
    state: Shared<MemoryKv>,
    agent: String,
    viewer: String,
    admin: String,
}

fn fixture_with(config: impl FnOnce(&mut CollectorConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let credentials = Credentials::open(dir.path()).unwrap();
    let agent = credentials.enroll("a1", Role::Agent).unwrap();
    let viewer = credentials.enroll("soc", Role::Viewer).unwrap();
    let admin = credentials.enroll("lead", Role::Admin).unwrap();
    let mut c = CollectorConfig::with_data(dir.path().to_path_buf());
    config(&mut c);
    let state = Arc::new(AppState::new(
        Arc::new(Store::open(MemoryKv::new()).unwrap()),
        Arc::new(credentials),
        Arc::new(BroadcastFeed::new(64)),
        Arc::new(Metrics::new().unwrap()),
        c,
    ));
    Fixture {
        _dir: dir,
        state,
        agent,
        viewer,
        admin,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// The response's status, headers and body (JSON when it parses, else a string).
    async fn of(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Self {
            status,
            headers,
            body,
        }
    }
}

impl Fixture {
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        Reply::of(response).await
    }

    async fn get(&self, uri: &str, token: &str) -> Reply {
        self.call(Method::GET, uri, Some(token), Vec::new()).await
    }

    async fn ingest(&self, token: Option<&str>, b: &IngestBatch) -> Reply {
        let body = serde_json::to_vec(b).unwrap();
        self.call(Method::POST, "/api/v1/ingest", token, body).await
    }

    fn stored(&self) -> u64 {
        self.state.store.alert_count().unwrap()
    }
}

fn alerts(n: u64) -> Vec<Alert> {
    (0..n)
        .map(|i| {
            alert(
                i,
                "write-denied",
                Severity::High,
                "10.0.0.9",
                "10.0.1.5",
                "a1",
            )
        })
        .collect()
}

#[tokio::test]
async fn ingest_without_a_credential_is_401_and_stores_nothing() {
    let f = fixture();
    let r = f.ingest(None, &batch("a1", alerts(3))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body["error"].as_str().unwrap().contains("Bearer"),
        "{}",
        r.body
    );
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn ingest_with_a_wrong_credential_is_401_and_stores_nothing() {
    let f = fixture();
    let forged = format!("otw_{}", "0".repeat(64));
    let r = f.ingest(Some(&forged), &batch("a1", alerts(3))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.stored(), 0);
    assert!(
        f.state
            .metrics
            .render()
            .contains("otwatch_collector_requests_refused_total{reason=\"bad_credential\"} 1")
    );
}

#[tokio::test]
async fn a_viewer_or_admin_cannot_ingest() {
    let f = fixture();
    for token in [&f.viewer, &f.admin] {
        let r = f.ingest(Some(token), &batch("a1", alerts(1))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn an_agent_credential_cannot_read_or_acknowledge() {
    let f = fixture();
    assert_eq!(
        f.ingest(Some(&f.agent), &batch("a1", alerts(1)))
            .await
            .status,
        StatusCode::OK
    );
    for uri in [
        "/api/v1/alerts",
        "/api/v1/incidents",
        "/api/v1/assets",
        "/api/v1/agents",
        "/api/v1/posture",
        "/api/v1/alerts/stream",
    ] {
        assert_eq!(
            f.get(uri, &f.agent).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    let id = f.state.store.incidents(None, 1).unwrap()[0].id;
    for action in ["ack", "resolve"] {
        let uri = format!("/api/v1/incidents/{id}/{action}");
        let r = f.call(Method::POST, &uri, Some(&f.agent), Vec::new()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    let incident = &f.state.store.incidents(None, 1).unwrap()[0];
    assert_eq!(incident.state, IncidentState::Open);
    assert!(incident.history.is_empty());
}

#[tokio::test]
async fn an_agent_cannot_ingest_under_another_agents_name() {
    let f = fixture();
    let r = f.ingest(Some(&f.agent), &batch("a2", alerts(1))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("agent:"),
        "{}",
        r.body
    );
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn an_agent_cannot_slip_alerts_of_another_agent_into_its_batch() {
    let f = fixture();
    let mut list = alerts(2);
    list[1].agent = "a2".into();
    let r = f.ingest(Some(&f.agent), &batch("a1", list)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("alerts[1].agent:"),
        "{}",
        r.body
    );
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn a_rule_or_technique_hiding_a_nul_suffix_is_422_naming_the_record_and_field() {
    let f = fixture();
    for (field, change) in [
        (
            "rule",
            (|a: &mut Alert| a.rule = "write-denied\u{0}\u{7f}".into()) as fn(&mut Alert),
        ),
        ("technique[0]", |a| {
            a.technique = vec!["T0855\u{0}\u{7f}".into()]
        }),
        ("rule", |a| a.rule = "r".repeat(10_000)),
    ] {
        let mut list = alerts(3);
        change(&mut list[2]);
        list[2] = fixtures::verified(list[2].clone());
        let r = f.ingest(Some(&f.agent), &batch("a1", list)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let error = r.body["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("alerts[2].{field}: ")) && error.contains("expected"),
            "{error}"
        );
    }
    assert_eq!(f.stored(), 0);
    let metrics = f.state.metrics.render();
    assert!(
        metrics.contains("otwatch_collector_requests_refused_total{reason=\"invalid\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_id_another_agent_stored_cannot_make_this_agents_alert_a_duplicate() {
    let f = fixture();
    let other = f.state.credentials.enroll("a2", Role::Agent).unwrap();
    let theirs = alerts(1);
    let r = f.ingest(Some(&f.agent), &batch("a1", theirs.clone())).await;
    assert_eq!(r.body["accepted"], 1);
    // a2 sends an alert of its own under the id of a1's: refused, it names no alert of a2's.
    let mut mine = theirs[0].clone();
    mine.agent = "a2".into();
    let r = f
        .ingest(Some(&other), &batch("a2", vec![mine.clone()]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("alerts[0].id: "),
        "{}",
        r.body
    );
    // With the id its own fields derive, it is a new alert, not a duplicate of a1's.
    let r = f
        .ingest(Some(&other), &batch("a2", vec![fixtures::verified(mine)]))
        .await;
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(f.stored(), 2);
}

#[tokio::test]
async fn rule_labels_come_from_a_bounded_set_whatever_rule_ids_agents_send() {
    let f = fixture();
    let made_up: Vec<Alert> = (0..300)
        .map(|n| {
            let rule = format!("vendor.rule_{n}_{}", "x".repeat(100));
            alert(n, &rule, Severity::High, "10.0.0.9", "10.0.1.5", "a1")
        })
        .collect();
    for chunk in made_up.chunks(50) {
        let r = f.ingest(Some(&f.agent), &batch("a1", chunk.to_vec())).await;
        assert_eq!(r.body["accepted"], 50, "{}", r.body);
    }
    let known = alert(
        1_000,
        "recon.read_device_id",
        Severity::Low,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    let custom = alert(
        1_001,
        "policy.alert.setpoints",
        Severity::Low,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    f.ingest(Some(&f.agent), &batch("a1", vec![known, custom]))
        .await;
    let metrics = f.call(Method::GET, "/metrics", None, Vec::new()).await;
    let text = metrics.body.as_str().unwrap();
    assert!(!text.contains("vendor.rule_"), "{text}");
    for line in [
        "otwatch_collector_alerts_total{rule=\"other\",severity=\"high\"} 300",
        "otwatch_collector_alerts_total{rule=\"recon.read_device_id\",severity=\"low\"} 1",
        "otwatch_collector_alerts_total{rule=\"policy.alert\",severity=\"low\"} 1",
        "otwatch_collector_incidents_open 302",
        "otwatch_collector_store_alerts 302",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    assert!(text.len() < 16_384, "{} bytes of metrics", text.len());
}

#[tokio::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    let f = fixture_with(|c| c.body_limit_bytes = 4096);
    let r = f.ingest(Some(&f.agent), &batch("a1", alerts(50))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.body["error"].as_str().unwrap().contains("4096"),
        "{}",
        r.body
    );
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem_and_stores_nothing() {
    let f = fixture();
    let r = f
        .call(
            Method::POST,
            "/api/v1/ingest",
            Some(&f.agent),
            b"{\"agent\":\"a1\",\"alerts\":[{\"id\":3}]}".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let message = r.body["error"].as_str().unwrap();
    assert!(
        message.starts_with("malformed JSON body:") && message.contains("expected a string"),
        "{message}"
    );
    let r = f
        .call(
            Method::POST,
            "/api/v1/ingest",
            Some(&f.agent),
            b"not json".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(f.stored(), 0);
}

#[tokio::test]
async fn a_retried_batch_is_acknowledged_again_without_double_counting() {
    let f = fixture();
    let b = batch("a1", alerts(5));
    let first = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        (
            first.body["accepted"].as_u64(),
            first.body["duplicates"].as_u64()
        ),
        (Some(5), Some(0))
    );
    let second = f.ingest(Some(&f.agent), &b).await;
    assert_eq!(
        (
            second.body["accepted"].as_u64(),
            second.body["duplicates"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert_eq!(f.stored(), 5);
    let metrics = f.state.metrics.render();
    assert!(
        metrics.contains("otwatch_collector_alerts_ingested_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otwatch_collector_alerts_duplicate_total 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_agent_over_its_rate_gets_429_and_when_to_come_back() {
    let f = fixture_with(|c| c.agent_rate_per_s = 2);
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(f.ingest(Some(&f.agent), &batch("a1", Vec::new())).await);
    }
    let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], [StatusCode::OK, StatusCode::OK]);
    let limited = replies[2..]
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap_or_else(|| panic!("{statuses:?}"));
    assert_eq!(limited.headers["retry-after"], "1");
}

#[tokio::test]
async fn alerts_filter_by_severity_and_page_with_a_cursor() {
    let f = fixture();
    let mut list = alerts(5);
    list.push(alert(
        9,
        "scan",
        Severity::Low,
        "10.0.0.9",
        "10.0.1.6",
        "a1",
    ));
    f.ingest(Some(&f.agent), &batch("a1", list)).await;
    let r = f
        .get("/api/v1/alerts?min_severity=high&limit=3", &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["alerts"].as_array().unwrap().len(), 3);
    let cursor = r.body["next"].as_str().unwrap().to_string();
    let r = f
        .get(
            &format!("/api/v1/alerts?min_severity=high&limit=3&cursor={cursor}"),
            &f.viewer,
        )
        .await;
    let rest = r.body["alerts"].as_array().unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|a| a["severity"] == "high"));
    assert!(r.body["next"].is_null());
    let r = f.get("/api/v1/alerts?asset=10.0.1.6", &f.viewer).await;
    assert_eq!(r.body["alerts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_bad_query_parameter_is_400_naming_it_and_what_was_expected() {
    let f = fixture();
    for (uri, expected) in [
        (
            "/api/v1/alerts?min_severity=urgent",
            "min_severity: \"urgent\" is not valid (expected info, low, medium, high or critical)",
        ),
        (
            "/api/v1/alerts?since=yesterday",
            "since: \"yesterday\" is not valid (expected an RFC 3339 time)",
        ),
        (
            "/api/v1/alerts?limit=0",
            "limit: \"0\" is not valid (expected a number from 1 to 1000)",
        ),
        ("/api/v1/alerts?colour=red", "colour: unknown parameter"),
        (
            "/api/v1/incidents?state=closed",
            "state: \"closed\" is not valid (expected open, acknowledged or resolved)",
        ),
    ] {
        let r = f.get(uri, &f.viewer).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.body["error"].as_str().unwrap().starts_with(expected),
            "{uri}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn an_admin_acknowledges_then_resolves_and_the_history_says_who() {
    let f = fixture();
    f.ingest(Some(&f.agent), &batch("a1", alerts(2))).await;
    let id = f.get("/api/v1/incidents?state=open", &f.viewer).await.body[0]["id"]
        .as_u64()
        .unwrap();
    let viewer_try = f
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/ack"),
            Some(&f.viewer),
            Vec::new(),
        )
        .await;
    assert_eq!(viewer_try.status, StatusCode::FORBIDDEN);
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/ack"),
            Some(&f.admin),
            br#"{"note":"on it"}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "acknowledged");
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(&f.admin),
            Vec::new(),
        )
        .await;
    assert_eq!(r.body["state"], "resolved");
    let history = r.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0]["by"].as_str(), history[0]["note"].as_str()),
        (Some("lead"), Some("on it"))
    );
    assert!(
        f.get("/api/v1/incidents?state=open", &f.viewer)
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    let missing = f
        .call(
            Method::POST,
            "/api/v1/incidents/999/ack",
            Some(&f.admin),
            Vec::new(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = f
        .call(
            Method::POST,
            "/api/v1/incidents/x/ack",
            Some(&f.admin),
            Vec::new(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"].as_str().unwrap().starts_with("id:"));
}

#[tokio::test]
async fn the_stream_delivers_newly_ingested_alerts_matching_its_filter() {
    let f = fixture();
    let response = router(f.state.clone())
        .oneshot(
            Request::builder()
                .uri("/api/v1/alerts/stream?min_severity=high")
                .header("authorization", format!("Bearer {}", f.viewer))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut list = vec![alert(
        1,
        "scan",
        Severity::Low,
        "10.0.0.9",
        "10.0.1.6",
        "a1",
    )];
    list.push(alert(
        2,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    ));
    let ids: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
    f.ingest(Some(&f.agent), &batch("a1", list)).await;
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: alert\n"), "{text}");
    assert!(text.contains(&format!("\"id\":\"{}\"", ids[1])), "{text}");
    // The event id is the alert's ingest sequence number (the second stored).
    assert!(text.contains("\nid: 2\n"), "{text}");
    assert!(!text.contains(&ids[0]), "{text}");
}

/// Reads the stream's frames until `want` alert events came (or 5 s passed).
async fn alert_events(body: &mut Body, want: usize) -> String {
    let mut text = String::new();
    while text.matches("event: alert").count() < want {
        let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await
        else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text
}

#[tokio::test]
async fn a_subscriber_resuming_from_last_event_id_gets_what_it_missed_once_then_the_live_feed() {
    let f = fixture();
    let list: Vec<Alert> = (1..=3)
        .map(|i| alert(i, "scan", Severity::High, "10.0.0.9", "10.0.1.6", "a1"))
        .collect();
    let ids: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
    f.ingest(Some(&f.agent), &batch("a1", list)).await;
    let subscribe = |last: &str| {
        Request::builder()
            .uri("/api/v1/alerts/stream")
            .header("authorization", format!("Bearer {}", f.viewer))
            .header("last-event-id", last)
            .body(Body::empty())
            .unwrap()
    };
    // It saw the first alert (sequence number 1): the other two come from the store.
    let response = router(f.state.clone())
        .oneshot(subscribe("1"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let missed = alert_events(&mut body, 2).await;
    assert!(!missed.contains(&ids[0]), "{missed}");
    assert!(
        missed.contains(&ids[1]) && missed.contains(&ids[2]),
        "{missed}"
    );
    assert!(
        missed.find(&ids[1]) < missed.find(&ids[2]),
        "in order: {missed}"
    );
    // Then what is stored next, live, once.
    let next = alert(4, "scan", Severity::High, "10.0.0.9", "10.0.1.6", "a1");
    f.ingest(Some(&f.agent), &batch("a1", vec![next.clone()]))
        .await;
    let live = alert_events(&mut body, 1).await;
    assert!(
        live.contains(&next.id) && live.contains("\nid: 4\n"),
        "{live}"
    );
    assert!(!live.contains(&ids[2]), "nothing twice: {live}");

    // A number past the newest (a store restored from an older backup) holds nothing back.
    let response = router(f.state.clone())
        .oneshot(subscribe("999999"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let after_restore = alert(6, "scan", Severity::High, "10.0.0.9", "10.0.1.6", "a1");
    f.ingest(Some(&f.agent), &batch("a1", vec![after_restore.clone()]))
        .await;
    let text = alert_events(&mut body, 1).await;
    assert!(text.contains(&after_restore.id), "{text}");

    // An id from before sequence numbers (an alert id) resumes nothing: only new alerts.
    let response = router(f.state.clone())
        .oneshot(subscribe(&ids[0]))
        .await
        .unwrap();
    let mut body = response.into_body();
    let later = alert(5, "scan", Severity::High, "10.0.0.9", "10.0.1.6", "a1");
    f.ingest(Some(&f.agent), &batch("a1", vec![later.clone()]))
        .await;
    let text = alert_events(&mut body, 1).await;
    assert!(text.contains(&later.id), "{text}");
    assert!(!text.contains(&ids[1]), "{text}");
}

#[tokio::test]
async fn health_metrics_dashboard_and_openapi_need_no_credential() {
    let f = fixture();
    for uri in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/api/v1/openapi.json",
    ] {
        let r = f.call(Method::GET, uri, None, Vec::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
    let spec = f
        .call(Method::GET, "/api/v1/openapi.json", None, Vec::new())
        .await;
    assert_eq!(spec.body["openapi"].as_str().map(|v| &v[..2]), Some("3."));
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let f = fixture();
    let r = f.get("/api/v1/nothing", &f.viewer).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "no such route");
}

mod detail;
mod evidence;
mod learn;
mod policies;
mod sessions;
mod stats;

#[tokio::test]
async fn a_schema_1_retry_of_what_an_earlier_collector_stored_is_a_duplicate_not_a_second_alert() {
    let f = fixture();
    // What a collector from before ids were verified stored: a schema 1 alert under the id its
    // agent sent, which its fields do not derive.
    let mut old = fixtures::alert(
        7,
        "write-denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "a1",
    );
    old.schema = 1;
    old.id = "0123456789abcdef0123456789abcdef".into();
    f.state
        .store
        .ingest(&batch("a1", vec![old.clone()]), crate::server::now())
        .unwrap();
    // The agent, upgraded collector or not, retries the batch it never saw acknowledged.
    let r = f
        .ingest(Some(&f.agent), &batch("a1", vec![old.clone()]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(f.stored(), 1, "stored once");
}

#[tokio::test]
async fn an_alert_is_fetched_by_its_id_and_a_bad_or_unknown_id_is_named() {
    let f = fixture();
    let sent = alerts(2);
    f.ingest(Some(&f.agent), &batch("a1", sent.clone())).await;
    let r = f
        .get(&format!("/api/v1/alerts/{}", sent[1].id), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], sent[1].id.as_str());
    assert_eq!(r.body["agent"], "a1");
    let missing = f
        .get("/api/v1/alerts/ffffffffffffffffffffffffffffffff", &f.viewer)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = f.get("/api/v1/alerts/nope", &f.viewer).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"].as_str().unwrap().starts_with("id:"));
    // The live feed's route is not taken for an id.
    let agent = f
        .get(&format!("/api/v1/alerts/{}", sent[0].id), &f.agent)
        .await;
    assert_eq!(agent.status, StatusCode::FORBIDDEN);
}

#[test]
fn every_api_route_is_in_the_openapi_document() {
    let spec: Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
    let source = include_str!("../server.rs");
    let routes: Vec<&str> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|r| r.starts_with("/api/v1/") && *r != "/api/v1/openapi.json")
        .collect();
    assert!(routes.len() > 20, "{routes:?}");
    for route in routes {
        assert!(
            spec["paths"].get(route).is_some(),
            "{route} is not documented in openapi.json"
        );
    }
}

#[tokio::test]
async fn admins_read_the_audit_log_newest_first_and_nobody_else_does() {
    let f = fixture();
    f.ingest(Some(&f.agent), &batch("a1", alerts(2))).await;
    let id = f.get("/api/v1/incidents?state=open", &f.viewer).await.body[0]["id"]
        .as_u64()
        .unwrap();
    for action in ["ack", "resolve"] {
        let r = f
            .call(
                Method::POST,
                &format!("/api/v1/incidents/{id}/{action}"),
                Some(&f.admin),
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = f.get("/api/v1/audit?limit=10", &f.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let events: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["incident_resolved", "incident_acknowledged"]);
    assert_eq!(
        f.get("/api/v1/audit", &f.viewer).await.status,
        StatusCode::FORBIDDEN
    );
    let r = f.get("/api/v1/audit?limit=0", &f.admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("limit:"),
        "{}",
        r.body
    );
}
