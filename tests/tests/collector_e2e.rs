//! The collector and agents as separate processes, over real HTTPS: every alert of a capture
//! with attacks arrives once and shows in the API, the live feed and `/metrics`; a collector
//! that is down, an agent killed with `kill -9`, a collector killed mid-ingest: nothing
//! acknowledged is lost and nothing is counted twice.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use otwatch_rules::alert::rule;
use otwatch_rules::detect::agent_alert;
use otwatch_rules::time::Timestamp;
use otwatch_tests::attack::{POLICY, record_attack, record_polling};
use otwatch_tests::collector::{Site, free_addr};
use otwatch_tests::{binary, packets_of, runtime, wait_for};
use serde_json::{Value, json};

/// A capture with attacks and the policy it breaks, in `dir`.
fn attack_capture(dir: &Path) -> (PathBuf, PathBuf) {
    let pcap = dir.join("attack.pcap");
    runtime().block_on(record_attack(&pcap)).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    (pcap, policy)
}

/// One agent run: its files and the command.
struct AgentRun {
    alerts: PathBuf,
    summary: PathBuf,
    command: Command,
}

fn agent_run(
    site: &Site,
    token: &str,
    outbox: &Path,
    pcap: &Path,
    policy: &Path,
    tag: &str,
) -> AgentRun {
    let dir = outbox.parent().unwrap();
    let alerts = dir.join(format!("alerts-{tag}.jsonl"));
    let summary = dir.join(format!("summary-{tag}.json"));
    let mut command = Command::new(binary("otwatch-agent"));
    command
        .args([
            "replay",
            "--no-progress",
            "--agent-name",
            "hall-1",
            "--pcap",
        ])
        .arg(pcap)
        .arg("--policy")
        .arg(policy)
        .arg("--alerts")
        .arg(&alerts)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--collector", &site.url(), "--ca"])
        .arg(site.ca())
        .arg("--outbox")
        .arg(outbox)
        .env("OTWATCH_COLLECTOR_TOKEN", token)
        .stdout(Stdio::null());
    AgentRun {
        alerts,
        summary,
        command,
    }
}

impl AgentRun {
    fn run(mut self) -> (Value, BTreeSet<String>) {
        let out = self.command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.results()
    }

    fn results(&self) -> (Value, BTreeSet<String>) {
        let summary =
            serde_json::from_str(&std::fs::read_to_string(&self.summary).unwrap()).unwrap();
        (summary, ids_in(&self.alerts))
    }
}

fn ids_in(alerts: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(alerts)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every alert id the collector holds, following the cursor.
fn stored_ids(client: &otwatch_tests::collector::Client, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/alerts?limit=1000&cursor={c}"),
            None => "/api/v1/alerts?limit=1000".to_string(),
        };
        let (status, page) = client.get(&path, Some(token));
        assert_eq!(status, 200, "{page}");
        ids.extend(
            page["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
}

fn agent_metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_alert_of_an_attack_reaches_the_collector_once_and_shows_in_the_api_feed_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, policy) = attack_capture(dir.path());
    let site = Site::init(dir.path());
    let agent_token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    let client = &collector.client;

    let feed = client.stream("/api/v1/alerts/stream", &viewer);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in feed.lines().map_while(Result::ok) {
            // The event id is the ingest sequence number; the alert id is in the data.
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(alert) = serde_json::from_str::<Value>(data)
                && let Some(id) = alert["id"].as_str()
            {
                let _ = tx.send(id.to_string());
            }
        }
    });

    let outbox = dir.path().join("outbox");
    let (summary, produced) =
        agent_run(&site, &agent_token, &outbox, &pcap, &policy, "first").run();
    assert!(
        produced.len() >= 8,
        "the attack raises alerts: {produced:?}"
    );
    let delivery = &summary["delivery"];
    assert_eq!(delivery["waiting"], 0, "{summary}");
    assert_eq!(delivery["delivered"]["duplicates"], 0, "{summary}");
    let pcaps = summary["evidence"]["queued"].as_u64().unwrap();
    assert_eq!(
        delivery["delivered"]["records"].as_u64().unwrap(),
        produced.len() as u64 + 3 + pcaps,
        "every alert, both hosts, their one conversation and the packets behind the serious alerts: {summary}"
    );

    let stored = stored_ids(client, &viewer);
    assert_eq!(stored.len(), produced.len(), "each alert once");
    assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), produced);
    // Every high and critical alert came with its packets, which the collector serves.
    let (_, serious) = client.get("/api/v1/alerts?min_severity=high&limit=100", Some(&viewer));
    let serious = serious["alerts"].as_array().unwrap().clone();
    assert_eq!(serious.len() as u64, pcaps, "{summary}");
    for alert in &serious {
        let id = alert["id"].as_str().unwrap();
        let (status, reply) = client.get(&format!("/api/v1/alerts/{id}/pcap"), Some(&viewer));
        assert_eq!(
            status, 200,
            "the packets of {} {id}: {reply}",
            alert["rule"]
        );
    }

    let mut live = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.len() < produced.len() && Instant::now() < deadline {
        if let Ok(id) = rx.recv_timeout(Duration::from_millis(200)) {
            live.insert(id);
        }
    }
    assert_eq!(live, produced, "the live feed carried every alert");

    let n = produced.len() as f64;
    assert_eq!(
        client.metric("otwatch_collector_alerts_ingested_total"),
        Some(n)
    );
    assert_eq!(
        client.metric(
            "otwatch_collector_alerts_total{rule=\"program.umas_stop\",severity=\"critical\"}"
        ),
        Some(1.0)
    );

    let (_, agents) = client.get("/api/v1/agents", Some(&viewer));
    let agent = &agents.as_array().unwrap()[0];
    assert_eq!(
        (
            agent["heartbeat"]["agent"].as_str(),
            agent["online"].as_bool()
        ),
        (Some("hall-1"), Some(true)),
        "{agents}"
    );

    let (_, assets) = client.get("/api/v1/assets", Some(&viewer));
    let plc = assets
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == "192.168.1.20")
        .unwrap();
    assert_eq!(plc["slave"], true, "{plc}");
    assert_eq!(plc["name"], "kiln-plc");
    assert_eq!(plc["zone"], "kiln");
    assert_eq!(plc["macs"], json!(["02:00:00:00:00:02"]));
    assert_eq!(plc["functions"], json!([3, 6, 8, 16, 43, 90]));

    let (_, posture) = client.get("/api/v1/posture", Some(&viewer));
    assert_eq!(posture["assets"][0]["ip"], "192.168.1.20", "{posture}");
    assert_eq!(posture["zones"][0]["zone"], "kiln", "{posture}");
    assert_eq!(posture["agents_online"], 1);
    let (_, incidents) = client.get("/api/v1/incidents?state=open", Some(&viewer));
    assert!(incidents.as_array().unwrap().len() >= 7, "{incidents}");

    // The same capture again: every alert is already there.
    let (again, reproduced) =
        agent_run(&site, &agent_token, &outbox, &pcap, &policy, "second").run();
    assert_eq!(reproduced, produced, "alert ids are stable");
    assert_eq!(
        again["delivery"]["delivered"]["duplicates"]
            .as_u64()
            .unwrap(),
        produced.len() as u64
    );
    assert_eq!(stored_ids(client, &viewer).len(), produced.len());
    assert_eq!(
        client.metric("otwatch_collector_alerts_duplicate_total"),
        Some(n)
    );
}

#[test]
fn a_collector_down_while_alerts_are_produced_gets_them_all_once_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, policy) = attack_capture(dir.path());
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let metrics = free_addr();
    let outbox = dir.path().join("outbox");
    let mut run = agent_run(&site, &token, &outbox, &pcap, &policy, "down");
    run.command
        .args([
            "--metrics-listen",
            &metrics.to_string(),
            "--drain-timeout",
            "120",
        ])
        .stderr(Stdio::null());
    let mut agent = run.command.spawn().unwrap();
    wait_for("failed deliveries", Duration::from_secs(30), || {
        agent_metric(metrics, "otwatch_agent_send_failures_total").unwrap_or(0.0) >= 2.0
    });
    let waiting = agent_metric(metrics, "otwatch_agent_outbox_depth").unwrap();
    assert!(waiting >= 8.0, "records wait in the outbox: {waiting}");
    assert_eq!(
        agent_metric(metrics, "otwatch_agent_collector_connected"),
        Some(0.0)
    );

    let collector = site.serve();
    assert!(wait_exit(&mut agent, Duration::from_secs(120)).success());
    let (summary, produced) = run.results();
    assert_eq!(summary["delivery"]["waiting"], 0, "{summary}");
    let stored = stored_ids(&collector.client, &viewer);
    assert_eq!(stored.len(), produced.len());
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), produced);
}

#[test]
fn an_agent_killed_with_kill_9_delivers_what_it_had_queued_on_its_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, policy) = attack_capture(dir.path());
    let polling = dir.path().join("polling.pcap");
    runtime().block_on(record_polling(&polling)).unwrap();
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let metrics = free_addr();
    let outbox = dir.path().join("outbox");

    // The collector is away: the agent queues everything, then dies without warning.
    let mut run = agent_run(&site, &token, &outbox, &pcap, &policy, "killed");
    run.command
        .args([
            "--metrics-listen",
            &metrics.to_string(),
            "--drain-timeout",
            "300",
        ])
        .stderr(Stdio::null());
    let mut agent = run.command.spawn().unwrap();
    wait_for(
        "the capture to be processed",
        Duration::from_secs(30),
        || {
            agent_metric(metrics, "otwatch_agent_send_failures_total").unwrap_or(0.0) >= 1.0
                && std::fs::metadata(&run.summary).is_err()
                && ids_in_if_present(&run.alerts) > 0
        },
    );
    let produced = ids_in(&run.alerts);
    agent.kill().unwrap();
    agent.wait().unwrap();

    // Back with the collector up, on traffic that raises nothing new.
    let collector = site.serve();
    let (summary, fresh) = agent_run(&site, &token, &outbox, &polling, &policy, "restarted").run();
    assert!(fresh.is_empty(), "{fresh:?}");
    assert_eq!(summary["delivery"]["waiting"], 0, "{summary}");
    let stored = stored_ids(&collector.client, &viewer);
    assert_eq!(stored.len(), produced.len());
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), produced);
}

fn ids_in_if_present(alerts: &Path) -> usize {
    std::fs::read_to_string(alerts).map_or(0, |t| t.lines().count())
}

#[test]
fn a_collector_killed_with_kill_9_mid_ingest_keeps_every_batch_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    let client = collector.client.clone();
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let poster = std::thread::spawn(move || {
        for batch in 0u64.. {
            let alerts: Vec<_> = (0..200)
                .map(|i| {
                    agent_alert(
                        "hall-1",
                        &rule::POLICY_RELOAD_FAILED,
                        Timestamp::from_secs(1_000_000 + batch * 1_000 + i),
                        "10.0.0.250:0".parse().unwrap(),
                        format!("batch {batch} alert {i}"),
                    )
                })
                .collect();
            let ids: Vec<String> = alerts.iter().map(|a| a.id.clone()).collect();
            let body = json!({ "agent": "hall-1", "alerts": alerts, "assets": [] });
            match client.post("/api/v1/ingest", Some(&token), &body) {
                (200, reply) => {
                    assert_eq!(reply["accepted"], 200, "{reply}");
                    if tx.send(ids).is_err() {
                        return;
                    }
                }
                (429, _) => std::thread::sleep(Duration::from_millis(50)),
                _ => return,
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 10 {
        acknowledged.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    collector.kill_9();
    poster.join().unwrap();
    acknowledged.extend(rx.try_iter());

    let collector = site.serve();
    let stored: BTreeSet<String> = stored_ids(&collector.client, &viewer).into_iter().collect();
    let acked: BTreeSet<String> = acknowledged.into_iter().flatten().collect();
    assert!(acked.len() >= 2_000);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged alerts lost", lost.len());
}

#[test]
fn requests_without_the_right_credential_are_refused_over_https_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let agent = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    let client = &collector.client;
    let alert = agent_alert(
        "hall-1",
        &rule::POLICY_RELOAD_FAILED,
        Timestamp::from_secs(1),
        "10.0.0.250:0".parse().unwrap(),
        "x".into(),
    );
    let batch = json!({ "agent": "hall-1", "alerts": [alert], "assets": [] });
    assert_eq!(client.post("/api/v1/ingest", None, &batch).0, 401);
    assert_eq!(
        client.post("/api/v1/ingest", Some("otw_forged"), &batch).0,
        401
    );
    assert_eq!(client.post("/api/v1/ingest", Some(&viewer), &batch).0, 403);
    assert_eq!(client.get("/api/v1/alerts", Some(&agent)).0, 403);
    assert_eq!(
        client
            .post("/api/v1/incidents/1/ack", Some(&agent), &json!({}))
            .0,
        403
    );
    let huge =
        json!({ "agent": "hall-1", "alerts": [], "assets": [], "pad": "x".repeat(17 << 20) });
    let (status, _) = client.post("/api/v1/ingest", Some(&agent), &huge);
    assert!(status == 413 || status == 0, "oversized body: {status}");
    let (status, reply) = client.post(
        "/api/v1/ingest",
        Some(&agent),
        &json!({ "agent": "hall-1", "alerts": [{"id": 1}] }),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body")
    );
    assert!(stored_ids(client, &viewer).is_empty());
    let plain = ureq::get(format!("http://{}/healthz", site.addr)).call();
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP is not served"
    );
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn an_agent_killed_with_kill_9_again_and_again_mid_stream_delivers_every_alert_it_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, policy) = attack_capture(dir.path());
    let (header, packets) = packets_of(&pcap);
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    let outbox = dir.path().join("outbox");
    let mut logs = Vec::new();
    let mut kills = 0;
    let mut next = 0;
    // Each run reads the rest of the traffic as a live stream and is killed the moment it
    // reports a new alert (the moment a lost alert would show); the last run reads to the end.
    while next < packets.len() {
        let log = dir.path().join(format!("alerts-{}.jsonl", logs.len()));
        let mut agent = Command::new(binary("otwatch-agent"))
            .args([
                "run",
                "--pcap-stream",
                "-",
                "--agent-name",
                "hall-1",
                "--policy",
            ])
            .arg(&policy)
            .arg("--alerts")
            .arg(&log)
            .args(["--collector", &site.url(), "--ca"])
            .arg(site.ca())
            .arg("--outbox")
            .arg(&outbox)
            .env("OTWATCH_COLLECTOR_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stream =
            pcap_file::pcap::PcapWriter::with_header(agent.stdin.take().unwrap(), header).unwrap();
        let killing = kills < 3;
        let mut killed = false;
        while next < packets.len() {
            stream.write_packet(&packets[next]).unwrap();
            next += 1;
            // Give the agent the time to judge the packet: a new alert line shows within it.
            let waited = Instant::now();
            while killing && size_of(&log) == 0 && waited.elapsed() < Duration::from_millis(30) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if killing && size_of(&log) > 0 {
                agent.kill().unwrap();
                killed = true;
                break;
            }
        }
        if killed {
            kills += 1;
            agent.wait().unwrap();
        } else {
            drop(stream);
            let status = wait_exit(&mut agent, Duration::from_secs(120));
            assert!(status.success(), "the last run ended with {status}");
        }
        logs.push(log);
    }
    assert!(
        kills >= 2,
        "the agent was killed {kills} times over {} packets",
        packets.len()
    );
    let mut logged = Vec::new();
    for log in &logs {
        if size_of(log) > 0 {
            logged.extend(ids_in(log));
        }
    }
    let produced: BTreeSet<String> = logged.iter().cloned().collect();
    assert_eq!(produced.len(), logged.len(), "an id logged twice");
    wait_for("every logged alert", Duration::from_secs(60), || {
        let stored: BTreeSet<String> = stored_ids(&collector.client, &viewer).into_iter().collect();
        produced.is_subset(&stored)
    });
    let stored = stored_ids(&collector.client, &viewer);
    let distinct: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "an alert stored twice");
}
