//! Policies kept by the collector and followed by agents, as separate processes over real
//! HTTPS: a policy stored and assigned through the API is applied by an agent with
//! `--policy-source collector` within 10 s (its heartbeat shows the version) and judges its
//! traffic; a broken policy is refused at the API and never reaches the agent; an agent
//! restarted while the collector is down enforces the last good version it kept.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otwatch_tests::attack::{ATTACKER, PLC, POLICY, record_attack, record_segment};
use otwatch_tests::collector::{Client, Site};
use otwatch_tests::{binary, packets_of, read_alerts, runtime};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use serde_json::Value;

/// The attack capture's header and packets.
fn attack(dir: &Path) -> (PcapHeader, Vec<PcapPacket<'static>>) {
    let pcap = dir.join("attack.pcap");
    runtime().block_on(record_attack(&pcap)).unwrap();
    packets_of(&pcap)
}

/// An agent following the collector's policy, reading a live pcap stream from its standard
/// input, its alerts logged to `alerts` and its messages to `log`.
fn following_agent(site: &Site, token: &str, dir: &Path, alerts: &Path, log: &Path) -> Child {
    let extra = ["--policy-source", "collector"];
    agent_named("hall-1", &extra, site, token, dir, alerts, log)
}

/// Agent `name` with `extra` flags, its outbox in `dir`, reading a live pcap stream.
fn agent_named(
    name: &str,
    extra: &[&str],
    site: &Site,
    token: &str,
    dir: &Path,
    alerts: &Path,
    log: &Path,
) -> Child {
    Command::new(binary("otwatch-agent"))
        .args(["run", "--pcap-stream", "-", "--agent-name", name])
        .args(extra)
        .args(["--heartbeat-interval", "1s", "--drain-timeout", "2"])
        .arg("--alerts")
        .arg(alerts)
        .args(["--collector", &site.url(), "--ca"])
        .arg(site.ca())
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env("OTWATCH_COLLECTOR_TOKEN", token)
        .env("OTWATCH_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// A running agent and its pcap stream, its header written (the agent starts capturing once it
/// has read it).
struct Live {
    agent: Child,
    stream: PcapWriter<std::process::ChildStdin>,
}

impl Live {
    fn start(mut agent: Child, header: PcapHeader) -> Self {
        let stream = PcapWriter::with_header(agent.stdin.take().unwrap(), header).unwrap();
        Self { agent, stream }
    }

    /// Writes `packets` into the stream, which stays open.
    fn send(&mut self, packets: &[PcapPacket<'static>]) {
        for p in packets {
            self.stream.write_packet(p).unwrap();
        }
    }

    /// Plays `packets`, ends the stream, and waits for the agent to finish.
    fn play(mut self, packets: &[PcapPacket<'static>]) {
        self.send(packets);
        let Self { mut agent, stream } = self;
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = agent.try_wait().unwrap() {
                assert!(status.success(), "the agent ended with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the agent did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the collector knows of agent `name`: its last heartbeat and assigned policy.
fn agent_record(client: &Client, token: &str, name: &str) -> Option<Value> {
    let (status, agents) = client.get("/api/v1/agents", Some(token));
    assert_eq!(status, 200, "{agents}");
    agents
        .as_array()?
        .iter()
        .find(|a| a["heartbeat"]["agent"] == name)
        .cloned()
}

/// The policy-rule alerts (those only a policy raises) the attack capture raises.
fn policy_rules(alerts: &Path) -> BTreeSet<String> {
    read_alerts(alerts)
        .into_iter()
        .map(|a| a.rule)
        .filter(|r| r.starts_with("policy."))
        .collect()
}

#[test]
fn an_assigned_policy_is_applied_within_10_s_judges_traffic_and_outlives_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let (header, packets) = attack(dir.path());
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let collector = site.serve();
    let client = &collector.client;

    let (status, stored) = client.put(
        "/api/v1/policies/kiln",
        &site.admin,
        "application/toml",
        POLICY,
    );
    assert_eq!(status, 201, "{stored}");
    let hash = stored["hash"].as_str().unwrap().to_string();
    let (status, body) = client.put(
        "/api/v1/agents/hall-1/policy",
        &site.admin,
        "application/json",
        r#"{"policy": "kiln"}"#,
    );
    assert_eq!(status, 200, "{body}");

    let alerts = dir.path().join("alerts-1.jsonl");
    let log = dir.path().join("agent-1.log");
    let agent = Live::start(
        following_agent(&site, &token, dir.path(), &alerts, &log),
        header,
    );
    wait_applied(client, &site.admin, &hash, &log);
    let record = agent_record(client, &site.admin, "hall-1").unwrap();
    assert_eq!(record["heartbeat"]["policy_source"], "collector");
    assert_eq!(record["assigned_policy"]["hash"], hash.as_str());

    // A broken version is refused at the API, naming where, and never reaches the agent.
    let broken = POLICY.replace("to = \"kiln-plc\"", "to = \"kiln-plc-2\"");
    let (status, refusal) = client.put(
        "/api/v1/policies/kiln",
        &site.admin,
        "application/toml",
        &broken,
    );
    assert_eq!(status, 400, "{refusal}");
    assert!(
        refusal["error"].as_str().unwrap().contains("kiln-plc-2"),
        "{refusal}"
    );
    let (_, policies) = client.get("/api/v1/policies", Some(&site.admin));
    assert!(policies.to_string().contains(&hash), "{policies}");

    agent.play(&packets);
    let judged = policy_rules(&alerts);
    assert!(
        judged.contains("policy.setpoint_out_of_bounds"),
        "the assigned policy judged the traffic: {judged:?}"
    );
    let record = agent_record(client, &site.admin, "hall-1").unwrap();
    assert_eq!(record["heartbeat"]["policy_hash"], hash.as_str());

    // The collector goes down; the agent restarts and enforces the version it kept.
    drop(collector);
    let alerts_2 = dir.path().join("alerts-2.jsonl");
    let log_2 = dir.path().join("agent-2.log");
    Live::start(
        following_agent(&site, &token, dir.path(), &alerts_2, &log_2),
        header,
    )
    .play(&packets);
    assert_eq!(
        policy_rules(&alerts_2),
        judged,
        "with the collector down: {}",
        std::fs::read_to_string(&log_2).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("assigned-policy.toml")).unwrap(),
        POLICY
    );
}

/// Waits until the collector's record of hall-1 shows it enforcing `hash`.
fn wait_applied(client: &Client, admin: &str, hash: &str, log: &Path) {
    let started = Instant::now();
    while !agent_record(client, admin, "hall-1")
        .is_some_and(|a| a["heartbeat"]["policy_hash"] == hash)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the agent did not apply {hash} within 10 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn allowing_an_alert_from_the_api_stops_it_on_a_replay_and_keeps_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let (header, packets) = attack(dir.path());
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let collector = site.serve();
    let client = &collector.client;
    let (status, stored) = client.put(
        "/api/v1/policies/kiln",
        &site.admin,
        "application/toml",
        POLICY,
    );
    assert_eq!(status, 201, "{stored}");
    let v1 = stored["hash"].as_str().unwrap().to_string();
    let body = r#"{"policy": "kiln"}"#;
    let (status, _) = client.put(
        "/api/v1/agents/hall-1/policy",
        &site.admin,
        "application/json",
        body,
    );
    assert_eq!(status, 200);

    let run = |tag: &str, hash: &str| {
        let alerts = dir.path().join(format!("alerts-{tag}.jsonl"));
        let log = dir.path().join(format!("agent-{tag}.log"));
        let live = Live::start(
            following_agent(&site, &token, dir.path(), &alerts, &log),
            header,
        );
        wait_applied(client, &site.admin, hash, &log);
        live.play(&packets);
        read_alerts(&alerts)
    };
    let before = run("before", &v1);
    // The alert to allow: a policy violation of one occurrence, which the collector holds.
    let chosen = before
        .iter()
        .find(|a| a.rule == "policy.setpoint_out_of_bounds" && a.count == 1)
        .unwrap_or_else(|| panic!("no setpoint alert in {before:?}"))
        .clone();
    let path = format!("/api/v1/alerts/{}", chosen.id);
    let started = Instant::now();
    while client.get(&path, Some(&site.admin)).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the alert did not arrive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, offer) = client.get(&format!("{path}/allow-rule"), Some(&site.admin));
    assert_eq!(status, 200, "{offer}");
    assert_eq!(offer["base"], v1.as_str());
    let applied = otwatch_tests::collector::https_agent(&site.ca(), Duration::from_secs(30))
        .put(format!("{}/api/v1/policies/kiln", site.url()))
        .header("Authorization", format!("Bearer {}", site.admin))
        .header("Content-Type", "application/toml")
        .header("If-Match", format!("\"{v1}\""))
        .send(offer["toml"].as_str().unwrap())
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    assert_eq!(applied["version"], 2, "{applied}");
    let v2 = applied["hash"].as_str().unwrap().to_string();

    let after = run("after", &v2);
    let ids = |alerts: &[otwatch_rules::alert::Alert]| -> BTreeSet<String> {
        alerts.iter().map(|a| a.id.clone()).collect()
    };
    let mut expected = ids(&before);
    expected.remove(&chosen.id);
    assert_eq!(
        ids(&after),
        expected,
        "only the allowed alert is gone: {}",
        offer["diff"]
    );
}

/// The policy alerts `otwatch-agent replay` raises on `pcaps` under `policy`.
fn policy_alerts_of(pcaps: &[&Path], policy: &Path, dir: &Path) -> BTreeSet<String> {
    let alerts = dir.join("replayed.jsonl");
    let _ = std::fs::remove_file(&alerts);
    let mut command = Command::new(binary("otwatch-agent"));
    command
        .args(["replay", "--no-progress", "--policy"])
        .arg(policy);
    for p in pcaps {
        command.arg("--pcap").arg(p);
    }
    let out = command.arg("--alerts").arg(&alerts).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    policy_rules(&alerts)
}

#[test]
fn two_agents_learn_on_request_and_the_merged_proposal_allows_both_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Segment 1 is the attack's (its normal part); segment 2 another master, PLC and registers.
    let (seg_1, seg_2) = (dir.path().join("seg-1.pcap"), dir.path().join("seg-2.pcap"));
    let rt = runtime();
    rt.block_on(record_segment(&seg_1, ATTACKER, PLC, 0))
        .unwrap();
    rt.block_on(record_segment(&seg_2, [10, 2, 0, 5], [10, 2, 1, 20], 100))
        .unwrap();
    let site = Site::init(dir.path());
    let tokens = [site.enroll_agent("hall-1"), site.enroll_agent("hall-2")];
    let collector = site.serve();
    let client = &collector.client;
    let mut requests = Vec::new();
    for agent in ["hall-1", "hall-2"] {
        let (status, asked) = client.post(
            &format!("/api/v1/agents/{agent}/learn"),
            Some(&site.admin),
            &serde_json::json!({ "duration": "3s", "proposal": "plant" }),
        );
        assert_eq!(status, 202, "{asked}");
        requests.push(asked["request"].as_str().unwrap().to_string());
    }
    let mut agents = Vec::new();
    for (i, (name, pcap)) in [("hall-1", &seg_1), ("hall-2", &seg_2)]
        .into_iter()
        .enumerate()
    {
        let own = dir.path().join(name);
        std::fs::create_dir_all(&own).unwrap();
        let (header, packets) = packets_of(pcap);
        let child = agent_named(
            name,
            &[],
            &site,
            &tokens[i],
            &own,
            &own.join("alerts.jsonl"),
            &own.join("agent.log"),
        );
        agents.push((Live::start(child, header), packets, own.join("agent.log")));
    }
    // Each agent learns once its heartbeat's answer asked: its traffic comes after that.
    for ((live, packets, log), (name, request)) in agents
        .iter_mut()
        .zip(["hall-1", "hall-2"].into_iter().zip(&requests))
    {
        let started = Instant::now();
        while !agent_record(client, &site.admin, name)
            .is_some_and(|a| a["heartbeat"]["learning"] == request.as_str())
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name} did not start learning: {}",
                std::fs::read_to_string(&*log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        live.send(packets);
    }
    let started = Instant::now();
    while !["hall-1", "hall-2"].iter().all(|name| {
        agent_record(client, &site.admin, name)
            .is_some_and(|a| !a["learning"]["received_at"].is_null())
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the learned policies did not arrive"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (live, _, _) in agents {
        live.play(&[]);
    }

    // The proposal merges both, is assigned to no one, and allows both segments' traffic.
    let (status, proposal) = client.get("/api/v1/policies/plant", Some(&site.admin));
    assert_eq!(status, 200, "{proposal}");
    let proposal = proposal.as_str().unwrap().to_string();
    assert!(proposal.contains("learned by agent hall-1"), "{proposal}");
    assert!(proposal.contains("learned by agent hall-2"), "{proposal}");
    for name in ["hall-1", "hall-2"] {
        assert!(agent_record(client, &site.admin, name).unwrap()["assigned_policy"].is_null());
    }
    let policy = dir.path().join("proposal.toml");
    std::fs::write(&policy, &proposal).unwrap();
    let none: BTreeSet<String> = BTreeSet::new();
    assert_eq!(
        policy_alerts_of(&[&seg_1, &seg_2], &policy, dir.path()),
        none,
        "{proposal}"
    );
    // It allows what was seen, not everything: the attack on segment 1 still breaks it.
    let attack_pcap = dir.path().join("attack.pcap");
    rt.block_on(record_attack(&attack_pcap)).unwrap();
    assert!(!policy_alerts_of(&[&attack_pcap], &policy, dir.path()).is_empty());
}
