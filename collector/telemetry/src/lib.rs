//! Log lines for the agent and the collector, set up in one call: a level (a `tracing` filter
//! directive, so one module can be turned up alone) and a format, readable text for a terminal
//! or one JSON object per line for journald or a log shipper.
//!
//! [`resolve`] is the one order both binaries follow: `--log-level`, then `OTWATCH_LOG`, then
//! `RUST_LOG`, then the file's `log_level`, then info; `--log-format`, then
//! `OTWATCH_LOG_FORMAT`, then the file's `log_format`, then text.
//!
//! Secrets never reach a log line: tokens and session ids are never put in a message or a
//! field, and the end-to-end tests run both binaries at the `trace` level and look for them in
//! everything they wrote.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `LEVEL target: message`, without a timestamp (journald and terminals add their own).
    #[default]
    Text,
    /// One JSON object per line, with a timestamp, the level, the target and the fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} (expected text or json)")),
        }
    }
}

/// A log setting that is unusable: where it came from and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TelemetryError {
    /// The flag, variable or field.
    pub origin: &'static str,
    /// What is wrong and what was expected.
    pub message: String,
}

/// The log settings from the flags (`level`, `format`), the environment (`env` looks a
/// variable up) and the configuration file (`file_level`, `file_format`), in the documented
/// order.
pub fn resolve(
    level: Option<&str>,
    format: Option<LogFormat>,
    env: impl Fn(&str) -> Option<String>,
    file_level: Option<&str>,
    file_format: Option<LogFormat>,
) -> Result<Telemetry, TelemetryError> {
    // RUST_LOG may be set for another program: taken when `tracing` can read it, passed over
    // otherwise. The agent's own settings are checked strictly.
    let rust_log = env("RUST_LOG").filter(|l| EnvFilter::builder().parse(l).is_ok());
    let (level, source) = match (level, env("OTWATCH_LOG"), rust_log) {
        (Some(l), _, _) => (l.to_string(), "--log-level"),
        (None, Some(l), _) => (l, "OTWATCH_LOG"),
        (None, None, Some(l)) => {
            return Ok(Telemetry {
                level: l,
                format: log_format(format, &env, file_format)?,
            });
        }
        (None, None, None) => match file_level {
            Some(l) => (l.to_string(), "log_level"),
            None => ("info".to_string(), "the default level"),
        },
    };
    let format = log_format(format, &env, file_format)?;
    Telemetry::new(&level, format).map_err(|message| TelemetryError {
        origin: source,
        message,
    })
}

/// The log format: flag, then `OTWATCH_LOG_FORMAT`, then the file, then text.
fn log_format(
    format: Option<LogFormat>,
    env: &impl Fn(&str) -> Option<String>,
    file_format: Option<LogFormat>,
) -> Result<LogFormat, TelemetryError> {
    Ok(match (format, env("OTWATCH_LOG_FORMAT")) {
        (Some(f), _) => f,
        (None, Some(text)) => text.parse().map_err(|message| TelemetryError {
            origin: "OTWATCH_LOG_FORMAT",
            message,
        })?,
        (None, None) => file_format.unwrap_or_default(),
    })
}

/// How to log, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    level: String,
    format: LogFormat,
}

impl Telemetry {
    /// `level` as a filter directive ("info", "warn,otwatch_agent::delivery::shipper=debug"), refused
    /// with what was expected when it does not parse.
    pub fn new(level: &str, format: LogFormat) -> Result<Self, String> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let bad = |why: String| {
            format!(
                "{level:?}: {why} (expected off, error, warn, info, debug or trace, optionally per target as in \"info,otwatch_agent=debug\")"
            )
        };
        // A bare word is a target at every level to `tracing`; here it is a typo for a level.
        for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let named = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
            if !LEVELS.contains(&named.to_ascii_lowercase().as_str()) {
                return Err(bad(format!("{named:?} is not a level")));
            }
        }
        EnvFilter::builder()
            .parse(level)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            level: level.to_string(),
            format,
        })
    }

    /// Info and above, as text: before the settings are known, and when they fail.
    pub fn fallback() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }

    /// The filter directive.
    pub fn level(&self) -> &str {
        &self.level
    }

    /// The format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Installs the subscriber for the process: log lines on standard error. Does nothing
    /// when one is installed already (tests).
    pub fn init(&self) {
        let filter = EnvFilter::builder()
            .parse(&self.level)
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter);
        let _ = match self.format {
            LogFormat::Text => builder.without_time().try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    }
}

/// The version line both binaries print for `--version`: the package version, the commit it
/// was built from and the build profile ("0.1.0 (commit 0123456789ab, release build)"), so
/// an operator can tell exactly which build a sensor runs. Expands in the binary's crate,
/// whose build script (`agent/build.rs`) sets `OTWATCH_COMMIT` and `OTWATCH_PROFILE`.
#[macro_export]
macro_rules! build_version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("OTWATCH_COMMIT"),
            ", ",
            env!("OTWATCH_PROFILE"),
            " build)"
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_otwatch_log_then_rust_log_then_the_file() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("OTWATCH_LOG", "debug"), ("RUST_LOG", "trace")]);
        let t = resolve(
            Some("error"),
            None,
            both,
            Some("warn"),
            Some(LogFormat::Json),
        )
        .unwrap();
        assert_eq!((t.level(), t.format()), ("error", LogFormat::Json));
        assert_eq!(
            resolve(None, None, both, Some("warn"), None)
                .unwrap()
                .level(),
            "debug"
        );
        // A RUST_LOG `tracing` cannot read is meant for something else: passed over.
        let other = env(&[("RUST_LOG", "otwatch=loud=1")]);
        assert_eq!(
            resolve(None, None, other, Some("warn"), None)
                .unwrap()
                .level(),
            "warn"
        );
        let rust = env(&[("RUST_LOG", "trace")]);
        assert_eq!(
            resolve(None, None, rust, Some("warn"), None)
                .unwrap()
                .level(),
            "trace"
        );
        let none = env(&[]);
        assert_eq!(
            resolve(None, None, none, Some("warn"), None)
                .unwrap()
                .level(),
            "warn"
        );
        let t = resolve(None, None, none, None, None).unwrap();
        assert_eq!((t.level(), t.format()), ("info", LogFormat::Text));
        let text = env(&[("OTWATCH_LOG_FORMAT", "text")]);
        let t = resolve(None, None, text, None, Some(LogFormat::Json)).unwrap();
        assert_eq!(t.format(), LogFormat::Text);
        let e = resolve(None, None, env(&[("OTWATCH_LOG", "loud")]), None, None).unwrap_err();
        assert_eq!(e.origin, "OTWATCH_LOG");
        let e = resolve(
            None,
            None,
            env(&[("OTWATCH_LOG_FORMAT", "xml")]),
            None,
            None,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "OTWATCH_LOG_FORMAT: \"xml\" (expected text or json)"
        );
    }

    #[test]
    fn a_level_that_does_not_parse_says_what_was_expected() {
        let e = Telemetry::new("loud", LogFormat::Text).unwrap_err();
        assert!(e.contains("\"loud\"") && e.contains("expected"), "{e}");
        assert!(
            Telemetry::new(
                "info,otwatch_agent::delivery::shipper=debug",
                LogFormat::Json
            )
            .is_ok()
        );
    }
}
