//! Running `otwatch-collector` as a separate process for end-to-end tests: a data folder made
//! by `init`, credentials made by `enroll`, `serve` on a free loopback port, and an HTTPS
//! client that trusts the collector's own certificate authority.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::binary;

/// A collector data folder and the credentials enrolled in it.
#[derive(Debug)]
pub struct Site {
    /// The data folder.
    pub data: PathBuf,
    /// Where the collector listens.
    pub addr: SocketAddr,
    /// The admin token `init` printed.
    pub admin: String,
}

/// Runs `otwatch-collector ARGS --data DATA` and returns what it did.
fn command(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(binary("otwatch-collector"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap_or_else(|e| panic!("otwatch-collector {args:?}: {e}"))
}

/// Runs a collector subcommand and returns its standard output, panicking with its standard
/// error when it fails.
fn run(args: &[&str], data: &Path) -> String {
    let out = command(args, data);
    assert!(
        out.status.success(),
        "otwatch-collector {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The token in a line like `  admin token (shown once): otw_...` or
/// `  collector_token = "otw_..."`.
pub fn token_in(output: &str) -> String {
    output
        .split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| w.starts_with("otw_"))
        .unwrap_or_else(|| panic!("no token in {output}"))
        .to_string()
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Site {
    /// Initialises a data folder in `dir` and picks a port.
    pub fn init(dir: &Path) -> Self {
        Self::init_with(dir, &[])
    }

    /// [`Site::init`] with extra `init` arguments (`--store-url`, say).
    pub fn init_with(dir: &Path, args: &[&str]) -> Self {
        let data = dir.join("collector");
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        let admin = token_in(&run(&all, &data));
        Self {
            data,
            addr: free_addr(),
            admin,
        }
    }

    /// Runs `otwatch-collector ARGS --data` on this folder, whatever its outcome.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        command(args, &self.data)
    }

    /// Runs `otwatch-collector ARGS --data` on this folder and returns its standard output,
    /// panicking with its standard error when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        run(args, &self.data)
    }

    /// Enrolls an agent, returning its token.
    pub fn enroll_agent(&self, name: &str) -> String {
        token_in(&run(&["enroll", "--agent", name], &self.data))
    }

    /// Enrolls a viewer, returning its token.
    pub fn enroll_viewer(&self, name: &str) -> String {
        token_in(&run(&["enroll", "--viewer", name], &self.data))
    }

    /// Logs in to the dashboard with `token` on the running collector; the cookie pair
    /// (`name=value`) it set.
    pub fn login(&self, token: &str) -> String {
        let mut r = https_agent(&self.ca(), Duration::from_secs(60))
            .post(format!("{}/api/v1/login", self.url()))
            .send_json(serde_json::json!({ "token": token }))
            .unwrap_or_else(|e| panic!("login: {e}"));
        let body = r.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(r.status(), 200, "{body}");
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap_or_else(|e| panic!("set-cookie: {e}"))
            .to_string();
        cookie.split(';').next().unwrap_or_default().to_string()
    }

    /// The collector's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The certificate authority agents are given.
    pub fn ca(&self) -> PathBuf {
        self.data.join("ca.pem")
    }

    /// Starts `serve` (its messages go to `serve.log` in the data folder) and waits until it
    /// answers.
    pub fn serve(&self) -> Collector {
        self.serve_with(None, &[])
    }

    /// Starts `serve` with extra `args` (`--log-level trace`, say).
    pub fn serve_with_args(&self, args: &[&str]) -> Collector {
        self.serve_with(None, args)
    }

    /// Starts `serve` with `settings` (lines of `collector.toml` besides `data`, written to a
    /// configuration file) and extra `args`.
    pub fn serve_with_settings(&self, settings: &str, args: &[&str]) -> Collector {
        self.serve_configured(None, settings, args)
    }

    /// [`Site::serve_with_settings`] under a limit of `max_open_files` open files (as a
    /// plant's host or a unit's `LimitNOFILE` may set it).
    pub fn serve_limited(&self, max_open_files: u64, settings: &str, args: &[&str]) -> Collector {
        self.serve_configured(Some(max_open_files), settings, args)
    }

    fn serve_configured(
        &self,
        max_open_files: Option<u64>,
        settings: &str,
        args: &[&str],
    ) -> Collector {
        let config = self.data.join("collector.toml");
        let text = format!("data = {:?}\n{settings}\n", self.data.display().to_string());
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let mut all = vec!["--config".to_string(), config.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.serve_with(max_open_files, &all)
    }

    fn serve_with(&self, max_open_files: Option<u64>, args: &[&str]) -> Collector {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("serve.log"))
            .unwrap_or_else(|e| panic!("serve.log: {e}"));
        let mut command = match max_open_files {
            // The shell sets both limits, so the collector cannot raise its soft limit past it.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary("otwatch-collector"));
                c
            }
            None => Command::new(binary("otwatch-collector")),
        };
        let child = command
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("otwatch-collector serve: {e}"));
        let base = if args.contains(&"--insecure-http") {
            format!("http://{}", self.addr)
        } else {
            self.url()
        };
        let collector = Collector {
            child,
            client: Client::new(&base, &self.ca()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while collector.client.get("/healthz", None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the collector did not start on {}; serve.log:\n{}",
                self.addr,
                std::fs::read_to_string(self.data.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
    }
}

/// TLS settings that trust only the certificate authority in `ca` (the collector's own).
pub fn trusting(ca: &Path) -> std::io::Result<TlsConfig> {
    let pem = std::fs::read(ca)?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}

/// An HTTP agent that trusts only the CA in `ca`, gives every status back as a response (not an
/// error) and gives up on a request after `timeout`.
pub fn https_agent(ca: &Path, timeout: Duration) -> ureq::Agent {
    let tls = trusting(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// An HTTPS client trusting the collector's certificate authority.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client for the collector at `base`.
    pub fn new(base: &str, ca: &Path) -> Self {
        Self {
            agent: https_agent(ca, Duration::from_secs(30)),
            base: base.to_string(),
        }
    }

    /// GET `path`: the status and the body (JSON when it parses, else a string; status 0 when
    /// the collector is unreachable).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        match request.call() {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// POST a JSON body to `path`: the status and the JSON reply (0 when unreachable).
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        match request.send_json(body) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let value = r.body_mut().read_json().unwrap_or(Value::Null);
                (status, value)
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// PUT a body of `content_type` to `path`: the status and the JSON reply (0 when
    /// unreachable).
    pub fn put(&self, path: &str, token: &str, content_type: &str, body: &str) -> (u16, Value) {
        let request = self
            .agent
            .put(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type);
        match request.send(body) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let value = r.body_mut().read_json().unwrap_or(Value::Null);
                (status, value)
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Opens the live feed and returns a reader of its lines.
    pub fn stream(&self, path: &str, token: &str) -> impl std::io::BufRead + Send + 'static {
        let agent = ureq::Agent::config_builder()
            .tls_config(self.agent.config().tls_config().clone())
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let response = agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("stream {path}: {e}"));
        std::io::BufReader::new(response.into_body().into_reader())
    }

    /// The metric `name` (a full series, labels included) from `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics", None);
        let text = body.as_str()?.to_string();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// A running collector process, killed when dropped.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// A client for it.
    pub client: Client,
}

impl Collector {
    /// Kills it with SIGKILL (no chance to flush or clean up) and waits for it to go.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
