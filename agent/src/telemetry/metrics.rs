//! The agent's Prometheus metrics, all prefixed `otwatch_agent_`, and the small HTTP server
//! that exposes them on `/metrics` (with `/healthz`).
//!
//! Counters are read from the agent's [`Status`] snapshot, the outbox and the shipper when
//! Prometheus scrapes, so the packet path never touches a metric.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use otwatch_rules::modbus::FunctionCode;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::delivery::outbox::Outbox;
use crate::telemetry::events::{InternalEvent, PolicyRejected, PolicyReloaded};
use crate::telemetry::status::{Snapshot, Status};
use otwatch_delivery::{Delivered, Lane};

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Registry,
    packets: IntCounter,
    bytes: IntCounter,
    drops: IntCounterVec,
    truncated: IntCounter,
    datagrams: IntCounterVec,
    clock_steps: IntCounter,
    evidence: IntCounterVec,
    evidence_cuts: IntCounterVec,
    flows_active: IntGauge,
    flows: IntCounterVec,
    transactions: IntCounterVec,
    decode_errors: IntCounterVec,
    alerts: IntCounterVec,
    outbox_depth: IntGauge,
    outbox_lanes: IntGaugeVec,
    outbox_bytes: IntGauge,
    sent: IntCounter,
    send_failures: IntCounter,
    rejected: IntCounter,
    connected: IntGauge,
    collector_in_use: IntGaugeVec,
    /// The collectors delivered to, by index (the first preferred).
    collectors: Vec<String>,
    policy_reloads: IntCounterVec,
    events: IntCounterVec,
    uptime: IntGauge,
    /// What was last exported, so counters advance by the difference.
    last: Mutex<Last>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

/// What was last exported, so counters advance by the difference.
#[derive(Debug, Default)]
struct Last {
    snapshot: Snapshot,
    delivered: Delivered,
    /// Records the outbox dropped.
    dropped: u64,
    events: BTreeMap<&'static str, u64>,
}

fn advance(counter: &IntCounter, old: u64, new: u64) {
    counter.inc_by(new.saturating_sub(old));
}

impl AgentMetrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let v = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(v.clone()))?;
                Ok(v)
            };
        Ok(Self {
            packets: counter("otwatch_agent_packets_total", "Packets seen")?,
            bytes: counter("otwatch_agent_bytes_total", "Bytes captured")?,
            drops: vec(
                "otwatch_agent_drops_total",
                "Packets or records lost: kernel (capture ring or socket), queue (pipeline behind the capture) or outbox (full, oldest dropped)",
                &["where"],
            )?,
            truncated: counter(
                "otwatch_agent_truncated_total",
                "Frames the capture cut short (snap length or read buffer)",
            )?,
            datagrams: vec(
                "otwatch_agent_fragmented_datagrams_total",
                "Fragmented IPv4 datagrams: reassembled, invalid (overlapping or contradicting fragments: dropped) or expired (no room or time)",
                &["result"],
            )?,
            clock_steps: counter(
                "otwatch_agent_clock_steps_total",
                "Times capture time went back by a minute or more (a corrected clock): flows were closed and detection windows restarted",
            )?,
            evidence: vec(
                "otwatch_agent_evidence_total",
                "Serious alerts that wanted their packets: queued (a pcap in the outbox), no_frames (none of the flow's frames was held) or over_limit (too many in one batch)",
                &["outcome"],
            )?,
            evidence_cuts: vec(
                "otwatch_agent_evidence_frames_cut_total",
                "Frames the evidence buffer let go to stay within its bounds: per_flow (a flow's last frames only) or total (the buffer's size)",
                &["limit"],
            )?,
            flows_active: gauge("otwatch_agent_flows_active", "Flows tracked now")?,
            flows: vec(
                "otwatch_agent_flows_total",
                "Flows created, and evicted to make room",
                &["event"],
            )?,
            transactions: vec(
                "otwatch_agent_requests_total",
                "Modbus requests decoded, by function",
                &["function"],
            )?,
            decode_errors: vec(
                "otwatch_agent_decode_errors_total",
                "Frames that failed to decode, by kind",
                &["kind"],
            )?,
            alerts: vec(
                "otwatch_agent_alerts_total",
                "Alerts raised, by rule and severity",
                &["rule", "severity"],
            )?,
            outbox_depth: gauge("otwatch_agent_outbox_depth", "Records waiting for delivery")?,
            outbox_lanes: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "otwatch_agent_outbox_lane_depth",
                        "Records waiting for delivery, by lane (alerts go first)",
                    ),
                    &["lane"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            outbox_bytes: gauge(
                "otwatch_agent_outbox_bytes",
                "Bytes of records waiting for delivery",
            )?,
            sent: counter(
                "otwatch_agent_records_delivered_total",
                "Records the collector acknowledged",
            )?,
            send_failures: counter(
                "otwatch_agent_send_failures_total",
                "Delivery attempts that failed (each is retried)",
            )?,
            rejected: counter(
                "otwatch_agent_records_rejected_total",
                "Records the collector refused as malformed, set aside",
            )?,
            connected: gauge(
                "otwatch_agent_collector_connected",
                "1 when the last attempt reached the collector",
            )?,
            collector_in_use: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "otwatch_agent_collector_in_use",
                        "1 for the collector delivered to, 0 for the other replicas listed (the first listed is preferred)",
                    ),
                    &["collector"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            collectors: Vec::new(),
            events: vec(
                "otwatch_agent_internal_events_total",
                "Things that happened to the agent itself, by event (records for set-asides and overflows)",
                &["event"],
            )?,
            policy_reloads: vec(
                "otwatch_agent_policy_reloads_total",
                "Policy reloads, by result",
                &["result"],
            )?,
            uptime: gauge(
                "otwatch_agent_uptime_seconds",
                "Seconds since the agent started",
            )?,
            last: Mutex::new(Last::default()),
            registry,
        })
    }

    /// The collectors delivery uses, by index, for `otwatch_agent_collector_in_use`.
    pub fn with_collectors(mut self, collectors: Vec<String>) -> Self {
        self.collectors = collectors;
        self
    }

    /// Brings every metric up to date and renders the text exposition.
    pub fn render(
        &self,
        status: &Status,
        outbox: Option<&Outbox>,
        delivered: Option<Delivered>,
    ) -> String {
        let now = status.snapshot();
        let delivered = delivered.unwrap_or_default();
        let dropped = outbox.map_or(0, Outbox::dropped_total);
        let events = status.events();
        if let Ok(mut last) = self.last.lock() {
            let Last {
                snapshot: old,
                delivered: old_delivered,
                dropped: old_dropped,
                events: old_events,
            } = &*last;
            advance(&self.packets, old.packets, now.packets);
            advance(&self.bytes, old.bytes, now.bytes);
            advance(
                &self.drops.with_label_values(&["kernel"]),
                old.kernel_drops,
                now.kernel_drops,
            );
            advance(
                &self.drops.with_label_values(&["queue"]),
                old.queue_drops,
                now.queue_drops,
            );
            advance(&self.truncated, old.truncated, now.truncated);
            advance(&self.clock_steps, old.clock_steps, now.clock_steps);
            for (outcome, was, is) in [
                ("queued", old.evidence.queued, now.evidence.queued),
                ("no_frames", old.evidence.no_frames, now.evidence.no_frames),
                (
                    "over_limit",
                    old.evidence.over_limit,
                    now.evidence.over_limit,
                ),
            ] {
                advance(&self.evidence.with_label_values(&[outcome]), was, is);
            }
            for (limit, was, is) in [
                (
                    "per_flow",
                    old.evidence.cuts.per_flow,
                    now.evidence.cuts.per_flow,
                ),
                ("total", old.evidence.cuts.total, now.evidence.cuts.total),
            ] {
                advance(&self.evidence_cuts.with_label_values(&[limit]), was, is);
            }
            for (result, was, is) in [
                (
                    "reassembled",
                    old.datagrams.reassembled,
                    now.datagrams.reassembled,
                ),
                ("invalid", old.datagrams.invalid, now.datagrams.invalid),
                ("expired", old.datagrams.expired, now.datagrams.expired),
            ] {
                advance(&self.datagrams.with_label_values(&[result]), was, is);
            }
            advance(
                &self.drops.with_label_values(&["outbox"]),
                *old_dropped,
                dropped,
            );
            advance(
                &self.flows.with_label_values(&["created"]),
                old.flows_created,
                now.flows_created,
            );
            advance(
                &self.flows.with_label_values(&["evicted"]),
                old.flows_evicted,
                now.flows_evicted,
            );
            for (code, n) in now.requests.nonzero() {
                let name = FunctionCode::new(code).map_or("unknown", |f| f.name());
                advance(
                    &self.transactions.with_label_values(&[name]),
                    old.requests.get(code),
                    n,
                );
            }
            for (kind, n) in &now.decode_errors {
                let was = old.decode_errors.get(kind).copied().unwrap_or(0);
                advance(&self.decode_errors.with_label_values(&[kind]), was, *n);
            }
            for ((rule, severity), n) in &now.alerts {
                let was = old
                    .alerts
                    .get(&(rule.clone(), *severity))
                    .copied()
                    .unwrap_or(0);
                advance(
                    &self.alerts.with_label_values(&[rule, severity.name()]),
                    was,
                    *n,
                );
            }
            for (name, n) in &events {
                let was = old_events.get(name).copied().unwrap_or(0);
                advance(&self.events.with_label_values(&[name]), was, *n);
                let result = match *name {
                    PolicyReloaded::NAME => "applied",
                    PolicyRejected::NAME => "rejected",
                    _ => continue,
                };
                advance(&self.policy_reloads.with_label_values(&[result]), was, *n);
            }
            advance(&self.sent, old_delivered.records, delivered.records);
            advance(
                &self.send_failures,
                old_delivered.failures,
                delivered.failures,
            );
            advance(&self.rejected, old_delivered.rejected, delivered.rejected);
            *last = Last {
                snapshot: now.clone(),
                delivered: delivered.clone(),
                dropped,
                events,
            };
        }
        self.flows_active
            .set(i64::try_from(now.flows_active).unwrap_or(i64::MAX));
        self.outbox_depth
            .set(outbox.map_or(0, |o| i64::try_from(o.depth()).unwrap_or(i64::MAX)));
        for lane in Lane::ALL {
            let depth = outbox.map_or(0, |o| o.depth_of(lane));
            self.outbox_lanes
                .with_label_values(&[lane.name()])
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        self.outbox_bytes
            .set(outbox.map_or(0, |o| i64::try_from(o.bytes()).unwrap_or(i64::MAX)));
        self.connected.set(i64::from(delivered.connected));
        for (i, collector) in self.collectors.iter().enumerate() {
            self.collector_in_use
                .with_label_values(&[collector.as_str()])
                .set(i64::from(i == delivered.collector));
        }
        self.uptime
            .set(i64::try_from(status.uptime().as_secs()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Renders the current metrics on request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves the agent's metrics on `listen`: read from `status`, and from the outbox and the
/// shipper when delivering.
pub fn serve_agent(
    listen: SocketAddr,
    status: Arc<Status>,
    delivery: Option<&crate::delivery::Delivery>,
) -> std::io::Result<MetricsServer> {
    let metrics = AgentMetrics::new()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_collectors(delivery.map_or_else(Vec::new, |d| d.collectors().to_vec()));
    let outbox = delivery.map(|d| d.outbox().clone());
    let delivered = delivery.map(crate::delivery::Delivery::delivered_handle);
    let render: Render = Arc::new(move || {
        metrics.render(&status, outbox.as_deref(), delivered.as_ref().map(|d| d()))
    });
    serve(listen, render)
}

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens (the real port when asked for port 0).
    pub addr: SocketAddr,
}

/// Serves `/metrics` and `/healthz` on `listen` from a background thread, for as long as the
/// process runs.
pub fn serve(listen: SocketAddr, render: Render) -> std::io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("otwatch-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new()
                    .route(
                        "/metrics",
                        axum::routing::get(move || {
                            let render = render.clone();
                            async move {
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4",
                                    )],
                                    render(),
                                )
                            }
                        }),
                    )
                    .route("/healthz", axum::routing::get(|| async { "ok" }));
                let _ = axum::serve(listener, app).await;
            });
        })?;
    Ok(MetricsServer { addr })
}

#[cfg(test)]
mod tests;
