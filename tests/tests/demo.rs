//! The README's first command: `otwatch-demo` starts a collector, an agent and the simulated
//! plant; within the first minute the collector knows the agent, the plant's assets and the
//! attack's incidents, every attack's alert is printed as the collector receives it, and the
//! demo stops cleanly.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use otwatch_tests::collector::{Client, free_addr};
use otwatch_tests::sim::attack::STEPS;

/// One demo at a time: each takes the agent's metrics port 9102 when it looks free, so two
/// starting together could both pick it.
static ONE_DEMO: Mutex<()> = Mutex::new(());

#[test]
fn the_demo_shows_agents_assets_incidents_and_every_attack_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Bound, not left to `..`: the guard must live as long as the test's demo does.
    let Demo {
        _one: _only_demo,
        mut demo,
        data,
        listen,
        stdout_path,
        stderr_path,
    } = Demo::start(dir.path(), "58s");

    // The first attack comes 10 s in; the agent reports the hosts it saw every 10 s; the README
    // promises the dashboard shows it all within a minute. Poll until it does.
    let deadline = Instant::now() + Duration::from_secs(52);
    let hosts = [
        "127.0.10.1",
        "127.0.10.2",
        "127.0.20.1",
        "127.0.30.1",
        "127.0.66.6",
    ];
    let (client, admin, assets) = loop {
        std::thread::sleep(Duration::from_secs(2));
        let (ca, token) = (data.join("collector/ca.pem"), data.join("admin.token"));
        let admin = std::fs::read_to_string(token).unwrap_or_default();
        if admin.is_empty() || !ca.exists() {
            assert!(
                Instant::now() < deadline,
                "the demo made no collector within 52 s: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
            continue;
        }
        let client = Client::new(&format!("https://{listen}"), &ca);
        let (_, assets) = client.get("/api/v1/assets", Some(admin.trim()));
        // Known, and for the attacked PLC identified (its 43/14 answer was decoded).
        let known = |ip: &str| {
            assets.as_array().is_some_and(|a| {
                a.iter()
                    .any(|h| h["ip"] == ip && (ip != "127.0.10.1" || h["vendor"] != Value::Null))
            })
        };
        // And an incident per attack step: the attack is over.
        let (_, incidents) = client.get("/api/v1/incidents", Some(admin.trim()));
        let incidents = incidents.as_array().map_or(0, Vec::len);
        if hosts.iter().all(|h| known(h)) && incidents >= STEPS.len() {
            break (client, admin, assets);
        }
        assert!(
            Instant::now() < deadline,
            "after 52 s, {incidents} incidents and hosts {assets}\ndemo said: {}\n{}{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            log_tail(&stderr_path),
            ["agent.log", "collector.log"]
                .map(|name| log_tail(&data.join(name)))
                .concat()
        );
    };
    let token = Some(admin.trim());
    let (_, agents) = client.get("/api/v1/agents", token);
    assert_eq!(agents[0]["heartbeat"]["agent"], "demo-agent", "{agents}");
    assert_eq!(agents[0]["online"], true, "{agents}");
    let plc = assets
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == "127.0.10.1")
        .unwrap();
    assert_eq!(
        (&plc["vendor"], &plc["product_code"]),
        (&"otwatch".into(), &"SIM-TANK-1".into()),
        "{plc}"
    );

    let status = demo.wait().unwrap();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("dashboard:  https://{listen}/#token=otw_")),
        "{stdout}"
    );
    for step in STEPS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ALERT") && l.contains(step.rule)),
            "no alert for {}: {stdout}",
            step.what
        );
    }
    assert!(stdout.contains("stopped."), "{stdout}");
    let agent_log = std::fs::read_to_string(data.join("agent.log")).unwrap();
    assert!(agent_log.contains("waiting in the outbox 0"), "{agent_log}");
    // The collector is gone: its port is free again.
    assert!(std::net::TcpListener::bind(listen).is_ok());
}

#[test]
fn a_demo_whose_agent_dies_stops_says_where_to_look_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    // Bound, not left to `..`: the guard must live as long as the test's demo does.
    let Demo {
        _one: _only_demo,
        mut demo,
        data,
        listen,
        stderr_path,
        ..
    } = Demo::start(dir.path(), "120s");
    let config = data.join("agent.toml");
    let deadline = Instant::now() + Duration::from_secs(40);
    let agent = loop {
        let capturing = std::fs::read_to_string(data.join("agent.log"))
            .is_ok_and(|log| log.contains("capturing with"));
        if capturing && let Some(pid) = process_with_args(&["run", config.to_str().unwrap()]) {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's agent did not start within 40 s: {}",
            log_tail(&stderr_path)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGKILL).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo ran on for 30 s without its agent: {}",
            log_tail(&stderr_path)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the agent stopped (signal: 9")
            && stderr.contains(&data.join("agent.log").display().to_string()),
        "{stderr}"
    );
    // The collector was stopped too: its port is free again.
    assert!(std::net::TcpListener::bind(listen).is_ok());
}

/// A running `otwatch-demo` and where it keeps what it says.
struct Demo {
    /// Held while the demo runs (see [`ONE_DEMO`]).
    _one: MutexGuard<'static, ()>,
    demo: Child,
    data: PathBuf,
    listen: SocketAddr,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Demo {
    /// Starts the demo with its state and output under `dir`, to stop by itself after `duration`.
    fn start(dir: &Path, duration: &str) -> Self {
        let one = ONE_DEMO.lock().unwrap_or_else(PoisonError::into_inner);
        let data = dir.join("demo");
        let listen = free_addr();
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        let demo = Command::new(env!("CARGO_BIN_EXE_otwatch-demo"))
            // Not under `cargo run`: use the binaries `cargo test` built, do not build.
            .env_remove("CARGO")
            .args(["--data", data.to_str().unwrap()])
            .args(["--listen", &listen.to_string()])
            .args(["--duration", duration])
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            _one: one,
            demo,
            data,
            listen,
            stdout_path,
            stderr_path,
        }
    }
}

/// The process whose command line holds every one of `args`, if one is running.
fn process_with_args(args: &[&str]) -> Option<nix::unistd::Pid> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.iter()
                .all(|a| words.contains(&a.as_bytes()))
                .then_some(nix::unistd::Pid::from_raw(pid))
        })
}

/// The last lines of a log, headed by its path, for a failure's message: what the demo's
/// processes said is all there is to go on when the demo fails on a CI machine.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines
        .get(lines.len().saturating_sub(40)..)
        .unwrap_or_default();
    format!("--- {} ---\n{}\n", path.display(), tail.join("\n"))
}
