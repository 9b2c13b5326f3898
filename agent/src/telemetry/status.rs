//! What the agent is doing, in one place: the pipeline thread publishes a snapshot of its
//! counters a few times a second; the heartbeat and `/metrics` read it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;

use otwatch_packet::modbus_counters::ByFunction;

use crate::detection::evidence::EvidenceCounts;

/// The pipeline's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Packets seen.
    pub packets: u64,
    /// Bytes captured.
    pub bytes: u64,
    /// Packets the kernel or capture ring dropped before the agent saw them.
    pub kernel_drops: u64,
    /// Packets the capture thread dropped because the pipeline's queue was full.
    pub queue_drops: u64,
    /// Frames the capture cut short.
    pub truncated: u64,
    /// Fragmented IPv4 datagrams: rebuilt, dropped because fragments overlapped or
    /// contradicted each other, and given up for lack of room or time.
    pub datagrams: Datagrams,
    /// Times capture time went back by a minute or more (a corrected clock).
    pub clock_steps: u64,
    /// What became of the packets behind serious alerts.
    pub evidence: EvidenceCounts,
    /// Flows tracked now.
    pub flows_active: u64,
    /// Flows created.
    pub flows_created: u64,
    /// Flows evicted to make room (their state was lost).
    pub flows_evicted: u64,
    /// Requests decoded, by function code.
    pub requests: ByFunction,
    /// Decode errors by kind.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Alerts raised, by rule and severity.
    pub alerts: BTreeMap<(String, Severity), u64>,
    /// The policy in force.
    pub policy_hash: Option<String>,
    /// Packets per second over the last publication interval.
    pub packets_per_s: f64,
}

/// What became of fragmented IPv4 datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Datagrams {
    /// Rebuilt and decoded.
    pub reassembled: u64,
    /// Dropped: fragments overlapped or contradicted each other.
    pub invalid: u64,
    /// Given up for lack of room or time.
    pub expired: u64,
}

impl Snapshot {
    /// Adds the counters of another pipeline (a worker of the same agent).
    fn merge(&mut self, other: &Snapshot) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.kernel_drops += other.kernel_drops;
        self.queue_drops += other.queue_drops;
        self.truncated += other.truncated;
        self.datagrams.reassembled += other.datagrams.reassembled;
        self.datagrams.invalid += other.datagrams.invalid;
        self.datagrams.expired += other.datagrams.expired;
        // Every worker sees the agent's one clock step: count it once.
        self.clock_steps = self.clock_steps.max(other.clock_steps);
        self.flows_active += other.flows_active;
        self.flows_created += other.flows_created;
        self.flows_evicted += other.flows_evicted;
        self.evidence.merge(&other.evidence);
        self.requests.merge(&other.requests);
        for (kind, n) in &other.decode_errors {
            *self.decode_errors.entry(kind).or_default() += n;
        }
        for (key, n) in &other.alerts {
            *self.alerts.entry(key.clone()).or_default() += n;
        }
        if self.policy_hash.is_none() {
            self.policy_hash.clone_from(&other.policy_hash);
        }
        self.packets_per_s += other.packets_per_s;
    }
}

/// The shared status.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    snapshot: Mutex<Snapshot>,
    /// Per worker, when several pipelines publish.
    parts: Mutex<Vec<Snapshot>>,
    last_error: Mutex<Option<String>>,
    /// Internal events so far, by name (see `telemetry::events`).
    events: Mutex<BTreeMap<&'static str, u64>>,
    /// The last line logged per internal event, and when.
    said: Mutex<BTreeMap<&'static str, (String, Instant)>>,
}

impl Default for Status {
    fn default() -> Self {
        Self::new()
    }
}

impl Status {
    /// A status for an agent starting now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            snapshot: Mutex::new(Snapshot::default()),
            parts: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            events: Mutex::new(BTreeMap::new()),
            said: Mutex::new(BTreeMap::new()),
        }
    }

    /// Time since the agent started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snapshot;
        }
    }

    /// Replaces worker `index`'s part of the snapshot; the snapshot becomes the sum of the parts.
    pub fn publish_part(&self, index: usize, snapshot: Snapshot) {
        let Ok(mut parts) = self.parts.lock() else {
            return;
        };
        if parts.len() <= index {
            parts.resize(index + 1, Snapshot::default());
        }
        parts[index] = snapshot;
        let mut sum = Snapshot::default();
        for part in parts.iter() {
            sum.merge(part);
        }
        self.publish(sum);
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records the latest error (reported in heartbeats until another replaces it).
    pub fn set_last_error(&self, error: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    /// Counts `n` more of the internal event `name`; only `telemetry::events` calls this.
    pub(crate) fn count_event(&self, name: &'static str, n: u64) {
        if let Ok(mut events) = self.events.lock() {
            let count = events.entry(name).or_default();
            *count = count.saturating_add(n);
        }
    }

    /// Whether the internal event `name` logged `line` within `quiet`; if not, `line` is
    /// remembered as said now.
    pub(crate) fn said_lately(&self, name: &'static str, line: &str, quiet: Duration) -> bool {
        let Ok(mut said) = self.said.lock() else {
            return false;
        };
        if let Some((last, at)) = said.get(name)
            && last == line
            && at.elapsed() < quiet
        {
            return true;
        }
        said.insert(name, (line.to_string(), Instant::now()));
        false
    }

    /// Internal events so far, by name.
    pub fn events(&self) -> BTreeMap<&'static str, u64> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The latest error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// The wall clock as a timestamp (for alerts about the agent itself).
pub fn wall_clock() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
