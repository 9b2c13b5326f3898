//! Live capture: a source that never ends by itself (an interface, a pcap stream) read on its
//! own thread, so the kernel's buffer keeps draining while the pipeline works.
//!
//! The capture thread copies packets into [`Batch`]es and hands them over a bounded queue.
//! When the pipeline falls behind and the queue is full, the batch is dropped and counted
//! (`queue` drops): the capture thread never blocks on the pipeline, so what is lost is
//! counted once, here, rather than silently in the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otwatch_rules::time::Timestamp;

use super::{CapturedPacket, LinkType};

/// What one poll of a live source came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// This many packets were handed out (0 when the wait timed out).
    Packets(usize),
    /// The source ended (a pcap stream's writer closed it).
    End,
}

/// A live packet source: an interface through a TPACKET_V3 ring or pnet, or a pcap stream.
pub trait LiveSource: Send {
    /// What is capturing, for the start-up line and the logs ("pnet on eth0, ...").
    fn describe(&self) -> String;

    /// Waits up to about `timeout` for packets and hands each to `on_packet`.
    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
    ) -> std::io::Result<Polled>;

    /// Packets the kernel dropped since the previous call (0 where it does not say).
    fn kernel_drops(&mut self) -> u64;

    /// Whether the source can wait for the pipeline (a pcap stream: its writer blocks) rather
    /// than lose packets when the queue is full (an interface: the wire does not wait).
    fn can_wait(&self) -> bool {
        false
    }

    /// Whether each poll hands out a natural batch (a ring block, what a stream had buffered),
    /// to be passed on at once rather than held for more: latency stays the source's own.
    fn polls_in_batches(&self) -> bool {
        false
    }
}

/// Where one packet sits in a batch.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ts: Timestamp,
    link: LinkType,
    start: usize,
    len: usize,
    orig_len: u32,
}

/// Packets copied out of the source's buffer, handed to the pipeline together.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

impl Batch {
    /// Copies `packet` in.
    pub fn push(&mut self, packet: &CapturedPacket<'_>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet.data);
        self.slots.push(Slot {
            ts: packet.ts,
            link: packet.link,
            start,
            len: packet.data.len(),
            orig_len: packet.orig_len,
        });
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The packets, in capture order.
    pub fn packets(&self) -> impl Iterator<Item = CapturedPacket<'_>> {
        self.slots.iter().map(|s| CapturedPacket {
            ts: s.ts,
            link: s.link,
            data: self.bytes.get(s.start..s.start + s.len).unwrap_or_default(),
            orig_len: s.orig_len,
        })
    }
}

/// Most packets in one batch.
pub const BATCH_PACKETS: usize = 512;
/// Longest a packet waits in a batch before it is handed over.
pub const BATCH_AGE: Duration = Duration::from_millis(5);
/// Batches the queue holds (about 64 x 512 = 32k packets).
pub const QUEUE_BATCHES: usize = 64;
/// How long one poll of the source may wait.
const POLL: Duration = Duration::from_millis(5);

/// Counters the capture thread keeps, readable from anywhere.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Packets the kernel dropped.
    pub kernel_drops: AtomicU64,
    /// Packets dropped because the pipeline's queue was full.
    pub queue_drops: AtomicU64,
    /// Errors reading the source (each followed by a pause and a retry).
    pub errors: AtomicU64,
}

/// A source being read on its own thread.
#[derive(Debug)]
pub struct Capture {
    batches: Receiver<Batch>,
    counters: Arc<CaptureCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

/// What [`Capture::next_batch`] found.
#[derive(Debug)]
pub enum Next {
    /// Packets.
    Batch(Batch),
    /// Nothing within the wait.
    Idle,
    /// The source ended or its thread stopped.
    Ended,
}

impl Capture {
    /// Starts reading `source` on a thread named `otwatch-capture`; read errors go to
    /// `on_error` (which should log them) and are retried after a pause.
    pub fn start(
        mut source: Box<dyn LiveSource>,
        on_error: Box<dyn Fn(std::io::Error) + Send>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let counters = Arc::new(CaptureCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let description = source.describe();
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("otwatch-capture".into())
                .spawn(move || read_loop(source.as_mut(), &tx, &counters, &stop, &*on_error))?
        };
        Ok(Self {
            batches: rx,
            counters,
            stop,
            thread: Some(thread),
            description,
        })
    }

    /// What is capturing.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The capture thread's counters.
    pub fn counters(&self) -> &Arc<CaptureCounters> {
        &self.counters
    }

    /// Waits up to `timeout` for the next batch.
    pub fn next_batch(&self, timeout: Duration) -> Next {
        match self.batches.recv_timeout(timeout) {
            Ok(batch) => Next::Batch(batch),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Ended,
        }
    }

    /// Asks the capture thread to stop and hands back what it had already queued. A thread
    /// blocked reading a silent pcap stream is left to end with the process.
    pub fn stop(mut self) -> Vec<Batch> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(thread) = self.thread.take()
            && thread.is_finished()
        {
            let _ = thread.join();
        }
        self.batches.try_iter().collect()
    }
}

fn read_loop(
    source: &mut dyn LiveSource,
    tx: &SyncSender<Batch>,
    counters: &CaptureCounters,
    stop: &AtomicBool,
    on_error: &dyn Fn(std::io::Error),
) {
    let mut batch = Batch::default();
    let mut oldest = Instant::now();
    let mut last_stats = Instant::now();
    let mut ended = false;
    let can_wait = source.can_wait();
    let batched = can_wait || source.polls_in_batches();
    while !stop.load(Ordering::Relaxed) && !ended {
        let was_empty = batch.is_empty();
        let polled = source.poll(POLL, &mut |packet| batch.push(packet));
        if was_empty && !batch.is_empty() {
            oldest = Instant::now();
        }
        let idle = match polled {
            Ok(Polled::Packets(n)) => n == 0,
            Ok(Polled::End) => {
                ended = true;
                true
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                on_error(e);
                std::thread::sleep(Duration::from_millis(500));
                true
            }
        };
        let due = batch.len() >= BATCH_PACKETS || oldest.elapsed() >= BATCH_AGE || idle || batched;
        if due && !batch.is_empty() {
            let full = std::mem::take(&mut batch);
            if can_wait {
                if tx.send(full).is_err() {
                    return;
                }
                continue;
            }
            match tx.try_send(full) {
                Ok(()) => {}
                Err(TrySendError::Full(dropped)) => {
                    counters
                        .queue_drops
                        .fetch_add(dropped.len() as u64, Ordering::Relaxed);
                    batch = dropped;
                    batch.bytes.clear();
                    batch.slots.clear();
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if last_stats.elapsed() >= Duration::from_millis(250) {
            last_stats = Instant::now();
            counters
                .kernel_drops
                .fetch_add(source.kernel_drops(), Ordering::Relaxed);
        }
    }
    counters
        .kernel_drops
        .fetch_add(source.kernel_drops(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
