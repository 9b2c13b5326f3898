//! Dashboard sessions, the browser checks, login throttling and the audit log.
use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;

use super::*;

impl Fixture {
    /// A request with `headers`, from `source`.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        source: &str,
        body: &str,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut request = request.body(Body::from(body.to_string())).unwrap();
        let peer: SocketAddr = format!("{source}:40000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        Reply::of(router(self.state.clone()).oneshot(request).await.unwrap()).await
    }

    /// Logs in with `token` from `source`; the reply and the cookie pair it set.
    async fn login_from(&self, token: &str, source: &str) -> (Reply, Option<String>) {
        let body = serde_json::json!({ "token": token }).to_string();
        let r = self
            .send(Method::POST, "/api/v1/login", &[], source, &body)
            .await;
        let pair = r
            .headers
            .get("set-cookie")
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
        (r, pair)
    }

    async fn with_cookie(&self, method: Method, uri: &str, cookie: &str) -> Reply {
        self.send(method, uri, &[("cookie", cookie)], "10.9.0.1", "")
            .await
    }

    fn audit_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.audit.path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn login_sets_a_random_session_id_not_the_token_in_an_httponly_strict_cookie() {
    let f = fixture();
    let (r, pair) = f.login_from(&f.viewer, "10.9.0.1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    for part in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    let pair = pair.unwrap();
    assert!(pair.starts_with("__Host-otwatch_session="), "{pair}");
    assert!(
        !cookie.contains(&f.viewer[4..]),
        "the token is in the cookie"
    );
    assert_eq!(r.body["role"], "viewer");
    assert_eq!(
        f.with_cookie(Method::GET, "/api/v1/agents", &pair)
            .await
            .status,
        StatusCode::OK
    );
    let me = f.with_cookie(Method::GET, "/api/v1/session", &pair).await;
    assert_eq!(me.body["name"], "soc");
    assert!(me.body["expires"].is_string(), "{}", me.body);
    // A made-up session id is nobody's.
    assert_eq!(
        f.with_cookie(Method::GET, "/api/v1/agents", "__Host-otwatch_session=00ff")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // An agent's token opens no session.
    let (agent, _) = f.login_from(&f.agent, "10.9.0.1").await;
    assert_eq!(agent.status, StatusCode::UNAUTHORIZED);
}

fn from_the_dashboard(cookie: &str) -> [(&str, &str); 4] {
    [
        ("cookie", cookie),
        ("host", "collector:8443"),
        ("origin", "https://collector:8443"),
        ("content-type", "application/json"),
    ]
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let f = fixture();
    let (_, pair) = f.login_from(&f.viewer, "10.9.0.1").await;
    let pair = pair.unwrap();
    let r = f
        .send(
            Method::POST,
            "/api/v1/logout",
            &from_the_dashboard(&pair),
            "10.9.0.1",
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = f.with_cookie(Method::GET, "/api/v1/agents", &pair).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(
        after.body["error"].as_str().unwrap().contains("session"),
        "{}",
        after.body
    );
    // The token itself still works: only the session ended.
    assert_eq!(
        f.get("/api/v1/agents", &f.viewer).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_a_credential_ends_its_sessions_and_its_token() {
    let f = fixture();
    let (_, pair) = f.login_from(&f.admin, "10.9.0.1").await;
    let pair = pair.unwrap();
    f.state.credentials.revoke("lead").unwrap();
    assert_eq!(
        f.with_cookie(Method::GET, "/api/v1/agents", &pair)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.get("/api/v1/agents", &f.admin).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_change_made_with_the_cookie_needs_the_collectors_origin_and_a_json_body() {
    let f = fixture();
    f.ingest(Some(&f.agent), &batch("a1", alerts(1))).await;
    let (_, pair) = f.login_from(&f.admin, "10.9.0.1").await;
    let pair = pair.unwrap();
    let ok = from_the_dashboard(&pair);
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("no Origin", vec![ok[0], ok[1], ok[3]]),
        (
            "another site",
            vec![ok[0], ok[1], ("origin", "https://evil.example"), ok[3]],
        ),
        (
            "a form",
            vec![
                ok[0],
                ok[1],
                ok[2],
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        ),
        ("no body type", vec![ok[0], ok[1], ok[2]]),
    ];
    for (what, headers) in cases {
        let r = f
            .send(
                Method::POST,
                "/api/v1/incidents/1/ack",
                &headers,
                "10.9.0.1",
                "{}",
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
    }
    assert_eq!(
        f.state.store.incident(1).unwrap().unwrap().state,
        IncidentState::Open,
        "nothing changed"
    );
    let r = f
        .send(
            Method::POST,
            "/api/v1/incidents/1/ack",
            &ok,
            "10.9.0.1",
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A bearer token (a script) is not a browser: no Origin needed.
    let r = f
        .call(
            Method::POST,
            "/api/v1/incidents/1/resolve",
            Some(&f.admin),
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_the_page_has_no_inline_script() {
    let f = fixture();
    for uri in [
        "/",
        "/dashboard.js",
        "/api/v1/agents",
        "/healthz",
        "/nothing",
    ] {
        let r = f.call(Method::GET, uri, None, Vec::new()).await;
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{uri}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(r.headers["referrer-policy"], "no-referrer", "{uri}");
    }
    let page = f.call(Method::GET, "/", None, Vec::new()).await;
    let html = page.body.as_str().unwrap();
    assert!(html.contains(r#"<script src="/dashboard.js"></script>"#));
    assert!(!html.contains("<script>") && !html.contains("<style>"));
    assert!(
        !html.contains(" onclick="),
        "inline handlers need unsafe-inline"
    );
    let api = f.get("/api/v1/agents", &f.viewer).await;
    assert_eq!(api.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn failed_logins_from_one_source_are_throttled_and_counted_and_others_still_log_in() {
    let f = fixture();
    for _ in 0..10 {
        let (r, _) = f.login_from("otw_guess", "10.9.0.66").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Past ten failures in a minute, even the right token waits.
    let (r, _) = f.login_from(&f.viewer, "10.9.0.66").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // Another source is not held back.
    let (r, _) = f.login_from(&f.viewer, "10.9.0.1").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = f.state.metrics.render();
    assert!(
        text.contains(r#"otwatch_collector_requests_refused_total{reason="login_failed"} 10"#),
        "{text}"
    );
    assert!(
        text.contains(r#"otwatch_collector_requests_refused_total{reason="login_throttled"} 1"#)
    );
}

#[tokio::test]
async fn logins_admin_actions_and_their_sources_are_in_the_audit_log() {
    let f = fixture();
    f.ingest(Some(&f.agent), &batch("a1", alerts(1))).await;
    f.login_from("otw_wrong", "10.9.0.7").await;
    let (_, pair) = f.login_from(&f.admin, "10.9.0.8").await;
    let pair = pair.unwrap();
    f.send(
        Method::POST,
        "/api/v1/incidents/1/ack",
        &from_the_dashboard(&pair),
        "10.9.0.8",
        r#"{"note":"checking the press"}"#,
    )
    .await;
    f.send(
        Method::POST,
        "/api/v1/logout",
        &from_the_dashboard(&pair),
        "10.9.0.8",
        "{}",
    )
    .await;
    let lines = f.audit_lines();
    let events: Vec<(&str, Option<&str>, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["who"].as_str(),
                l["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("login_failed", None, "10.9.0.7"),
            ("login", Some("lead"), "10.9.0.8"),
            ("incident_acknowledged", Some("lead"), "10.9.0.8"),
            ("logout", Some("lead"), "10.9.0.8"),
        ]
    );
    assert_eq!(lines[2]["note"], "checking the press");
    assert_eq!(lines[2]["incident"], 1);
    assert!(lines.iter().all(|l| l["ts"].is_string()));
    assert!(
        !std::fs::read_to_string(f.state.audit.path())
            .unwrap()
            .contains(&f.admin[4..]),
        "no token in the audit log"
    );
}
