//! Collector replicas as an agent sees them: several collectors listed, the first preferred.
//! With the preferred one down, delivery goes to the next at once; when it is back, delivery
//! returns to it within `--collector-return-after`; the heartbeat and `/metrics` say which one
//! is in use; and every alert the agent raised reaches exactly one of them, once.
//!
//! The two collectors here are copies of one data folder (one certificate authority, one
//! credential for the agent), each with its own sled store: replicas sharing one database are
//! the PostgreSQL backend's part.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otwatch_tests::attack::{POLICY, record_attack};
use otwatch_tests::collector::{Client, Site, free_addr};
use otwatch_tests::{binary, packets_of, read_alerts, runtime, wait_for, wait_success};

fn ids_in(alerts: &Path) -> BTreeSet<String> {
    read_alerts(alerts).into_iter().map(|a| a.id).collect()
}

/// Every alert id a collector holds (the test's alerts fit one page).
fn stored(client: &Client, viewer: &str) -> Vec<String> {
    let (status, page) = client.get("/api/v1/alerts?limit=1000", Some(viewer));
    assert_eq!(status, 200, "{page}");
    page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// `otwatch_agent_collector_in_use` for `collector`, from the agent's `/metrics`.
fn in_use(metrics: SocketAddr, collector: &str) -> Option<f64> {
    let text = ureq::get(format!("http://{metrics}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    let series = format!("otwatch_agent_collector_in_use{{collector=\"{collector}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
}

#[test]
fn an_agent_fails_over_to_the_next_collector_and_returns_to_the_preferred_one_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("attack.pcap");
    runtime().block_on(record_attack(&pcap)).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let (header, packets) = packets_of(&pcap);

    // Two replicas of one site: A, the preferred one, starts down.
    std::fs::create_dir(dir.path().join("a")).unwrap();
    let a = Site::init(&dir.path().join("a"));
    let token = a.enroll_agent("hall-1");
    let viewer = a.enroll_viewer("soc");
    let b_data = dir.path().join("b");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&a.data)
        .arg(&b_data)
        .status()
        .unwrap();
    assert!(copied.success());
    let b = Site {
        data: b_data,
        addr: free_addr(),
        admin: a.admin.clone(),
    };
    let collector_b = b.serve();

    let metrics = free_addr();
    let log = dir.path().join("alerts.jsonl");
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
        .args(["--collector", &a.url(), "--collector", &b.url(), "--ca"])
        .arg(a.ca())
        .arg("--outbox")
        .arg(dir.path().join("outbox"))
        .args([
            "--collector-return-after",
            "2s",
            "--heartbeat-interval",
            "1s",
            "--metrics-listen",
            &metrics.to_string(),
        ])
        .env("OTWATCH_COLLECTOR_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stream =
        pcap_file::pcap::PcapWriter::with_header(agent.stdin.take().unwrap(), header).unwrap();

    // The first alerts: A is down, so B takes them, at once.
    let mut next = 0;
    while next < packets.len() && ids_in(&log).is_empty() {
        stream.write_packet(&packets[next]).unwrap();
        next += 1;
        let waited = Instant::now();
        while ids_in(&log).is_empty() && waited.elapsed() < Duration::from_millis(30) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(
        next < packets.len(),
        "the first alert came with the last packet"
    );
    wait_for(
        "B to take the first alerts",
        Duration::from_secs(20),
        || !stored(&collector_b.client, &viewer).is_empty(),
    );
    wait_for("the metrics to name B", Duration::from_secs(10), || {
        in_use(metrics, &b.url()) == Some(1.0) && in_use(metrics, &a.url()) == Some(0.0)
    });
    wait_for(
        "B to hear that it is the one in use",
        Duration::from_secs(10),
        || {
            let (_, agents) = collector_b.client.get("/api/v1/agents", Some(&viewer));
            agents[0]["heartbeat"]["collector"].as_str() == Some(b.url().as_str())
        },
    );

    // A comes back: delivery returns to it, and the rest of the attack goes there.
    let collector_a = a.serve();
    wait_for("delivery to return to A", Duration::from_secs(20), || {
        in_use(metrics, &a.url()) == Some(1.0)
    });
    wait_for(
        "A to hear that it is the one in use",
        Duration::from_secs(10),
        || {
            let (_, agents) = collector_a.client.get("/api/v1/agents", Some(&viewer));
            agents[0]["heartbeat"]["collector"].as_str() == Some(a.url().as_str())
        },
    );
    let on_b = stored(&collector_b.client, &viewer);
    for packet in &packets[next..] {
        stream.write_packet(packet).unwrap();
    }
    drop(stream);
    wait_success(&mut agent, "the agent", Duration::from_secs(120));

    let logged = ids_in(&log);
    let on_a = stored(&collector_a.client, &viewer);
    let on_b_after = stored(&collector_b.client, &viewer);
    assert_eq!(on_b_after, on_b, "nothing more went to B once A was back");
    assert!(!on_a.is_empty(), "the rest of the attack went to A");
    let mut all: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
    all.sort();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "an alert reached both replicas");
    assert_eq!(
        unique, logged,
        "every alert the agent raised, on one replica"
    );
}
