//! The policy API: checked, conditional versions with history and rollback.
use super::*;

const HALL: &str =
    "version = 1\nname = \"hall\"\n\n[[asset]]\nname = \"plc\"\naddress = \"10.0.0.20\"\n";

impl Fixture {
    /// A request with headers of its own.
    pub(super) async fn send_with(
        &self,
        method: Method,
        uri: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        Reply::of(response).await
    }

    async fn put_policy(&self, name: &str, text: &str, if_match: Option<&str>) -> Reply {
        let mut headers = vec![("content-type", "application/toml")];
        if let Some(m) = if_match {
            headers.push(("if-match", m));
        }
        let uri = format!("/api/v1/policies/{name}");
        self.send_with(Method::PUT, &uri, &self.admin.clone(), &headers, text)
            .await
    }
}

impl Fixture {
    /// Rolls policy hall back as the admin, with `body`.
    async fn rollback(&self, body: &str) -> Reply {
        self.send_with(
            Method::POST,
            "/api/v1/policies/hall/rollback",
            &self.admin.clone(),
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Assigns `policy` to agent a1, as the admin.
    async fn assign(&self, policy: Value) -> Reply {
        let body = json!({ "policy": policy }).to_string();
        self.send_with(
            Method::PUT,
            "/api/v1/agents/a1/policy",
            &self.admin.clone(),
            &[("content-type", "application/json")],
            &body,
        )
        .await
    }
}

fn etag(r: &Reply) -> String {
    r.headers["etag"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_policy_is_stored_read_back_and_changed_only_against_the_version_in_force() {
    let f = fixture();
    let created = f.put_policy("hall", HALL, None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["version"], 1);
    let tag = etag(&created);
    let read = f.get("/api/v1/policies/hall", &f.viewer).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, Value::String(HALL.into()));
    assert_eq!(read.headers["content-type"], "application/toml");
    assert_eq!(etag(&read), tag);

    let changed =
        format!("{HALL}\n[[allow]]\nfrom = \"10.0.0.5\"\nto = \"plc\"\nfunctions = [\"read\"]\n");
    // Without If-Match: 428 naming the version in force; with a stale one: 412.
    let r = f.put_policy("hall", &changed, None).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains(&tag),
        "{}",
        r.body
    );
    let r = f.put_policy("hall", &changed, Some("\"0000\"")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    let r = f.put_policy("hall", &changed, Some(&tag)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["version"].as_u64(), r.body["changed"].as_bool()),
        (Some(2), Some(true))
    );
    let v2 = etag(&r);
    // Someone else, still holding version 1's tag, is refused.
    let r = f.put_policy("hall", HALL, Some(&tag)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // The same text again: no new version.
    let r = f.put_policy("hall", &changed, Some(&v2)).await;
    assert_eq!(
        (r.body["version"].as_u64(), r.body["changed"].as_bool()),
        (Some(2), Some(false))
    );

    let list = f.get("/api/v1/policies", &f.viewer).await;
    assert_eq!(list.body[0]["name"], "hall");
    assert_eq!(list.body[0]["version"], 2);
    assert_eq!(list.body[0]["author"], "lead");
    // The history shows each version, who stored it and what changed.
    let history = f.get("/api/v1/policies/hall/history", &f.viewer).await;
    assert_eq!(history.body.as_array().unwrap().len(), 2);
    let diff = history.body[0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("+[[allow]]") && diff.contains("version 1"),
        "{diff}"
    );
    assert_eq!(history.body[1]["diff"], Value::Null);
    // One version shown: still diffed against the one before it.
    let newest = f
        .get("/api/v1/policies/hall/history?limit=1", &f.viewer)
        .await;
    assert_eq!(newest.body.as_array().unwrap().len(), 1);
    assert_eq!(newest.body[0]["diff"], history.body[0]["diff"]);
}

#[tokio::test]
async fn a_broken_policy_is_refused_with_its_line_column_and_field() {
    let f = fixture();
    let broken =
        "version = 1\n\n[[allow]]\nfrom = \"10.0.0.5\"\nto = \"nowhere\"\nfunctions = [\"read\"]\n";
    let r = f.put_policy("hall", broken, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["line"].as_u64().unwrap() >= 1, "{}", r.body);
    assert!(r.body["column"].as_u64().unwrap() >= 1, "{}", r.body);
    assert!(
        r.body["field"].as_str().unwrap().starts_with("allow[0]"),
        "{}",
        r.body
    );
    assert!(!r.body["message"].as_str().unwrap().is_empty());
    let r = f.put_policy("hall", "version = 1\nnot toml [", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "toml", "{}", r.body);
    // Nothing was stored.
    assert_eq!(
        f.get("/api/v1/policies/hall", &f.viewer).await.status,
        StatusCode::NOT_FOUND
    );
    // Not TOML by its type, not UTF-8, a bad name: each refused naming why.
    let r = f
        .send_with(
            Method::PUT,
            "/api/v1/policies/hall",
            &f.admin.clone(),
            &[("content-type", "application/json")],
            HALL,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = f.put_policy(".hidden", HALL, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("name: "),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_rollback_restores_an_old_text_as_a_new_version() {
    let f = fixture();
    let v1 = etag(&f.put_policy("hall", HALL, None).await);
    let newer = HALL.replace("10.0.0.20", "10.0.0.21");
    let v2 = etag(&f.put_policy("hall", &newer, Some(&v1)).await);
    let hash1 = v1.trim_matches('"').to_string();
    let r = f.rollback(&json!({ "version": hash1 }).to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 3);
    assert_eq!(etag(&r), v1, "version 1's text, so version 1's hash");
    assert_ne!(etag(&r), v2);
    let read = f.get("/api/v1/policies/hall", &f.viewer).await;
    assert_eq!(read.body, Value::String(HALL.into()));
    let history = f.get("/api/v1/policies/hall/history", &f.viewer).await;
    assert_eq!(history.body[0]["note"], "rollback to version 1");
    // By number too; an unknown version is 404 naming it.
    let r = f.rollback(r#"{"version": "2"}"#).await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    let r = f.rollback(r#"{"version": "99"}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("version: "),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn viewers_read_policies_and_only_admins_change_them() {
    let f = fixture();
    f.put_policy("hall", HALL, None).await;
    for token in [f.viewer.clone(), f.agent.clone()] {
        let r = f
            .send_with(
                Method::PUT,
                "/api/v1/policies/hall",
                &token,
                &[("content-type", "application/toml")],
                HALL,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = f
            .send_with(
                Method::POST,
                "/api/v1/policies/hall/rollback",
                &token,
                &[],
                r#"{"version": "1"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        f.get("/api/v1/policies", &f.viewer).await.status,
        StatusCode::OK
    );
    // Agents get no policy from this API (an agent's own assigned policy comes later).
    assert_eq!(
        f.get("/api/v1/policies/hall", &f.agent).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_assigned_policy_is_named_in_the_heartbeat_answer_and_read_by_its_agent_only() {
    let f = fixture();
    let created = f.put_policy("hall", HALL, None).await;
    let tag = etag(&created);
    // No assignment yet: the heartbeat answer names none, the agent reads none.
    let heartbeat = serde_json::to_string(&otwatch_rules::wire::Heartbeat {
        agent: "a1".into(),
        version: "test".into(),
        ..Default::default()
    })
    .unwrap();
    let beat = || f.send_with(Method::POST, "/api/v1/heartbeat", &f.agent, &[], &heartbeat);
    assert_eq!(beat().await.body["policy"], Value::Null);
    assert_eq!(
        f.get("/api/v1/agents/a1/policy", &f.agent).await.status,
        StatusCode::NOT_FOUND
    );
    // An unknown policy cannot be assigned; a known one can, by an admin only.
    let r = f.assign(json!("nowhere")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = f
        .send_with(
            Method::PUT,
            "/api/v1/agents/a1/policy",
            &f.viewer.clone(),
            &[],
            r#"{"policy": "hall"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(f.assign(json!("hall")).await.status, StatusCode::OK);
    let answer = beat().await;
    assert_eq!(answer.body["policy"]["name"], "hall");
    assert_eq!(
        format!("\"{}\"", answer.body["policy"]["hash"].as_str().unwrap()),
        tag
    );
    // The agents view shows what is assigned beside what the agent applies (none yet).
    let agents = f.get("/api/v1/agents", &f.viewer).await;
    assert_eq!(agents.body[0]["assigned_policy"]["name"], "hall");
    assert_eq!(
        format!(
            "\"{}\"",
            agents.body[0]["assigned_policy"]["hash"].as_str().unwrap()
        ),
        tag
    );
    assert_eq!(agents.body[0]["heartbeat"]["policy_hash"], Value::Null);
    // The agent reads its own policy; a viewer reads any; another agent's is refused.
    let own = f.get("/api/v1/agents/a1/policy", &f.agent).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body, Value::String(HALL.into()));
    assert_eq!(etag(&own), tag);
    assert_eq!(own.headers["x-otwatch-policy"], "hall");
    assert_eq!(
        f.get("/api/v1/agents/a1/policy", &f.viewer).await.status,
        StatusCode::OK
    );
    let other = f.get("/api/v1/agents/a2/policy", &f.agent).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    // A new version is named by the next heartbeat answer.
    let newer = HALL.replace("10.0.0.20", "10.0.0.21");
    let v2 = etag(&f.put_policy("hall", &newer, Some(&tag)).await);
    assert_eq!(
        format!(
            "\"{}\"",
            beat().await.body["policy"]["hash"].as_str().unwrap()
        ),
        v2
    );
    // Taken away: none again.
    assert_eq!(f.assign(Value::Null).await.status, StatusCode::OK);
    assert_eq!(beat().await.body["policy"], Value::Null);
    // A bad agent name is refused naming the field.
    let r = f
        .send_with(
            Method::PUT,
            "/api/v1/agents/bad%0Aname/policy",
            &f.admin.clone(),
            &[],
            r#"{"policy": "hall"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("agent: "),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn if_match_takes_a_list_or_star_and_weak_tags_never_match() {
    let f = fixture();
    let v1 = etag(&f.put_policy("hall", HALL, None).await);
    let second = HALL.replace("10.0.0.20", "10.0.0.21");
    let weak = format!("W/{v1}");
    let r = f.put_policy("hall", &second, Some(&weak)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    let listed = format!("\"0000\", {v1}");
    let r = f.put_policy("hall", &second, Some(&listed)).await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let r = f.put_policy("hall", HALL, Some("*")).await;
    assert_eq!(r.body["version"], 3, "{}", r.body);
    let r = f.put_policy("absent", HALL, Some("*")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // A rollback by a JSON number.
    let r = f.rollback(r#"{"version": 2}"#).await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    assert_eq!(
        etag(&r),
        etag(&f.get("/api/v1/policies/hall", &f.viewer).await)
    );
    // Bad history queries are refused as JSON naming what is wrong.
    for bad in ["limit=51", "limit=0", "limit=abc", "since=1"] {
        let r = f
            .get(&format!("/api/v1/policies/hall/history?{bad}"), &f.viewer)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body["error"].is_string(), "{bad}: {}", r.body);
    }
    // The listing reads no TOML and is sorted by name.
    f.put_policy("a-first", HALL, None).await;
    let list = f.get("/api/v1/policies", &f.viewer).await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-first", "hall"]);
    assert_eq!(list.body[1]["version"], 4);
}

impl Fixture {
    /// A heartbeat of agent a1, following the collector's policy or a local file.
    async fn beat(&self, source: otwatch_rules::wire::PolicySource) {
        let heartbeat = serde_json::to_string(&otwatch_rules::wire::Heartbeat {
            agent: "a1".into(),
            version: "test".into(),
            policy_source: Some(source),
            policy_language: Some(otwatch_rules::policy::POLICY_VERSION),
            ..Default::default()
        })
        .unwrap();
        let r = self
            .send_with(
                Method::POST,
                "/api/v1/heartbeat",
                &self.agent.clone(),
                &[],
                &heartbeat,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}

#[tokio::test]
async fn allow_rule_offers_a_diff_to_the_assigned_policy_that_applies_as_a_new_version() {
    use otwatch_rules::wire::PolicySource;
    let f = fixture();
    let write = alert(
        1,
        "policy.unauthorized_write",
        Severity::High,
        "10.0.0.5",
        "10.0.0.20",
        "a1",
    );
    let rate = alert(
        2,
        "policy.rate_exceeded",
        Severity::Medium,
        "10.0.0.5",
        "10.0.0.20",
        "a1",
    );
    let r = f
        .ingest(
            Some(&f.agent.clone()),
            &batch("a1", vec![write.clone(), rate.clone()]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let uri = format!("/api/v1/alerts/{}/allow-rule", write.id);

    // An agent on a local file (or one from before central policies): 409 saying so.
    f.beat(PolicySource::File).await;
    let r = f.get(&uri, &f.viewer).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("local policy file"),
        "{}",
        r.body
    );
    // Following the collector, but nothing assigned: 409.
    f.beat(PolicySource::Collector).await;
    let r = f.get(&uri, &f.viewer).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("no policy is assigned"),
        "{}",
        r.body
    );

    let created = f.put_policy("hall", HALL, None).await;
    assert_eq!(f.assign(json!("hall")).await.status, StatusCode::OK);
    let offer = f.get(&uri, &f.viewer).await;
    assert_eq!(offer.status, StatusCode::OK, "{}", offer.body);
    assert_eq!(offer.body["policy"], "hall");
    assert_eq!(
        format!("\"{}\"", offer.body["base"].as_str().unwrap()),
        etag(&created)
    );
    let diff = offer.body["diff"].as_str().unwrap();
    assert!(diff.contains("+[[allow]]"), "{diff}");
    assert!(diff.contains("+from = \"10.0.0.5\""), "{diff}");
    assert!(
        diff.contains("+functions = [\"write_single_register\"]"),
        "{diff}"
    );
    assert!(!diff.contains("\n-"), "only additions: {diff}");
    // A rate is a number to choose, not a rule to add: 422 saying what to do.
    let r = f
        .get(&format!("/api/v1/alerts/{}/allow-rule", rate.id), &f.viewer)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("rate"),
        "{}",
        r.body
    );
    assert_eq!(
        f.get(
            "/api/v1/alerts/0123456789abcdef0123456789abcdef/allow-rule",
            &f.viewer
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    // Applying it: the offered text against the version it was made from.
    let applied = f
        .put_policy(
            "hall",
            offer.body["toml"].as_str().unwrap(),
            Some(&etag(&created)),
        )
        .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    assert_eq!(applied.body["version"], 2);
    // Offered again, it builds on the new version.
    let again = f.get(&uri, &f.viewer).await;
    assert_eq!(again.body["base_version"], 2);
}

#[tokio::test]
async fn a_policys_assignments_are_its_history_who_gave_it_to_which_agent_and_took_it_away() {
    let f = fixture();
    f.put_policy("hall", HALL, None).await;
    f.put_policy("yard", &HALL.replace("hall", "yard"), None)
        .await;
    assert_eq!(f.assign(json!("hall")).await.status, StatusCode::OK);
    // The same again changes nothing; another policy takes hall away; none takes yard away.
    assert_eq!(f.assign(json!("hall")).await.status, StatusCode::OK);
    assert_eq!(f.assign(json!("yard")).await.status, StatusCode::OK);
    assert_eq!(f.assign(Value::Null).await.status, StatusCode::OK);
    let hall = f.get("/api/v1/policies/hall/assignments", &f.viewer).await;
    assert_eq!(hall.status, StatusCode::OK, "{}", hall.body);
    let said: Vec<(Value, Value, Value)> = hall
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["agent"].clone(), c["assigned"].clone(), c["by"].clone()))
        .collect();
    assert_eq!(
        said,
        [
            (json!("a1"), json!(false), json!("lead")),
            (json!("a1"), json!(true), json!("lead")),
        ]
    );
    let yard = f
        .get("/api/v1/policies/yard/assignments?limit=1", &f.viewer)
        .await;
    assert_eq!(yard.body.as_array().unwrap().len(), 1);
    assert_eq!(yard.body[0]["assigned"], false);
    assert_eq!(
        f.get("/api/v1/policies/none/assignments", &f.viewer)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get("/api/v1/policies/hall/assignments?limit=0", &f.viewer)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_policy_in_language_2_is_not_assigned_to_an_agent_that_reads_only_1() {
    let f = fixture();
    // An agent from before language 2 says it reads version 1.
    let heartbeat = serde_json::to_string(&otwatch_rules::wire::Heartbeat {
        agent: "a1".into(),
        version: "old".into(),
        policy_language: Some(1),
        ..Default::default()
    })
    .unwrap();
    let r = f
        .send_with(
            Method::POST,
            "/api/v1/heartbeat",
            &f.agent.clone(),
            &[],
            &heartbeat,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let with_macs = HALL.replacen("version = 1", "version = 2", 1).replacen(
        "[[asset]]",
        "[[asset]]\nname = \"plc-mac\"\naddress = \"10.0.0.99\"\nmacs = [\"00:1d:9c:00:00:99\"]\n\n[[asset]]",
        1,
    );
    let created = f.put_policy("hall", &with_macs, None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let r = f.assign(json!("hall")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let error = r.body["error"].as_str().unwrap();
    assert!(
        error.contains("\"a1\"") && error.contains("up to 1") && error.contains("version 2"),
        "{error}"
    );
    // A language 1 policy is assigned to it as before.
    f.put_policy("plain", HALL, None).await;
    assert_eq!(f.assign(json!("plain")).await.status, StatusCode::OK);
}
