//! `otwatch-collector`: the command line. `init` creates a data folder (certificate authority,
//! server certificate, an admin credential), `enroll` adds a credential, `revoke` removes one
//! (a running collector drops it, its sessions and live feeds at once), `list` shows them,
//! `serve` runs the collector.

/// mimalloc: ingest allocates per alert (JSON, sled's copied nodes), and glibc's malloc spent
/// a third of it in its own bookkeeping (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use otwatch_collector::audit::{self, AuditLog};
use otwatch_collector::auth::Credentials;
use otwatch_collector::config::{Backend, CollectorConfig, StoreSettings};
use otwatch_collector::engine;
use otwatch_collector::feed::{BroadcastFeed, Feed};
use otwatch_collector::kv::Kv;
use otwatch_collector::listener::{
    self, Limits, ServedCertificate, certificate_provider, raise_descriptor_limit, tls_acceptor,
};
use otwatch_collector::metrics::Metrics;
use otwatch_collector::owner::AsOwner;
use otwatch_collector::server::{AppState, now, router};
use otwatch_collector::store::Store;
use otwatch_collector::store::model::Role;
use otwatch_collector::{export, pki};
use otwatch_kv_postgres::Create;
use otwatch_telemetry::{LogFormat, Telemetry};

mod enrollment;

/// Central otwatch collector: ingest, store, posture, live feed and dashboard.
#[derive(Debug, Parser)]
#[command(
    name = "otwatch-collector",
    version = otwatch_telemetry::build_version!(),
    about
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How much to log: error, warn, info (default), debug, trace, or per target
    /// ("info,otwatch_collector::listener=debug"). [env: OTWATCH_LOG, RUST_LOG]
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    /// Log lines as readable text (default) or one JSON object per line, for journald or a log
    /// shipper. [env: OTWATCH_LOG_FORMAT]
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data folder: certificate authority, server certificate, an admin credential.
    Init(InitArgs),
    /// Add a credential for an agent, a viewer or an admin, and print how to use it.
    Enroll(EnrollArgs),
    /// Remove a credential: a running collector refuses it, ends its dashboard sessions and
    /// closes its live feeds within a second.
    Revoke(RevokeArgs),
    /// List the credentials: name, role, when enrolled (never a token).
    List(ListArgs),
    /// Replace the server certificate and key with new ones signed by the CA (valid 825
    /// days); a running collector serves them within seconds, without a restart.
    RotateCert(RotateCertArgs),
    /// Run the collector.
    Serve(ServeArgs),
}

/// Where the Debian package keeps the data folder, the default of every command but `serve`
/// (which reads it from its configuration).
const DEFAULT_DATA: &str = "/var/lib/otwatch-collector";

#[derive(Debug, Args)]
struct InitArgs {
    /// The data folder to create (root running `init` on a folder of the service user's, as
    /// the package makes it, creates every file as that user).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Host names and addresses agents will use to reach the collector (certificate names).
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Where the store is, when it is a database (otherwise sled, in the data folder).
#[derive(Debug, Args)]
struct StoreArgs {
    /// Keep the store in this PostgreSQL database (a libpq URL without a password, several
    /// hosts allowed: postgresql://otwatch@db1,db2/otwatch?target_session_attrs=read-write).
    #[arg(long, value_name = "URL", env = "OTWATCH_COLLECTOR_STORE_URL")]
    store_url: Option<String>,
    /// A file holding the database password alone (default: PGPASSFILE, else ~/.pgpass).
    #[arg(
        long,
        value_name = "FILE",
        env = "OTWATCH_COLLECTOR_STORE_PASSWORD_FILE"
    )]
    store_password_file: Option<PathBuf>,
    /// The authority that signed the database's certificate (PEM): TLS is then required.
    #[arg(long, value_name = "FILE")]
    store_ca: Option<PathBuf>,
}

/// The file in a data folder naming the database it is kept in (the `[store]` settings, no
/// secret): written by `init --store-url` and by `serve` on a database, so the other commands
/// (and replicas given a copy of the folder) use the same database without being told.
const STORE_SETTINGS_FILE: &str = "store.toml";

/// The `[store]` settings remembered in `data`, if any.
fn remembered_store(data: &Path) -> anyhow::Result<Option<StoreSettings>> {
    let path = data.join(STORE_SETTINGS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            toml::from_str(&text).with_context(|| path.display().to_string())?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Remembers `settings` in `data` when they name a database and differ from what is there.
fn remember_store(data: &Path, settings: &StoreSettings) -> anyhow::Result<()> {
    if settings.url.is_none() || remembered_store(data)?.as_ref() == Some(settings) {
        return Ok(());
    }
    let path = data.join(STORE_SETTINGS_FILE);
    let text = toml::to_string(settings).context("store settings")?;
    std::fs::write(&path, text).with_context(|| path.display().to_string())
}

impl StoreArgs {
    /// `settings` with these flags over them: a URL implies PostgreSQL. Without a URL anywhere,
    /// the settings remembered in `data` ([`STORE_SETTINGS_FILE`]).
    fn over(&self, mut settings: StoreSettings, data: &Path) -> anyhow::Result<StoreSettings> {
        if self.store_url.is_none()
            && settings.url.is_none()
            && let Some(remembered) = remembered_store(data)?
        {
            settings = remembered;
        }
        if let Some(url) = &self.store_url {
            settings.url = Some(url.clone());
            settings.backend = Some(Backend::Postgres);
        }
        if let Some(f) = &self.store_password_file {
            settings.password_file = Some(f.clone());
        }
        if let Some(f) = &self.store_ca {
            settings.ca_file = Some(f.clone());
        }
        Ok(settings)
    }

    /// The database these flags (or the data folder) name, or `None` for sled (whose store
    /// the commands leave alone: a running collector holds it).
    fn shared(&self, data: &Path) -> anyhow::Result<Option<Arc<dyn Kv>>> {
        let settings = self.over(StoreSettings::default(), data)?;
        match settings.backend().map_err(anyhow::Error::msg)? {
            Backend::Sled => Ok(None),
            Backend::Postgres => Ok(Some(engine::open(&settings, data, Create::Never)?)),
        }
    }
}

/// Where a command's credentials and audit events go: the database replicas share, or the data
/// folder's files.
struct Keeping {
    credentials: Credentials,
    audit: AuditLog,
}

impl Keeping {
    fn of(data: &Path, shared: Option<Arc<dyn Kv>>) -> anyhow::Result<Self> {
        Ok(match shared {
            Some(kv) => Self {
                credentials: Credentials::shared(kv.clone())?,
                audit: AuditLog::shared(kv),
            },
            None => Self {
                credentials: Credentials::open(data)?,
                audit: AuditLog::in_dir(data),
            },
        })
    }
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The collector's data folder.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Enroll an agent with this name (may only ingest and send heartbeats).
    #[arg(long, value_name = "NAME", group = "who")]
    agent: Option<String>,
    /// Enroll a viewer (may read).
    #[arg(long, value_name = "NAME", group = "who")]
    viewer: Option<String>,
    /// Enroll an admin (may read, acknowledge and resolve).
    #[arg(long, value_name = "NAME", group = "who")]
    admin: Option<String>,
    /// The URL agents use to reach the collector, for the printed configuration.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8443")]
    url: String,
    /// For an agent: also write `agent.toml` (the packaged example with this enrollment's
    /// lines), `agent.token` and `ca.pem` into this folder (created, mode 0700), ready to copy
    /// to the sensor's `/etc/otwatch/agent/`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The collector's data folder.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// The credential's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The collector's data folder.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct RotateCertArgs {
    /// The collector's data folder.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// The CA's key, if it was moved out of the data folder (`serve` never needs it).
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// Host names and addresses for the new certificate (default: those of the current one).
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The data folder (overrides the configuration's `data`).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Configuration file (collector.toml).
    #[arg(long, value_name = "FILE", env = "OTWATCH_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve plain HTTP: for a lab only, never on a plant network.
    #[arg(long)]
    insecure_http: bool,
    #[command(flatten)]
    store: StoreArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Serve(a) => serve_config(a).map(Some),
        _ => Ok(None),
    };
    let telemetry = config.and_then(|config| {
        let (level, format) = config
            .as_ref()
            .map_or((None, None), |c| (c.log_level.as_deref(), c.log_format));
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let telemetry = otwatch_telemetry::resolve(
            cli.log_level.as_deref(),
            cli.log_format,
            env,
            level,
            format,
        )?;
        Ok((config, telemetry))
    });
    let result = match telemetry {
        Err(e) => {
            Telemetry::fallback().init();
            Err(e)
        }
        Ok((config, telemetry)) => {
            telemetry.init();
            match (cli.command, config) {
                (Command::Init(a), _) => init(&a),
                (Command::Enroll(a), _) => enroll(&a),
                (Command::Revoke(a), _) => revoke(&a),
                (Command::List(a), _) => list(&a),
                (Command::RotateCert(a), _) => rotate_cert(&a),
                (Command::Serve(_), Some(config)) => serve(config),
                (Command::Serve(_), None) => Err(anyhow::anyhow!("no configuration")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otwatch-collector: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init(a: &InitArgs) -> anyhow::Result<()> {
    let _owner = AsOwner::of(&a.data).with_context(|| a.data.display().to_string())?;
    if a.data.join("ca.pem").exists() {
        bail!(
            "{}: already initialised (remove it to start over)",
            a.data.display()
        );
    }
    std::fs::create_dir_all(&a.data).with_context(|| a.data.display().to_string())?;
    // The store, keys and credentials are the owner's alone, whatever the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a.data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| a.data.display().to_string())?;
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(a.names.iter().cloned());
    let files = pki::create(&a.data, &names)?;
    let settings = a.store.over(StoreSettings::default(), &a.data)?;
    let engine = engine::open(&settings, &a.data, Create::IfMissing)?;
    Store::open(engine.clone())?;
    let shared = if settings.is_shared() {
        remember_store(&a.data, &settings)?;
        Some(engine.clone())
    } else {
        None
    };
    let keeping = Keeping::of(&a.data, shared)?;
    let token = keeping.credentials.enroll("admin", Role::Admin)?;
    audit_command(&keeping.audit, "enroll", "admin", Role::Admin);
    println!("initialised {}", a.data.display());
    println!(
        "  certificate authority (give to agents): {}",
        files.ca.display()
    );
    println!("  server certificate names: {}", names.join(", "));
    println!("  admin token (shown once): {token}");
    println!("run: otwatch-collector serve --data {}", a.data.display());
    Ok(())
}

fn enroll(a: &EnrollArgs) -> anyhow::Result<()> {
    let (name, role) = match (&a.agent, &a.viewer, &a.admin) {
        (Some(n), _, _) => (n, Role::Agent),
        (_, Some(n), _) => (n, Role::Viewer),
        (_, _, Some(n)) => (n, Role::Admin),
        _ => bail!("say who to enroll: --agent NAME, --viewer NAME or --admin NAME"),
    };
    // The name goes into the credential, the agent's index entries and the printed agent.toml
    // line: kept to characters nothing needs to escape.
    if !otwatch_rules::validate::is_agent_name(name) {
        bail!(
            "{name:?} is not valid (expected {})",
            otwatch_rules::validate::AGENT_NAME_SYNTAX
        );
    }
    data_folder(&a.data)?;
    if a.out.is_some() && role != Role::Agent {
        bail!("--out writes an agent's files (expected --agent NAME with it)");
    }
    // Before the credential exists: a folder that cannot take the files refuses the command
    // rather than leave a credential whose token went nowhere.
    if let Some(out) = &a.out {
        enrollment::prepare(out)?;
    }
    let token = {
        let _owner = AsOwner::of(&a.data).with_context(|| a.data.display().to_string())?;
        let keeping = Keeping::of(&a.data, a.store.shared(&a.data)?)?;
        let token = keeping.credentials.enroll(name, role)?;
        audit_command(&keeping.audit, "enroll", name, role);
        token
    };
    println!(
        "enrolled {name} as {role:?} (the token is shown once)",
        role = role
    );
    if role == Role::Agent {
        let ca = a.data.join("ca.pem");
        println!("put these lines in the agent's agent.toml:");
        println!("  agent_name = \"{name}\"");
        println!("  collector_url = \"{}\"", a.url);
        println!("  collector_token = \"{token}\"");
        println!("  collector_ca = \"{}\"", absolute(&ca).display());
        if let Some(out) = &a.out {
            enrollment::write(out, name, &a.url, &token, &ca)?;
            println!(
                "wrote {dir}/agent.toml, agent.token and ca.pem: copy them to the sensor's /etc/otwatch/agent/ (agent.token readable by group otwatch only), then set `interface` in agent.toml",
                dir = out.display()
            );
        }
    } else {
        println!("token: {token}");
    }
    Ok(())
}

/// Writes a credential change made from the command line to the audit log.
fn audit_command(log: &AuditLog, event: &'static str, name: &str, role: Role) {
    log.note(&audit::Event {
        ts: now(),
        event,
        who: None,
        source: None,
        detail: audit::detail([
            ("name", serde_json::json!(name)),
            ("role", serde_json::json!(role)),
            ("by", serde_json::json!(operator())),
        ]),
    });
}

/// Who ran the command: the login name of the process's user, or its uid.
fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Refuses a folder `init` did not make.
fn data_folder(data: &Path) -> anyhow::Result<()> {
    if !pki::Files::in_dir(data).ca.exists() {
        bail!(
            "{}: not a collector data folder (run otwatch-collector init first)",
            data.display()
        );
    }
    Ok(())
}

fn revoke(a: &RevokeArgs) -> anyhow::Result<()> {
    data_folder(&a.data)?;
    let _owner = AsOwner::of(&a.data).with_context(|| a.data.display().to_string())?;
    let keeping = Keeping::of(&a.data, a.store.shared(&a.data)?)?;
    let role = keeping.credentials.revoke(&a.name)?;
    audit_command(&keeping.audit, "revoke", &a.name, role);
    println!(
        "revoked {} ({role:?}): a running collector refuses it, and ends its sessions and live feeds, within a second",
        a.name
    );
    Ok(())
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    data_folder(&a.data)?;
    let all = Keeping::of(&a.data, a.store.shared(&a.data)?)?
        .credentials
        .list()?;
    println!("{:<32} {:<8} enrolled", "name", "role");
    for e in all {
        let created = e.created.map_or("-".to_string(), |t| t.to_string());
        println!(
            "{:<32} {:<8} {created}",
            e.name,
            format!("{:?}", e.role).to_lowercase()
        );
    }
    Ok(())
}

fn rotate_cert(a: &RotateCertArgs) -> anyhow::Result<()> {
    data_folder(&a.data)?;
    let ca_key = a.ca_key.clone().unwrap_or_else(|| a.data.join("ca.key"));
    if !ca_key.exists() {
        bail!(
            "{}: the CA key is not there (expected --ca-key FILE where it is kept offline)",
            ca_key.display()
        );
    }
    // Read as the caller: a key kept offline may be root's alone.
    let ca_key_pem =
        std::fs::read_to_string(&ca_key).with_context(|| ca_key.display().to_string())?;
    let _owner = AsOwner::of(&a.data).with_context(|| a.data.display().to_string())?;
    let mut names = a.names.clone();
    if !names.is_empty() {
        for n in ["localhost", "127.0.0.1", "::1"] {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        }
    }
    let names = pki::rotate(&a.data, &ca_key_pem, &names)?;
    let served = pki::Certificate::read(&pki::Files::in_dir(&a.data).cert)?;
    Keeping::of(&a.data, a.store.shared(&a.data)?)?
        .audit
        .note(&audit::Event {
            ts: now(),
            event: "rotate_cert",
            who: None,
            source: None,
            detail: audit::detail([
                ("names", serde_json::json!(names)),
                ("not_after", serde_json::json!(served.not_after)),
                ("by", serde_json::json!(operator())),
            ]),
        });
    println!(
        "new server certificate for {} (valid {} days); a running collector serves it within seconds",
        names.join(", "),
        pki::SERVER_VALIDITY_DAYS
    );
    Ok(())
}

/// How long this replica's turn at retention runs unless renewed (each pass, every minute).
const RETENTION_LEASE: Duration = Duration::from_secs(180);

/// This process as a lease holder: host, port and a random part, so two replicas (or one
/// restarted) never take each other's leases for their own.
fn replica_name(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!("{}:{}:{}", host.trim(), listen.port(), hex::encode(random))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `serve`'s configuration: the file (or `--data`) with the flags over it.
fn serve_config(a: &ServeArgs) -> anyhow::Result<CollectorConfig> {
    let mut config = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            CollectorConfig::parse(&text).with_context(|| path.display().to_string())?
        }
        None => {
            let data = a
                .data
                .clone()
                .context("--data DIR or --config FILE is required")?;
            CollectorConfig::with_data(data)
        }
    };
    if let Some(d) = &a.data {
        config.data = d.clone();
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    config.insecure_http |= a.insecure_http;
    config.store = a.store.over(config.store, &config.data)?;
    Ok(config)
}

fn serve(config: CollectorConfig) -> anyhow::Result<()> {
    data_folder(&config.data)?;
    let files = pki::Files::in_dir(&config.data);
    let engine = engine::open(&config.store, &config.data, Create::Never)?;
    let store = Arc::new(Store::open(engine.clone())?);
    let shared = if config.store.is_shared() {
        // So `enroll`, `revoke` and `list` on this folder reach the same database.
        remember_store(&config.data, &config.store)?;
        Some(engine.clone())
    } else {
        None
    };
    let Keeping { credentials, audit } = Keeping::of(&config.data, shared)?;
    let credentials = Arc::new(credentials);
    let feed: Arc<dyn Feed> = Arc::new(BroadcastFeed::new(4096));
    let metrics = Arc::new(Metrics::new()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Exporters read the store from their cursors; one replica at a time runs each. A new
        // one starts from the alerts stored from now on, placed before any can arrive.
        let holder = replica_name(config.listen);
        for (configured, name) in [
            (config.export.syslog.is_some(), "syslog"),
            (config.export.jsonl.is_some(), "jsonl"),
        ] {
            if configured {
                store.start_export_cursor(name)?;
            }
        }
        if let Some(s) = config.export.syslog.clone() {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            tokio::spawn(export::relay(
                export::Sink::syslog(s, host.trim().to_string()),
                store.clone(),
                feed.subscribe(),
                metrics.exporting(holder.clone()),
            ));
        }
        if let Some(j) = config.export.jsonl.clone() {
            tokio::spawn(export::relay(
                export::Sink::jsonl(j.path),
                store.clone(),
                feed.subscribe(),
                metrics.exporting(holder.clone()),
            ));
        }
        // Retention always runs: the size limit has a default (10 GiB, at most half the
        // disk), the age limit only when configured.
        {
            let max_age = config.retention.max_age;
            // A database's size has nothing to do with this host's disk: the configured limit,
            // else the default.
            let max_bytes = if config.store.is_shared() {
                config
                    .retention
                    .max_bytes
                    .unwrap_or(otwatch_collector::config::DEFAULT_MAX_BYTES)
            } else {
                config.retention.max_bytes_for(&config.data)
            };
            tracing::info!(
                "retention: store kept under {max_bytes} bytes (oldest alerts of the agents holding the most go first){}",
                max_age.map_or(String::new(), |a| format!(", alerts older than {a:?} removed"))
            );
            let store = store.clone();
            let holder = holder.clone();
            tokio::spawn(async move {
                loop {
                    let cutoff = max_age.map(|age| now().saturating_sub(age));
                    let (s, holder) = (store.clone(), holder.clone());
                    // One replica at a time (a lease in the store; with sled, always this one).
                    let outcome = tokio::task::spawn_blocking(move || {
                        if s.lease("retention", &holder, RETENTION_LEASE, now())? {
                            s.enforce_retention(cutoff, Some(max_bytes)).map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                    .await;
                    match outcome {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!("retention: {e}"),
                        Err(e) => tracing::error!("retention: {e}"),
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
        match pki::Certificate::read(&files.ca) {
            Ok(ca) => metrics.ca_not_after.set(ca.not_after),
            Err(e) => tracing::error!("{e}"),
        }
        // The server certificate, read again when `rotate-cert` replaces it.
        let served = if config.insecure_http {
            None
        } else {
            let served = ServedCertificate::load(&files.cert, &files.key, certificate_provider())
                .with_context(|| files.cert.display().to_string())?;
            metrics.certificate_not_after.set(served.not_after());
            Some(Arc::new(served))
        };
        // Credentials changed by `enroll` or `revoke` in another process are seen within a
        // second (a revoked credential's sessions and live feeds end then); a rotated
        // certificate is served within five; expired and revoked sessions are removed every
        // minute.
        {
            let credentials = credentials.clone();
            let store = store.clone();
            let served = served.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n: u64 = 0;
                loop {
                    tick.tick().await;
                    // Off the async workers: with a database, a read of it.
                    let c = credentials.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.refresh()).await {
                        tracing::error!("credentials: {e}");
                    }
                    n += 1;
                    if let Some(served) = served.as_ref().filter(|_| n.is_multiple_of(5)) {
                        match served.refresh() {
                            Ok(true) => {
                                metrics.certificate_not_after.set(served.not_after());
                                tracing::info!("serving the rotated server certificate");
                            }
                            Ok(false) => {}
                            Err(e) => tracing::error!("server certificate: {e} (still serving the previous one)"),
                        }
                    }
                    if n.is_multiple_of(60) {
                        let (c, s) = (credentials.clone(), store.clone());
                        let purged = tokio::task::spawn_blocking(move || {
                            s.purge_sessions(now(), |hash| c.principal_of_hash(hash).is_some())
                        })
                        .await;
                        if let Ok(Err(e)) = purged {
                            tracing::error!("sessions: {e}");
                        }
                    }
                }
            });
        }
        let listen = config.listen;
        let insecure = config.insecure_http;
        let limits = Limits::new(&config.connections, raise_descriptor_limit());
        let metrics_for_listener = metrics.clone();
        let state = Arc::new(
            AppState::new(store.clone(), credentials, feed, metrics, config).with_audit(audit),
        );
        let app = router(state);
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let tls = match &served {
            None => None,
            Some(served) => Some(tls_acceptor(served.clone())?),
        };
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let listen = tcp.local_addr().unwrap_or(listen);
        if insecure {
            eprintln!("otwatch-collector: serving plain HTTP on http://{listen} (lab use only)");
        } else {
            eprintln!("otwatch-collector: serving https://{listen}");
        }
        tracing::info!(
            "at most {} connections ({} per source); TLS handshake within {:?}, headers within {:?}, idle connections closed after {:?}",
            limits.max_connections,
            limits.max_per_source,
            limits.handshake_timeout,
            limits.header_timeout,
            limits.idle_timeout
        );
        listener::serve(tcp, tls, app, limits, metrics_for_listener, shutdown).await;
        store.kv().flush()?;
        anyhow::Ok(())
    })
}
