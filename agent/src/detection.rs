//! Wires the detection engine into the pipeline: every flow event goes to the engine, every
//! alert it raises goes to the outbox, then to the alert log, the terminal and the counters.
//!
//! With evidence on ([`Detection::with_evidence`]), every frame is kept a while and each
//! serious alert's packets follow it into the outbox ([`evidence`]).
//!
//! An alert reported anywhere is already durable: with an outbox, alerts are queued as they are
//! raised and reported only at the end of their batch ([`Detection::flush_log`]), once one
//! flush has made the whole batch durable (group commit). A `kill -9` can then lose only
//! alerts that were never reported, which the traffic after a restart raises again.

pub(crate) mod assets;
pub mod evidence;
pub mod learn_requests;
pub mod policy_file;
pub(crate) mod policy_reload;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use otwatch_rules::alert::{Alert, Severity, rule};
use otwatch_rules::detect::{DetectionConfig, Engine};
use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::mac::Mac;
use otwatch_rules::network::{ArpFrame, Tap, Watch};
use otwatch_rules::policy::Policy;
use otwatch_rules::session::Event;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::delivery::outbox::{Outbox, Record};
use crate::detection::evidence::{Evidence, EvidenceCounts, EvidenceOptions};
use crate::detection::policy_reload::Reload;
use crate::outputs::jsonl::JsonLines;
use crate::telemetry::events::{InternalEvent, OutboxFailed};
use crate::telemetry::status::Status;
use otwatch_packet::detector::{AlertSink, Detector};
use otwatch_packet::frame::CapturedPacket;
use otwatch_packet::pipeline::Observer;

/// Alerts raised, by rule and by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    /// Alerts in all.
    pub total: u64,
    /// Occurrences folded into them.
    pub occurrences: u64,
    /// Alerts by rule id.
    pub by_rule: BTreeMap<String, u64>,
    /// Alerts by severity.
    pub by_severity: BTreeMap<Severity, u64>,
    /// Alerts by rule and severity (for metrics).
    #[serde(skip)]
    pub by_rule_severity: BTreeMap<(String, Severity), u64>,
}

impl AlertCounts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &AlertCounts) {
        self.total += other.total;
        self.occurrences += other.occurrences;
        for (k, n) in &other.by_rule {
            *self.by_rule.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.by_severity {
            *self.by_severity.entry(*k).or_default() += n;
        }
        for (k, n) in &other.by_rule_severity {
            *self.by_rule_severity.entry(k.clone()).or_default() += n;
        }
    }

    fn add(&mut self, alert: &Alert) {
        self.total += 1;
        self.occurrences += alert.count;
        *self.by_rule.entry(alert.rule.clone()).or_default() += 1;
        *self.by_severity.entry(alert.severity).or_default() += 1;
        *self
            .by_rule_severity
            .entry((alert.rule.clone(), alert.severity))
            .or_default() += 1;
    }
}

/// Where alerts go: the outbox, then the log, the terminal, the counters.
struct Sink<W: Write> {
    log: Option<JsonLines<W>>,
    print: bool,
    counts: AlertCounts,
    outbox: Option<(Arc<Outbox>, Arc<Status>)>,
    /// Alerts queued in the outbox, not yet durable and so not yet reported.
    unreported: Vec<Alert>,
    /// Frames kept for the packets behind serious alerts.
    evidence: Option<Evidence>,
}

impl<W: Write> AlertSink for Sink<W> {
    fn alert(&mut self, alert: Alert) {
        match &self.outbox {
            Some((outbox, status)) => {
                match outbox.push(&[Record::Alert(alert.clone())]) {
                    // Evidence only for an alert the outbox holds: the collector takes
                    // evidence only for alerts it has.
                    Ok(pushed) if pushed.stored == 1 => {
                        if let Some(evidence) = self.evidence.as_mut() {
                            evidence.alert(&alert);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => OutboxFailed { error: &e }.emit(status),
                }
                self.unreported.push(alert);
            }
            None => self.report(&alert),
        }
    }
}

impl<W: Write> Sink<W> {
    /// Queues the batch's evidence after its alerts, makes them durable with one flush, then
    /// reports the alerts.
    fn commit(&mut self) {
        let evidence = self
            .evidence
            .as_mut()
            .map(Evidence::end_batch)
            .unwrap_or_default();
        if self.unreported.is_empty() && evidence.is_empty() {
            return;
        }
        if let Some((outbox, status)) = &self.outbox {
            if !evidence.is_empty() {
                let records: Vec<Record> = evidence.into_iter().map(Record::Evidence).collect();
                if let Err(e) = outbox.push(&records) {
                    OutboxFailed { error: &e }.emit(status);
                }
            }
            if let Err(e) = outbox.flush() {
                OutboxFailed { error: &e }.emit(status);
            }
        }
        for alert in std::mem::take(&mut self.unreported) {
            self.report(&alert);
        }
    }

    fn report(&mut self, alert: &Alert) {
        self.counts.add(alert);
        if self.print {
            println!("{}", render(alert));
        }
        if let Some(log) = self.log.as_mut() {
            log.write(alert);
        }
    }
}

/// The engine and where its alerts go.
pub struct Detection<W: Write> {
    detector: Detector<Sink<W>>,
    network: Option<Network>,
}

/// Network-level detection: this worker's sampler and the watch every worker shares.
struct Network {
    tap: Tap,
    watch: Arc<Mutex<Watch>>,
    worker: usize,
}

impl Network {
    /// Hands the seconds this worker finished to the watch; its alerts go to `sink`.
    fn submit<W: Write>(&mut self, sink: &mut Sink<W>) {
        let samples = self.tap.take();
        let mark = self.tap.watermark();
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        watch.submit(self.worker, samples, mark, &mut |a| sink.alert(a));
    }
}

impl<W: Write> Detection<W> {
    /// Detection with an optional policy, an optional JSON-lines log, and readable lines on
    /// standard output when `print`.
    pub fn new(
        config: DetectionConfig,
        policy: Option<Arc<Policy>>,
        log: Option<W>,
        print: bool,
    ) -> Self {
        let sink = Sink {
            log: log.map(JsonLines::new),
            print,
            counts: AlertCounts::default(),
            outbox: None,
            unreported: Vec::new(),
            evidence: None,
        };
        Self {
            detector: Detector::new(Engine::new(config, policy), sink),
            network: None,
        }
    }

    /// Also samples floods and who answers for which address (servers on `modbus_ports`),
    /// for `watch`, which judges the samples of every worker together; this is worker
    /// `worker` of those it waits for.
    pub fn with_network(
        mut self,
        watch: Arc<Mutex<Watch>>,
        worker: usize,
        modbus_ports: &[u16],
    ) -> Self {
        self.network = Some(Network {
            tap: Tap::new(modbus_ports),
            watch,
            worker,
        });
        self
    }

    /// Also queues every alert in `outbox` for the collector (errors go to `status`).
    pub fn with_outbox(mut self, outbox: Arc<Outbox>, status: Arc<Status>) -> Self {
        self.detector.sink_mut().outbox = Some((outbox, status));
        self
    }

    /// Also keeps the last frames of every flow and queues the packets behind each alert at or
    /// above `options.min_severity` in the outbox, after the alert (with an outbox only).
    pub fn with_evidence(mut self, options: EvidenceOptions) -> Self {
        self.detector.sink_mut().evidence = Some(Evidence::new(options));
        self
    }

    /// What became of evidence so far, when it is on.
    pub fn evidence_counts(&self) -> Option<EvidenceCounts> {
        self.detector.sink().evidence.as_ref().map(Evidence::counts)
    }

    /// Alerts reported so far ([`Detection::flush_log`] reports those of the last batch).
    pub fn counts(&self) -> &AlertCounts {
        &self.detector.sink().counts
    }

    /// Applies the outcome of a policy reload at capture time `ts`: a new policy takes over from
    /// the next packet; a rejected one leaves the old in force and raises
    /// `agent.policy_reload_failed` (sent like any alert, so the collector hears of it).
    pub fn apply_reload(&mut self, reload: Reload, ts: Timestamp, agent_addr: SocketAddr) {
        match reload {
            Reload::Loaded(policy, _) => {
                if let Some(network) = &self.network {
                    let mut watch = network.watch.lock().unwrap_or_else(|e| e.into_inner());
                    watch.set_policy(Some(policy.clone()));
                }
                self.detector.set_policy(Some(policy));
            }
            Reload::Rejected(error) => self.detector.agent_alert(
                &rule::POLICY_RELOAD_FAILED,
                ts,
                agent_addr,
                format!("new policy rejected, previous one stays in force: {error}"),
            ),
        }
    }

    /// Ends a batch: makes its alerts durable in the outbox with one flush, then reports them
    /// (log, terminal, counters) and pushes the log's lines to the file. The agent calls it
    /// after every batch of packets.
    pub fn flush_log(&mut self) {
        let sink = self.detector.sink_mut();
        if let Some(network) = self.network.as_mut() {
            network.submit(sink);
        }
        sink.commit();
        if let Some(log) = sink.log.as_mut() {
            log.flush();
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.detector.policy()
    }

    /// Reports what is left, flushes the log, and returns the number of alerts written or the
    /// first write error.
    pub fn finish_log(self) -> std::io::Result<Option<u64>> {
        let mut sink = self.detector.into_sink();
        sink.commit();
        sink.log.map(JsonLines::finish).transpose()
    }
}

/// Renders an alert as one readable line.
pub fn render(alert: &Alert) -> String {
    let mut line = format!(
        "{} {:<8} {:<34} {}:{} -> {}:{}",
        alert.ts,
        alert.severity.name().to_uppercase(),
        alert.rule,
        alert.src_ip,
        alert.src_port,
        alert.dst_ip,
        alert.dst_port
    );
    if let Some(unit) = alert.unit_id {
        line += &format!(" unit {unit}");
    }
    if let Some(f) = &alert.function {
        line += &format!(" {f}");
    }
    if let Some(a) = alert.address {
        line += &format!(" @{a}");
    }
    if alert.count > 1 {
        line += &format!(" x{}", alert.count);
    }
    line += &format!(" [{}]", alert.technique.join(","));
    if let Some(m) = &alert.message {
        line += &format!(" {m}");
    }
    line
}

impl<W: Write> Observer for Detection<W> {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.detector.flow_event(ts, flow, event);
        // Only what the sampler counts (transactions, half of all events, go by), requests
        // on the inlined fast path.
        if let Some(network) = self.network.as_mut() {
            match event {
                FlowEvent::Session(Event::Request { .. }) => network.tap.request(ts, flow),
                FlowEvent::Opened
                | FlowEvent::Closed(_)
                | FlowEvent::Session(Event::Recognised { .. }) => {
                    network.tap.flow_event(ts, flow, event);
                }
                _ => {}
            }
        }
    }

    fn arp(&mut self, ts: Timestamp, frame: &ArpFrame) {
        if let Some(network) = self.network.as_mut() {
            network.tap.arp(ts, frame);
        }
    }

    #[inline]
    fn ip_source(&mut self, ts: Timestamp, vlan: u16, ip: IpAddr, mac: Mac) {
        if let Some(network) = self.network.as_mut() {
            network.tap.ip_source(ts, vlan, ip, mac);
        }
    }

    fn frame(&mut self, flow: u64, packet: &CapturedPacket<'_>) {
        if let Some(evidence) = self.detector.sink_mut().evidence.as_mut() {
            evidence.frame(flow, packet);
        }
    }

    fn tick(&mut self, now: Timestamp) {
        self.detector.tick(now);
        if let Some(network) = self.network.as_mut() {
            network.tap.tick(now);
        }
    }

    fn finish(&mut self) {
        self.detector.finish();
        if let Some(network) = self.network.as_mut() {
            // This worker's last seconds, then it holds the others back no more.
            network.tap.finish();
            let sink = self.detector.sink_mut();
            network.submit(sink);
            let mut watch = network.watch.lock().unwrap_or_else(|e| e.into_inner());
            watch.done(network.worker, &mut |a| sink.alert(a));
        }
    }

    fn clock_stepped(&mut self, before: Timestamp, now: Timestamp) {
        self.detector.clock_stepped(before, now);
        if let Some(network) = self.network.as_mut() {
            // The seconds before the step are complete; the watch starts merging afresh.
            network.tap.finish();
            let sink = self.detector.sink_mut();
            network.submit(sink);
            let mut watch = network.watch.lock().unwrap_or_else(|e| e.into_inner());
            watch.clock_stepped(network.worker, &mut |a| sink.alert(a));
        }
    }
}

#[cfg(test)]
mod tests;
