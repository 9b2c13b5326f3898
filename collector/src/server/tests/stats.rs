//! The aggregation endpoints and the ATT&CK matrix.
use super::*;

/// Three alerts of one rule and two of another, from two sources, in the first hour of 1970
/// (the fixtures' clock), and one in the second hour.
async fn charted() -> Fixture {
    let f = fixture();
    let mut list = Vec::new();
    for (n, rule, severity, src) in [
        (0, "write-denied", Severity::High, "10.0.0.9"),
        (1, "write-denied", Severity::High, "10.0.0.9"),
        (2, "write-denied", Severity::Critical, "10.0.0.8"),
        (3, "recon", Severity::Low, "10.0.0.8"),
        (3_600, "recon", Severity::Low, "10.0.0.8"),
    ] {
        list.push(alert(n, rule, severity, src, "10.0.1.5", "a1"));
    }
    assert_eq!(
        f.ingest(Some(&f.agent), &batch("a1", list)).await.status,
        StatusCode::OK
    );
    f
}

const RANGE: &str = "since=1970-01-01T00:00:00Z&until=1970-01-01T02:00:00Z";

#[tokio::test]
async fn the_timeline_counts_alerts_by_severity_per_hour() {
    let f = charted().await;
    let r = f
        .get(&format!("/api/v1/stats/timeline?{RANGE}"), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let buckets = r.body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0]["start"], "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        (
            &buckets[0]["high"],
            &buckets[0]["critical"],
            &buckets[0]["low"]
        ),
        (&Value::from(2), &Value::from(1), &Value::from(1))
    );
    assert_eq!(buckets[1]["low"], 1);
    let r = f
        .get(
            &format!("/api/v1/stats/timeline?{RANGE}&bucket=day"),
            &f.viewer,
        )
        .await;
    assert_eq!(r.body["buckets"][0]["low"], 2, "{}", r.body);
}

#[tokio::test]
async fn top_ranks_rules_and_sources_with_the_rest_counted() {
    let f = charted().await;
    let r = f
        .get(&format!("/api/v1/stats/top?by=rule&{RANGE}"), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["top"][0]["value"], "write-denied");
    assert_eq!(r.body["top"][0]["count"], 3);
    assert_eq!(r.body["total"], 5);
    let r = f
        .get(
            &format!("/api/v1/stats/top?by=source&limit=1&{RANGE}"),
            &f.admin,
        )
        .await;
    assert_eq!(r.body["top"][0]["value"], "10.0.0.8", "{}", r.body);
    assert_eq!(
        (&r.body["top"][0]["count"], &r.body["rest"]),
        (&Value::from(3), &Value::from(2))
    );
}

#[tokio::test]
async fn techniques_are_counted_with_attack_names() {
    let f = charted().await;
    let r = f
        .get(&format!("/api/v1/stats/techniques?{RANGE}"), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t = &r.body["techniques"][0];
    assert_eq!(
        (&t["id"], &t["count"]),
        (&Value::from("T0855"), &Value::from(5))
    );
    assert_eq!(t["name"], "Unauthorized Command Message");
    assert_eq!(t["tactics"][0], "TA0106");
    assert!(r.body["attribution"].as_str().unwrap().contains("MITRE"));
    let m = f.get("/api/v1/attack", &f.viewer).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["tactics"].as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn bad_stats_parameters_are_refused_naming_the_parameter() {
    let f = charted().await;
    for (uri, starts) in [
        ("/api/v1/stats/top", "by: missing"),
        ("/api/v1/stats/top?by=colour", "by: \"colour\" is not valid"),
        (
            "/api/v1/stats/top?by=rule&limit=0",
            "limit: \"0\" is not valid",
        ),
        (
            "/api/v1/stats/timeline?bucket=week",
            "bucket: \"week\" is not valid",
        ),
        ("/api/v1/stats/timeline?by=rule", "by: unknown parameter"),
        (
            "/api/v1/stats/timeline?since=yesterday",
            "since: \"yesterday\" is not valid",
        ),
        (
            "/api/v1/stats/timeline?since=1970-01-02T00:00:00Z&until=1970-01-01T00:00:00Z",
            "since: must be before until",
        ),
        (
            "/api/v1/stats/timeline?since=1970-01-01T00:00:00Z&until=1971-01-01T00:00:00Z",
            "since: the range spans",
        ),
    ] {
        let r = f.get(uri, &f.viewer).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        let error = r.body["error"].as_str().unwrap();
        assert!(error.starts_with(starts), "{uri}: {error}");
    }
}

#[tokio::test]
async fn an_agent_credential_may_not_read_stats() {
    let f = charted().await;
    for uri in [
        "/api/v1/stats/timeline",
        "/api/v1/stats/top?by=rule",
        "/api/v1/attack",
    ] {
        assert_eq!(
            f.get(uri, &f.agent).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn an_export_holds_every_alert_of_the_filter_with_formulas_neutralised() {
    let f = fixture();
    let mut list: Vec<Alert> = (0..1_500)
        .map(|n| {
            fixtures::alert(
                n,
                "write-denied",
                Severity::High,
                "10.0.0.9",
                "10.0.1.5",
                "a1",
            )
        })
        .collect();
    list[7].message = Some("=HYPERLINK(\"http://evil\",\"x\")".into());
    list[8].rule = "recon".into();
    list[9].rule = "recon".into();
    let list: Vec<Alert> = list.into_iter().map(fixtures::verified).collect();
    for chunk in list.chunks(500) {
        let r = f.ingest(Some(&f.agent), &batch("a1", chunk.to_vec())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = f
        .get("/api/v1/alerts/export?rule=write-denied", &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/csv; charset=utf-8");
    let disposition = r.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"otwatch-alerts-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let text = r.body.as_str().unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header = rows.headers().unwrap().clone();
    assert_eq!(&header[0], "id");
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    // Every alert of the rule, across pages, newest first, each once.
    assert_eq!(records.len(), 1_498);
    assert_eq!(&records[0][0], list[1_499].id);
    let message = header.iter().position(|h| h == "message").unwrap();
    let evil = records.iter().find(|r| r[0] == list[7].id).unwrap();
    assert_eq!(&evil[message], "'=HYPERLINK(\"http://evil\",\"x\")");

    let r = f
        .get("/api/v1/alerts/export?format=jsonl&rule=recon", &f.viewer)
        .await;
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r
        .body
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert_eq!(lines[0]["id"], list[9].id.as_str());
    assert_eq!(lines[1]["id"], list[8].id.as_str());
}

#[tokio::test]
async fn an_export_refuses_paging_and_unknown_formats_naming_them() {
    let f = fixture();
    for (uri, starts) in [
        (
            "/api/v1/alerts/export?format=xlsx",
            "format: \"xlsx\" is not valid",
        ),
        (
            "/api/v1/alerts/export?cursor=00",
            "cursor: not taken by an export",
        ),
        (
            "/api/v1/alerts/export?limit=5",
            "limit: not taken by an export",
        ),
        (
            "/api/v1/alerts/export?colour=red",
            "colour: unknown parameter",
        ),
    ] {
        let r = f.get(uri, &f.viewer).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.body["error"].as_str().unwrap().starts_with(starts),
            "{uri}: {}",
            r.body
        );
    }
    assert_eq!(
        f.get("/api/v1/alerts/export", &f.agent).await.status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn the_openapi_description_covers_every_api_route() {
    let spec: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let routes: Vec<&str> = include_str!("../../server.rs")
        .split(".route(")
        .skip(1)
        // A route's path may follow on the next line (rustfmt breaks long ones).
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|path| path.starts_with("/api/") && *path != "/api/v1/openapi.json")
        .collect();
    assert!(routes.len() > 15, "{routes:?}");
    for route in routes {
        assert!(
            spec["paths"].get(route).is_some(),
            "{route} is not in openapi.json"
        );
    }
}
