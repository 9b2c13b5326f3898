//! `otwatch-agent run`: the agent on duty. Captures live (an interface through pnet, or a pcap
//! stream), runs every packet through the pipeline and detection, queues alerts and asset
//! observations for the collector, serves `/metrics`, reloads the policy on SIGHUP or when its
//! file changes, and on SIGTERM or Ctrl-C stops capturing, closes every flow, and waits for the
//! outbox to reach the collector before it exits.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otwatch_rules::detect::DetectionConfig;
use otwatch_rules::network::Watch;
use otwatch_rules::policy::Policy;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::capture::file::CaptureFileError;
#[cfg(target_os = "linux")]
use crate::capture::interface::{self, OpenError};
use crate::capture::live::{Capture, LiveSource, Next};
use crate::capture::pcap_stream::PcapStream;
#[cfg(target_os = "linux")]
use crate::capture::pnet::{PnetOptions, PnetSource};
#[cfg(target_os = "linux")]
use crate::capture::ring::{RingOptions, RingSource};
use crate::delivery::policy_follow::PolicyFollower;
use crate::delivery::{Delivery, DeliveryError, DeliveryOptions, DeliveryReport};
use crate::detection::assets::AssetReporter;
use crate::detection::learn_requests::{LearnRequests, Learning};
use crate::detection::policy_reload::{Reload, Reloader};
use crate::detection::{AlertCounts, Detection};
use crate::outputs::jsonl::SharedWriter;
use crate::telemetry::events::{
    AlertLogFailed, CaptureFailed, InternalEvent, PolicyRejected, PolicyReloaded,
};
use crate::telemetry::metrics;
use crate::telemetry::publisher::{Publisher, View};
use crate::telemetry::status::Status;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::modbus_counters::ModbusCounters;
use otwatch_packet::pipeline::{PacketCounters, Pipeline};

mod learning;

use learning::{Coordinator, LearnCommand};

/// Where packets come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An interface, through pnet's channel.
    #[cfg(target_os = "linux")]
    Pnet(PnetOptions),
    /// An interface, through a TPACKET_V3 ring.
    #[cfg(target_os = "linux")]
    Ring(RingOptions),
    /// A pcap stream: a file or FIFO being written, or standard input (`-`).
    Stream(PathBuf),
}

/// A validated `run` request.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where packets come from.
    pub source: Source,
    /// Flow tracking settings.
    pub flows: FlowConfig,
    /// Detection settings (the agent's name, windows).
    pub detection: DetectionConfig,
    /// The policy file and its contents, if any: it is reloaded when it changes.
    pub policy: Option<(PathBuf, Arc<Policy>)>,
    /// With `policy_source = "collector"`, the file that keeps the last good policy the
    /// collector assigned (the `policy` above, when it held one at start).
    pub follow: Option<PathBuf>,
    /// Where to append alerts as JSON lines, if anywhere.
    pub alerts: Option<PathBuf>,
    /// Whether to print alerts readably on standard output.
    pub print_alerts: bool,
    /// Where to deliver alerts and asset observations, if anywhere.
    pub delivery: Option<DeliveryOptions>,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Pipelines working in parallel (ring backend; 1 otherwise).
    pub workers: usize,
    /// Whether floods and ARP or MAC spoofing are detected (one watch judges every
    /// worker's samples together).
    pub network_detection: bool,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The interface cannot be captured on.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Interface(#[from] OpenError),
    /// The pcap stream cannot be read.
    #[error(transparent)]
    Stream(#[from] CaptureFileError),
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
    /// The alert log cannot be written.
    #[error("{path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A thread or signal handler could not be set up.
    #[error("cannot start: {0}")]
    Setup(#[from] std::io::Error),
}

/// What a run came to, printed when it ends.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// What captured.
    pub capture: String,
    /// Packet counters.
    pub packets: PacketCounters,
    /// Packets the kernel dropped.
    pub kernel_drops: u64,
    /// Packets dropped because the pipeline fell behind.
    pub queue_drops: u64,
    /// Alerts raised.
    pub alerts: AlertCounts,
    /// Policy reloads applied and rejected.
    pub policy_reloads: (u64, u64),
    /// What reached the collector.
    pub delivery: Option<DeliveryReport>,
    /// Why the run ended: "signal" or "end of stream".
    pub ended_by: &'static str,
}

impl RunReport {
    /// One readable paragraph.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: stopped ({}): packets {}  bytes {}  truncated {}  kernel drops {}  queue drops {}\nalerts {} ({} occurrences)  policy reloads {} applied, {} rejected\n",
            self.capture,
            self.ended_by,
            self.packets.packets,
            self.packets.bytes,
            self.packets.truncated,
            self.kernel_drops,
            self.queue_drops,
            self.alerts.total,
            self.alerts.occurrences,
            self.policy_reloads.0,
            self.policy_reloads.1,
        );
        if let Some(d) = &self.delivery {
            out += &format!(
                "delivered {} records ({} already there)  waiting in the outbox {}  outbox dropped {}\n",
                d.delivered.records, d.delivered.duplicates, d.waiting, d.outbox_dropped
            );
        }
        out
    }
}

/// What a live pipeline reports to, in this order.
struct RunObserver {
    modbus: ModbusCounters,
    detection: Detection<SharedWriter>,
    assets: Option<AssetReporter>,
    /// Learning for a request of the collector, while it lasts.
    learning: Option<Learning>,
}

otwatch_packet::forward_observer!(impl[] RunObserver { modbus, detection, assets, learning });

/// How long the pipeline waits for packets before doing its housekeeping.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How often time is advanced, counters published and the policy file checked.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// The agent's address on the interface, for alerts about itself.
fn agent_addr(source: &Source) -> SocketAddr {
    let ip = match source {
        #[cfg(target_os = "linux")]
        Source::Pnet(PnetOptions { interface, .. })
        | Source::Ring(RingOptions { interface, .. }) => interface::find(interface)
            .ok()
            .and_then(|i| i.ips.first().map(|n| n.ip())),
        Source::Stream(_) => None,
    };
    SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0)
}

/// Opens one live source (for `run`, and for `learn --iface`).
pub fn open_source(source: &Source) -> Result<Box<dyn LiveSource>, RunError> {
    Ok(match source {
        #[cfg(target_os = "linux")]
        Source::Pnet(options) => Box::new(PnetSource::open(options)?),
        #[cfg(target_os = "linux")]
        Source::Ring(options) => Box::new(RingSource::open(options)?),
        Source::Stream(path) => Box::new(PcapStream::open(path)?),
    })
}

/// Opens the source: one ring per worker, sharing the interface through a fanout group by
/// host pair, or a single source.
fn open_sources(source: &Source, workers: usize) -> Result<Vec<Box<dyn LiveSource>>, RunError> {
    #[cfg(target_os = "linux")]
    if let Source::Ring(options) = source
        && workers > 1
    {
        // One group per agent process: the low bits of its pid.
        let group = (std::process::id() & 0xffff) as u16;
        let mut sources: Vec<Box<dyn LiveSource>> = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut options = options.clone();
            options.fanout = Some((group, u32::try_from(workers).unwrap_or(u32::MAX)));
            sources.push(Box::new(RingSource::open(&options)?));
        }
        return Ok(sources);
    }
    Ok(vec![open_source(source)?])
}

/// What every worker shares.
struct Shared<'a> {
    options: &'a RunOptions,
    status: Arc<Status>,
    policy: Option<Arc<Policy>>,
    outbox: Option<Arc<crate::delivery::outbox::Outbox>>,
    alert_log: Option<SharedWriter>,
    /// The one watch that judges every worker's network samples together, when on.
    watch: Option<Arc<Mutex<Watch>>>,
    addr: SocketAddr,
    stop: &'a AtomicBool,
}

/// What one worker came to.
struct WorkerReport {
    packets: PacketCounters,
    alerts: AlertCounts,
    kernel_drops: u64,
    queue_drops: u64,
    ended_by: &'static str,
}

/// What the thread that watches the policy and learn requests tells a worker.
enum WorkerCommand {
    /// Apply a policy change.
    Policy(PolicyChange),
    /// Start or finish learning.
    Learn(LearnCommand),
}

/// A policy change the agent's one [`Reloader`] passes to a worker.
struct PolicyChange {
    /// What to apply: a new policy (every worker), or a rejection to report (one worker only,
    /// so the collector hears of it once).
    reload: Option<Reload>,
    /// Whether this worker emits the change's internal event, which logs and counts it (one
    /// does, once it applies the change).
    announce: bool,
}

/// Runs until `stop` is set (by SIGTERM or Ctrl-C) or a pcap stream ends. Says what it captures
/// with on standard error once capture has started. With several workers (ring backend only),
/// each has its own ring in one fanout group, its own pipeline and detection, on its own
/// thread; a host pair's traffic always goes to the same worker, so what is detected does not
/// depend on the number of workers.
pub fn run(options: &RunOptions, stop: &AtomicBool) -> Result<RunReport, RunError> {
    let status = Arc::new(Status::new());
    let addr = agent_addr(&options.source);
    let policy = options.policy.as_ref().map(|(_, p)| p.clone());
    let mut reloader = options
        .follow
        .as_ref()
        .or(options.policy.as_ref().map(|(path, _)| path))
        .map(|path| Reloader::new(path))
        .transpose()?;
    if let Some(reloader) = reloader.as_mut() {
        reloader.set_in_force(policy.as_ref().map(|p| p.hash.clone()));
    }
    let follower = match (&options.follow, reloader.as_mut()) {
        (Some(cache), Some(reloader)) => Some(PolicyFollower::new(
            cache.clone(),
            policy.as_ref().map(|p| p.hash.clone()),
            reloader.follow_collector(),
        )),
        _ => None,
    };
    let alert_log = match &options.alerts {
        Some(path) => Some(SharedWriter::new(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| RunError::Output {
                    path: path.clone(),
                    source,
                })?,
        )),
        None => None,
    };
    let sources = open_sources(&options.source, options.workers.max(1))?;
    // Learning when the collector asks needs a collector to ask and take the result.
    let learn_requests = options
        .delivery
        .is_some()
        .then(|| Arc::new(LearnRequests::new()));
    let delivery = options
        .delivery
        .as_ref()
        .map(|d| {
            Delivery::start(
                d,
                &options.detection.agent,
                addr,
                status.clone(),
                follower,
                learn_requests.clone(),
            )
        })
        .transpose()?;
    if let Some(listen) = options.metrics_listen {
        let server =
            metrics::serve_agent(listen, status.clone(), delivery.as_ref()).map_err(|source| {
                RunError::Metrics {
                    addr: listen,
                    source,
                }
            })?;
        tracing::info!("metrics on http://{}/metrics", server.addr);
    }
    let description = match sources.len() {
        1 => sources.first().map(|s| s.describe()).unwrap_or_default(),
        n => format!(
            "{} workers: {}",
            n,
            sources.first().map(|s| s.describe()).unwrap_or_default()
        ),
    };
    let watch = options.network_detection.then(|| {
        Arc::new(Mutex::new(Watch::new(
            sources.len(),
            options.detection.agent.clone(),
            options.detection.default_window,
            policy.clone(),
        )))
    });
    let shared = Shared {
        options,
        status: status.clone(),
        policy,
        outbox: delivery.as_ref().map(|d| d.outbox().clone()),
        alert_log,
        watch,
        addr,
        stop,
    };
    let mut coordinator = learn_requests.map(|requests| {
        Coordinator::new(
            requests,
            format!("agent {}, {description}", options.detection.agent),
        )
    });
    let several = sources.len() > 1;
    let mut captures = Vec::with_capacity(sources.len());
    for source in sources {
        let error_status = status.clone();
        captures.push(Capture::start(
            source,
            Box::new(move |e| CaptureFailed { error: &e }.emit(&error_status)),
        )?);
    }
    tracing::info!("capturing with {description}");
    let reports = std::thread::scope(|scope| {
        let mut changes = Vec::with_capacity(captures.len());
        let handles: Vec<_> = captures
            .into_iter()
            .enumerate()
            .map(|(index, capture)| {
                let shared = &shared;
                let (tx, rx) = std::sync::mpsc::channel();
                changes.push(tx);
                scope.spawn(move || worker(shared, capture, several.then_some(index), &rx))
            })
            .collect();
        // This thread watches the policy for all workers, so each change is seen (and
        // reported) once, in order. Once stopping, nothing new is dispatched: the workers
        // apply what they already have before they finish.
        let tells: Vec<_> = changes
            .iter()
            .map(|tx| move |c: LearnCommand| tx.send(WorkerCommand::Learn(c)).is_ok())
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(IDLE_WAIT);
            if stop.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(reloader) = reloader.as_mut() {
                dispatch_reload(reloader, &changes);
            }
            if let Some(coordinator) = coordinator.as_mut() {
                coordinator.poll(&tells, shared.outbox.as_deref());
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| RunError::Setup(std::io::Error::other("a worker panicked")))
            })
            .collect::<Vec<_>>()
    });
    let mut report = RunReport {
        capture: description,
        packets: PacketCounters::default(),
        kernel_drops: 0,
        queue_drops: 0,
        alerts: AlertCounts::default(),
        policy_reloads: reloader
            .as_ref()
            .map_or((0, 0), |r| (r.reloads(), r.failures())),
        delivery: None,
        ended_by: "signal",
    };
    let mut first_error = None;
    for r in reports {
        match r {
            Ok(w) => {
                report.packets.merge(&w.packets);
                report.alerts.merge(&w.alerts);
                report.kernel_drops += w.kernel_drops;
                report.queue_drops += w.queue_drops;
                report.ended_by = w.ended_by;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(mut log) = shared.alert_log.clone()
        && let Err(source) = log.flush()
    {
        let path = options
            .alerts
            .as_deref()
            .unwrap_or(std::path::Path::new("alerts"));
        let error = format!("{}: {source}", path.display());
        AlertLogFailed { error: &error }.emit(&shared.status);
    }
    if delivery.is_some() {
        tracing::info!("delivering what is left in the outbox");
    }
    report.delivery = delivery.map(Delivery::finish);
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// One pipeline: reads its capture until stopped, then closes its flows.
fn worker(
    shared: &Shared<'_>,
    capture: Capture,
    index: Option<usize>,
    changes: &Receiver<WorkerCommand>,
) -> WorkerReport {
    let options = shared.options;
    let mut detection = Detection::new(
        options.detection.clone(),
        shared.policy.clone(),
        shared.alert_log.clone(),
        options.print_alerts,
    );
    if let Some(watch) = &shared.watch {
        detection = detection.with_network(
            watch.clone(),
            index.unwrap_or(0),
            &options.flows.modbus_ports,
        );
    }
    if let Some(outbox) = &shared.outbox {
        detection = detection.with_outbox(outbox.clone(), shared.status.clone());
        // Each worker keeps its own flows' frames, in its share of the buffer.
        if let Some(mut evidence) = options.delivery.as_ref().and_then(|d| d.evidence) {
            evidence.limits.total_bytes /= options.workers.max(1);
            detection = detection.with_evidence(evidence);
        }
    }
    let assets = shared
        .outbox
        .as_ref()
        .map(|o| AssetReporter::new(o.clone(), shared.status.clone(), shared.policy.clone()));
    let mut pipeline: Pipeline<RunObserver> = Pipeline::new(
        options.flows.clone(),
        RunObserver {
            modbus: ModbusCounters::default(),
            detection,
            assets,
            learning: None,
        },
    );
    let mut publisher = Publisher::new(
        shared.status.clone(),
        shared.policy.as_ref().map(|p| p.hash.clone()),
    );
    if let Some(i) = index {
        publisher = publisher.for_worker(i);
    }

    // Capture time follows the packets; while none come it advances with the wall clock.
    let mut clock: Option<(Timestamp, Instant)> = None;
    let mut last_housekeeping = Instant::now();
    let ended_by = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break "signal";
        }
        match capture.next_batch(IDLE_WAIT) {
            Next::Batch(batch) => {
                for packet in batch.packets() {
                    pipeline.packet(&packet);
                }
                clock = Some((pipeline.last_ts(), Instant::now()));
                // Alerts reach the log file as soon as their batch is done.
                pipeline.observer_mut().detection.flush_log();
            }
            Next::Idle => {}
            Next::Ended => break "end of stream",
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            if let Some((ts, at)) = clock {
                pipeline.tick(ts.saturating_add(at.elapsed()));
                pipeline.observer_mut().detection.flush_log();
            }
            apply_all(changes, &mut pipeline, &mut publisher, shared.addr);
            let counters = capture.counters();
            publisher.extra.kernel_drops = counters.kernel_drops.load(Ordering::Relaxed);
            publisher.extra.queue_drops = counters.queue_drops.load(Ordering::Relaxed);
            publisher.tick(view(&pipeline));
        }
    };
    // A change dispatched while this worker was stopping still counts and is still reported.
    apply_all(changes, &mut pipeline, &mut publisher, shared.addr);
    let counters = capture.counters().clone();
    for batch in capture.stop() {
        for packet in batch.packets() {
            pipeline.packet(&packet);
        }
    }
    pipeline.finish();
    pipeline.observer_mut().detection.flush_log();
    publisher.extra.kernel_drops = counters.kernel_drops.load(Ordering::Relaxed);
    publisher.extra.queue_drops = counters.queue_drops.load(Ordering::Relaxed);
    publisher.publish(view(&pipeline));
    let packets = pipeline.counters().clone();
    let detection = pipeline.into_observer().detection;
    let alerts = detection.counts().clone();
    if let Err(e) = detection.finish_log() {
        AlertLogFailed { error: &e }.emit(&shared.status);
    }
    WorkerReport {
        packets,
        alerts,
        kernel_drops: publisher.extra.kernel_drops,
        queue_drops: publisher.extra.queue_drops,
        ended_by,
    }
}

/// Checks the policy file (and SIGHUP) and passes what changed to the workers: a new policy to
/// every one, a rejection to one only, which raises the alert the collector hears of. The first
/// worker still running announces the change once it has applied it.
fn dispatch_reload(reloader: &mut Reloader, workers: &[Sender<WorkerCommand>]) {
    let Some(outcome) = reloader.poll() else {
        return;
    };
    let policy = match &outcome {
        Reload::Loaded(policy, _) => Some(policy.clone()),
        Reload::Rejected(_) => None,
    };
    let mut announcement = Some(outcome);
    for worker in workers {
        let change = match announcement.take() {
            Some(outcome) => PolicyChange {
                reload: Some(outcome),
                announce: true,
            },
            None => PolicyChange {
                reload: policy.clone().map(|p| Reload::Loaded(p, Vec::new())),
                announce: false,
            },
        };
        if let Err(SendError(WorkerCommand::Policy(refused))) =
            worker.send(WorkerCommand::Policy(change))
            && refused.announce
        {
            // That worker has stopped: the next one announces instead.
            announcement = refused.reload;
        }
    }
}

/// Applies every command waiting for this worker: policy changes, and learning started or
/// finished.
fn apply_all(
    changes: &Receiver<WorkerCommand>,
    pipeline: &mut Pipeline<RunObserver>,
    publisher: &mut Publisher,
    addr: SocketAddr,
) {
    while let Ok(command) = changes.try_recv() {
        match command {
            WorkerCommand::Policy(change) => apply(change, pipeline, publisher, addr),
            WorkerCommand::Learn(LearnCommand::Start) => {
                pipeline.observer_mut().learning = Some(Learning::default());
            }
            WorkerCommand::Learn(LearnCommand::Finish(share)) => {
                let learned = pipeline.observer_mut().learning.take().unwrap_or_default();
                // The coordinator may have stopped waiting: what was learned is then dropped.
                let _ = share.send(learned.0);
            }
        }
    }
}

/// Applies a policy change between two batches, so no packet is lost and none is judged by
/// half of each policy.
fn apply(
    change: PolicyChange,
    pipeline: &mut Pipeline<RunObserver>,
    publisher: &mut Publisher,
    addr: SocketAddr,
) {
    let Some(reload) = change.reload else {
        return;
    };
    let ts = pipeline.last_ts();
    let RunObserver {
        detection, assets, ..
    } = pipeline.observer_mut();
    if let Reload::Loaded(policy, _) = &reload {
        publisher.extra.policy_hash = Some(policy.hash.clone());
        if let Some(assets) = assets {
            assets.set_policy(Some(policy.clone()));
        }
    }
    // The event is emitted once the change is in force, so its log line means just that.
    let announcement = change.announce.then(|| match &reload {
        Reload::Loaded(policy, warnings) => Ok((policy.hash.clone(), warnings.clone())),
        Reload::Rejected(e) => Err(e.to_string()),
    });
    detection.apply_reload(reload, ts, addr);
    detection.flush_log();
    match announcement {
        Some(Ok((hash, warnings))) => PolicyReloaded {
            hash: &hash,
            warnings: &warnings,
        }
        .emit(publisher.status()),
        Some(Err(error)) => PolicyRejected { error: &error }.emit(publisher.status()),
        None => {}
    }
}

fn view(pipeline: &Pipeline<RunObserver>) -> View<'_> {
    let RunObserver {
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
