//! `otwatch-agent replay`: run capture files through the pipeline as fast as possible and
//! report what was decoded.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otwatch_rules::detect::DetectionConfig;
use otwatch_rules::modbus::FunctionCode;
use otwatch_rules::network::Watch;
use otwatch_rules::policy::Policy;
use serde::Serialize;

use crate::capture::file::CaptureFileError;
use crate::commands::offline::{self, FileReport};
use crate::delivery::{Delivery, DeliveryError, DeliveryOptions, DeliveryReport};
use crate::detection::assets::AssetReporter;
use crate::detection::evidence::EvidenceCounts;
use crate::detection::{AlertCounts, Detection};
use crate::outputs::event_log::EventLog;
use crate::outputs::transaction_log::TransactionLog;
use crate::telemetry::metrics;
use crate::telemetry::publisher::{Publisher, View};
use crate::telemetry::status::Status;
use otwatch_packet::flow_table::{FlowConfig, FlowCounters};
use otwatch_packet::modbus_counters::{ByFunction, ModbusCounters};
use otwatch_packet::pipeline::{PacketCounters, Pipeline};

/// A validated replay request.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Capture files, processed in order as one capture.
    pub pcaps: Vec<PathBuf>,
    /// Where to write the transaction log, if anywhere.
    pub transactions: Option<PathBuf>,
    /// Where to write the decode-event log, if anywhere.
    pub events: Option<PathBuf>,
    /// Flow tracking settings.
    pub flows: FlowConfig,
    /// Whether to draw a progress bar (only drawn on a terminal anyway).
    pub progress: bool,
    /// Detection settings (the agent's name, windows).
    pub detection: DetectionConfig,
    /// The policy, if any: without one only the built-in detectors run.
    pub policy: Option<Arc<Policy>>,
    /// Where to write alerts as JSON lines, if anywhere.
    pub alerts: Option<PathBuf>,
    /// Whether to print alerts readably on standard output.
    pub print_alerts: bool,
    /// Where to deliver alerts and asset observations, if anywhere.
    pub delivery: Option<DeliveryOptions>,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether floods and ARP or MAC spoofing are detected.
    pub network_detection: bool,
}

/// Everything a replay found.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// Per file.
    pub files: Vec<FileReport>,
    /// Packet-level counters.
    pub packets: PacketCounters,
    /// Flow table counters.
    pub flows: FlowCounters,
    /// Modbus counters.
    pub modbus: ModbusCounters,
    /// Transaction records written.
    pub transactions_written: Option<u64>,
    /// Decode-event records written.
    pub events_written: Option<u64>,
    /// Alerts raised.
    pub alerts: AlertCounts,
    /// The policy's hash, when one was in force.
    pub policy_hash: Option<String>,
    /// Hosts in the asset inventory (when delivering).
    pub assets: Option<usize>,
    /// What reached the collector (when delivering).
    pub delivery: Option<DeliveryReport>,
    /// The packets behind serious alerts (when delivering with evidence on).
    pub evidence: Option<EvidenceCounts>,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Packets per second of wall time.
    pub packets_per_second: f64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ReplayReport {
    /// Whether any file was damaged.
    pub fn damaged(&self) -> bool {
        self.files.iter().any(|f| f.error.is_some())
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let m = &self.modbus;
        let p = &self.packets;
        let mut out = String::new();
        for f in &self.files {
            out += &format!("{}: {} packets", f.path.display(), f.packets);
            if let Some(e) = &f.error {
                out += &format!(" (stopped: {e})");
            }
            out += "\n";
        }
        out += &format!(
            "packets {}  bytes {}  truncated {}  fragments {} (datagrams reassembled {}, invalid {}, expired {})\n",
            p.packets,
            p.bytes,
            p.truncated,
            p.fragments,
            p.reassembled,
            p.fragments_invalid,
            p.fragments_expired
        );
        out += &format!(
            "flows {}  modbus/tcp+udp {}  rtu {}  non-modbus on modbus ports {}  evicted {}  idle-closed {}\n",
            self.flows.created,
            m.mbap_flows,
            m.rtu_flows,
            m.non_modbus_flows,
            self.flows.evicted,
            self.flows.expired
        );
        out += &format!(
            "transactions: answered {}  unanswered {}  unsolicited responses {}\n",
            m.transactions.answered, m.transactions.unanswered, m.transactions.unsolicited
        );
        out += &function_table("requests by function", &m.requests);
        out += &function_table("responses by function", &m.responses);
        if !m.exceptions.is_empty() {
            out += "exceptions (function/code):\n";
            for ((function, code), n) in &m.exceptions {
                out += &format!("  {:<10} {n:>10}\n", format!("{function}/{code}"));
            }
        }
        if !m.decode_errors.is_empty() {
            out += "decode errors:\n";
            for (k, n) in &m.decode_errors {
                out += &format!("  {k:<34} {n:>10}\n");
            }
        }
        out += &format!(
            "stream: gaps {} ({} bytes)  retransmissions {}  overlap conflicts {}  resync skipped {} bytes\n",
            m.gaps, m.gap_bytes, m.retransmissions, m.overlap_conflicts, m.skipped_bytes
        );
        if !p.ignored.is_empty() || !p.malformed.is_empty() {
            out += &format!(
                "ignored packets {:?}  malformed packets {:?}\n",
                p.ignored, p.malformed
            );
        }
        let a = &self.alerts;
        out += &format!(
            "alerts {} ({} occurrences){}\n",
            a.total,
            a.occurrences,
            self.policy_hash.as_ref().map_or(
                String::from("  (built-in detectors only, no policy)"),
                |h| format!("  (policy {h})")
            )
        );
        for (rule, n) in &a.by_rule {
            out += &format!("  {rule:<34} {n:>10}\n");
        }
        if let Some(d) = &self.delivery {
            out += &format!(
                "delivered {} records in {} batches ({} already there)  waiting {}  failed attempts {}  outbox dropped {}  assets {}\n",
                d.delivered.records,
                d.delivered.batches,
                d.delivered.duplicates,
                d.waiting,
                d.delivered.failures,
                d.outbox_dropped,
                self.assets.unwrap_or(0)
            );
        }
        if let Some(e) = &self.evidence {
            out += &format!(
                "evidence: {} pcaps queued  {} alerts without frames  {} over the per-batch limit\n",
                e.queued, e.no_frames, e.over_limit
            );
        }
        out += &format!(
            "time {:.3} s  {:.0} packets/s\n",
            self.elapsed.as_secs_f64(),
            self.packets_per_second
        );
        out
    }
}

/// Why a replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A capture file could not be opened.
    #[error(transparent)]
    Open(#[from] CaptureFileError),
    /// Delivery to the collector could not start.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The metrics server could not start.
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The transaction log could not be written.
    #[error("{path}: {source}")]
    Output {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The agent's address in alerts about itself, when replaying (there is no interface).
const REPLAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Runs the replay.
pub fn replay(options: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let mut captures = offline::open_all(&options.pcaps)?;
    let transactions = open_output(options.transactions.as_deref())?.map(TransactionLog::new);
    let events = open_output(options.events.as_deref())?.map(EventLog::new);
    let status = Arc::new(Status::new());
    let delivery = options
        .delivery
        .as_ref()
        .map(|d| {
            Delivery::start(
                d,
                &options.detection.agent,
                REPLAY_ADDR,
                status.clone(),
                None,
                None,
            )
        })
        .transpose()?;
    let outbox = delivery.as_ref().map(|d| d.outbox().clone());
    if let Some(addr) = options.metrics_listen {
        metrics::serve_agent(addr, status.clone(), delivery.as_ref())
            .map_err(|source| ReplayError::Metrics { addr, source })?;
    }
    let started = Instant::now();
    let alert_log = open_output(options.alerts.as_deref())?;
    let mut detection = Detection::new(
        options.detection.clone(),
        options.policy.clone(),
        alert_log,
        options.print_alerts,
    );
    if options.network_detection {
        let watch = Watch::new(
            1,
            options.detection.agent.clone(),
            options.detection.default_window,
            options.policy.clone(),
        );
        detection =
            detection.with_network(Arc::new(Mutex::new(watch)), 0, &options.flows.modbus_ports);
    }
    if let Some(outbox) = &outbox {
        detection = detection.with_outbox(outbox.clone(), status.clone());
        if let Some(evidence) = options.delivery.as_ref().and_then(|d| d.evidence) {
            detection = detection.with_evidence(evidence);
        }
    }
    let assets = outbox
        .as_ref()
        .map(|o| AssetReporter::new(o.clone(), status.clone(), options.policy.clone()));
    let observer = ReplayObserver {
        modbus: ModbusCounters::default(),
        transactions,
        events,
        detection,
        assets,
    };
    let mut pipeline = Pipeline::new(options.flows.clone(), observer);
    let mut publisher = Publisher::new(
        status.clone(),
        options.policy.as_ref().map(|p| p.hash.clone()),
    );
    let files = offline::feed(&mut captures, &mut pipeline, options.progress, &mut |p| {
        // Alerts are reported once their batch is durable in the outbox.
        p.observer_mut().detection.flush_log();
        publisher.tick(view(p));
    });
    pipeline.finish();
    pipeline.observer_mut().detection.flush_log();
    publisher.publish(view(&pipeline));
    let elapsed = started.elapsed();
    let packets = pipeline.counters().clone();
    let flows = pipeline.flows().counters();
    let ReplayObserver {
        modbus,
        transactions,
        events,
        detection,
        assets,
    } = pipeline.into_observer();
    let alerts = detection.counts().clone();
    let evidence = detection.evidence_counts();
    detection
        .finish_log()
        .map_err(output_error(options.alerts.as_deref()))?;
    let transactions_written = transactions
        .map(TransactionLog::finish)
        .transpose()
        .map_err(output_error(options.transactions.as_deref()))?;
    let events_written = events
        .map(EventLog::finish)
        .transpose()
        .map_err(output_error(options.events.as_deref()))?;
    let packets_per_second = packets.packets as f64 / elapsed.as_secs_f64().max(1e-9);
    let delivery = delivery.map(Delivery::finish);
    Ok(ReplayReport {
        files,
        packets,
        flows,
        modbus,
        transactions_written,
        events_written,
        alerts,
        policy_hash: options.policy.as_ref().map(|p| p.hash.clone()),
        assets: assets.map(|a| a.hosts()),
        delivery,
        evidence,
        elapsed,
        packets_per_second,
    })
}

/// What a replay's pipeline reports to, in this order.
struct ReplayObserver<W: Write> {
    modbus: ModbusCounters,
    transactions: Option<TransactionLog<W>>,
    events: Option<EventLog<W>>,
    detection: Detection<W>,
    assets: Option<AssetReporter>,
}

otwatch_packet::forward_observer!(impl[W: Write] ReplayObserver<W> {
    modbus,
    transactions,
    events,
    detection,
    assets,
});

/// What the publisher reads from the replay's pipeline.
fn view<W: Write>(pipeline: &Pipeline<ReplayObserver<W>>) -> View<'_> {
    let ReplayObserver {
        modbus, detection, ..
    } = pipeline.observer();
    View {
        packets: pipeline.counters(),
        flows: pipeline.flows(),
        modbus,
        alerts: detection.counts(),
        clock_steps: pipeline.clock_steps(),
        evidence: detection.evidence_counts(),
    }
}

fn open_output(path: Option<&Path>) -> Result<Option<BufWriter<File>>, ReplayError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = File::create(path).map_err(output_error(Some(path)))?;
    Ok(Some(BufWriter::with_capacity(1 << 20, file)))
}

fn output_error(path: Option<&Path>) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.map(Path::to_path_buf).unwrap_or_default();
    move |source| ReplayError::Output { path, source }
}

/// Writes the report as pretty JSON to `path`.
pub fn write_json(report: &ReplayReport, path: &std::path::Path) -> Result<(), ReplayError> {
    let output = |source| ReplayError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufWriter::new(File::create(path).map_err(output)?);
    serde_json::to_writer_pretty(&mut file, report).map_err(|e| output(e.into()))?;
    file.write_all(b"\n").map_err(output)?;
    file.flush().map_err(output)
}
/// Renders per-function counts as `name (code): n` lines.
fn function_table(title: &str, counts: &ByFunction) -> String {
    let mut out = String::new();
    if counts.total() == 0 {
        return out;
    }
    let _ = writeln!(out, "{title}:");
    for (code, n) in counts.nonzero() {
        let name = FunctionCode::new(code).map_or("unknown", |f| f.name());
        let _ = writeln!(out, "  {name:<34} {code:>3}  {n:>10}");
    }
    out
}
