//! The collector's configuration: `collector.toml`. `serve --data`, `--listen` and
//! `--insecure-http` override the fields of the same names, and `--log-level` and `--log-format`
//! (or `OTWATCH_LOG`, `RUST_LOG`, `OTWATCH_LOG_FORMAT`) the log settings; every other field is
//! set in the file only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use otwatch_telemetry::LogFormat;
use serde::Deserialize;

/// `collector.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Where the store, the certificates and the keys live.
    pub data: PathBuf,
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (a lab only).
    #[serde(default)]
    pub insecure_http: bool,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Requests per second one agent may make (ingest and heartbeats).
    #[serde(default = "default_agent_rate")]
    pub agent_rate_per_s: u32,
    /// An agent silent this long is offline (humantime: "30s").
    #[serde(default = "default_offline_after", with = "humantime_serde_compat")]
    pub agent_offline_after: Duration,
    /// Connection limits and timeouts.
    #[serde(default)]
    pub connections: Connections,
    /// Dashboard sessions and logins.
    #[serde(default)]
    pub sessions: Sessions,
    /// Retention of alerts.
    #[serde(default)]
    pub retention: Retention,
    /// Where else alerts go.
    #[serde(default)]
    pub export: Export,
    /// The storage engine: sled in the data folder, or a PostgreSQL database replicas share.
    #[serde(default)]
    pub store: StoreSettings,
    /// How much to log ("info", "debug", or per target).
    #[serde(default)]
    pub log_level: Option<String>,
    /// Log lines as "text" or "json".
    #[serde(default)]
    pub log_format: Option<LogFormat>,
}

/// How many connections the collector holds and for how long, so that no peer can use them
/// up (see `listener.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connections {
    /// Most connections at once (also kept below the process's open-file limit).
    #[serde(default = "default_max_connections")]
    pub max: usize,
    /// Most connections at once from one address: room for a NAT'ed SOC's browsers and their
    /// live feeds, not for one host to take every connection.
    #[serde(default = "default_max_per_source")]
    pub max_per_source: usize,
    /// Longest TLS handshake ("10s").
    #[serde(default = "default_ten_seconds", with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Longest wait for a request's headers ("10s").
    #[serde(default = "default_ten_seconds", with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// Longest a connection stays open with no request in flight ("60s"); the live feed's
    /// stream is a request in flight and keeps itself alive.
    #[serde(default = "default_idle_timeout", with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Longest time to receive a request's body ("30s").
    #[serde(default = "default_body_timeout", with = "humantime_serde_compat")]
    pub body_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            max: default_max_connections(),
            max_per_source: default_max_per_source(),
            handshake_timeout: default_ten_seconds(),
            header_timeout: default_ten_seconds(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_per_source() -> usize {
    256
}

fn default_ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How long a dashboard session lasts and how fast a source may fail to log in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// A session ends this long after its login, whatever happens ("8h": a shift).
    #[serde(default = "default_session_ttl", with = "humantime_serde_compat")]
    pub ttl: Duration,
    /// Failed logins one source (address, or /64 for IPv6) may make per minute; past them its
    /// logins get 429 until the minute has refilled its allowance.
    #[serde(default = "default_failed_logins")]
    pub failed_logins_per_minute: u32,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            ttl: default_session_ttl(),
            failed_logins_per_minute: default_failed_logins(),
        }
    }
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_failed_logins() -> u32 {
    10
}

/// How long and how much to keep.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Alerts older than this (capture time) are removed ("90d"). No default: alerts from a
    /// replayed capture are as old as the capture, and a security team keeps history unless
    /// told otherwise; the size limit always holds.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub max_age: Option<Duration>,
    /// When the store grows beyond this many bytes, the oldest alerts are removed, from the
    /// agents holding the most first. Default: [`DEFAULT_MAX_BYTES`], or half the size of the
    /// file system holding the data folder if that is smaller.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// The store's size limit when `collector.toml` sets none: 10 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

impl Retention {
    /// The size limit in force for a store in `data`: the configured one, else the default,
    /// at most half the file system (a small sensor disk is never filled by the store).
    pub fn max_bytes_for(&self, data: &std::path::Path) -> u64 {
        self.max_bytes.unwrap_or_else(|| {
            let half = rustix::fs::statvfs(data)
                .map(|v| v.f_blocks.saturating_mul(v.f_frsize) / 2)
                .unwrap_or(u64::MAX);
            DEFAULT_MAX_BYTES.min(half.max(1))
        })
    }
}

/// Forwarding alerts to other systems.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Syslog (RFC 5424) with a CEF payload.
    #[serde(default)]
    pub syslog: Option<Syslog>,
    /// One JSON line per alert, appended to a file.
    #[serde(default)]
    pub jsonl: Option<JsonLines>,
}

/// A syslog receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    /// Host and port.
    pub address: String,
    /// `udp` (default) or `tcp` (octet-counted frames, RFC 6587).
    #[serde(default)]
    pub transport: SyslogTransport,
    /// Longest message sent, in bytes; a longer one is cut and ends with ` [truncated]`.
    /// Default: 2048 over UDP (what every receiver takes, RFC 5426), 65536 over TCP.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
}

impl Syslog {
    /// The longest message to send over this transport.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
            .unwrap_or(match self.transport {
                SyslogTransport::Udp => 2048,
                SyslogTransport::Tcp => 65_536,
            })
            .max(480)
    }
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// One datagram per message.
    #[default]
    Udp,
    /// A TCP stream of octet-counted messages.
    Tcp,
}

/// A JSON-lines file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLines {
    /// The file (appended to).
    pub path: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_body_limit() -> usize {
    4 * 1024 * 1024
}

fn default_agent_rate() -> u32 {
    50
}

fn default_offline_after() -> Duration {
    Duration::from_secs(30)
}

impl CollectorConfig {
    /// Defaults for a data folder.
    pub fn with_data(data: PathBuf) -> Self {
        Self {
            data,
            listen: default_listen(),
            insecure_http: false,
            body_limit_bytes: default_body_limit(),
            agent_rate_per_s: default_agent_rate(),
            agent_offline_after: default_offline_after(),
            connections: Connections::default(),
            sessions: Sessions::default(),
            retention: Retention::default(),
            export: Export::default(),
            store: StoreSettings::default(),
            log_level: None,
            log_format: None,
        }
    }

    /// Parses `collector.toml`; errors name the line and the field.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// `[store]`: which engine keeps the collector's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `"sled"` (the default: one collector, its data folder) or `"postgres"` (replicas
    /// sharing one database). A `url` alone implies postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// The database, as a libpq URL without a password:
    /// `postgresql://otwatch@db1:5432,db2:5432/otwatch?target_session_attrs=read-write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the database password alone (0600 or 0640); without it, `PGPASSFILE` or
    /// `~/.pgpass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The authority that signed the database's certificate (PEM): TLS to the database is then
    /// required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Most connections to the database (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
}

/// A storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// sled, embedded, in `data/store`.
    Sled,
    /// PostgreSQL, shared by every replica.
    Postgres,
}

impl StoreSettings {
    /// Whether the store is a database replicas share (credentials and the audit log then live
    /// in it too).
    pub fn is_shared(&self) -> bool {
        self.backend() == Ok(Backend::Postgres)
    }

    /// The engine these settings choose, or what is inconsistent about them.
    pub fn backend(&self) -> Result<Backend, String> {
        match (self.backend, &self.url) {
            (Some(Backend::Sled), Some(_)) => Err(
                "store.url is set but store.backend = \"sled\" (remove one of them)".into(),
            ),
            (Some(Backend::Postgres), None) => Err(
                "store.backend = \"postgres\" needs store.url (expected postgresql://USER@HOST/DATABASE)"
                    .into(),
            ),
            (_, Some(_)) => Ok(Backend::Postgres),
            (backend, None) => Ok(backend.unwrap_or(Backend::Sled)),
        }
    }
}

/// Durations written like "30s", "5m", "90d".
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}; expected like \"30s\")"
            ))
        })
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = String::deserialize(d)?;
            humantime::parse_duration(&text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration ({e}; expected like \"90d\")"
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests;
