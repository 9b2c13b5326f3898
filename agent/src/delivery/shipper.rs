//! The shipper: the thread that does delivery's I/O. Every decision (batch sizes, backoff,
//! splits, refusals, set-asides, failover) is the sans-IO [`Machine`]'s, in `otwatch-delivery`;
//! this thread reads the clock, reads and trims the outbox, sends through a [`Sender`], sleeps
//! when told to, and passes the machine's events on: errors to the status page, set-asides to
//! the log, and drops the outbox made for lack of room to the collector as an
//! `agent.outbox_overflow` alert once it is reachable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otwatch_delivery::{Config, Delivered, Event, Lane, Machine, Poll, Sent};
use otwatch_rules::alert::rule;
use otwatch_rules::detect::agent_alert;
use otwatch_rules::policy::POLICY_VERSION;
use otwatch_rules::validate;
use otwatch_rules::wire::{Heartbeat, HeartbeatReply, IngestBatch, PolicySource};

use crate::delivery::outbox::{Outbox, Record};
use crate::delivery::policy_follow::PolicyFollower;
use crate::delivery::sender::Sender;
use crate::detection::learn_requests::LearnRequests;
use crate::telemetry::events::{
    DeliveryFailed, InternalEvent, OutboxFailed, OutboxOverflow, RecordsSetAside, Throttle,
};
use crate::telemetry::status::{Status, wall_clock};

/// How the shipper paces itself.
#[derive(Debug)]
pub struct ShipperConfig {
    /// The agent's name (the collector checks it against the credential).
    pub agent: String,
    /// The agent's own address, for alerts about itself.
    pub agent_addr: SocketAddr,
    /// Most records per batch.
    pub batch_records: usize,
    /// Most bytes of records per batch (below the collector's body limit).
    pub batch_bytes: u64,
    /// Time between heartbeats.
    pub heartbeat_every: Duration,
    /// First wait after a failure.
    pub backoff_min: Duration,
    /// Longest wait after repeated failures.
    pub backoff_max: Duration,
    /// How long after leaving the preferred collector (the first) it is tried again.
    pub return_after: Duration,
    /// Follows the policy the collector assigns (`policy_source = "collector"`), if set.
    pub follower: Option<PolicyFollower>,
    /// Where learn requests from the collector go, if the agent can learn (`run`).
    pub learn: Option<Arc<LearnRequests>>,
}

impl ShipperConfig {
    /// Defaults for an agent called `agent`.
    pub fn new(agent: String, agent_addr: SocketAddr) -> Self {
        Self {
            agent,
            agent_addr,
            batch_records: 500,
            batch_bytes: 2 * 1024 * 1024,
            heartbeat_every: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            return_after: Config::default().return_after,
            follower: None,
            learn: None,
        }
    }
}

/// Wakes a shipper sleeping on `wake`.
fn nudge(wake: &(Mutex<bool>, std::sync::Condvar)) {
    let (flag, signal) = wake;
    if let Ok(mut woken) = flag.lock() {
        *woken = true;
        signal.notify_one();
    }
}

/// A seed for the backoff's jitter, different on every agent so their retries spread.
fn jitter_seed() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        // Without the system's randomness, the time still differs from agent to agent.
        let now = wall_clock();
        return now.as_nanos() ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(seed)
}

/// A running shipper.
pub struct Shipper {
    stop: Arc<AtomicBool>,
    wake: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<JoinHandle<()>>,
    delivered: Arc<Mutex<Delivered>>,
    outbox: Arc<Outbox>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").finish_non_exhaustive()
    }
}

impl Shipper {
    /// Starts shipping `outbox` through `sender`.
    pub fn spawn(
        outbox: Arc<Outbox>,
        sender: Box<dyn Sender>,
        status: Arc<Status>,
        config: ShipperConfig,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let delivered = Arc::new(Mutex::new(Delivered::default()));
        let machine = Machine::new(
            Config {
                batch_records: config.batch_records,
                batch_bytes: config.batch_bytes,
                heartbeat_every: config.heartbeat_every,
                backoff_min: config.backoff_min,
                backoff_max: config.backoff_max,
                collectors: sender.collectors(),
                return_after: config.return_after,
                ..Config::default()
            },
            jitter_seed(),
        );
        let worker = Worker {
            machine,
            outbox: outbox.clone(),
            sender,
            status,
            config,
            started: Instant::now(),
            stop: stop.clone(),
            wake: wake.clone(),
            delivered: delivered.clone(),
            overflow: Throttle::starting_at(outbox.dropped_total()),
            rechecked: false,
        };
        let thread = std::thread::Builder::new()
            .name("otwatch-shipper".into())
            .spawn(move || worker.run())?;
        // Records stored wake the shipper at once, rather than at its next idle poll.
        let signal = wake.clone();
        outbox.on_push(Arc::new(move || nudge(&signal)));
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
            delivered,
            outbox,
        })
    }

    /// Tells the shipper new records are waiting. The outbox does so on every push; the
    /// shipper also looks on its own every 200 ms.
    pub fn nudge(&self) {
        nudge(&self.wake);
    }

    /// Delivery counters so far.
    pub fn delivered(&self) -> Delivered {
        (self.delivered_handle())()
    }

    /// A function reading the delivery counters from another thread.
    pub fn delivered_handle(&self) -> impl Fn() -> Delivered + Send + Sync + 'static {
        let delivered = self.delivered.clone();
        move || delivered.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Waits until the outbox is empty or `timeout` passes, then stops the shipper. Returns
    /// the records still waiting (they stay in the outbox for the next run) and the delivery
    /// counters.
    pub fn drain(mut self, timeout: Duration) -> (u64, Delivered) {
        let deadline = Instant::now() + timeout;
        while self.outbox.depth() > 0 && Instant::now() < deadline {
            self.nudge();
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shutdown();
        (self.outbox.depth(), self.delivered())
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.nudge();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    machine: Machine,
    outbox: Arc<Outbox>,
    sender: Box<dyn Sender>,
    status: Arc<Status>,
    config: ShipperConfig,
    stop: Arc<AtomicBool>,
    wake: Arc<(Mutex<bool>, std::sync::Condvar)>,
    delivered: Arc<Mutex<Delivered>>,
    /// The machine's clock: time since the shipper started.
    started: Instant,
    /// Logs the outbox's drops, at most once per quiet time.
    overflow: Throttle,
    /// A later lane's batch waited once already for alerts that arrived during its pass.
    rechecked: bool,
}

impl Worker {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Does what the machine says until told to stop; only I/O happens here.
    fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            match self.machine.poll(self.now()) {
                Poll::Heartbeat { collector } => {
                    let heartbeat = self.heartbeat();
                    let outcome = self.sender.heartbeat(collector, &heartbeat);
                    tracing::trace!(collector, ok = outcome.is_ok(), "heartbeat");
                    if let Ok(reply) = &outcome {
                        self.follow(collector, reply, heartbeat.policy_hash.as_deref());
                        if let (Some(board), Some(request)) = (&self.config.learn, &reply.learn) {
                            board.post(request, self.outbox.depth_of(Lane::Learned) > 0);
                        }
                    }
                    self.machine
                        .handle_heartbeat(self.now(), outcome.map(|_| ()));
                }
                Poll::Batch {
                    collector,
                    lane,
                    records,
                    bytes,
                } => self.send_batch(collector, lane, records, bytes),
                Poll::Probe {
                    collector,
                    lane,
                    oldest,
                } => self.probe(collector, lane, oldest),
                Poll::Remove { lane, through } => {
                    let result = self
                        .outbox
                        .ack_through(lane, through)
                        .map_err(|e| e.to_string());
                    self.machine.handle_removed(self.now(), result);
                }
                Poll::Wait { until, nudge_wakes } => {
                    let wait = until.saturating_sub(self.now());
                    if self.sleep(wait, !nudge_wakes) {
                        self.machine.handle_nudge();
                    }
                }
            }
            self.tell_the_world();
        }
    }

    /// Fetches the assigned policy when the heartbeat's answer names a version the agent does
    /// not enforce. A failed fetch is tried again at the next heartbeat.
    fn follow(&mut self, collector: usize, reply: &HeartbeatReply, applied: Option<&str>) {
        let Some(follower) = self.config.follower.as_mut() else {
            return;
        };
        let Some(assigned) = follower.wanted(reply, applied).cloned() else {
            return;
        };
        match self.sender.policy(collector, &self.config.agent) {
            Ok(text) => {
                if let Some(hash) = follower.take(&assigned, text) {
                    tracing::info!(
                        policy = assigned.name,
                        hash,
                        "fetched the policy the collector assigns"
                    );
                }
            }
            Err(failure) => tracing::warn!(
                policy = assigned.name,
                %failure,
                "cannot fetch the policy the collector assigns; trying again at the next heartbeat"
            ),
        }
    }

    /// Reads the oldest records of `lane` and sends them as one batch.
    fn send_batch(&mut self, collector: usize, lane: Lane, records: usize, bytes: u64) {
        if let Err(e) = self.outbox.flush() {
            OutboxFailed { error: &e }.emit(&self.status);
        }
        let peeked = match self.outbox.peek(lane, records, bytes) {
            Ok(p) => p,
            Err(e) => return self.machine.handle_store_error(self.now(), e.to_string()),
        };
        let Some(through) = peeked.through else {
            return self.machine.handle_empty(self.now(), lane);
        };
        // Alerts pushed after this pass found their lane empty go first: evidence names its
        // alert, which the collector must have before it. One look again, not a loop, should
        // the alerts lane hold nothing it can send.
        if lane != Lane::Alerts
            && !std::mem::replace(&mut self.rechecked, true)
            && self.outbox.depth_of(Lane::Alerts) > 0
        {
            return self.machine.handle_nudge();
        }
        self.rechecked = false;
        let sent = Sent {
            lane,
            oldest: peeked.seqs.first().copied(),
            through,
            records: peeked.records.len(),
            unreadable: peeked.unreadable,
        };
        let outcome = self
            .sender
            .ingest(collector, &self.batch(peeked.records))
            .map(|reply| reply.duplicates as u64);
        match &outcome {
            Ok(duplicates) => {
                tracing::debug!(
                    collector,
                    lane = lane.name(),
                    records = sent.records,
                    duplicates,
                    "batch taken"
                )
            }
            Err(failure) => {
                tracing::debug!(collector, lane = lane.name(), records = sent.records, %failure, "batch not taken")
            }
        }
        self.machine.handle_batch(self.now(), sent, outcome);
    }

    /// Sends the record of `lane` after the refused oldest alone.
    fn probe(&mut self, collector: usize, lane: Lane, oldest: u64) {
        let peeked = match self.outbox.peek(lane, 16, u64::MAX) {
            Ok(p) => p,
            Err(e) => return self.machine.handle_store_error(self.now(), e.to_string()),
        };
        if peeked.seqs.first() != Some(&oldest) {
            return self.machine.handle_probe_missing(self.now(), true);
        }
        let (Some(&next_seq), Some(next)) = (peeked.seqs.get(1), peeked.records.get(1)) else {
            return self.machine.handle_probe_missing(self.now(), false);
        };
        let outcome = self
            .sender
            .ingest(collector, &self.batch(vec![next.clone()]))
            .map(|reply| reply.duplicates as u64);
        self.machine.handle_probe(self.now(), next_seq, outcome);
    }

    /// Passes on what the machine has to say, and publishes its counters.
    fn tell_the_world(&mut self) {
        while let Some(event) = self.machine.poll_event() {
            match event {
                Event::Error(why) => DeliveryFailed { why: &why }.emit(&self.status),
                Event::StoreError(error) => OutboxFailed { error: &error }.emit(&self.status),
                Event::SetAside { count, why } => {
                    RecordsSetAside { count, why: &why }.emit(&self.status)
                }
                Event::ReportDrops => self.report_drops(),
                Event::Collector(collector) => {
                    let preferred = if collector == 0 {
                        "the preferred one"
                    } else {
                        "the preferred one failed"
                    };
                    tracing::warn!(
                        collector = %self.sender.name(collector),
                        "delivering to {} ({preferred})",
                        self.sender.name(collector)
                    );
                }
            }
        }
        if let Some(dropped) = self.overflow.due(self.outbox.dropped_total()) {
            OutboxOverflow { dropped }.emit(&self.status);
        }
        if let Ok(mut d) = self.delivered.lock()
            && *d != *self.machine.delivered()
        {
            d.clone_from(self.machine.delivered());
        }
    }

    /// Sleeps up to `wait`; a nudge ends the sleep early unless `backing_off`. Returns whether
    /// a nudge came.
    fn sleep(&self, wait: Duration, backing_off: bool) -> bool {
        let (flag, signal) = &*self.wake;
        let Ok(mut woken) = flag.lock() else {
            std::thread::sleep(wait);
            return false;
        };
        let deadline = Instant::now() + wait;
        loop {
            if self.stop.load(Ordering::SeqCst) || (*woken && !backing_off) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match signal.wait_timeout(woken, left) {
                Ok((guard, _)) => woken = guard,
                Err(_) => return false,
            }
        }
        std::mem::replace(&mut *woken, false)
    }

    fn batch(&self, records: Vec<Record>) -> IngestBatch {
        let mut batch = IngestBatch {
            agent: self.config.agent.clone(),
            alerts: Vec::new(),
            assets: Vec::new(),
            conversations: Vec::new(),
            evidence: Vec::new(),
            learned: Vec::new(),
        };
        for record in records {
            match record {
                Record::Alert(a) => batch.alerts.push(a),
                Record::Asset(a) => batch.assets.push(a),
                Record::Conversation(c) => batch.conversations.push(c),
                Record::Evidence(e) => batch.evidence.push(e),
                Record::Learned(l) => batch.learned.push(l),
            }
        }
        batch
    }

    /// Queues an `agent.outbox_overflow` alert for drops not yet reported.
    fn report_drops(&self) {
        let unreported = self.outbox.unreported();
        if unreported == 0 {
            return;
        }
        let alert = agent_alert(
            &self.config.agent,
            &rule::OUTBOX_OVERFLOW,
            wall_clock(),
            self.config.agent_addr,
            format!(
                "{unreported} undelivered records (alerts or asset observations) were dropped because the outbox was full or its disk refused the write; {} dropped since the outbox was created",
                self.outbox.dropped_total()
            ),
        );
        if let Err(e) = self.outbox.report_drops(alert, unreported) {
            OutboxFailed { error: &e }.emit(&self.status);
        }
    }

    /// The heartbeat message: the agent's health now.
    fn heartbeat(&self) -> Heartbeat {
        let snapshot = self.status.snapshot();
        Heartbeat {
            agent: self.config.agent.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.status.uptime().as_secs(),
            policy_hash: snapshot.policy_hash.clone(),
            policy_source: Some(if self.config.follower.is_some() {
                PolicySource::Collector
            } else {
                PolicySource::File
            }),
            policy_language: Some(POLICY_VERSION),
            learning: self.config.learn.as_ref().and_then(|b| b.current()),
            // Only with replicas: a single collector (perhaps older) needs no telling.
            collector: (self.sender.collectors() > 1)
                .then(|| self.sender.name(self.machine.collector())),
            packets_per_s: snapshot.packets_per_s,
            packets: snapshot.packets,
            drops: snapshot.kernel_drops + snapshot.queue_drops + self.outbox.dropped_total(),
            flows: snapshot.flows_active,
            outbox_depth: self.outbox.depth(),
            outbox_dropped: self.outbox.dropped_total(),
            last_error: self.status.last_error().map(|mut e| {
                validate::truncate(&mut e, validate::MAX_MESSAGE);
                e
            }),
        }
    }
}

#[cfg(test)]
mod tests;
