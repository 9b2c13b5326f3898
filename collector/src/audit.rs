//! The audit log: one JSON record per login, logout, admin action and credential change, by the
//! server and by the `enroll` and `revoke` commands alike; admins read the newest with
//! `GET /api/v1/audit`.
//!
//! Where it is kept follows the store:
//! - With sled, appended to `audit.log` in the data folder (owner-only). Each line is written
//!   with one `write` on a file opened for appending, so lines from the server and a command
//!   running beside it never interleave.
//! - With a database replicas share, as records of it: the newest [`SHARED_KEEP`] events, in
//!   the order they were noted across every replica.
//!
//! A record that cannot be written is logged (tracing); the action it records still happens.
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};

use otwatch_rules::time::Timestamp;

use crate::kv::{Batch, Kv, Order, scan_prefix};

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

/// Events a shared store keeps: the oldest goes when one more is noted.
pub const SHARED_KEEP: u64 = 100_000;

/// Most events one read returns.
pub const MAX_READ: usize = 1_000;

/// How much of the end of `audit.log` a read looks at.
const FILE_TAIL_BYTES: u64 = 1 << 20;

/// The counter of events noted in a shared store, and the prefix of their records (the event's
/// number, big-endian, after it).
const SHARED_COUNTER: &[u8] = b"Maudit_noted";
const SHARED_PREFIX: &[u8] = crate::store::AUDIT_PREFIX;

/// Appends events to the audit log.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    shared: Option<Arc<dyn Kv>>,
    /// This process's shared writes, one at a time (the store's section orders processes).
    writer: Mutex<()>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl AuditLog {
    /// The audit log of the data folder `data` (opened on first write).
    pub fn in_dir(data: &Path) -> Self {
        Self {
            path: data.join(FILE_NAME),
            file: Mutex::new(None),
            shared: None,
            writer: Mutex::new(()),
        }
    }

    /// The audit log in a store replicas share.
    pub fn shared(kv: Arc<dyn Kv>) -> Self {
        Self {
            shared: Some(kv),
            ..Self::in_dir(Path::new("."))
        }
    }

    /// The file it is written to (unused with a shared store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it is written: the file, or the store.
    pub fn describe(&self) -> String {
        match self.shared {
            Some(_) => "the audit records of the store".into(),
            None => self.path.display().to_string(),
        }
    }

    /// Records `event`.
    pub fn record(&self, event: &Event) -> std::io::Result<()> {
        if let Some(kv) = &self.shared {
            return record_shared(kv.as_ref(), &self.writer, event, SHARED_KEEP)
                .map_err(std::io::Error::other);
        }
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
            tracing::error!("audit log {}: {e}: lost {}", self.describe(), event.event);
        }
    }

    /// The newest `limit` events (at most [`MAX_READ`]), newest first. From a file, only its
    /// last mebibyte is read.
    pub fn newest(&self, limit: usize) -> std::io::Result<Vec<Value>> {
        let limit = limit.min(MAX_READ);
        if let Some(kv) = &self.shared {
            return scan_prefix(kv.as_ref(), SHARED_PREFIX, Order::Descending, limit)
                .map_err(std::io::Error::other)?
                .into_iter()
                .map(|(_, v)| serde_json::from_slice(&v).map_err(std::io::Error::other))
                .collect();
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let start = len.saturating_sub(FILE_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.take(FILE_TAIL_BYTES).read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            // The first line is cut.
            lines.remove(0);
        }
        Ok(lines
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(limit)
            .collect())
    }
}

/// Notes `event` as the next record of a shared store, removing the one `keep` back.
fn record_shared(kv: &dyn Kv, writer: &Mutex<()>, event: &Event, keep: u64) -> Result<(), String> {
    let value = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let _local = writer
        .lock()
        .map_err(|_| "audit writer poisoned".to_string())?;
    let _section = kv.section().map_err(|e| e.to_string())?;
    let noted = kv
        .get(SHARED_COUNTER)
        .map_err(|e| e.to_string())?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let key = |n: u64| {
        let mut k = SHARED_PREFIX.to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        k
    };
    let mut b = Batch::new();
    b.put(key(noted), value);
    if noted >= keep {
        b.delete(key(noted - keep));
    }
    b.put(SHARED_COUNTER.to_vec(), (noted + 1).to_be_bytes().to_vec());
    kv.apply(b).map_err(|e| e.to_string())?;
    kv.flush().map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Event {
        Event {
            ts: Timestamp::from_secs(n),
            event: "login",
            who: Some(format!("user{n}")),
            source: None,
            detail: detail([("n", serde_json::json!(n))]),
        }
    }

    #[test]
    fn a_shared_store_keeps_the_newest_events_in_order_and_drops_the_oldest() {
        let kv: Arc<dyn Kv> = Arc::new(crate::kv::memory::MemoryKv::new());
        let writer = Mutex::new(());
        for n in 0..5 {
            record_shared(kv.as_ref(), &writer, &event(n), 3).unwrap();
        }
        let log = AuditLog::shared(kv);
        let newest: Vec<u64> = log
            .newest(10)
            .unwrap()
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        assert_eq!(newest, vec![4, 3, 2], "the newest three, newest first");
    }

    #[test]
    fn a_file_reads_back_newest_first_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::in_dir(dir.path());
        assert!(log.newest(10).unwrap().is_empty());
        for n in 0..4 {
            log.record(&event(n)).unwrap();
        }
        let newest: Vec<u64> = log
            .newest(2)
            .unwrap()
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        assert_eq!(newest, vec![3, 2]);
    }
}
