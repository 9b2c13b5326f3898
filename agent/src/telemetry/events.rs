//! The agent's internal events, as vector's are: each thing that happens to the agent itself
//! (a policy reloaded or rejected, records set aside or dropped, a write that failed, flows
//! evicted) is one type here, and [`InternalEvent::emit`] is the one place that logs it at its
//! level, counts it (`otwatch_agent_internal_events_total{event}`) and, for an error, makes it
//! the last error the status page and heartbeat show. The rest of the agent emits events; it
//! does not log or count these itself.
//!
//! What the packet path counts per packet (drops, evictions) stays counted there, without a
//! lock, and reaches `/metrics` through the workers' snapshots; the publisher emits an event
//! when such a counter moves, at most once per [`QUIET`] per kind, so a flood of drops makes
//! one log line every few seconds, not one per packet.

use std::time::Duration;

use otwatch_rules::policy::Warning;

use crate::telemetry::status::Status;

/// Least time between two log lines of one per-packet event kind.
pub const QUIET: Duration = Duration::from_secs(10);

/// How bad an event is, for its log line.
#[derive(Debug, Clone, Copy)]
enum Level {
    Warn,
    Error,
}

/// Logs `line` at `level`, or at debug level when the same line of the same event was logged
/// within [`QUIET`] (a disk or a collector that keeps failing): counted every time, said once.
fn log(status: &Status, name: &'static str, level: Level, line: &str) {
    if status.said_lately(name, line, QUIET) {
        tracing::debug!("{line}");
        return;
    }
    match level {
        Level::Warn => tracing::warn!("{line}"),
        Level::Error => tracing::error!("{line}"),
    }
}

/// An event that went wrong: logged (said once per quiet time), counted `n` times, and made
/// the last error.
fn fault(status: &Status, name: &'static str, level: Level, line: String, n: u64) {
    log(status, name, level, &line);
    status.count_event(name, n);
    status.set_last_error(line);
}

/// Something that happened to the agent, to log and count.
pub trait InternalEvent {
    /// The event's name: the `event` label of `otwatch_agent_internal_events_total`.
    const NAME: &'static str;

    /// Logs the event, counts it in `status`, and records it as the last error if it is one.
    fn emit(self, status: &Status);
}

/// A new policy is in force.
#[derive(Debug)]
pub struct PolicyReloaded<'a> {
    /// Its hash.
    pub hash: &'a str,
    /// What its checker warned about.
    pub warnings: &'a [Warning],
}

impl InternalEvent for PolicyReloaded<'_> {
    const NAME: &'static str = "policy_reloaded";

    fn emit(self, status: &Status) {
        for w in self.warnings {
            tracing::warn!("policy: warning: {w}");
        }
        tracing::info!("policy reloaded (hash {})", self.hash);
        status.count_event(Self::NAME, 1);
    }
}

/// A changed policy file does not load: the previous policy stays in force.
pub struct PolicyRejected<'a> {
    /// Why, with the file, line and field.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for PolicyRejected<'_> {
    const NAME: &'static str = "policy_rejected";

    fn emit(self, status: &Status) {
        let line = format!(
            "new policy rejected, the previous one stays in force: {}",
            self.error
        );
        fault(status, Self::NAME, Level::Error, line, 1);
    }
}

/// Records the collector will never take were removed from the outbox.
#[derive(Debug)]
pub struct RecordsSetAside<'a> {
    /// How many.
    pub count: u64,
    /// Why, in words.
    pub why: &'a str,
}

impl InternalEvent for RecordsSetAside<'_> {
    const NAME: &'static str = "records_set_aside";

    fn emit(self, status: &Status) {
        fault(
            status,
            Self::NAME,
            Level::Warn,
            self.why.to_string(),
            self.count,
        );
    }
}

/// Delivery to the collector went wrong (it is retried): unreachable, refused, busy.
#[derive(Debug)]
pub struct DeliveryFailed<'a> {
    /// What went wrong.
    pub why: &'a str,
}

impl InternalEvent for DeliveryFailed<'_> {
    const NAME: &'static str = "delivery_failed";

    fn emit(self, status: &Status) {
        log(
            status,
            Self::NAME,
            Level::Warn,
            &format!("delivery: {}", self.why),
        );
        status.count_event(Self::NAME, 1);
        status.set_last_error(self.why.to_string());
    }
}

/// The outbox could not take or keep records (a full or failing disk).
pub struct OutboxFailed<'a> {
    /// The error.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for OutboxFailed<'_> {
    const NAME: &'static str = "outbox_failed";

    fn emit(self, status: &Status) {
        fault(status, Self::NAME, Level::Error, self.error.to_string(), 1);
    }
}

/// The outbox was full and dropped records to make room (reported to the collector as an
/// `agent.outbox_overflow` alert). Counted by the outbox itself, persistently
/// (`otwatch_agent_drops_total{where="outbox"}`), not again here.
#[derive(Debug)]
pub struct OutboxOverflow {
    /// Records dropped since the last line.
    pub dropped: u64,
}

impl InternalEvent for OutboxOverflow {
    const NAME: &'static str = "outbox_overflow";

    fn emit(self, _status: &Status) {
        tracing::warn!(
            dropped = self.dropped,
            "outbox full: {} undelivered records dropped (oldest first, alerts last)",
            self.dropped
        );
    }
}

/// Capture failed or ended in error.
pub struct CaptureFailed<'a> {
    /// The error.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for CaptureFailed<'_> {
    const NAME: &'static str = "capture_failed";

    fn emit(self, status: &Status) {
        let line = format!("capture: {}", self.error);
        fault(status, Self::NAME, Level::Error, line, 1);
    }
}

/// The local alert log could not be written.
pub struct AlertLogFailed<'a> {
    /// The error.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for AlertLogFailed<'_> {
    const NAME: &'static str = "alert_log_failed";

    fn emit(self, status: &Status) {
        let line = format!("alert log: {}", self.error);
        fault(status, Self::NAME, Level::Error, line, 1);
    }
}

/// Packets were lost before the pipeline saw them, counted on the packet path (not counted
/// again here: `otwatch_agent_drops_total{where}` has them).
#[derive(Debug)]
pub struct PacketsDropped {
    /// Where: `kernel` (capture ring or socket) or `queue` (pipeline behind the capture).
    pub stage: &'static str,
    /// Packets lost since the last line.
    pub count: u64,
}

impl InternalEvent for PacketsDropped {
    const NAME: &'static str = "packets_dropped";

    fn emit(self, _status: &Status) {
        tracing::warn!(
            stage = self.stage,
            count = self.count,
            "{} packets dropped ({}) since the last report: the capture cannot keep up",
            self.count,
            self.stage
        );
    }
}

/// Flows were evicted from a full flow table, their state lost, counted on the packet path
/// (`otwatch_agent_flows_total{event="evicted"}` has them).
#[derive(Debug)]
pub struct FlowsEvicted {
    /// Flows evicted since the last line.
    pub count: u64,
}

impl InternalEvent for FlowsEvicted {
    const NAME: &'static str = "flows_evicted";

    fn emit(self, _status: &Status) {
        tracing::warn!(
            count = self.count,
            "{} flows evicted from the full flow table since the last report (their reassembly and pairing state is lost)",
            self.count
        );
    }
}

/// Emits a per-packet counter's event at most once per [`QUIET`], with what it counted since.
#[derive(Debug, Default)]
pub struct Throttle {
    reported: u64,
    last: Option<std::time::Instant>,
}

impl Throttle {
    /// A throttle for a counter already at `total` (counted before this run: not reported).
    pub fn starting_at(total: u64) -> Self {
        Self {
            reported: total,
            last: None,
        }
    }

    /// The count to report now for a counter standing at `total`, if it moved and the last
    /// report is at least [`QUIET`] old.
    pub fn due(&mut self, total: u64) -> Option<u64> {
        if total <= self.reported {
            return None;
        }
        if self.last.is_some_and(|t| t.elapsed() < QUIET) {
            return None;
        }
        let count = total - self.reported;
        self.reported = total;
        self.last = Some(std::time::Instant::now());
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_counts_under_its_name_and_errors_become_the_last_error() {
        let status = Status::new();
        PolicyRejected { error: &"line 3" }.emit(&status);
        RecordsSetAside {
            count: 4,
            why: "4 record(s) set aside: 422",
        }
        .emit(&status);
        PolicyReloaded {
            hash: "abc",
            warnings: &[],
        }
        .emit(&status);
        let events = status.events();
        assert_eq!(events.get("policy_rejected"), Some(&1));
        assert_eq!(events.get("records_set_aside"), Some(&4));
        assert_eq!(events.get("policy_reloaded"), Some(&1));
        assert_eq!(
            status.last_error().as_deref(),
            Some("4 record(s) set aside: 422")
        );
    }

    #[test]
    fn a_failure_repeated_within_the_quiet_time_is_counted_every_time_and_said_once() {
        let status = Status::new();
        for _ in 0..3 {
            OutboxFailed {
                error: &"outbox: No space left on device",
            }
            .emit(&status);
        }
        assert_eq!(status.events().get("outbox_failed"), Some(&3));
        assert!(status.said_lately(OutboxFailed::NAME, "outbox: No space left on device", QUIET));
        assert!(
            !status.said_lately(OutboxFailed::NAME, "outbox: another error", QUIET),
            "another failure is said at once"
        );
    }

    #[test]
    fn per_packet_events_are_not_counted_twice() {
        let status = Status::new();
        PacketsDropped {
            stage: "queue",
            count: 5,
        }
        .emit(&status);
        FlowsEvicted { count: 2 }.emit(&status);
        OutboxOverflow { dropped: 7 }.emit(&status);
        assert!(status.events().is_empty());
    }

    #[test]
    fn a_throttle_reports_what_moved_then_stays_quiet() {
        let mut t = Throttle::default();
        assert_eq!(t.due(0), None);
        assert_eq!(t.due(10), Some(10));
        assert_eq!(t.due(15), None, "within the quiet time");
        t.last = Some(std::time::Instant::now() - QUIET);
        assert_eq!(t.due(15), Some(5), "what came since the last report");
        t.last = Some(std::time::Instant::now() - QUIET);
        assert_eq!(t.due(15), None, "nothing new");
    }
}
