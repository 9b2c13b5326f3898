//! The audit log: one JSON line per login, logout, admin action and credential change, appended
//! to `audit.log` in the data folder (owner-only), by the server and by the `enroll` and
//! `revoke` commands alike.
//!
//! Each line is written with one `write` on a file opened for appending, so lines from the
//! server and a command running beside it never interleave. A line that cannot be written is
//! logged (tracing) and counted by the caller's metrics; the action it records still happens.
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Map, Value};

use otwatch_rules::time::Timestamp;

/// The audit log's file name in the data folder.
pub const FILE_NAME: &str = "audit.log";

/// One audited event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When (the collector's clock).
    pub ts: Timestamp,
    /// What: `login`, `login_failed`, `login_throttled`, `logout`, `incident_acknowledged`,
    /// `incident_resolved`, `enroll`, `revoke`, `rotate_cert`, `policy_stored`,
    /// `policy_rolled_back`, `policy_assigned`, `learning_requested`, `policy_proposed`.
    pub event: &'static str,
    /// Who: the credential's name (absent when nobody was recognised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// From where, for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The event's own fields (incident id, note, role, reason).
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

/// Appends events to the audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    /// The audit log of the data folder `data` (opened on first write).
    pub fn in_dir(data: &Path) -> Self {
        Self {
            path: data.join(FILE_NAME),
            file: Mutex::new(None),
        }
    }

    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as one line.
    pub fn record(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
        if file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            *file = Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&self.path)?,
            );
        }
        let Some(f) = file.as_mut() else {
            return Err(std::io::Error::other("audit log not open"));
        };
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Appends `event`, logging instead of failing: an audit line lost is reported, the action
    /// it records is not undone.
    pub fn note(&self, event: &Event) {
        if let Err(e) = self.record(event) {
            tracing::error!(
                "audit log {}: {e}: lost {}",
                self.path.display(),
                event.event
            );
        }
    }
}

/// Appends `event` from async code: the write and its sync run on the blocking pool, never on
/// an async worker, and the caller goes on once the line is on disk.
pub async fn note_off_the_workers(log: std::sync::Arc<AuditLog>, event: Event) {
    let what = event.event;
    if let Err(e) = tokio::task::spawn_blocking(move || log.note(&event)).await {
        tracing::error!("audit log: {e}: lost {what}");
    }
}

/// Builds an event's detail from pairs.
pub fn detail<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
