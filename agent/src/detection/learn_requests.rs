//! Learning because the collector asked: the heartbeat's answer names a learn request; the
//! shipper posts it here; `run` learns from its traffic for the request's duration (every
//! capture worker its share, merged), then queues the learned policy in the outbox's learned
//! lane. The request in progress is reported in heartbeats; a request done, or being done, is
//! not started again. A run that stops before the duration is over sends nothing: the
//! collector keeps asking, and the next run learns again from the start.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use otwatch_packet::pipeline::Observer;
use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::learn::Learner;
use otwatch_rules::mac::Mac;
use otwatch_rules::network::ArpFrame;
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::LearnRequest;

/// Longest learning the agent accepts from a collector: a month.
pub const MAX_LEARNING: Duration = Duration::from_secs(31 * 24 * 3600);

#[derive(Debug, Default)]
struct Board {
    /// The request being learned, or posted and not yet started.
    current: Option<LearnRequest>,
    /// Whether `run` has taken the current request.
    taken: bool,
    /// Requests done in this run.
    done: BTreeSet<String>,
}

/// The learn requests between the shipper (which hears of them) and `run` (which learns).
#[derive(Debug, Default)]
pub struct LearnRequests {
    board: Mutex<Board>,
}

impl LearnRequests {
    /// A board with nothing posted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Posts a request from a heartbeat's answer, unless it is the one in progress or done.
    /// A new request replaces one not yet finished (the collector asked again, differently).
    /// One done is learned again when the collector still asks once nothing learned waits in
    /// the outbox (`learned_waiting` false): what was sent never reached it.
    pub fn post(&self, request: &LearnRequest, learned_waiting: bool) {
        let Ok(mut board) = self.board.lock() else {
            return;
        };
        if !learned_waiting && board.done.remove(&request.id) {
            tracing::warn!(
                request = request.id,
                "the collector still asks for what this agent learned and sent: learning again"
            );
        }
        let known = board.current.as_ref().is_some_and(|c| c.id == request.id)
            || board.done.contains(&request.id);
        if !known {
            board.current = Some(request.clone());
            board.taken = false;
        }
    }

    /// The request being learned or waiting to be, for the heartbeat.
    pub fn current(&self) -> Option<String> {
        self.board
            .lock()
            .ok()
            .and_then(|b| b.current.as_ref().map(|c| c.id.clone()))
    }

    /// A request posted and not yet taken, with its duration (bounded by [`MAX_LEARNING`]).
    pub fn take(&self) -> Option<(String, Duration)> {
        let mut board = self.board.lock().ok()?;
        if board.taken {
            return None;
        }
        let request = board.current.clone()?;
        board.taken = true;
        Some((
            request.id,
            Duration::from_secs(request.duration_s).min(MAX_LEARNING),
        ))
    }

    /// Whether `id` is still the request to learn (a newer one may have replaced it).
    pub fn is_current(&self, id: &str) -> bool {
        self.board
            .lock()
            .is_ok_and(|b| b.current.as_ref().is_some_and(|c| c.id == id))
    }

    /// Makes `id`, if still current, waiting to be taken again (learning it failed).
    pub fn retry(&self, id: &str) {
        if let Ok(mut board) = self.board.lock()
            && board.current.as_ref().is_some_and(|c| c.id == id)
        {
            board.taken = false;
        }
    }

    /// Marks `id` done: its policy is in the outbox.
    pub fn finish(&self, id: &str) {
        if let Ok(mut board) = self.board.lock() {
            board.done.insert(id.to_string());
            if board.current.as_ref().is_some_and(|c| c.id == id) {
                board.current = None;
                board.taken = false;
            }
        }
    }
}

/// A capture worker's learner while a request is being learned.
#[derive(Debug, Default)]
pub struct Learning(pub Learner);

impl Observer for Learning {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.0.observe(ts, flow, event);
    }

    fn arp(&mut self, _ts: Timestamp, frame: &ArpFrame) {
        self.0.arp(frame);
    }

    #[inline]
    fn ip_source(&mut self, _ts: Timestamp, _vlan: u16, ip: IpAddr, mac: Mac) {
        self.0.ip_source(ip, mac);
    }
}

#[cfg(test)]
mod tests;
