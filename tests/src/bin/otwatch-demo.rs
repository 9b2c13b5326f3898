//! `otwatch-demo`: the whole system in a minute, on one machine, without root.
//!
//! Starts a collector (embedded store, HTTPS with its own certificate authority) and an agent,
//! as the separate processes they are in a plant, and a simulated plant whose traffic reaches
//! the agent through a software SPAN port (a pcap stream on the agent's standard input). The
//! plant's HMI and engineering workstation work normally; every minute an intruder runs the
//! attack script. Each alert is printed as the collector receives it; the dashboard's address
//! and login are printed at start. Ctrl-C stops the plant, lets the agent deliver what it
//! still holds, then stops the collector.
//!
//! State lives in `./otwatch-demo` (kept across runs: the alerts of earlier runs stay).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use otwatch_tests::collector::trusting;
use otwatch_tests::sim::{self, Layout, Pace, tap::Tap};
use serde_json::Value;

/// Runs a collector, an agent and a simulated plant with attacks, until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "otwatch-demo", version, about)]
struct Cli {
    /// Where the demo keeps its state (collector store, credentials, outbox, logs).
    #[arg(long, value_name = "DIR", default_value = "otwatch-demo")]
    data: PathBuf,
    /// Where the collector listens (another free port is taken if this one is busy).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Time between two runs of the attack script (the first comes 10 s after start).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    attack_every: Duration,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// The agent's name at the collector.
const AGENT: &str = "demo-agent";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match demo(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otwatch-demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The agent and collector binaries, built first when the demo runs under `cargo run`.
fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("where is this program?")?;
    let dir = exe
        .parent()
        .context("this program has no folder")?
        .to_path_buf();
    if let (Ok(cargo), Ok(manifest)) = (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_DIR"))
    {
        let workspace = Path::new(&manifest).join("..").join("Cargo.toml");
        let mut build = Command::new(cargo);
        build
            .arg("build")
            .arg("--manifest-path")
            .arg(&workspace)
            .args(["--bin", "otwatch-agent", "--bin", "otwatch-collector"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        eprintln!("otwatch-demo: building the agent and the collector");
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build failed");
        }
    }
    let agent = dir.join("otwatch-agent");
    let collector = dir.join("otwatch-collector");
    for b in [&agent, &collector] {
        if !b.exists() {
            bail!(
                "{} is missing: run `cargo build --release` (or start the demo with `cargo run --release --bin otwatch-demo`)",
                b.display()
            );
        }
    }
    Ok((agent, collector))
}

/// The token in output like `admin token (shown once): otw_...` or `collector_token = "otw_..."`.
fn token_in(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| w.starts_with("otw_"))
        .map(str::to_string)
}

/// Runs a collector subcommand, returning its standard output.
fn collector_cmd(collector: &Path, args: &[&str], data: &Path) -> anyhow::Result<String> {
    let out = Command::new(collector)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .with_context(|| format!("running {}", collector.display()))?;
    if !out.status.success() {
        bail!(
            "otwatch-collector {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A token kept in `file`, or made by `make` and kept there.
fn kept_token(
    file: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(file)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let token = make()?;
    std::fs::write(file, format!("{token}\n")).with_context(|| file.display().to_string())?;
    Ok(token)
}

/// `wanted` if free, else any free loopback port; port 0 also means any free port.
fn free_addr(wanted: SocketAddr) -> anyhow::Result<SocketAddr> {
    if let Ok(listener) = TcpListener::bind(wanted) {
        return Ok(listener.local_addr()?);
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// An HTTPS client trusting the demo's certificate authority.
fn https_client(ca: &Path, timeout: Option<Duration>) -> anyhow::Result<ureq::Agent> {
    let tls = trusting(ca).with_context(|| ca.display().to_string())?;
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .new_agent())
}

/// Spawns a child in its own process group, so Ctrl-C reaches only the demo, which stops the
/// children in the right order.
fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| log.display().to_string())?;
    command
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {command:?}"))
}

/// A child process that is stopped when dropped, so no way out of the demo, error or not,
/// leaves it running. Declared after the collector, the agent is stopped first.
struct Running {
    child: Child,
    /// How long it may take to stop before it is killed.
    wait: Duration,
}

impl Running {
    fn new(child: Child, wait: Duration) -> Self {
        Self { child, wait }
    }

    /// Stops it: SIGTERM, then SIGKILL after the wait. Once it is gone (and reaped) this does
    /// nothing: `try_wait` keeps answering with its status, and its pid may be another
    /// process's by then, so it is not signalled.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + self.wait;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints every alert the collector's live feed carries, as it arrives.
fn print_feed(client: ureq::Agent, url: String, token: String) {
    std::thread::spawn(move || {
        let Ok(response) = client
            .get(format!("{url}/api/v1/alerts/stream"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
        else {
            eprintln!("otwatch-demo: the live feed is not available");
            return;
        };
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(alert) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let s = |k: &str| alert[k].as_str().unwrap_or("").to_string();
            let count = alert["count"].as_u64().unwrap_or(1);
            println!(
                "ALERT {:<8} {:<30} {}:{} -> {}:{}  {}{}",
                s("severity").to_uppercase(),
                s("rule"),
                s("src_ip"),
                alert["src_port"],
                s("dst_ip"),
                alert["dst_port"],
                s("title"),
                if count > 1 {
                    format!(" (x{count})")
                } else {
                    String::new()
                }
            );
        }
    });
}

fn demo(cli: &Cli) -> anyhow::Result<()> {
    let (agent_bin, collector_bin) = binaries()?;
    std::fs::create_dir_all(&cli.data).with_context(|| cli.data.display().to_string())?;
    let data = std::fs::canonicalize(&cli.data)?;
    let store = data.join("collector");
    if !store.join("ca.pem").exists() {
        let _ = std::fs::remove_file(data.join("admin.token"));
        let _ = std::fs::remove_file(data.join("agent.token"));
    }
    let admin = kept_token(&data.join("admin.token"), || {
        let out = collector_cmd(&collector_bin, &["init"], &store)?;
        token_in(&out).context("init printed no admin token")
    })?;
    kept_token(&data.join("agent.token"), || {
        let out = collector_cmd(&collector_bin, &["enroll", "--agent", AGENT], &store)?;
        token_in(&out).context("enroll printed no token")
    })?;
    let listen = free_addr(cli.listen)?;
    let metrics = free_addr(SocketAddr::from(([127, 0, 0, 1], 9102)))?;
    let url = format!("https://{listen}");
    let ca = store.join("ca.pem");
    let policy = data.join("policy.toml");
    if !policy.exists() {
        std::fs::write(&policy, sim::POLICY)?;
    }
    let config = data.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by otwatch-demo at each start.\nagent_name = \"{AGENT}\"\ncollector_url = \"{url}\"\ncollector_token_file = \"{}\"\ncollector_ca = \"{}\"\noutbox = \"{}\"\nmetrics_listen = \"{metrics}\"\npolicy = \"{}\"\n",
            data.join("agent.token").display(),
            ca.display(),
            data.join("outbox").display(),
            policy.display()
        ),
    )?;

    let mut collector = Running::new(
        spawn(
            Command::new(&collector_bin)
                .arg("serve")
                .arg("--data")
                .arg(&store)
                .arg("--listen")
                .arg(listen.to_string()),
            &data.join("collector.log"),
        )?,
        Duration::from_secs(10),
    );
    let client = https_client(&ca, Some(Duration::from_secs(5)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).call()
            && r.status() == 200
        {
            break;
        }
        if let Ok(Some(status)) = collector.child.try_wait() {
            bail!(
                "the collector stopped ({status}); see {} (is an earlier demo still running on {}?)",
                data.join("collector.log").display(),
                data.display()
            );
        }
        if Instant::now() > deadline {
            bail!("the collector did not answer on {url} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    print_feed(https_client(&ca, None)?, url.clone(), admin.clone());

    // Given time to deliver what it holds when stopped.
    let mut agent = Running::new(
        spawn(
            Command::new(&agent_bin)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .args(["--pcap-stream", "-"])
                .stdin(Stdio::piped()),
            &data.join("agent.log"),
        )?,
        Duration::from_secs(70),
    );
    let Some(agent_stdin) = agent.child.stdin.take() else {
        bail!("the agent's standard input is not a pipe");
    };

    println!("otwatch demo running. Ctrl-C stops it.");
    println!("  dashboard:  {url}/#token={admin}");
    println!(
        "              (the certificate comes from the demo's own authority, {}: your browser will warn once)",
        ca.display()
    );
    println!(
        "  API:        curl --cacert {} -H 'Authorization: Bearer {admin}' {url}/api/v1/posture",
        ca.display()
    );
    println!("  metrics:    http://{metrics}/metrics (agent), {url}/metrics (collector)");
    println!(
        "  policy:     {} (edit it: the agent reloads it on save)",
        policy.display()
    );
    println!("  logs:       {}/{{agent,collector}}.log", data.display());
    println!(
        "The plant: tank PLCs at 127.0.10.1-2, HMI 127.0.20.1, engineering 127.0.30.1; intruder 127.0.66.6 attacks 10 s after start, then every {}.",
        humantime::format_duration(cli.attack_every)
    );
    let _ = std::io::stdout().flush();

    let runtime = tokio::runtime::Runtime::new()?;
    let attack_every = cli.attack_every;
    let stop_after = cli.duration;
    let (agent_watched, collector_watched) = (&mut agent.child, &mut collector.child);
    let ran = runtime.block_on(async move {
        let tap = Tap::new(Box::new(agent_stdin))?;
        let layout = Layout::loopback();
        let plcs = sim::start_plcs(&layout.plcs).await?;
        sim::start_masters(&layout, &plcs, Some(&tap), Pace::default());
        let attacks = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            loop {
                println!("-- the intruder attacks --");
                sim::attack_once(&layout, &plcs, Some(&tap), &|s| {
                    println!("   attack: {} (otwatch should raise {})", s.what, s.rule);
                })
                .await;
                tokio::time::sleep(attack_every).await;
            }
        };
        let limit = async {
            match stop_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // A demo whose agent or collector died would go on showing nothing: it stops and says
        // where to look instead.
        let died = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for (name, child) in [
                    ("agent", &mut *agent_watched),
                    ("collector", &mut *collector_watched),
                ] {
                    if let Ok(Some(status)) = child.try_wait() {
                        return (name, status);
                    }
                }
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = attacks => {}
            () = limit => {}
            (name, status) = died => bail!(
                "the {name} stopped ({status}) while the demo ran; see {}",
                data.join(format!("{name}.log")).display()
            ),
        }
        anyhow::Ok(())
    });
    // Dropping the runtime ends the plant and closes the agent's stream: it finishes, delivers
    // what it holds, and exits.
    drop(runtime);
    println!("stopping: the agent delivers what it still holds, then the collector stops");
    agent.stop();
    collector.stop();
    ran?;
    println!(
        "stopped. The collector's data stays in {}; run the demo again to continue.",
        store.display()
    );
    Ok(())
}
