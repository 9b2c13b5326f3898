//! Availability: a device that had been answering a master and fell silent.
//!
//! Kept per master/device pair once the device answered the master ([`Liveness`]): when its
//! silence began (the first request left unanswered since its last answer, or the first
//! connection attempt it did not accept), how often the master tried since, whether the device
//! reset a connection meanwhile, and the first requests it left unanswered, as evidence.
//!
//! Polling costs nothing here. A request is known to be unanswered when the transaction
//! tracker gives up on it (after its timeout, or when the connection ends), and the flow tells
//! when the device last answered on it and how many requests it had sent by then
//! ([`FlowInfo::last_answer`], [`FlowInfo::answered_requests`]): the silence is dated from the
//! request, and the requests waiting count as the master's attempts. A flow's first answer
//! makes the pair known here. Only while some pair is silent or down does the engine pass
//! requests (to count attempts) and answers (to end a silence, or tell a recovery) here, and
//! they change nothing but that pair: what a pair knows never depends on the pairs that share
//! its capture worker.
//!
//! A silence is an outage ([`rule::DEVICE_UNRESPONSIVE`]) once it lasts the configured time
//! (`DEFAULT_SILENCE` unless the policy tunes the rule's `window`) and either the master kept
//! trying (a second attempt: another request, a retransmission, a reconnect) or the device
//! reset the connection while a request waited. So a master that stops asking, disconnects
//! or gives up after one timeout raises nothing, and neither does a device that answers late
//! (a late answer ends the silence like any other). The judgement is made on the engine's
//! flush, as capture time passes, and before each event of the pair, never at the end of a
//! capture: a capture that ends, or is cut short, is not an outage. The alert's time is the silence's start plus the configured
//! time, whatever the moment the flush came, so the same traffic raises the same alert
//! whichever capture worker holds the pair.
//!
//! The next answer after an outage raises [`rule::DEVICE_RECOVERED`] with how long it lasted.
//!
//! [`rule::DEVICE_UNRESPONSIVE`]: crate::alert::rule::DEVICE_UNRESPONSIVE
//! [`rule::DEVICE_RECOVERED`]: crate::alert::rule::DEVICE_RECOVERED

use std::fmt::Write as _;
use std::time::Duration;

use super::{Facts, evidence};
use crate::flow::FlowInfo;
use crate::modbus::{FunctionCode, Request};
use crate::time::Timestamp;
use crate::transaction::Transaction;

/// How long a device may stay silent towards a master that keeps trying before it is taken
/// for down: far above a poller's timeouts and reconnects (1-10 s), and early enough that the
/// alert comes within 30 s of the silence's start.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(20);

/// Unanswered requests remembered as evidence: the first ones of the silence.
const RECENT: usize = 3;

/// Connections of one master whose waiting requests a silence counts at their first give-up;
/// a master with more has tried more than enough.
const COUNTED: usize = 4;

/// How long a silence found by the tracker giving up waits before it is judged: requests in
/// flight then (the one whose packet made the tracker give up, those sent since) get the
/// tracker's own time to be answered, so a dropped request on a slow poller is no outage.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// Bytes of a request's PDU kept as evidence: a whole PDU (at most 253 bytes), so its facts
/// decode again (the alert's `evidence` shows the frame's first 64 bytes).
const RAW: usize = 253;

/// A request the device left unanswered, as evidence: its PDU as the transaction tracker kept
/// it, reported when the tracker gave up on it (after its timeout, or when the connection
/// closed). Taken from there, not from every request, so polling costs nothing here.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ts: Timestamp,
    transaction_id: Option<u16>,
    unit: u8,
    /// Bytes of `pdu` kept.
    len: u8,
    pdu: [u8; RAW],
}

impl Sent {
    const EMPTY: Self = Self {
        ts: Timestamp::from_nanos(0),
        transaction_id: None,
        unit: 0,
        len: 0,
        pdu: [0; RAW],
    };

    fn pdu(&self) -> &[u8] {
        self.pdu.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The request's frame as it was on the wire: the MBAP header or the RTU CRC around its
    /// PDU (cut at [`RAW`] bytes, which the evidence shows at most).
    fn frame(&self) -> Vec<u8> {
        let pdu = self.pdu();
        let mut frame = Vec::with_capacity(pdu.len() + 7);
        match self.transaction_id {
            Some(tid) => {
                frame.extend_from_slice(&tid.to_be_bytes());
                frame.extend_from_slice(&[0, 0]);
                frame.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
                frame.push(self.unit);
                frame.extend_from_slice(pdu);
            }
            None => {
                frame.push(self.unit);
                frame.extend_from_slice(pdu);
                let crc = crate::modbus::crc16(&frame);
                frame.extend_from_slice(&crc.to_le_bytes());
            }
        }
        frame
    }

    /// The alert's facts of this request: unit, function, range and values, and its frame as
    /// evidence.
    fn facts(&self) -> Facts {
        let pdu = self.pdu();
        let mut facts = match Request::decode_prefix(pdu) {
            Ok((request, _)) => Facts::of_request(self.unit, &request, &[]),
            Err(_) => Facts {
                unit_id: Some(self.unit),
                function: pdu.first().and_then(|f| FunctionCode::new(*f).ok()),
                ..Facts::default()
            },
        };
        facts.evidence = evidence(&self.frame());
        facts
    }

    fn describe(&self, out: &mut String) {
        let facts = self.facts();
        match facts.function {
            Some(f) => out.push_str(f.name()),
            None => out.push_str("request"),
        }
        let _ = write!(out, " unit {}", self.unit);
        if let Some(address) = facts.address {
            let _ = write!(out, " at {address}");
            if let Some(quantity) = facts.quantity.filter(|q| *q > 1) {
                let _ = write!(out, " x{quantity}");
            }
        }
        let _ = write!(out, " at {}", self.ts);
    }
}

/// What availability knows of one master/device pair, from the device's first answer on.
///
/// Kept off the path of the pair's requests and answers: a silence starts when the transaction
/// tracker gives up on a request (after its timeout, or when the connection ends) that the
/// device left unanswered, or at a connection attempt; only while the device is silent or
/// down do its requests and answers change anything here, counting the master's attempts and
/// ending the silence.
#[derive(Debug)]
pub(super) struct Liveness {
    /// The pair's latest flow: the alert's addresses and flow id.
    flow: FlowInfo,
    /// The device's Modbus port (where it first answered): connections to its other ports
    /// (a web server, another protocol) say nothing of its Modbus service.
    pub port: u16,
    /// The device's last answer known here: from its flows' first answers, from flows as they
    /// end or give up on a request, and each answer while it is silent or down.
    answered: Timestamp,
    /// When the silence began (the earlier of the two below), if the device is silent.
    since: Option<Timestamp>,
    /// When the silence becomes due for judgement, in nanoseconds (`u64::MAX` while there is
    /// none, or its outage was raised): one comparison on every event of the pair. The later
    /// of the silence's start plus the time allowed and `judge_from`.
    deadline: u64,
    /// No judgement before this (nanoseconds): the tracker's first give-up of the silence
    /// plus [`ANSWER_GRACE`].
    judge_from: u64,
    /// The first request left unanswered since then.
    request_waiting: Option<Timestamp>,
    /// The first connection attempt left unaccepted since the last accept or answer.
    connect_waiting: Option<Timestamp>,
    /// Requests, connection attempts and retransmissions since the silence began.
    attempts: u32,
    /// Connection attempts among them.
    connects: u32,
    /// Whether the device reset a connection while a request waited.
    reset: bool,
    /// When the device last reset a connection: the requests that connection's end gives up
    /// on were waiting then.
    reset_at: Option<Timestamp>,
    /// Retransmissions of requests by the master before any silence began, on flow
    /// `retry_flow` since its answer at `retry_epoch`: attempts made before the tracker gave up.
    retries: u32,
    retry_flow: u64,
    retry_epoch: Option<Timestamp>,
    /// Flows whose requests waiting at their first give-up of the silence were counted then
    /// (`counted_flows` of them): later requests are counted as they come.
    counted: [u64; COUNTED],
    counted_flows: usize,
    /// When the outage raised began, until the device answers again.
    down: Option<Timestamp>,
    /// The first requests of the silence left unanswered, in order; `kept` of them.
    unanswered: [Sent; RECENT],
    kept: usize,
    /// Whether the pair is on the engine's list of silences to judge.
    watched: bool,
}

/// A silence judged an outage: when to date the alert, and what it says.
pub(super) struct Outage {
    /// The silence's start plus the configured time.
    pub ts: Timestamp,
    /// The pair's latest flow.
    pub flow: FlowInfo,
    /// The request the silence began with (or the last before it), with the message.
    pub facts: Facts,
}

/// What [`Liveness::judge`] found.
pub(super) enum Judgement {
    /// The silence lasted and the master kept trying: raise it.
    Outage(Box<Outage>),
    /// Silent, not for long enough yet: ask again later.
    Waiting,
    /// Down (its outage raised): watched until it answers again.
    Down,
    /// Not silent: nothing to watch.
    Done,
}

impl Liveness {
    /// A pair whose device answered last at `answered`, on `flow`.
    pub fn new(answered: Timestamp, flow: &FlowInfo) -> Box<Self> {
        Box::new(Self {
            flow: *flow,
            port: flow.server.port(),
            answered,
            since: None,
            deadline: u64::MAX,
            judge_from: 0,
            request_waiting: None,
            connect_waiting: None,
            attempts: 0,
            connects: 0,
            reset: false,
            reset_at: None,
            retries: 0,
            retry_flow: 0,
            retry_epoch: None,
            counted: [0; COUNTED],
            counted_flows: 0,
            down: None,
            unanswered: [Sent::EMPTY; RECENT],
            kept: 0,
            watched: false,
        })
    }

    /// Puts the pair on the list of silences to judge, unless it is there: returns whether it
    /// was not.
    pub fn watch(&mut self) -> bool {
        !std::mem::replace(&mut self.watched, true)
    }

    /// Whether the device is neither silent nor down: nothing to watch.
    pub fn quiet_now(&self) -> bool {
        self.since.is_none() && self.down.is_none()
    }

    /// Whether the pair is on the list of silences to judge.
    pub fn watched(&self) -> bool {
        self.watched
    }

    /// The pair left the list of silences to judge.
    pub fn unwatch(&mut self) {
        self.watched = false;
    }

    fn attempt(&mut self, flow: &FlowInfo) {
        self.attempts_on(1, flow);
    }

    /// `n` attempts of the master, the latest on `flow`.
    fn attempts_on(&mut self, n: u32, flow: &FlowInfo) {
        self.attempts = self.attempts.saturating_add(n);
        if self.flow.id != flow.id {
            self.flow = *flow;
        }
    }

    /// The device's last answer on `flow` (if any) is known now: one after the silence began
    /// ends it.
    pub fn heard(&mut self, flow: &FlowInfo) {
        if let Some(answered) = flow.last_answer {
            self.answered = self.answered.max(answered);
        }
        if self.down.is_none() && self.since.is_some_and(|since| self.answered > since) {
            self.forget_silence();
        }
    }

    /// The master sent a request on `flow` while the pair is watched: an attempt, if the
    /// device is silent.
    #[inline]
    pub fn request(&mut self, flow: &FlowInfo) {
        if self.since.is_some() {
            self.count_flow(flow, 1);
        }
    }

    /// Counts the master's attempts on `flow`: the first time in this silence, every request
    /// the flow sent since the device's last answer on it (RTU broadcasts, which expect none,
    /// aside); after that, `then`. Past [`COUNTED`] flows, one per call.
    fn count_flow(&mut self, flow: &FlowInfo, then: u32) {
        let counted = self.counted.get(..self.counted_flows).unwrap_or_default();
        if counted.contains(&flow.id) {
            self.attempts_on(then, flow);
            return;
        }
        match self.counted.get_mut(self.counted_flows) {
            Some(slot) => {
                *slot = flow.id;
                self.counted_flows += 1;
                let waiting = flow.requests.saturating_sub(flow.answered_requests).max(1);
                self.attempts_on(u32::try_from(waiting).unwrap_or(u32::MAX), flow);
            }
            None => self.attempts_on(1, flow),
        }
    }

    /// The transaction tracker gave up, at `now`, on a request (`t`) of `flow`. If the device
    /// answered nothing since it was sent, its silence began then (unless it began earlier),
    /// to be judged no earlier than [`ANSWER_GRACE`] from now, and the request is kept as
    /// evidence among the silence's first [`RECENT`]. Returns whether the device is silent.
    pub fn gave_up(
        &mut self,
        now: Timestamp,
        t: &Transaction<'_>,
        flow: &FlowInfo,
        silence: Duration,
    ) -> bool {
        let Some(sent) = t.request_ts else {
            return false;
        };
        self.heard(flow);
        if self.answered >= sent {
            // Answered since: one request lost, not a silent device.
            return false;
        }
        if self.request_waiting.is_none() {
            self.request_waiting = Some(sent);
            self.judge_from = now.saturating_add(ANSWER_GRACE).as_nanos();
            let since = self.since.map_or(sent, |s| s.min(sent));
            self.set_since(Some(since), silence);
            // The master's stack resent it (or what followed) before the tracker gave up.
            if self.retry_flow == flow.id && self.retry_epoch == flow.last_answer {
                self.attempts = self.attempts.saturating_add(self.retries);
            }
        }
        // Every request the flow sent since the device's last answer on it, this one
        // included, counts once, at the flow's first give-up; those that follow are counted
        // as they come, the silence being known.
        self.count_flow(flow, 0);
        if self.reset_at.is_some_and(|r| r >= sent) {
            self.reset = true;
        }
        self.keep(sent, t);
        true
    }

    /// Keeps a request the device left unanswered (`t`, sent at `sent`) as evidence, if the
    /// silence began with it or after it, among its first [`RECENT`].
    fn keep(&mut self, sent: Timestamp, t: &Transaction<'_>) {
        if self.request_waiting.is_none_or(|since| sent < since) {
            return;
        }
        let Some(slot) = self.unanswered.get_mut(self.kept) else {
            return;
        };
        let len = t.request_pdu.len().min(RAW);
        if let (Some(to), Some(from)) = (slot.pdu.get_mut(..len), t.request_pdu.get(..len)) {
            to.copy_from_slice(from);
        }
        slot.len = len as u8;
        slot.ts = sent;
        slot.unit = t.unit_id;
        slot.transaction_id = t.transaction_id;
        self.kept += 1;
    }

    /// The master tried to open a connection (a SYN): the device is silent until it accepts
    /// one or answers.
    pub fn connecting(&mut self, ts: Timestamp, flow: &FlowInfo, silence: Duration) {
        if self.connect_waiting.is_none() {
            self.connect_waiting = Some(ts);
            if self.since.is_none() {
                self.set_since(Some(ts), silence);
            }
        }
        self.connects = self.connects.saturating_add(1);
        self.attempt(flow);
    }

    /// The device accepted a connection: it is not refusing connections (its requests may
    /// still go unanswered).
    pub fn accepted(&mut self, silence: Duration) {
        self.connect_waiting = None;
        self.set_since(self.request_waiting, silence);
        if self.since.is_none() {
            self.quiet();
        }
    }

    /// The master resent bytes of `flow` the device had not acknowledged.
    pub fn retransmitted(&mut self, flow: &FlowInfo) {
        if self.since.is_some() {
            self.attempt(flow);
            return;
        }
        if self.retry_flow != flow.id || self.retry_epoch != flow.last_answer {
            self.retry_flow = flow.id;
            self.retry_epoch = flow.last_answer;
            self.retries = 0;
        }
        self.retries = self.retries.saturating_add(1);
    }

    /// The device reset a connection at `ts`.
    pub fn reset_by_device(&mut self, ts: Timestamp) {
        self.reset_at = Some(ts);
        if self.request_waiting.is_some() {
            self.reset = true;
        }
    }

    /// The device answered at `ts`: whatever silence there was is over. Returns whether an
    /// outage had been raised (the device recovered; see [`Liveness::recovered`]).
    #[inline]
    pub fn answered(&mut self, ts: Timestamp) -> bool {
        self.sent_something(ts);
        self.down.is_some()
    }

    /// How long the outage raised lasted, up to the answer just seen; ends it.
    pub fn recovered(&mut self) -> Option<Duration> {
        let answered = self.answered;
        self.down.take().map(|since| answered.since(since))
    }

    /// The device sent something at `ts` (an answer, or bytes the capture lost): the silence
    /// is over. Lost bytes are no answer to tell a recovery by, so an outage raised stays.
    #[inline]
    pub fn sent_something(&mut self, ts: Timestamp) {
        self.answered = self.answered.max(ts);
        if self.since.is_some() {
            self.forget_silence();
        }
    }

    fn forget_silence(&mut self) {
        self.since = None;
        self.deadline = u64::MAX;
        self.judge_from = 0;
        self.request_waiting = None;
        self.connect_waiting = None;
        self.quiet();
    }

    fn quiet(&mut self) {
        self.kept = 0;
        self.attempts = 0;
        self.connects = 0;
        self.reset = false;
        self.retries = 0;
        self.counted_flows = 0;
    }

    /// Sets when the silence began, and so when it is due.
    fn set_since(&mut self, since: Option<Timestamp>, silence: Duration) {
        self.since = since;
        self.deadline = match (since, self.down) {
            (Some(since), None) => since
                .saturating_add(silence)
                .as_nanos()
                .max(self.judge_from),
            _ => u64::MAX,
        };
    }

    /// Whether [`Liveness::judge`] has anything to decide at `now`: a silence not raised yet
    /// that has lasted as long as it may. Every event of the pair asks this first.
    #[inline]
    pub fn due(&self, now: Timestamp) -> bool {
        now.as_nanos() >= self.deadline
    }

    /// Judges the silence as of capture time `now`, given how long one may last (`silence`):
    /// on the engine's flush, and before each of the pair's events so that what comes after a
    /// silence's end is judged the same whenever the flush came.
    pub fn judge(&mut self, now: Timestamp, silence: Duration) -> Judgement {
        if self.down.is_some() {
            return Judgement::Down;
        }
        let Some(since) = self.since else {
            return Judgement::Done;
        };
        if !self.due(now) {
            return Judgement::Waiting;
        }
        if self.attempts < 2 && !self.reset {
            // The master asked once and stopped asking: no sign the device is gone. The
            // silence is forgotten; the master's next attempt starts a new one.
            self.forget_silence();
            return Judgement::Done;
        }
        self.down = Some(since);
        let due = since.saturating_add(silence);
        self.deadline = u64::MAX;
        Judgement::Outage(Box::new(self.outage(since, due, silence)))
    }

    fn outage(&self, since: Timestamp, due: Timestamp, silence: Duration) -> Outage {
        let unanswered = self.unanswered.get(..self.kept).unwrap_or_default();
        let requests = self.attempts.saturating_sub(self.connects);
        let mut message = format!(
            "no answer for {} since {since} (last answer {}): {requests} request(s) and {} connection attempt(s) went unanswered",
            humantime::format_duration(silence),
            self.answered,
            self.connects,
        );
        if self.reset {
            message.push_str("; the device reset the connection");
        }
        if !unanswered.is_empty() {
            message.push_str("; the first requests it left unanswered: ");
            for (i, sent) in unanswered.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                sent.describe(&mut message);
            }
        }
        // The request the silence began with is the prime suspect of a crash.
        let mut facts = unanswered.first().map(Sent::facts).unwrap_or_default();
        facts.message = Some(message);
        Outage {
            ts: due,
            flow: self.flow,
            facts,
        }
    }
}
