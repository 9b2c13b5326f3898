//! The agent on a live interface: `otwatch-agent run --iface`. On loopback every frame is seen
//! once (not twice), the policy reloads on SIGHUP and on file change, SIGTERM stops it cleanly;
//! across network namespaces the simulated plant's attacks reach the collector with their
//! ATT&CK techniques and its normal traffic raises nothing. These need root (CI is root) and
//! say so when they skip.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use otwatch_rules::alert::rule_by_id;
use otwatch_tests::collector::{Site, free_addr};
use otwatch_tests::netns::{Plant, root_or_skip};
use otwatch_tests::sim::{self, Layout, Pace, attack::STEPS, peers};
use otwatch_tests::{binary, runtime};
use serde_json::Value;
use tokio_modbus::client::{Client, Reader};
use tokio_modbus::prelude::Request;

/// A running `otwatch-agent run`.
struct Agent {
    child: Child,
    stderr: PathBuf,
    metrics: SocketAddr,
}

impl Agent {
    /// Starts `otwatch-agent run` with `args` and waits until it captures.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr = dir.join("agent.stderr");
        let metrics = free_addr();
        let child = Command::new(binary("otwatch-agent"))
            .arg("run")
            .args(args)
            .args(["--metrics-listen", &metrics.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let agent = Self {
            child,
            stderr,
            metrics,
        };
        agent.wait_for_log("capturing with", Duration::from_secs(20));
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "agent never said {text:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A series from the agent's `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let text = ureq::get(format!("http://{}/metrics", self.metrics))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `series` reaches `value`.
    fn wait_metric(&self, series: &str, value: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.metric(series) < value {
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {} (expected {value}); agent said: {}",
                self.metric(series),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then waits for the exit: the status and everything the agent said.
    fn stop(mut self) -> (ExitStatus, String) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "the agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_missing_interface_is_named_with_the_interfaces_there_are() {
    let out = Command::new(binary("otwatch-agent"))
        .args(["run", "--iface", "nosuch0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("interface \"nosuch0\" does not exist") && stderr.contains("lo"),
        "{stderr}"
    );
}

#[test]
fn without_cap_net_raw_the_agent_says_what_is_missing_and_with_only_that_capability_it_captures() {
    if !root_or_skip("without_cap_net_raw_...") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The agent binary must be reachable by the unprivileged user: copy it somewhere open.
    let bin = dir.path().join("otwatch-agent");
    std::fs::copy(binary("otwatch-agent"), &bin).unwrap();
    let open = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir.path(), 0o755);
    open(&bin, 0o755);
    let unprivileged = |caps: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(caps)
            .arg(&bin)
            .args(["run", "--iface", "lo"]);
        c
    };
    let out = unprivileged(&["--inh-caps=-all"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs the CAP_NET_RAW capability")
            && stderr.contains("AmbientCapabilities=CAP_NET_RAW"),
        "{stderr}"
    );

    let log = dir.path().join("capable.stderr");
    let mut child = unprivileged(&["--inh-caps=+net_raw", "--ambient-caps=+net_raw"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("capturing with TPACKET_V3 ring on lo")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{status}: {}", std::fs::read_to_string(&log).unwrap());
        }
        assert!(Instant::now() < deadline, "never captured");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// Answers Modbus/UDP read-holding-registers requests on `socket` until it is dropped.
fn udp_plc(socket: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 300];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Some(req) = buf.get(..n) else { continue };
            if n < 12 || req[7] != 3 {
                continue;
            }
            let qty = u16::from_be_bytes([req[10], req[11]]).min(100);
            let bytes = (qty * 2) as u8;
            let mut resp = req[..4].to_vec();
            resp.extend_from_slice(&(3 + u16::from(bytes)).to_be_bytes());
            resp.extend_from_slice(&[req[6], 3, bytes]);
            resp.extend(std::iter::repeat_n(0u8, usize::from(bytes)));
            let _ = socket.send_to(&resp, from);
        }
    });
}

const LOOPBACK_POLICY: &str = r#"
version = 1
[[asset]]
name = "hmi"
addresses = ["127.0.20.5", "127.0.20.6"]
role = "master"
[[asset]]
name = "plc"
addresses = ["127.0.10.5", "127.0.10.6"]
role = "slave"
[[allow]]
from = "hmi"
to = "plc"
functions = "read"
"#;

#[test]
fn on_loopback_with_two_workers_each_transaction_and_alert_is_seen_once_the_policy_reloads_and_sigterm_stops_cleanly()
 {
    if !root_or_skip("on_loopback_each_transaction_...") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, LOOPBACK_POLICY).unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let agent = Agent::start(
        dir.path(),
        &[
            "--iface",
            "lo",
            "--policy",
            policy.to_str().unwrap(),
            "--alerts",
            alerts.to_str().unwrap(),
            "--agent-name",
            "lo-agent",
            // Two pipelines: counts are summed, and a rejected policy is still one alert.
            "--workers",
            "2",
        ],
        &[],
    );
    assert!(
        agent.log().contains("ignoring outgoing frames"),
        "{}",
        agent.log()
    );

    // Modbus/UDP: a duplicated datagram would be a duplicated transaction.
    let plc = UdpSocket::bind("127.0.10.5:502").unwrap();
    let plc_addr = plc.local_addr().unwrap();
    udp_plc(plc);
    let hmi = UdpSocket::bind("127.0.20.5:0").unwrap();
    hmi.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for tid in 0..10u16 {
        let mut req = tid.to_be_bytes().to_vec();
        req.extend_from_slice(&[0, 0, 0, 6, 1, 3, 0, 0, 0, 2]);
        hmi.send_to(&req, plc_addr).unwrap();
        let mut buf = [0u8; 64];
        hmi.recv_from(&mut buf).unwrap();
    }

    // Modbus/TCP through a real tokio-modbus stack: 20 reads, then force listen only.
    runtime().block_on(async {
        let plcs = sim::start_plcs(&["127.0.10.6:0".parse().unwrap()])
            .await
            .unwrap();
        let link = peers::Link {
            bind: Some("127.0.20.6".parse().unwrap()),
            tap: None,
            wire: None,
        };
        let mut ctx = peers::connect(&link, plcs[0], 1).await.unwrap();
        for _ in 0..20 {
            ctx.read_holding_registers(0, 3).await.unwrap().unwrap();
        }
        let _ = peers::ask(ctx.call(Request::Custom(0x08, vec![0, 4, 0, 0].into()))).await;
        let _ = ctx.disconnect().await;
    });

    let reads = "otwatch_agent_requests_total{function=\"read_holding_registers\"}";
    agent.wait_metric(reads, 30.0, Duration::from_secs(10));
    agent.wait_metric(
        "otwatch_agent_requests_total{function=\"diagnostics\"}",
        1.0,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(agent.metric(reads), 30.0, "each request counted once");
    assert_eq!(
        agent.metric("otwatch_agent_requests_total{function=\"diagnostics\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("otwatch_agent_drops_total{where=\"kernel\"}"),
        0.0
    );
    assert_eq!(agent.metric("otwatch_agent_truncated_total"), 0.0);

    // A broken policy is refused and the old one stays; a good one (or SIGHUP) is applied.
    std::fs::write(&policy, "version = 1\n[[allow]]\nfrom = \"nobody\"\n").unwrap();
    agent.wait_metric(
        "otwatch_agent_policy_reloads_total{result=\"rejected\"}",
        1.0,
        Duration::from_secs(10),
    );
    // The agent watches the file once for all workers and says so.
    agent.wait_for_log("new policy rejected", Duration::from_secs(10));
    std::fs::write(&policy, LOOPBACK_POLICY).unwrap();
    agent.wait_metric(
        "otwatch_agent_policy_reloads_total{result=\"applied\"}",
        1.0,
        Duration::from_secs(10),
    );
    agent.signal(Signal::SIGHUP);
    agent.wait_metric(
        "otwatch_agent_policy_reloads_total{result=\"applied\"}",
        2.0,
        Duration::from_secs(10),
    );

    let (status, log) = agent.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("stopped (signal)"), "{log}");
    let alerts: Vec<Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |rule: &str| -> Vec<&Value> { alerts.iter().filter(|a| a["rule"] == rule).collect() };
    let listen_only = of("diag.force_listen_only");
    assert_eq!(listen_only.len(), 1, "{alerts:#?}");
    assert_eq!(listen_only[0]["count"], 1, "seen once, not twice");
    assert_eq!(of("agent.policy_reload_failed").len(), 1, "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .all(|a| a["src_ip"] != "127.0.20.5" || a["rule"] == "agent.policy_reload_failed"),
        "the allowed UDP reads raised nothing: {alerts:#?}"
    );
}

/// Every alert the collector holds, following the cursor.
fn stored_alerts(client: &otwatch_tests::collector::Client, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/alerts?limit=1000&cursor={c}"),
            None => "/api/v1/alerts?limit=1000".to_string(),
        };
        let (status, page) = client.get(&path, Some(token));
        assert_eq!(status, 200, "{page}");
        all.extend(page["alerts"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

#[test]
fn attacks_across_namespaces_reach_the_collector_with_their_techniques_and_normal_traffic_raises_nothing()
 {
    if !root_or_skip("attacks_across_namespaces_...") {
        return;
    }
    // The same alerts whether one pipeline or two (two rings in a fanout group) do the work.
    let one = attacks_across_namespaces(1);
    let two = attacks_across_namespaces(2);
    assert_eq!(
        one, two,
        "what is detected depends on the number of workers"
    );
}

/// Plays the plant and the attack across namespaces with the agent running `workers`
/// pipelines; checks what reached the collector and returns its (rule, source, destination,
/// unit) set.
fn attacks_across_namespaces(
    workers: u32,
) -> std::collections::BTreeSet<(String, String, String, String)> {
    let mut layout = Layout::namespaces();
    let plant = Plant::create(
        &[
            "10.66.0.1/24",
            "10.66.0.10/24",
            "10.66.0.11/24",
            "10.66.0.66/24",
        ],
        &["10.66.0.2/24", "10.66.0.3/24"],
    )
    .unwrap();
    // The intruder's crafted frames (a SYN flood, ARP poisoning) go raw onto the captured end.
    layout.wire = Some(plant.outside.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut plcs = plant
        .command(Path::new(env!("CARGO_BIN_EXE_otwatch-sim")))
        .arg("plc")
        .args(
            layout
                .plcs
                .iter()
                .flat_map(|p| ["--listen".to_string(), p.to_string()]),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let site = Site::init(dir.path());
    let token = site.enroll_agent("netns-agent");
    let collector = site.serve();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, sim::POLICY).unwrap();
    let agent = Agent::start(
        dir.path(),
        &[
            "--iface",
            &plant.outside,
            "--agent-name",
            "netns-agent",
            "--collector",
            &site.url(),
            "--ca",
            site.ca().to_str().unwrap(),
            "--outbox",
            dir.path().join("outbox").to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--workers",
            &workers.to_string(),
        ],
        &[("OTWATCH_COLLECTOR_TOKEN", &token)],
    );
    if workers > 1 {
        assert!(
            agent.log().contains(&format!("{workers} workers")),
            "{}",
            agent.log()
        );
    }

    let rt = runtime();
    rt.block_on(async {
        // The PLCs answer once their process has started in the namespace.
        let deadline = Instant::now() + Duration::from_secs(20);
        let link = layout.link(layout.hmi, None);
        while peers::connect_tcp(&link, layout.plcs[0]).await.is_err() {
            assert!(Instant::now() < deadline, "the PLCs never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sim::start_masters(
            &layout,
            &layout.plcs,
            None,
            Pace {
                hmi: Duration::from_millis(300),
                engineering: Duration::from_secs(2),
            },
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        sim::attack_once(&layout, &layout.plcs, None, &|_| {}).await;
        sim::crash_once(&layout, &layout.plcs, None, &|_| {}).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    drop(rt);

    assert!(agent.metric("otwatch_agent_packets_total") > 200.0);
    assert!(agent.metric("otwatch_agent_requests_total{function=\"read_input_registers\"}") > 10.0);
    let (status, log) = agent.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("waiting in the outbox 0"), "{log}");
    let _ = plcs.kill();
    let _ = plcs.wait();

    let alerts = stored_alerts(&collector.client, &site.admin);
    let intruder = layout.intruder.to_string();
    let engineering = layout.engineering.to_string();
    let mut by_rule: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for a in &alerts {
        by_rule
            .entry(a["rule"].as_str().unwrap().to_string())
            .or_default()
            .push(a);
    }
    // The whole script runs within one fold window: each (rule, master, target) is at most
    // the first alert, the window's totals and one more.
    let typed: Vec<otwatch_rules::alert::Alert> = alerts
        .iter()
        .map(|a| serde_json::from_value(a.clone()).unwrap())
        .collect();
    let crowded = otwatch_tests::crowded_windows(&typed, Duration::from_secs(60), 3);
    assert!(crowded.is_empty(), "{workers} workers: {crowded:#?}");
    for step in STEPS {
        let raised = by_rule.get(step.rule).unwrap_or_else(|| {
            panic!(
                "{workers} workers: {} did not raise {}: {by_rule:#?}",
                step.what, step.rule
            )
        });
        let expected: Vec<&str> = rule_by_id(step.rule).unwrap().technique.to_vec();
        for a in raised {
            let techniques: Vec<&str> = a["technique"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(techniques, expected, "{a}");
        }
    }
    // The crash: every master that polled the PLC saw it fall silent and come back; the
    // intruder's alert names its crafted write.
    let availability = |rule: &str, src: &str| {
        by_rule
            .get(rule)
            .is_some_and(|found| found.iter().any(|a| a["src_ip"] == src))
    };
    let hmi = layout.hmi.to_string();
    for src in [&intruder, &hmi, &engineering] {
        assert!(
            availability("availability.device_unresponsive", src),
            "{workers} workers: no outage seen from {src}: {by_rule:#?}"
        );
    }
    for src in [&hmi, &engineering] {
        assert!(
            availability("availability.device_recovered", src),
            "{workers} workers: no recovery seen from {src}: {by_rule:#?}"
        );
    }
    let crashed_by = &by_rule["availability.device_unresponsive"]
        .iter()
        .find(|a| a["src_ip"] == intruder.as_str())
        .unwrap();
    assert_eq!(
        crashed_by["function"], "write_single_register",
        "{crashed_by}"
    );
    assert_eq!(crashed_by["address"], sim::plc::FRAGILE, "{crashed_by}");
    for a in &alerts {
        let src = a["src_ip"].as_str().unwrap();
        let crafted_mac = a["message"]
            .as_str()
            .is_some_and(|m| m.contains("02:66:66:66:66:66"));
        let from_attack = src == intruder
            || (src == engineering && a["rule"] == "policy.setpoint_out_of_bounds")
            || a["rule"].as_str().unwrap().starts_with("availability.")
            || (a["rule"].as_str().unwrap().starts_with("spoof.") && crafted_mac)
            // Spoofed sources: many, so no one address.
            || (a["rule"] == "dos.syn_flood" && src == "0.0.0.0");
        assert!(
            from_attack,
            "{workers} workers: normal traffic raised an alert: {a}"
        );
        assert_eq!(a["agent"], "netns-agent");
    }
    // Every alert is about the attacked PLC, but ARP spoofing's: it names the address
    // claimed (the PLC's, the HMI's, the intruder's own announced from its crafted address).
    let plc: IpAddr = layout.plcs[0].ip();
    let claimed = [plc, layout.hmi, layout.intruder].map(|ip| ip.to_string());
    for a in &alerts {
        let dst = a["dst_ip"].as_str().unwrap();
        let spoofing = a["rule"].as_str().unwrap().starts_with("spoof.");
        assert!(
            dst == plc.to_string() || (spoofing && claimed.iter().any(|c| c == dst)),
            "{workers} workers: {a}"
        );
    }
    // ARP spoofing names the intruder (by the address it announced for itself) and both
    // Ethernet addresses.
    let poisoned = by_rule["spoof.arp"]
        .iter()
        .find(|a| a["dst_ip"] == plc.to_string())
        .unwrap_or_else(|| panic!("{workers} workers: the PLC's address was not seen poisoned"));
    assert_eq!(poisoned["src_ip"], intruder.as_str(), "{poisoned}");
    let message = poisoned["message"].as_str().unwrap();
    assert!(message.contains("02:66:66:66:66:66"), "{message}");
    drop(collector);
    drop(plant);
    alerts
        .iter()
        .map(|a| {
            (
                a["rule"].to_string(),
                a["src_ip"].to_string(),
                a["dst_ip"].to_string(),
                a["unit_id"].to_string(),
            )
        })
        .collect()
}

#[test]
fn learning_on_an_interface_for_a_while_writes_a_policy_of_what_was_seen() {
    if !root_or_skip("learning_on_an_interface_...") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("learned.toml");
    let log = dir.path().join("learn.stderr");
    let mut learn = Command::new(binary("otwatch-agent"))
        .args(["learn", "--iface", "lo", "--duration", "4s", "--out"])
        .arg(&out)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("learning from")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    runtime().block_on(async {
        let plcs = sim::start_plcs(&["127.0.10.7:0".parse().unwrap()])
            .await
            .unwrap();
        let link = peers::Link {
            bind: Some("127.0.20.7".parse().unwrap()),
            tap: None,
            wire: None,
        };
        let mut ctx = peers::connect(&link, plcs[0], 1).await.unwrap();
        for _ in 0..10 {
            ctx.read_holding_registers(0, 3).await.unwrap().unwrap();
        }
        let _ = ctx.disconnect().await;
    });
    let status = learn.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let policy = std::fs::read_to_string(&out).unwrap();
    assert!(
        policy.contains("127.0.20.7") && policy.contains("127.0.10.7"),
        "{policy}"
    );
    assert!(policy.contains("interface lo"), "{policy}");
    let check = Command::new(binary("otwatch-agent"))
        .args(["check", "--policy"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
