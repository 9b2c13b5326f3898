//! The shipper: a thread that moves records from the outbox to the collector in batches,
//! removes them once the collector acknowledges them, and sends a heartbeat every few seconds.
//!
//! Failures back off exponentially (from half a second up to a minute) with jitter, so a
//! plant's agents do not all reconnect in the same instant after a collector outage. A batch
//! the collector finds too large is split; a single record it refuses as malformed is set
//! aside (counted, with the collector's reason as the last error) once the collector has taken
//! the record after it, so one bad record cannot block everything behind it, and a collector
//! that refuses every record (an older one than the agent) cannot empty the outbox. Drops the
//! outbox made for lack of room are reported to the collector as an `agent.outbox_overflow`
//! alert once it is reachable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otwatch_rules::alert::rule;
use otwatch_rules::detect::agent_alert;
use otwatch_rules::validate;
use otwatch_rules::wire::{Heartbeat, IngestBatch};

use crate::outbox::{Outbox, Record};
use crate::sender::{SendError, Sender};
use crate::status::{Status, wall_clock};

/// How the shipper paces itself.
#[derive(Debug, Clone)]
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
        }
    }
}

/// Delivery counters, for the heartbeat, `/metrics` and the replay summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// Records the collector acknowledged.
    pub records: u64,
    /// Of which the collector already had (retried deliveries).
    pub duplicates: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Attempts that failed (each is retried).
    pub failures: u64,
    /// Records the collector refused as malformed and that were set aside.
    pub rejected: u64,
    /// Heartbeats acknowledged.
    pub heartbeats: u64,
    /// Whether the last attempt reached the collector.
    pub connected: bool,
}

/// Exponential backoff with jitter.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after one more failure: `min * 2^failures`, capped, then scaled by a random
    /// factor between one half and one.
    fn next(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let capped = exp.min(self.max);
        let mut byte = [0u8; 1];
        let jitter = match getrandom::fill(&mut byte) {
            Ok(()) => 0.5 + f64::from(byte[0]) / 510.0,
            Err(_) => 0.75,
        };
        capped.mul_f64(jitter)
    }
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
        let worker = Worker {
            outbox: outbox.clone(),
            sender,
            status,
            backoff: Backoff {
                min: config.backoff_min,
                max: config.backoff_max,
                failures: 0,
            },
            batch_limit: config.batch_records.max(1),
            config,
            stop: stop.clone(),
            wake: wake.clone(),
            delivered: delivered.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("otwatch-shipper".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
            delivered,
            outbox,
        })
    }

    /// Tells the shipper new records are waiting (it also looks on its own every 200 ms).
    pub fn nudge(&self) {
        let (flag, signal) = &*self.wake;
        if let Ok(mut woken) = flag.lock() {
            *woken = true;
            signal.notify_one();
        }
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
    outbox: Arc<Outbox>,
    sender: Box<dyn Sender>,
    status: Arc<Status>,
    config: ShipperConfig,
    backoff: Backoff,
    /// Records per batch now (halved when the collector finds batches too large).
    batch_limit: usize,
    stop: Arc<AtomicBool>,
    wake: Arc<(Mutex<bool>, std::sync::Condvar)>,
    delivered: Arc<Mutex<Delivered>>,
}

/// What one delivery attempt came to.
enum Attempt {
    /// Nothing was waiting.
    Idle,
    /// A batch was acknowledged (more may wait).
    Sent,
    /// It failed; wait this long.
    Failed(Duration),
}

impl Worker {
    fn run(mut self) {
        let mut next_heartbeat = Instant::now();
        let mut retry_at: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + self.config.heartbeat_every;
            }
            let wait = match retry_at {
                Some(at) if now < at => at - now,
                _ => match self.attempt() {
                    Attempt::Sent => {
                        retry_at = None;
                        continue;
                    }
                    Attempt::Idle => {
                        retry_at = None;
                        Duration::from_millis(200)
                    }
                    Attempt::Failed(wait) => {
                        retry_at = Some(Instant::now() + wait);
                        wait
                    }
                },
            };
            let wait = wait.min(next_heartbeat.saturating_duration_since(Instant::now()));
            self.sleep(wait, retry_at.is_some());
        }
    }

    /// Sleeps up to `wait`; a nudge ends the sleep early unless a retry is pending.
    fn sleep(&self, wait: Duration, backing_off: bool) {
        let (flag, signal) = &*self.wake;
        let Ok(mut woken) = flag.lock() else {
            std::thread::sleep(wait);
            return;
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
                Err(_) => return,
            }
        }
        *woken = false;
    }

    fn update(&self, f: impl FnOnce(&mut Delivered)) {
        if let Ok(mut d) = self.delivered.lock() {
            f(&mut d);
        }
    }

    fn failed(&mut self, error: &SendError) -> Duration {
        self.status.set_last_error(error.to_string());
        self.update(|d| {
            d.failures += 1;
            d.connected = false;
        });
        self.backoff.next()
    }

    fn attempt(&mut self) -> Attempt {
        if let Err(e) = self.outbox.flush() {
            self.status.set_last_error(e.to_string());
        }
        let peeked = match self.outbox.peek(self.batch_limit, self.config.batch_bytes) {
            Ok(p) => p,
            Err(e) => {
                self.status.set_last_error(e.to_string());
                return Attempt::Failed(self.backoff.next());
            }
        };
        let Some(through) = peeked.through else {
            return Attempt::Idle;
        };
        let count = peeked.records.len();
        let unreadable = peeked.unreadable;
        let oldest = peeked.seqs.first().copied();
        match self.sender.ingest(&self.batch(peeked.records)) {
            Ok(reply) => {
                if let Err(e) = self.outbox.ack_through(through) {
                    self.status.set_last_error(e.to_string());
                    return Attempt::Failed(self.backoff.next());
                }
                self.backoff.reset();
                self.batch_limit = self.config.batch_records.max(1);
                if unreadable > 0 {
                    self.status.set_last_error(format!(
                        "{unreadable} outbox records this build cannot read (left by another version) were set aside"
                    ));
                }
                self.update(|d| {
                    d.records += count as u64;
                    d.duplicates += reply.duplicates as u64;
                    d.batches += 1;
                    d.rejected += unreadable;
                    d.connected = true;
                });
                self.report_drops();
                Attempt::Sent
            }
            Err(e) if e.too_large() && self.batch_limit > 1 => {
                self.batch_limit = (count / 2).max(1);
                Attempt::Sent
            }
            // 422 names a record the collector will never take from this agent: set it aside.
            Err(e @ SendError::Refused { status: 422, .. }) if count <= 1 => {
                self.set_aside(through, 1 + unreadable, &e)
            }
            Err(
                e @ SendError::Refused {
                    status: 400 | 413, ..
                },
            ) if count <= 1 => match oldest {
                Some(oldest) => self.set_aside_if_next_taken(oldest, &e),
                None => self.set_aside(through, unreadable, &e),
            },
            Err(
                e @ SendError::Refused {
                    status: 400 | 422, ..
                },
            ) => {
                self.status.set_last_error(e.to_string());
                self.batch_limit = (count / 2).max(1);
                Attempt::Sent
            }
            Err(e) => Attempt::Failed(self.failed(&e)),
        }
    }

    fn batch(&self, records: Vec<Record>) -> IngestBatch {
        let mut batch = IngestBatch {
            agent: self.config.agent.clone(),
            alerts: Vec::new(),
            assets: Vec::new(),
        };
        for record in records {
            match record {
                Record::Alert(a) => batch.alerts.push(a),
                Record::Asset(a) => batch.assets.push(a),
            }
        }
        batch
    }

    /// Removes the records through `through` from the outbox: `count` records the collector
    /// will never take (`refusal` says why), counted as set aside.
    fn set_aside(&mut self, through: u64, count: u64, refusal: &SendError) -> Attempt {
        if self.outbox.ack_through(through).is_err() {
            return Attempt::Failed(self.backoff.next());
        }
        let why = format!("{count} record(s) set aside: {refusal}");
        tracing::warn!("{why}");
        self.status.set_last_error(why);
        self.update(|d| {
            d.rejected += count;
            d.connected = true;
        });
        Attempt::Sent
    }

    /// The collector refused the oldest record, `oldest`, alone as malformed (`refusal`). It
    /// is set aside once the collector takes the next readable record, which shows the fault
    /// is that record's. A collector that refuses every record (an older collector that cannot
    /// read a newer agent's records) has them all kept until it takes them, not discarded one
    /// by one; so is a refused record with nothing after it yet.
    fn set_aside_if_next_taken(&mut self, oldest: u64, refusal: &SendError) -> Attempt {
        let peeked = match self.outbox.peek(16, u64::MAX) {
            Ok(p) => p,
            Err(e) => {
                self.status.set_last_error(e.to_string());
                return Attempt::Failed(self.backoff.next());
            }
        };
        match peeked.seqs.first() {
            Some(&first) if first == oldest => {}
            // The outbox dropped the refused record meanwhile (it was full): start afresh.
            _ => return Attempt::Sent,
        }
        let (Some(&next_seq), Some(next)) = (peeked.seqs.get(1), peeked.records.get(1)) else {
            return Attempt::Failed(self.refused_all(format!(
                "the collector refuses the oldest record ({refusal}); it is kept until the collector takes a record after it"
            )));
        };
        match self.sender.ingest(&self.batch(vec![next.clone()])) {
            Ok(reply) => {
                // The refused record and any unreadable ones between it and the next.
                let set_aside = next_seq.saturating_sub(oldest);
                if let Attempt::Failed(wait) = self.set_aside(next_seq, set_aside, refusal) {
                    return Attempt::Failed(wait);
                }
                self.backoff.reset();
                self.batch_limit = self.config.batch_records.max(1);
                self.update(|d| {
                    d.records += 1;
                    d.duplicates += reply.duplicates as u64;
                    d.batches += 1;
                });
                Attempt::Sent
            }
            Err(
                e @ SendError::Refused {
                    status: 400 | 413 | 422,
                    ..
                },
            ) => Attempt::Failed(self.refused_all(format!(
                "the collector refuses every record ({e}); all are kept until it takes them (is it older than this agent?)"
            ))),
            Err(e) => Attempt::Failed(self.failed(&e)),
        }
    }

    /// The collector answered but took nothing: says why and backs off, keeping everything.
    fn refused_all(&mut self, why: String) -> Duration {
        self.status.set_last_error(why);
        self.update(|d| {
            d.failures += 1;
            d.connected = true;
        });
        self.backoff.next()
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
            self.status.set_last_error(e.to_string());
        }
    }

    fn heartbeat(&mut self) {
        let snapshot = self.status.snapshot();
        let heartbeat = Heartbeat {
            agent: self.config.agent.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.status.uptime().as_secs(),
            policy_hash: snapshot.policy_hash.clone(),
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
        };
        match self.sender.heartbeat(&heartbeat) {
            Ok(()) => self.update(|d| {
                d.heartbeats += 1;
                d.connected = true;
            }),
            Err(e) => {
                self.status.set_last_error(e.to_string());
                self.update(|d| d.connected = false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
