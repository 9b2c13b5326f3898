//! Collector replicas sharing one PostgreSQL database, as deploy/README.md lays them out: a
//! primary with a synchronous standby, three `otwatch-collector serve` processes on one URL
//! naming both servers, two agents listing the replicas in different orders.
//!
//! While the agents deliver an attack, one replica is killed with SIGKILL and the primary is
//! stopped and its standby promoted. Then: every alert either agent raised is stored exactly
//! once; every replica answers the same alerts, incidents, assets, agents and posture; and a
//! live-feed subscriber on a third replica, reconnecting with `Last-Event-ID` whenever its
//! replica lost the database, saw every alert once, in sequence order.
//!
//! Needs PostgreSQL's server binaries (CI installs them and sets `OTWATCH_PG_TEST=1`); says so
//! and skips elsewhere.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otwatch_kv_postgres::throwaway::Cluster;
use otwatch_tests::attack::{POLICY, record_attack};
use otwatch_tests::collector::{Client, Collector, Site, free_addr, https_agent, token_in};
use otwatch_tests::{binary, packets_of, read_alerts, runtime, wait_for, wait_success};
use serde_json::Value;

/// Every alert id a replica holds, in the order its pages give them.
fn stored(client: &Client, viewer: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/api/v1/alerts?limit=500".to_string();
    loop {
        let (status, page) = client.get(&path, Some(viewer));
        assert_eq!(status, 200, "{page}");
        for a in page["alerts"].as_array().unwrap() {
            ids.push(a["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/alerts?limit=500&cursor={next}"),
            None => return ids,
        }
    }
}

/// What a replica answers about the plant, for comparison across replicas.
fn posture(client: &Client, viewer: &str) -> Value {
    let mut all = serde_json::Map::new();
    for path in [
        "/api/v1/incidents?limit=1000",
        "/api/v1/assets",
        "/api/v1/posture",
    ] {
        let (status, body) = client.get(path, Some(viewer));
        assert_eq!(status, 200, "{path}: {body}");
        all.insert(path.to_string(), body);
    }
    let (status, mut agents) = client.get("/api/v1/agents", Some(viewer));
    assert_eq!(status, 200);
    // Whether an agent is online depends on when the answer was made; what was stored does not.
    for a in agents.as_array_mut().into_iter().flatten() {
        if let Some(o) = a.as_object_mut() {
            o.remove("online");
            o.remove("seen_at");
            o.remove("heartbeat");
        }
    }
    all.insert("agents".into(), agents);
    let mut posture = Value::Object(all);
    // Ages are relative to the moment of the answer.
    strip(
        &mut posture,
        &["age_s", "last_seen_s", "generated_at", "now"],
    );
    posture
}

fn strip(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(o) => {
            for k in keys {
                o.remove(*k);
            }
            for v in o.values_mut() {
                strip(v, keys);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| strip(v, keys)),
        _ => {}
    }
}

/// A live-feed subscriber that reconnects with `Last-Event-ID`, as a browser does.
struct Subscriber {
    /// (event id, alert id) in the order received.
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    reconnects: Arc<Mutex<u32>>,
}

impl Subscriber {
    fn start(base: String, ca: PathBuf, viewer: String, until: Instant) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(Mutex::new(0));
        let (s, r) = (seen.clone(), reconnects.clone());
        std::thread::spawn(move || {
            let agent = https_agent(&ca, Duration::from_secs(60));
            let mut last: Option<u64> = None;
            while Instant::now() < until {
                let mut request = agent
                    .get(format!("{base}/api/v1/alerts/stream"))
                    .header("Authorization", format!("Bearer {viewer}"));
                if let Some(id) = last {
                    request = request.header("Last-Event-ID", id.to_string());
                }
                let Ok(response) = request.call() else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let reader = std::io::BufReader::new(response.into_body().into_reader());
                let mut id = None;
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        let alert: Value = serde_json::from_str(v.trim()).unwrap();
                        let seq = id.take().unwrap();
                        s.lock()
                            .unwrap()
                            .push((seq, alert["id"].as_str().unwrap().to_string()));
                        last = Some(seq);
                    }
                }
                *r.lock().unwrap() += 1;
            }
        });
        Self { seen, reconnects }
    }
}

/// A TCP syslog receiver (RFC 6587 octet counting): the alert id of every message.
fn syslog_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let all = ids.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let ids = all.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn);
                loop {
                    let mut len = Vec::new();
                    if reader.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
                        return;
                    };
                    let mut message = vec![0; n];
                    if std::io::Read::read_exact(&mut reader, &mut message).is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&message);
                    if let Some(id) = text.split(' ').find_map(|w| w.strip_prefix("externalId=")) {
                        ids.lock().unwrap().push(id.to_string());
                    }
                }
            });
        }
    });
    (port, ids)
}

/// An agent replaying `packets` into the collectors at `urls`, in that order of preference.
struct Agent {
    child: Child,
    stream: pcap_file::pcap::PcapWriter<std::process::ChildStdin>,
    log: PathBuf,
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    fn start(
        dir: &Path,
        name: &str,
        token: &str,
        urls: &[String],
        ca: &Path,
        policy: &Path,
        header: pcap_file::pcap::PcapHeader,
    ) -> Self {
        let log = dir.join(format!("{name}.jsonl"));
        let mut command = Command::new(binary("otwatch-agent"));
        command
            .args([
                "run",
                "--pcap-stream",
                "-",
                "--agent-name",
                name,
                "--policy",
            ])
            .arg(policy)
            .arg("--alerts")
            .arg(&log)
            .arg("--ca")
            .arg(ca)
            .arg("--outbox")
            .arg(dir.join(format!("{name}.outbox")))
            .args(["--heartbeat-interval", "1s"])
            .env("OTWATCH_COLLECTOR_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
        for url in urls {
            command.args(["--collector", url]);
        }
        let mut child = command.spawn().unwrap();
        let stream =
            pcap_file::pcap::PcapWriter::with_header(child.stdin.take().unwrap(), header).unwrap();
        Self { child, stream, log }
    }

    fn finish(self) -> BTreeSet<String> {
        drop(self.stream);
        let mut child = self.child;
        wait_success(&mut child, "an agent", Duration::from_secs(180));
        read_alerts(&self.log).into_iter().map(|a| a.id).collect()
    }
}

#[test]
fn replicas_on_postgres_lose_and_repeat_nothing_through_a_replica_kill_and_a_failover() {
    let Some(primary) = Cluster::for_test("replicas_on_postgres") else {
        return;
    };
    primary.create_database("otwatch").unwrap();
    let standby = primary.synchronous_standby().unwrap();
    let url = format!(
        "postgresql://otwatch@127.0.0.1:{},127.0.0.1:{}/otwatch?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let password = primary.password_file().display().to_string();
    let store = [
        "--store-url",
        url.as_str(),
        "--store-password-file",
        &password,
    ];

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("attack.pcap");
    runtime().block_on(record_attack(&pcap)).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let (header, packets) = packets_of(&pcap);

    // One site, initialised once into the database; each replica gets a copy of its folder
    // (certificate authority, server certificate, the database's URL), made before anyone is
    // enrolled: credentials live in the database, so every replica knows every agent at once.
    let site = Site::init_with(&dir.path().join("r1"), &store);
    let mut replicas = vec![site];
    for name in ["r2", "r3"] {
        let copy = dir.path().join(name).join("collector");
        std::fs::create_dir(dir.path().join(name)).unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&replicas[0].data)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(copied.success());
        replicas.push(Site {
            data: copy,
            addr: free_addr(),
            admin: replicas[0].admin.clone(),
        });
    }
    // The replicas read the URL `init` left in their folders. Each is configured to export to
    // one syslog receiver: one replica at a time does.
    let pass = ["--store-password-file", password.as_str()];
    let (syslog_port, exported) = syslog_receiver();
    let settings =
        format!("[export.syslog]\naddress = \"127.0.0.1:{syslog_port}\"\ntransport = \"tcp\"");
    let serve = |site: &Site| site.serve_with_settings(&settings, &pass);
    let mut running: Vec<Option<Collector>> = replicas.iter().map(|r| Some(serve(r))).collect();
    let enroll = |site: &Site, args: &[&str]| {
        let mut all = vec!["enroll"];
        all.extend_from_slice(args);
        all.extend_from_slice(&pass);
        token_in(&site.run(&all))
    };
    let tokens = [
        enroll(&replicas[0], &["--agent", "hall-1"]),
        enroll(&replicas[2], &["--agent", "hall-2"]),
    ];
    let viewer = enroll(&replicas[1], &["--viewer", "soc"]);
    let leaving = enroll(&replicas[0], &["--viewer", "leaving"]);
    // `init` left the store's settings (URL, password file) in the folder: no flags needed.
    let listed = replicas[2].run(&["list"]);
    for name in ["admin", "hall-1", "hall-2", "soc", "leaving"] {
        assert!(
            listed.contains(name),
            "{name} listed from r3's folder: {listed}"
        );
    }
    // A credential enrolled from one folder works on every replica within a second; revoked
    // from another, it is refused by every replica within a second.
    for r in &running {
        let client = &r.as_ref().unwrap().client;
        wait_for(
            "a replica to know the new viewer",
            Duration::from_secs(5),
            || client.get("/api/v1/agents", Some(&leaving)).0 == 200,
        );
    }
    replicas[1].run(&["revoke", "leaving"]);
    for r in &running {
        let client = &r.as_ref().unwrap().client;
        wait_for(
            "a replica to refuse the revoked viewer",
            Duration::from_secs(10),
            || client.get("/api/v1/agents", Some(&leaving)).0 == 401,
        );
    }
    // The audit log is the database's: commands run from any folder show on every replica.
    for r in &running {
        let (status, audit) = r
            .as_ref()
            .unwrap()
            .client
            .get("/api/v1/audit?limit=100", Some(&replicas[0].admin));
        assert_eq!(status, 200, "{audit}");
        let events: Vec<(String, String)> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap_or_default().to_string();
                (e["event"].as_str().unwrap().to_string(), name)
            })
            .collect();
        assert_eq!(
            events.first(),
            Some(&("revoke".to_string(), "leaving".to_string())),
            "{events:?}"
        );
        for name in ["admin", "hall-1", "hall-2", "soc", "leaving"] {
            assert!(
                events.contains(&("enroll".to_string(), name.to_string())),
                "{events:?}"
            );
        }
    }
    let urls: Vec<String> = replicas.iter().map(Site::url).collect();
    let ca = replicas[0].ca();

    let until = Instant::now() + Duration::from_secs(240);
    let subscriber = Subscriber::start(urls[2].clone(), ca.clone(), viewer.clone(), until);
    let mut agents = [
        Agent::start(
            dir.path(),
            "hall-1",
            &tokens[0],
            &urls,
            &ca,
            &policy,
            header,
        ),
        Agent::start(
            dir.path(),
            "hall-2",
            &tokens[1],
            &[urls[1].clone(), urls[0].clone(), urls[2].clone()],
            &ca,
            &policy,
            header,
        ),
    ];
    let play = |agents: &mut [Agent; 2], range: std::ops::Range<usize>| {
        for packet in &packets[range] {
            for agent in agents.iter_mut() {
                agent.stream.write_packet(packet).unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Up to the first alert, then on through half of what is left.
    let mut next = 0;
    while next < packets.len() && read_alerts(&agents[0].log).is_empty() {
        play(&mut agents, next..next + 1);
        next += 1;
        let waited = Instant::now();
        while read_alerts(&agents[0].log).is_empty() && waited.elapsed() < Duration::from_millis(30)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let third = next + (packets.len() - next) / 3;
    play(&mut agents, next..third);
    let r1 = running[0].as_ref().unwrap();
    wait_for("r1 to store alerts", Duration::from_secs(30), || {
        !stored(&r1.client, &viewer).is_empty()
    });
    let logged = |agents: &[Agent; 2]| {
        agents
            .iter()
            .map(|a| read_alerts(&a.log).len())
            .sum::<usize>()
    };
    let before_kill = logged(&agents);
    // SIGKILL in the middle of delivery: hall-1 moves to r2.
    running[0].take().unwrap().kill_9();
    let two_thirds = third + (packets.len() - third) / 2;
    play(&mut agents, third..two_thirds);

    // The primary stops; the standby, which has every acknowledged commit, is promoted.
    let before_failover = logged(&agents);
    primary.stop().unwrap();
    let r2 = running[1].as_ref().unwrap();
    wait_for(
        "r2 to say it lost its database",
        Duration::from_secs(30),
        || r2.client.get("/readyz", None).0 == 503,
    );
    standby.promote().unwrap();
    wait_for(
        "r2 to find the promoted standby",
        Duration::from_secs(60),
        || r2.client.get("/readyz", None).0 == 200,
    );
    play(&mut agents, two_thirds..packets.len());
    println!("alerts raised: {before_kill} before the kill, {before_failover} before the failover");
    let [first, second] = agents;
    let raised: BTreeSet<String> = first.finish().into_iter().chain(second.finish()).collect();
    assert!(
        0 < before_kill && before_kill < before_failover && before_failover < raised.len(),
        "alerts were delivered in every phase ({before_kill}, {before_failover}, {})",
        raised.len()
    );

    // r1 comes back on the same URL and serves the same answers.
    running[0] = Some(serve(&replicas[0]));
    let clients: Vec<&Client> = running
        .iter()
        .map(|r| &r.as_ref().unwrap().client)
        .collect();
    for client in &clients {
        wait_for(
            "a replica to hold every alert",
            Duration::from_secs(30),
            || stored(client, &viewer).len() >= raised.len(),
        );
    }
    let reference = stored(clients[0], &viewer);
    let unique: BTreeSet<String> = reference.iter().cloned().collect();
    assert_eq!(unique.len(), reference.len(), "an alert was stored twice");
    assert_eq!(unique, raised, "every alert the agents raised, stored");
    let reference_posture = posture(clients[0], &viewer);
    for (i, client) in clients.iter().enumerate().skip(1) {
        assert_eq!(
            stored(client, &viewer),
            reference,
            "replica r{} alerts",
            i + 1
        );
        assert_eq!(
            posture(client, &viewer),
            reference_posture,
            "replica r{} posture",
            i + 1
        );
    }

    wait_for(
        "the subscriber to see every alert",
        Duration::from_secs(30),
        || subscriber.seen.lock().unwrap().len() >= raised.len(),
    );
    let seen = subscriber.seen.lock().unwrap().clone();
    let ids: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    let unique_seen: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique_seen.len(), ids.len(), "the feed sent an alert twice");
    assert_eq!(unique_seen, raised, "the feed on r3 sent every alert");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "event ids rise: {seen:?}"
    );
    // A subscriber that moves to another replica resumes there from its last event id: the
    // rest, in the same order, nothing twice.
    let (resume_at, rest) = (seen[4].0, &seen[5..]);
    let response = https_agent(&ca, Duration::from_secs(30))
        .get(format!("{}/api/v1/alerts/stream", urls[1]))
        .header("Authorization", format!("Bearer {viewer}"))
        .header("Last-Event-ID", resume_at.to_string())
        .call()
        .unwrap();
    let mut resumed = Vec::new();
    let mut id = None;
    for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            let alert: Value = serde_json::from_str(v.trim()).unwrap();
            resumed.push((
                id.take().unwrap(),
                alert["id"].as_str().unwrap().to_string(),
            ));
            if resumed.len() == rest.len() {
                break;
            }
        }
    }
    assert_eq!(resumed, rest, "resumed on r2 after event {resume_at}");
    // The syslog receiver got every alert from whichever replica exported: at least once,
    // once unless the exporting replica was the one killed mid-page.
    wait_for(
        "every alert to be exported",
        Duration::from_secs(60),
        || {
            let got: BTreeSet<String> = exported.lock().unwrap().iter().cloned().collect();
            got == raised
        },
    );
    let sent = exported.lock().unwrap().len();
    println!(
        "{} alerts; the subscriber reconnected {} times; {sent} syslog messages",
        raised.len(),
        subscriber.reconnects.lock().unwrap()
    );
}
