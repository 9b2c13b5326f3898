//! Central learning: asked of an agent, answered in its batches, merged into a proposal.
use super::*;

const LEARNED: &str = "version = 1\nname = \"learned\"\n\n[[asset]]\nname = \"host-10-0-0-5\"\naddress = \"10.0.0.5\"\nrole = \"master\"\n\n[[allow]]\nfrom = \"host-10-0-0-5\"\nto = \"10.0.1.5\"\nfunctions = [\"read_holding_registers\"]\nholding_registers = [\"0-9\"]\n";

impl Fixture {
    async fn post_as(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            uri,
            Some(token),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    /// A heartbeat naming agent `agent`, sent with agent a1's credential.
    async fn heartbeat_as(&self, agent: &str) -> Reply {
        let body = serde_json::to_vec(&otwatch_rules::wire::Heartbeat {
            agent: agent.into(),
            version: "test".into(),
            ..Default::default()
        })
        .unwrap();
        self.call(
            Method::POST,
            "/api/v1/heartbeat",
            Some(&self.agent.clone()),
            body,
        )
        .await
    }

    async fn heartbeat_reply(&self) -> Value {
        let r = self.heartbeat_as("a1").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }
}

fn learned_batch(request: &str, toml: &str) -> IngestBatch {
    let mut b = batch("a1", Vec::new());
    b.learned.push(otwatch_rules::wire::LearnedPolicy {
        request: request.into(),
        toml: toml.into(),
        requests: 42,
    });
    b
}

#[tokio::test]
async fn an_agent_asked_to_learn_sends_a_policy_that_becomes_an_unassigned_proposal() {
    let f = fixture();
    let admin = f.admin.clone();
    let ask = json!({ "duration": "2h", "proposal": "plant-proposal" });
    // Only an admin asks; only an enrolled agent can be asked; durations are bounded.
    let r = f
        .post_as("/api/v1/agents/a1/learn", &f.viewer.clone(), ask.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .post_as("/api/v1/agents/ghost/learn", &admin, ask.clone())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = f
        .post_as(
            "/api/v1/agents/a1/learn",
            &admin,
            json!({ "duration": "40d" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().starts_with("duration:"),
        "{}",
        r.body
    );
    let r = f.post_as("/api/v1/agents/a1/learn", &admin, ask).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let request = r.body["request"].as_str().unwrap().to_string();
    assert_eq!(r.body["duration_s"], 7200);

    // The heartbeat's answer carries the request until the learned policy arrives.
    let reply = f.heartbeat_reply().await;
    assert_eq!(reply["learn"]["id"], request.as_str());
    assert_eq!(reply["learn"]["duration_s"], 7200);

    // What learning never writes, and what answers no request, are refused naming the field.
    let hostile = format!("{LEARNED}\n[detectors.\"program.umas_stop\"]\nenabled = false\n");
    let r = f
        .ingest(Some(&f.agent.clone()), &learned_batch(&request, &hostile))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("learned[0].toml"),
        "{}",
        r.body
    );
    let other = "0123456789abcdef0123456789abcdef";
    let r = f
        .ingest(Some(&f.agent.clone()), &learned_batch(other, LEARNED))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("learned.request"),
        "{}",
        r.body
    );

    let r = f
        .ingest(Some(&f.agent.clone()), &learned_batch(&request, LEARNED))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Sent again (a retry): no new version.
    let r = f
        .ingest(Some(&f.agent.clone()), &learned_batch(&request, LEARNED))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let history = f
        .get("/api/v1/policies/plant-proposal/history", &f.viewer)
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert_eq!(
        history.body.as_array().unwrap().len(),
        1,
        "{}",
        history.body
    );
    assert_eq!(history.body[0]["author"], "learning");
    assert!(
        history.body[0]["note"].as_str().unwrap().contains("a1"),
        "{}",
        history.body
    );
    let proposal = f.get("/api/v1/policies/plant-proposal", &f.viewer).await;
    assert!(
        proposal
            .body
            .as_str()
            .unwrap()
            .contains("learned by agent a1"),
        "{}",
        proposal.body
    );
    // Assigned to no one; the agent is no longer asked; the agents view says what it learned.
    assert!(f.state.store.assignments().unwrap().is_empty());
    assert_eq!(f.heartbeat_reply().await["learn"], Value::Null);
    let agents = f.get("/api/v1/agents", &f.viewer).await;
    assert_eq!(
        agents.body[0]["learning"]["requests"], 42,
        "{}",
        agents.body
    );
    assert_eq!(agents.body[0]["learning"]["toml"], Value::Null);
}

#[tokio::test]
async fn a_proposal_an_admin_assigned_is_not_a_learning_target() {
    let f = fixture();
    let admin = f.admin.clone();
    let r = f
        .send_with(
            Method::PUT,
            "/api/v1/policies/hall",
            &admin,
            &[("content-type", "application/toml")],
            LEARNED,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = f
        .send_with(
            Method::PUT,
            "/api/v1/agents/a1/policy",
            &admin,
            &[("content-type", "application/json")],
            r#"{"policy": "hall"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .post_as(
            "/api/v1/agents/a1/learn",
            &admin,
            json!({ "duration": "1h", "proposal": "hall" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

/// A learned policy of `hosts` masters, each with its own rule: about 150 bytes a host.
fn big_learned(hosts: u32, third: u8) -> String {
    let mut text = String::from("version = 1\nname = \"learned\"\n");
    for i in 0..hosts {
        let (b, c) = (i / 250, i % 250 + 1);
        text.push_str(&format!(
            "\n[[asset]]\nname = \"host-10-{third}-{b}-{c}\"\naddress = \"10.{third}.{b}.{c}\"\n\n[[allow]]\nfrom = \"host-10-{third}-{b}-{c}\"\nto = \"10.0.1.5\"\nfunctions = [\"read_holding_registers\"]\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_learned_policy_that_cannot_join_the_proposal_is_kept_with_why_and_acknowledged() {
    let f = fixture();
    let admin = f.admin.clone();
    let a2_token = f.state.credentials.enroll("a2", Role::Agent).unwrap();
    let ask = json!({ "duration": "1h", "proposal": "plant" });
    let mut requests = Vec::new();
    for agent in ["a1", "a2"] {
        let r = f
            .post_as(
                &format!("/api/v1/agents/{agent}/learn"),
                &admin,
                ask.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        requests.push(r.body["request"].as_str().unwrap().to_string());
    }
    // Each fits alone; both together are over the 256 KiB a policy may hold.
    let (one, two) = (big_learned(1200, 1), big_learned(1200, 2));
    assert!(one.len() < 256 << 10 && one.len() + two.len() > 256 << 10);
    let r = f
        .ingest(Some(&f.agent.clone()), &learned_batch(&requests[0], &one))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut second = learned_batch(&requests[1], &two);
    second.agent = "a2".into();
    let r = f.ingest(Some(&a2_token), &second).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the batch is acknowledged: {}",
        r.body
    );
    let history = f.get("/api/v1/policies/plant/history", &f.viewer).await;
    assert_eq!(history.body.as_array().unwrap().len(), 1, "a1's alone");
    let a2 = f.state.store.learn_record("a2").unwrap().unwrap();
    assert!(a2.received_at.is_some());
    assert!(a2.error.unwrap().starts_with("not merged: policy:"));
    // No longer asked: the admin sees why in the agents view and may ask again.
    let r = f.heartbeat_as("a2").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}
